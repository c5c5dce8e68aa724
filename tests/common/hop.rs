//! `Hop`: a service that calls the next server in a chain, and ends a call
//! in every way a call can (for the tracing and metrics tests).

use std::time::Duration;

/// Calls other services when asked to, and ends in every way a call can.
#[rpc::service]
pub trait Hop {
    /// Calls `next` in turn (each hop calls the next), then answers.
    async fn relay(&self, next: Vec<String>) -> u32;
    async fn ok(&self) -> u32;
    async fn refuse(&self) -> Result<u32, String>;
    async fn panic(&self) -> u32;
    async fn slow(&self) -> u32;
}

pub struct Server;

impl Hop for Server {
    async fn relay(&self, mut next: Vec<String>) -> u32 {
        if next.is_empty() {
            return 0;
        }
        let addr = next.remove(0);
        let hop = HopClient::connect(addr).await.unwrap();
        hop.relay(next).await.unwrap() + 1
    }
    async fn ok(&self) -> u32 {
        1
    }
    async fn refuse(&self) -> Result<u32, String> {
        Err("no".to_owned())
    }
    async fn panic(&self) -> u32 {
        panic!("on purpose")
    }
    async fn slow(&self) -> u32 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        0
    }
}

pub async fn start() -> rpc::ServerHandle {
    rpc::Server::new()
        .serve(HopServer::new(Server))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}
