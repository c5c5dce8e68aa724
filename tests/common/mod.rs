//! Services shared by the integration tests.
#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod failing;
pub mod held;
pub mod hop;
pub mod json;
pub mod pki;
pub mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    DivisionByZero,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub manager: Option<Box<User>>,
}

/// Every argument and return shape the example uses, and then some.
#[rpc::service]
pub trait Shapes {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn greet(&self, name: String) -> String;
    async fn reverse(&self, bytes: Vec<u8>) -> Vec<u8>;
    async fn promote(&self, user: User) -> User;
    async fn nothing(&self);
    async fn answer(&self) -> u32;
    async fn halves(&self, text: String) -> (String, Option<String>);
    async fn sized(&self, len: u64) -> Vec<u8>;
    async fn explode(&self, message: String) -> u8;
    /// Waits until the test releases it.
    async fn wait_for_release(&self, tag: u32) -> u32;
}

#[derive(Default)]
pub struct ShapesImpl {
    pub release: Notify,
    pub waiting: AtomicUsize,
}

impl Shapes for Arc<ShapesImpl> {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivisionByZero)
        } else {
            Ok(a / b)
        }
    }
    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
    async fn reverse(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.reverse();
        bytes
    }
    async fn promote(&self, mut user: User) -> User {
        user.tags.push("promoted".to_owned());
        user
    }
    async fn nothing(&self) {}
    async fn answer(&self) -> u32 {
        42
    }
    async fn halves(&self, text: String) -> (String, Option<String>) {
        match text.split_once(' ') {
            Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
            None => (text, None),
        }
    }
    async fn sized(&self, len: u64) -> Vec<u8> {
        vec![7; len as usize]
    }
    async fn explode(&self, message: String) -> u8 {
        panic!("{message}")
    }
    async fn wait_for_release(&self, tag: u32) -> u32 {
        let released = self.release.notified();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        released.await;
        tag
    }
}

/// A second service, to share a listener with the first.
#[rpc::service]
pub trait Echo {
    async fn echo(&self, text: String) -> String;
}

pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, text: String) -> String {
        text
    }
}

pub async fn start() -> (rpc::ServerHandle, Arc<ShapesImpl>, SocketAddr) {
    start_with(|server| server).await
}

/// Like [`start`], with the server's settings adjusted by `configure`.
pub async fn start_with(
    configure: impl FnOnce(rpc::Server) -> rpc::Server,
) -> (rpc::ServerHandle, Arc<ShapesImpl>, SocketAddr) {
    let shapes = Arc::new(ShapesImpl::default());
    let server = rpc::Server::new()
        .serve(ShapesServer::new(Arc::clone(&shapes)))
        .serve(EchoServer::new(EchoImpl));
    let handle = configure(server).bind("127.0.0.1:0").await.unwrap();
    let addr = handle.local_addr();
    (handle, shapes, addr)
}

/// Waits (without a clock) until `count` handlers are parked in
/// `wait_for_release`.
pub async fn until_waiting(shapes: &ShapesImpl, count: usize) {
    while shapes.waiting.load(Ordering::SeqCst) < count {
        tokio::task::yield_now().await;
    }
}

/// Waits until `done` holds, and says whether it did. The limit of a
/// minute only turns a hang (callers that panicked and stopped calling)
/// into a failure; it decides nothing.
#[must_use = "None means it gave up"]
pub async fn until(what: &str, mut done: impl FnMut() -> bool) -> Option<()> {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    if waited.is_err() {
        eprintln!("gave up waiting for {what}");
    }
    waited.ok()
}
