//! The whole call path over real TCP: shapes, concurrency, ordering, routing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use common::{EchoClient, MathError, ShapesClient, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_argument_and_return_shape_round_trips() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();

    assert_eq!(client.add(5, 3).await.unwrap(), 8);
    assert_eq!(client.add(-7, i64::MAX).await.unwrap(), i64::MAX - 7);
    assert_eq!(client.div(7, 2).await.unwrap(), Ok(3));
    assert_eq!(client.div(7, 0).await.unwrap(), Err(MathError::DivisionByZero));
    assert_eq!(client.greet("Ada ✓".to_owned()).await.unwrap(), "Hello, Ada ✓!");
    assert_eq!(
        client.reverse(vec![1, 2, 3, 255]).await.unwrap(),
        vec![255, 3, 2, 1]
    );
    assert_eq!(client.reverse(Vec::new()).await.unwrap(), Vec::<u8>::new());
    let boss = User {
        id: 1,
        name: "Grace".to_owned(),
        tags: vec![],
        manager: None,
    };
    let user = User {
        id: 2,
        name: "Alan".to_owned(),
        tags: vec!["eng".to_owned()],
        manager: Some(Box::new(boss.clone())),
    };
    let promoted = client.promote(user.clone()).await.unwrap();
    assert_eq!(promoted.tags, vec!["eng".to_owned(), "promoted".to_owned()]);
    assert_eq!(promoted.manager.as_deref(), Some(&boss));
    client.nothing().await.unwrap();
    assert_eq!(client.answer().await.unwrap(), 42);
    assert_eq!(
        client.halves("hello big world".to_owned()).await.unwrap(),
        ("hello".to_owned(), Some("big world".to_owned()))
    );
    assert_eq!(
        client.halves("one".to_owned()).await.unwrap(),
        ("one".to_owned(), None)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_share_one_connection() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();
    let calls: Vec<_> = (0..10_000i64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { (i, client.add(i, 1_000_000).await) })
        })
        .collect();
    for call in calls {
        let (i, sum) = call.await.unwrap();
        assert_eq!(sum.unwrap(), i + 1_000_000);
    }
    assert_eq!(server.stats().open_connections, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_does_not_delay_fast_calls_started_after_it() {
    let (server, shapes, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.wait_for_release(7).await }
    });
    common::until_waiting(&shapes, 1).await;

    // The slow call is parked on the server until we release it, so these
    // can only complete if responses come back out of order.
    for i in 0..100 {
        assert_eq!(client.add(i, i).await.unwrap(), 2 * i);
    }
    assert!(!slow.is_finished());
    shapes.release.notify_waiters();
    assert_eq!(slow.await.unwrap().unwrap(), 7);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_share_one_listener() {
    let (server, _, addr) = common::start().await;
    let shapes = ShapesClient::connect(addr).await.unwrap();
    let echo = EchoClient::connect(addr).await.unwrap();
    assert_eq!(echo.echo("ping".to_owned()).await.unwrap(), "ping");
    assert_eq!(shapes.add(1, 2).await.unwrap(), 3);

    // Typed clients of different services can also share one connection.
    let echo_on_same = EchoClient::from_client(shapes.rpc_client().clone());
    assert_eq!(echo_on_same.echo("pong".to_owned()).await.unwrap(), "pong");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_travels_both_ways() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut expected = data.clone();
    expected.reverse();
    assert_eq!(client.reverse(data).await.unwrap(), expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_work_over_an_in_memory_pipe() {
    let shapes = std::sync::Arc::new(common::ShapesImpl::default());
    let server = rpc::Server::new().serve(common::ShapesServer::new(shapes));
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { server.serve_io(server_end).await });
    let client = ShapesClient::from_client(rpc::ClientBuilder::new().connect_io(client_end).await.unwrap());
    assert_eq!(client.add(20, 22).await.unwrap(), 42);
    assert_eq!(client.reverse(vec![9; 200_000]).await.unwrap().len(), 200_000);
}

/// Blobs in, blobs out, in another order: each large one travels as a part
/// of its own message, from the memory it lies in.
#[rpc::service]
pub trait Blobs {
    async fn swap(&self, head: String, a: rpc::Bytes, b: rpc::Bytes) -> (rpc::Bytes, String, rpc::Bytes);
}

struct Swapper;

impl Blobs for Swapper {
    async fn swap(&self, head: String, a: rpc::Bytes, b: rpc::Bytes) -> (rpc::Bytes, String, rpc::Bytes) {
        (b, head, a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_arrive_whole_in_their_places_even_from_the_queue() {
    let server = rpc::Server::new()
        .serve(BlobsServer::new(Swapper))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // One call in flight: the rest wait in the queue, and leave with their
    // budgets stamped into their first part.
    let client = BlobsClient::from_client(
        rpc::ClientBuilder::new()
            .max_in_flight(1)
            .connect(server.local_addr())
            .await
            .unwrap(),
    );
    let blob = |len: usize, seed: usize| -> rpc::Bytes {
        (0..len)
            .map(|i| ((i * 7 + seed) % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    let calls = (0..8usize).map(|n| {
        let client = client.clone();
        // Short and long, either side of where blobs are spliced (4 KiB).
        let (a, b) = (blob(4095 + n * 300_000, n), blob(4096 << n, n + 100));
        async move {
            let head = format!("call {n}");
            let (got_b, got_head, got_a) = client.swap(head.clone(), a.clone(), b.clone()).await.unwrap();
            assert_eq!((got_head, got_a, got_b), (head, a, b), "call {n}");
        }
    });
    futures::future::join_all(calls).await;

    // Many at once, every answer held to the end: a frame read into memory
    // an earlier one was read into must never be one still held.
    let client = BlobsClient::connect(server.local_addr()).await.unwrap();
    let calls = (0..16usize).map(|n| {
        let client = client.clone();
        let (a, b) = (blob(1 << 20, n), blob(300_000 + n, n + 50));
        async move {
            let answer = client.swap(n.to_string(), a.clone(), b.clone()).await.unwrap();
            (answer, (b, n.to_string(), a))
        }
    });
    for (n, (answer, expected)) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert!(answer == expected, "call {n} came back changed");
    }
    server.stop().await;
}
