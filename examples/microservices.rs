//! Two services calling each other: an order service whose `create_order`
//! calls a user service's `get_user`. Shows deadlines flowing through the
//! chain and what a caller sees when the service behind it is down.
//!
//! ```text
//! cargo run --example microservices                     # everything in one process
//! cargo run --example microservices -- users 127.0.0.1:7001
//! cargo run --example microservices -- orders 127.0.0.1:7002 127.0.0.1:7001
//! cargo run --example microservices -- client 127.0.0.1:7002
//! ```

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

async fn serve_users(addr: &str) -> Result<rpc::ServerHandle, rpc::Error> {
    rpc::Server::new()
        .serve(UsersServer::new(UserDirectory))
        .bind(addr)
        .await
}

async fn serve_orders(addr: &str, users: SocketAddr) -> Result<rpc::ServerHandle, rpc::Error> {
    let users = UsersClient::connect(users).await?;
    let desk = Arc::new(OrderDesk {
        users,
        next: AtomicU64::new(1000),
    });
    rpc::Server::new().serve(OrdersServer::new(desk)).bind(addr).await
}

async fn place(orders: &OrdersClient, user_id: u64, item: &str, timeout: Duration) {
    println!("client: create_order({user_id}, {item:?}) with a {timeout:?} deadline");
    match orders
        .with_timeout(timeout)
        .create_order(user_id, item.to_owned())
        .await
    {
        Ok(Ok(order)) => println!("client: placed {order:?}\n"),
        Ok(Err(refused)) => println!("client: the order service said no: {refused:?}\n"),
        Err(err) => println!("client: the call failed: {err}\n"),
    }
}

async fn run_client(orders_addr: SocketAddr) -> Result<(), rpc::Error> {
    let orders = OrdersClient::connect(orders_addr).await?;
    place(&orders, 1, "keyboard", Duration::from_secs(2)).await;
    place(&orders, 99, "mouse", Duration::from_secs(2)).await;
    println!("-- user 7 takes 400 ms to look up; the client gives the whole chain 150 ms:");
    place(&orders, 7, "monitor", Duration::from_millis(150)).await;
    Ok(())
}

async fn everything_in_one_process() -> Result<(), rpc::Error> {
    let users = serve_users("127.0.0.1:0").await?;
    let orders = serve_orders("127.0.0.1:0", users.local_addr()).await?;
    println!(
        "users on {}, orders on {}\n",
        users.local_addr(),
        orders.local_addr()
    );
    run_client(orders.local_addr()).await?;

    println!("-- the user service goes down:");
    users.shutdown(Duration::from_secs(1)).await;
    let client = OrdersClient::connect(orders.local_addr()).await?;
    place(&client, 2, "laptop", Duration::from_secs(2)).await;
    orders.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result: Result<(), Box<dyn std::error::Error>> = async {
        match args.as_slice() {
            [] => everything_in_one_process().await?,
            ["users", addr] => {
                let server = serve_users(addr).await?;
                println!("users listening on {}", server.local_addr());
                server.wait().await;
            }
            ["orders", addr, users] => {
                let server = serve_orders(addr, users.parse()?).await?;
                println!("orders listening on {}", server.local_addr());
                server.wait().await;
            }
            ["client", orders] => run_client(orders.parse()?).await?,
            _ => {
                return Err(
                    "usage: microservices [users ADDR | orders ADDR USERS_ADDR | client ORDERS_ADDR]".into(),
                );
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
