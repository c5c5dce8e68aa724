//! What a small call allocates, client and server ends together, in one
//! process: held to about one block a call (the server's call future,
//! boxed so that it may move into a task of its own). The figure is
//! printed (`cargo test --test allocations -- --nocapture`). Its own test
//! binary, so that no other test's allocations are counted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[rpc::service]
pub trait Adder {
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Sum;

impl Adder for Sum {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

const CALLS: u64 = 2_000;

#[test]
fn a_small_call_allocates_about_one_block_both_ends_together() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = rpc::Server::new()
            .serve(AdderServer::new(Sum))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let client = AdderClient::connect(server.local_addr()).await.unwrap();
        // Buffers, blocks and tables each connection end makes once are
        // made before counting starts.
        for n in 0..100 {
            assert_eq!(client.add(n, 1).await.unwrap(), n + 1);
        }
        let region = Region::new(GLOBAL);
        for n in 0..CALLS {
            assert_eq!(client.add(n, 1).await.unwrap(), n + 1);
        }
        let allocations = region.change().allocations as f64 / CALLS as f64;
        println!("allocations a small call, client and server together: {allocations:.2}");
        // Two a call would mean the server's context is allocated for
        // every call again, not made in the last one's memory.
        assert!(
            allocations < 1.5,
            "a small call allocates {allocations:.2} blocks, client and server together"
        );
        server.stop().await;
    });
}
