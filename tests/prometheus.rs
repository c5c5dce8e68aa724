//! `GET /metrics` with the `prometheus` feature: a real HTTP scrape after a
//! known set of calls.
#![cfg(feature = "prometheus")]
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use common::json::Http;

#[rpc::service]
pub trait Counter {
    async fn next(&self, n: u64) -> u64;
}

struct Plus;

impl Counter for Plus {
    async fn next(&self, n: u64) -> u64 {
        n + 1
    }
}

#[tokio::test]
async fn the_http_door_serves_the_call_metrics_to_a_scrape() {
    let metrics = rpc::prometheus::install().unwrap();
    let server = rpc::Server::new()
        .serve(CounterServer::new(Plus))
        .metrics(move || metrics.render())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let counter = CounterClient::connect(server.local_addr()).await.unwrap();
    for n in 0..5 {
        assert_eq!(counter.next(n).await.unwrap(), n + 1);
    }
    let mut http = Http::connect(server.local_addr()).await;
    let page = http.get("/metrics").await;
    assert_eq!(page.status, hyper::StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        page.headers
    );
    let text = page.text();
    let line = |prefix: &str| {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    let count =
        line(r#"rpc_server_call_duration_count{rpc_service="Counter",rpc_method="next",rpc_outcome="ok"}"#);
    assert!(count.ends_with(" 5"), "{count}");
    let count =
        line(r#"rpc_client_call_duration_count{rpc_service="Counter",rpc_method="next",rpc_outcome="ok"}"#);
    assert!(count.ends_with(" 5"), "{count}");
    // The Rust client's connection, and the scrape's own.
    assert!(line("rpc_server_connections ").ends_with(" 2"), "{text}");
    server.stop().await;
}
