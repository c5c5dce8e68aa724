//! The user and order services: their traits, types and implementations.
//! `main.rs` runs them; the tests run them too, for the JavaScript example
//! to call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Their id.
    pub id: u64,
    /// Their name.
    pub name: String,
}

/// Why the user service could not answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum UserError {
    /// No user with that id.
    NotFound(u64),
}

/// Looks up users.
#[rpc::service]
pub trait Users {
    /// The user with `id`. User 7 is slow to look up (a cold cache).
    #[rpc(idempotent)]
    async fn get_user(&self, id: u64) -> Result<User, UserError>;
}

/// A placed order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// The order's number.
    pub number: u64,
    /// Who ordered.
    pub customer: String,
    /// What they ordered.
    pub item: String,
}

/// Why an order could not be placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrderError {
    /// The customer does not exist.
    UnknownCustomer(u64),
    /// The user service did not answer; the text says why.
    UsersUnavailable(String),
}

/// Takes orders.
#[rpc::service]
pub trait Orders {
    /// Places an order for `user_id`, checking the customer with the user
    /// service first.
    async fn create_order(&self, user_id: u64, item: String) -> Result<Order, OrderError>;
}

struct UserDirectory;

impl Users for UserDirectory {
    async fn get_user(&self, id: u64) -> Result<User, UserError> {
        let ctx = rpc::Context::current();
        let left = ctx.as_ref().map(rpc::Context::remaining).unwrap_or_default();
        println!("  [users]  get_user({id}) with {left:?} of the original budget left");
        if id == 7 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        match id {
            1 => Ok(User {
                id,
                name: "Ada".to_owned(),
            }),
            2 => Ok(User {
                id,
                name: "Grace".to_owned(),
            }),
            7 => Ok(User {
                id,
                name: "Slow Sam".to_owned(),
            }),
            _ => Err(UserError::NotFound(id)),
        }
    }
}

struct OrderDesk {
    users: UsersClient,
    next: AtomicU64,
}

impl Orders for Arc<OrderDesk> {
    async fn create_order(&self, user_id: u64, item: String) -> Result<Order, OrderError> {
        let left = rpc::Context::current()
            .map(|ctx| ctx.remaining())
            .unwrap_or_default();
        println!("  [orders] create_order({user_id}, {item:?}) with {left:?} left; asking users");
        // This call inherits what remains of our caller's deadline: no
        // timeout to thread through by hand.
        let user = match self.users.get_user(user_id).await {
            Ok(Ok(user)) => user,
            Ok(Err(UserError::NotFound(id))) => return Err(OrderError::UnknownCustomer(id)),
            Err(err) => return Err(OrderError::UsersUnavailable(err.to_string())),
        };
        Ok(Order {
            number: self.next.fetch_add(1, Ordering::Relaxed),
            customer: user.name,
            item,
        })
    }
}

/// Serves the user service on `addr`.
pub async fn serve_users(addr: &str) -> Result<rpc::ServerHandle, rpc::Error> {
    rpc::Server::new()
        .serve(UsersServer::new(UserDirectory))
        .bind(addr)
        .await
}

/// Serves the order service on `addr`, calling the user service at `users`.
pub async fn serve_orders(addr: &str, users: SocketAddr) -> Result<rpc::ServerHandle, rpc::Error> {
    let users = UsersClient::connect(users).await?;
    let desk = Arc::new(OrderDesk {
        users,
        next: AtomicU64::new(1000),
    });
    rpc::Server::new().serve(OrdersServer::new(desk)).bind(addr).await
}
