//! What an idle connection costs in heap, both ends together: a thousand
//! clients, each with its own connection and one call made, then idle.
//! The figure is printed (`cargo test --test idle_memory -- --nocapture`)
//! and held to 16 KiB per connection. Its own test binary, so that no
//! other test's allocations are counted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[rpc::service]
pub trait Ping {
    async fn ping(&self, n: u64) -> u64;
}

struct Pong;

impl Ping for Pong {
    async fn ping(&self, n: u64) -> u64 {
        n + 1
    }
}

const CONNECTIONS: usize = 1000;

/// Bytes allocated and not yet freed since `region` began.
fn live(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

#[test]
fn an_idle_connection_costs_at_most_16_kib_of_heap_both_ends_together() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = rpc::Server::new()
            .serve(PingServer::new(Pong))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr();
        // Everything made once per process (descriptors, the runtime's
        // timer wheel, log call sites) is made before counting starts.
        let warm = PingClient::connect(addr).await.unwrap();
        assert_eq!(warm.ping(1).await.unwrap(), 2);

        let region = Region::new(GLOBAL);
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for n in 0..CONNECTIONS as u64 {
            let client = PingClient::connect(addr).await.unwrap();
            assert_eq!(client.ping(n).await.unwrap(), n + 1);
            clients.push(client);
        }
        while server.stats().open_connections < CONNECTIONS + 1 {
            tokio::task::yield_now().await;
        }
        // Let every connection go quiet long enough to give its buffers
        // back (`rpc_transport::reader::RELEASE_AFTER`, 100 ms, and up to
        // twice that); the reading is taken once it stops changing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut reading = live(&region);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let next = live(&region);
            if next == reading {
                break;
            }
            reading = next;
        }
        let per_connection = reading / CONNECTIONS as isize;
        println!(
            "heap per idle connection, client and server ends together: {per_connection} bytes ({:.1} KiB)",
            per_connection as f64 / 1024.0
        );
        assert!(
            per_connection <= 16 * 1024,
            "an idle connection costs {per_connection} bytes of heap"
        );
        drop(clients);
        server.stop().await;
    });
}
