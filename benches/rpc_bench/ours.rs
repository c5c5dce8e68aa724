//! The same two operations through the framework.

use std::net::SocketAddr;

use rpc::Bytes;

/// The benchmark's service.
#[rpc::service]
pub(crate) trait Bench {
    /// A small call.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// A big one.
    async fn echo(&self, data: Bytes) -> Bytes;
}

struct Impl;

impl Bench for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Bytes) -> Bytes {
        data
    }
}

pub(crate) async fn serve(listener_addr: &str) -> rpc::ServerHandle {
    rpc::Server::new()
        .serve(BenchServer::new(Impl))
        // No limit should shape the comparison: the baseline has none.
        .max_calls_per_connection(4096)
        .max_frame_len(64 * 1024 * 1024)
        .bind(listener_addr)
        .await
        .expect("bind the rpc server")
}

pub(crate) async fn connect(addr: SocketAddr) -> BenchClient {
    let client = rpc::ClientBuilder::new()
        .max_in_flight(4096)
        .max_frame_len(64 * 1024 * 1024)
        .connect(addr)
        .await
        .expect("connect to the rpc server");
    BenchClient::from_client(client)
}
