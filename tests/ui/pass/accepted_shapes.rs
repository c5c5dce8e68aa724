//! Every shape the macro accepts, compiled and called for real.
#![deny(missing_docs, warnings)]

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A user struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
}

/// A user enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Nothing.
    Idle,
    /// Something.
    Moved {
        /// Where.
        to: (i32, i32),
    },
}

/// A user error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreError {
    /// Missing.
    NotFound,
}

/// A user alias named `Result`, as many crates define.
pub type Result<T> = std::result::Result<T, StoreError>;

mod facade {
    /// The facade under another path, as after renaming the dependency.
    pub use ::rpc as renamed;
}

/// Every accepted shape.
#[rpc::service(crate = crate::facade::renamed)]
pub trait Everything: Send + Sync + 'static {
    /// No arguments, no result.
    async fn ping(&self);
    /// Many arguments.
    async fn sum(&self, a: u8, b: u16, c: u32, d: u64, e: i128, f: f64) -> f64;
    /// Tuples and options.
    async fn pair(&self, x: Option<String>) -> (bool, Option<String>);
    /// Collections.
    async fn index(&self, words: Vec<String>) -> HashMap<String, usize>;
    /// User structs and enums.
    async fn user(&self, user: User, event: Event) -> Vec<Event>;
    /// A result with a user error.
    async fn find(&self, id: u64) -> std::result::Result<User, StoreError>;
    /// The user's own `Result` alias.
    async fn find_alias(&self, id: u64) -> Result<User>;
    /// Raw identifiers.
    async fn r#match(&self, r#type: String) -> String;
    /// Included on every platform.
    #[cfg(all())]
    async fn present(&self) -> u8;
    /// Compiled out, with everything generated for it.
    #[cfg(any())]
    async fn absent(&self, gone: NoSuchType) -> u8;
    /// Markers the runtime understands.
    #[rpc(no_cancel, idempotent, timeout = "250ms")]
    async fn careful(&self) -> u8;
    /// Deprecated methods stay callable.
    #[deprecated = "use `sum`"]
    async fn old_sum(&self, a: u8) -> u8;
}

/// Visibility carries over: this service is crate-private.
#[rpc::service]
pub(crate) trait Internal {
    async fn secret(&self) -> u8;
}

struct Impl;

impl Everything for Impl {
    async fn ping(&self) {}
    async fn sum(&self, a: u8, b: u16, c: u32, d: u64, e: i128, f: f64) -> f64 {
        f64::from(a) + f64::from(b) + f64::from(c) + d as f64 + e as f64 + f
    }
    async fn pair(&self, x: Option<String>) -> (bool, Option<String>) {
        (x.is_some(), x)
    }
    async fn index(&self, words: Vec<String>) -> HashMap<String, usize> {
        words.into_iter().enumerate().map(|(i, w)| (w, i)).collect()
    }
    async fn user(&self, _user: User, event: Event) -> Vec<Event> {
        vec![Event::Idle, event]
    }
    async fn find(&self, id: u64) -> std::result::Result<User, StoreError> {
        if id == 1 { Ok(User { id, name: "Ada".into() }) } else { Err(StoreError::NotFound) }
    }
    async fn find_alias(&self, id: u64) -> Result<User> {
        self.find(id).await
    }
    async fn r#match(&self, r#type: String) -> String {
        r#type
    }
    async fn present(&self) -> u8 {
        1
    }
    async fn careful(&self) -> u8 {
        2
    }
    async fn old_sum(&self, a: u8) -> u8 {
        a
    }
}

struct Hidden;

impl Internal for Hidden {
    async fn secret(&self) -> u8 {
        7
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::result::Result<(), rpc::Error> {
    let server = rpc::Server::new()
        .serve(EverythingServer::new(Impl))
        .serve(InternalServer::new(Hidden))
        .bind("127.0.0.1:0")
        .await?;
    let client = EverythingClient::connect(server.local_addr()).await?;
    client.ping().await?;
    assert_eq!(client.sum(1, 2, 3, 4, 5, 0.5).await?, 15.5);
    assert_eq!(client.pair(Some("x".into())).await?, (true, Some("x".into())));
    assert_eq!(client.index(vec!["a".into(), "b".into()]).await?["b"], 1);
    let moved = Event::Moved { to: (1, -1) };
    let user = User { id: 1, name: "Ada".into() };
    assert_eq!(client.user(user.clone(), moved.clone()).await?, vec![Event::Idle, moved]);
    assert_eq!(client.find(1).await?, Ok(user.clone()));
    assert_eq!(client.find_alias(2).await?, Err(StoreError::NotFound));
    assert_eq!(client.r#match("raw".into()).await?, "raw");
    assert_eq!(client.present().await?, 1);
    assert_eq!(client.careful().await?, 2);
    #[allow(deprecated)]
    let old = client.old_sum(3).await?;
    assert_eq!(old, 3);
    let internal = InternalClient::connect(server.local_addr()).await?;
    assert_eq!(internal.secret().await?, 7);
    server.stop().await;
    Ok(())
}
