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
    /// A big one as users write it.
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Impl;

impl Bench for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Bytes) -> Bytes {
        data
    }
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

// Default settings on both sides: what users get.

pub(crate) async fn serve(listener_addr: &str) -> rpc::ServerHandle {
    rpc::Server::new()
        .serve(BenchServer::new(Impl))
        .bind(listener_addr)
        .await
        .expect("bind the rpc server")
}

pub(crate) async fn connect(addr: SocketAddr) -> BenchClient {
    BenchClient::connect(addr)
        .await
        .expect("connect to the rpc server")
}
