//! A call's first poll runs in its connection's task; a method that once
//! computed for long before its first await is spawned from then on, so
//! it no longer holds up the other calls on its connection.
#![allow(missing_docs, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[rpc::service]
pub trait Work {
    /// Computes (spins) for `millis` without awaiting.
    async fn spin(&self, millis: u64) -> u64;
    /// Answers at once.
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Worker {
    spinning: Arc<AtomicBool>,
}

impl Work for Worker {
    async fn spin(&self, millis: u64) -> u64 {
        self.spinning.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_millis(millis);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        self.spinning.store(false, Ordering::SeqCst);
        millis
    }

    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_that_computes_before_awaiting_is_spawned_once_seen() {
    let spinning = Arc::new(AtomicBool::new(false));
    let server = rpc::Server::new()
        .serve(WorkServer::new(Worker {
            spinning: Arc::clone(&spinning),
        }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = WorkClient::connect(server.local_addr()).await.unwrap();
    // The first spins run their first polls in the connection's task; three
    // slow ones in a row mark the method.
    for _ in 0..3 {
        assert_eq!(client.spin(5).await.unwrap(), 5);
    }
    // The next one gets a task of its own: while it spins, the connection
    // goes on serving other calls.
    let long = tokio::spawn({
        let client = client.clone();
        async move { client.spin(2_000).await }
    });
    while !spinning.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    assert!(
        spinning.load(Ordering::SeqCst),
        "the add was answered while the spin ran"
    );
    assert_eq!(long.await.unwrap().unwrap(), 2_000);
    server.stop().await;
}
