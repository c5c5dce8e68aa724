//! A server asked to stop by SIGTERM shuts down gracefully: the call in
//! flight finishes and is answered, the client hears a goodbye, and
//! `serve_until` returns. (Its own test binary: the signal goes to the
//! whole process.)
#![cfg(unix)]
#![allow(missing_docs, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

#[rpc::service]
pub trait Slow {
    /// Waits for the test's gate, then answers `x + 1`.
    async fn next(&self, x: u64) -> u64;
}

struct Gate(Arc<Semaphore>, Arc<tokio::sync::Notify>, Arc<AtomicUsize>);

impl Slow for Gate {
    async fn next(&self, x: u64) -> u64 {
        self.2.fetch_add(1, Ordering::Relaxed);
        self.1.notify_one();
        self.0.acquire().await.unwrap().forget();
        x + 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully() {
    // Listening before anything else: from here on SIGTERM is caught, not
    // fatal, so the signal below cannot kill the test if it came early.
    let _caught = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();

    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let server = rpc::Server::new()
        .serve(SlowServer::new(Gate(
            Arc::clone(&gate),
            Arc::clone(&entered),
            Arc::clone(&runs),
        )))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let serving = tokio::spawn(server.serve_until(rpc::shutdown_signal(), Duration::from_secs(30)));

    let client = SlowClient::connect(addr).await.unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.next(41).await }
    });
    entered.notified().await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The goodbye arrives: the client sends no new call on the connection,
    // and the server, no longer accepting, runs none.
    while client.rpc_client().is_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Refused (no listener, or a connection the closing listener had not
    // yet accepted), never run: the handler saw only the first call.
    let refused = client.next(1).await.unwrap_err();
    assert!(
        matches!(
            refused,
            rpc::Error::Connect { .. } | rpc::Error::Disconnected { .. }
        ),
        "{refused}"
    );
    assert_eq!(runs.load(Ordering::Relaxed), 1);
    assert!(!serving.is_finished(), "the call in flight holds the server open");
    gate.add_permits(1);
    assert_eq!(in_flight.await.unwrap().unwrap(), 42);
    serving.await.unwrap();
}
