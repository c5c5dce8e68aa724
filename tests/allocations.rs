//! What a call allocates, client and server ends together, in one
//! process: a small call about one block (the server's call future, boxed
//! so that it may move into a task of its own), and a large blob's echo
//! next to nothing (each end reads it into memory it already has, and
//! sends it from where it lies). The figures are printed
//! (`cargo test --test allocations -- --nocapture`). Its own test binary,
//! and its tests one at a time, so that nothing else's allocations are
//! counted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::sync::{Mutex, PoisonError};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Held by each test while it counts.
static COUNTING: Mutex<()> = Mutex::new(());

#[rpc::service]
pub trait Adder {
    async fn add(&self, a: u64, b: u64) -> u64;
    async fn echo(&self, data: rpc::Bytes) -> rpc::Bytes;
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Sum;

impl Adder for Sum {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }

    async fn echo(&self, data: rpc::Bytes) -> rpc::Bytes {
        data
    }

    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A server of `Sum`, and a client connected to it.
async fn connected() -> (rpc::ServerHandle, AdderClient) {
    let server = rpc::Server::new()
        .serve(AdderServer::new(Sum))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = AdderClient::connect(server.local_addr()).await.unwrap();
    (server, client)
}

const CALLS: u64 = 2_000;

#[test]
fn a_small_call_allocates_about_one_block_both_ends_together() {
    let _counting = COUNTING.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let (server, client) = connected().await;
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

const ECHOES: usize = 20;

const BLOB_LEN: usize = 1 << 20;

/// How many times its `BLOB_LEN` bytes an echo allocates, client and
/// server together: `echo` makes one (and checks what came back), once
/// before counting, so that what each end makes once is made, then
/// `ECHOES` times.
fn allocated_by_an_echo<F: Future<Output = ()>>(echo: impl Fn(AdderClient) -> F) -> f64 {
    let _counting = COUNTING.lock().unwrap_or_else(PoisonError::into_inner);
    runtime().block_on(async {
        let (server, client) = connected().await;
        echo(client.clone()).await;
        let region = Region::new(GLOBAL);
        for _ in 0..ECHOES {
            echo(client.clone()).await;
        }
        let lengths = region.change().bytes_allocated as f64 / (ECHOES * BLOB_LEN) as f64;
        server.stop().await;
        lengths
    })
}

fn blob() -> Vec<u8> {
    (0..BLOB_LEN).map(|i| (i % 251) as u8).collect()
}

#[test]
fn an_echoed_blob_is_neither_copied_nor_read_into_new_memory() {
    let blob = rpc::Bytes::from(blob());
    let blobs = allocated_by_an_echo(|client| {
        let blob = blob.clone();
        async move { assert_eq!(client.echo(blob.clone()).await.unwrap(), blob) }
    });
    println!("blobs allocated an echo of one, client and server together: {blobs:.2}");
    // Each end reads its frame into the memory of the last one (its user
    // let it go); a copy into an encoded message, or a read into new
    // memory, would be one more blob an echo at each end.
    assert!(
        blobs < 0.5,
        "an echo allocates {blobs:.2} times its blob, client and server together"
    );
}

#[test]
fn an_echoed_vectors_answer_is_not_copied() {
    let vector = blob();
    let vectors = allocated_by_an_echo(|client| {
        let vector = &vector;
        async move { assert_eq!(&client.echo_vec(vector.clone()).await.unwrap(), vector) }
    });
    println!("vectors allocated an echo of one, client and server together: {vectors:.2}");
    // Four a vector must be made in: the caller's clone, the request (the
    // client borrows the arguments), the handler's argument and the
    // caller's result. The server answers with the vector its handler
    // returned, from where it lies: a copy into the encoded answer would
    // be a fifth.
    assert!(
        vectors < 4.5,
        "an echo allocates {vectors:.2} times its vector, client and server together"
    );
}
