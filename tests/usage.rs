//! What a new user writes, compiled and run: futures stored and moved,
//! streams read without another crate, the untyped client, descriptors,
//! and the server's account of how its calls ended.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{MathError, ShapesClient, ShapesRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_through_with_timeout_can_be_stored_moved_and_spawned() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();
    // The future owns what it needs: the temporary client may go.
    let stored = client.with_timeout(Duration::from_secs(5)).add(2, 3);
    let spawned = tokio::spawn(
        client
            .with_timeout(Duration::from_secs(5))
            .greet("Ada".to_owned()),
    );
    let raced = tokio::select! {
        sum = client.add(1, 1) => sum.unwrap(),
        () = tokio::time::sleep(Duration::from_secs(60)) => unreachable!("a call on a live server"),
    };
    assert_eq!(stored.await.unwrap(), 5);
    assert_eq!(spawned.await.unwrap().unwrap(), "Hello, Ada!");
    assert_eq!(raced, 2);
    server.stop().await;
}

#[rpc::service]
pub trait Counter {
    async fn count(&self, n: u32) -> rpc::Streaming<u32>;
}

struct Count;

impl Counter for Count {
    async fn count(&self, n: u32) -> rpc::Streaming<u32> {
        rpc::Streaming::iter(0..n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reads_with_nothing_but_rpc() {
    let server = rpc::Server::new()
        .serve(CounterServer::new(Count))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = CounterClient::connect(server.local_addr()).await.unwrap();
    let mut numbers = client.count(3);
    let mut seen = Vec::new();
    while let Some(n) = numbers.next().await {
        seen.push(n.unwrap());
    }
    assert_eq!(seen, [0, 1, 2]);
    assert_eq!(client.count(4).try_collect().await.unwrap(), [0, 1, 2, 3]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_untyped_client_calls_with_a_generated_request() {
    let (server, _, addr) = common::start().await;
    let client: rpc::Client = rpc::ClientBuilder::new().connect(addr).await.unwrap();
    let sum: i64 = client
        .call(ShapesRequest::Add { a: 40, b: 2 }, None)
        .await
        .unwrap();
    assert_eq!(sum, 42);
    let quotient: Result<i64, MathError> = client
        .call(ShapesRequest::Div { a: 1, b: 0 }, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(quotient, Err(MathError::DivisionByZero));
    let endpoints = client.endpoints();
    assert_eq!(endpoints.len(), 1);
    assert!(endpoints[0].connected && endpoints[0].calls == 2, "{endpoints:?}");
    assert!(endpoints[0].latency.is_some());
    server.stop().await;
}

#[test]
fn a_service_describes_itself() {
    let shapes = ShapesRequest::descriptor();
    assert_eq!(shapes.name, "Shapes");
    let names: Vec<_> = shapes.methods.iter().map(|m| m.name).collect();
    assert_eq!(names[..3], ["add", "div", "greet"]);
    let div = shapes.method("div").unwrap();
    assert_eq!(div.full_name, "Shapes.div");
    assert_eq!(div.result, "Result<i64, MathError>");
    let halves = shapes.method("halves").unwrap();
    assert_eq!(halves.result, "(String, Option<String>)");
    let release = shapes.method("wait_for_release").unwrap();
    assert_eq!(release.docs, "Waits until the test releases it.");
    assert!(shapes.method("nope").is_none());
    // One descriptor per process, however often it is asked for.
    assert!(std::ptr::eq(shapes, ShapesRequest::descriptor()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_counts_how_each_call_ended() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();
    for _ in 0..3 {
        client.add(1, 2).await.unwrap();
    }
    // An application error is a value the method returned.
    assert_eq!(client.div(1, 0).await.unwrap(), Err(MathError::DivisionByZero));
    assert!(client.explode("boom".to_owned()).await.is_err());
    let err = client
        .with_timeout(Duration::from_millis(50))
        .wait_for_release(1)
        .await
        .unwrap_err();
    assert!(matches!(err, rpc::Error::DeadlineExceeded { .. }), "{err:?}");
    // The server's side of the deadline is counted when its sweep stops the
    // handler, which may come just after the client gave up.
    let stats = loop {
        let stats = server.stats();
        if stats.deadlines_exceeded + stats.calls_cancelled == 1 {
            break stats;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(stats.calls_succeeded, 4, "{stats:?}");
    assert_eq!(stats.handler_panics, 1, "{stats:?}");
    assert_eq!(stats.calls_failed, 0, "{stats:?}");
    server.stop().await;
}
