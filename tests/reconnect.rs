//! Losing a server and finding it again: calls made while the client waits
//! between attempts, and calls a shutdown's grace period cuts short.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

#[rpc::service]
pub trait Hold {
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Waits for the gate; never opened in these tests.
    async fn hold(&self) -> u32;
    /// The same, but safe to run twice.
    #[rpc(idempotent)]
    async fn hold_idempotent(&self) -> u32;
}

struct Holder {
    gate: Semaphore,
    holding: AtomicUsize,
    /// The answer `hold_idempotent` gives once the gate opens.
    answer: u32,
}

impl Default for Holder {
    fn default() -> Self {
        Holder {
            gate: Semaphore::new(0),
            holding: AtomicUsize::new(0),
            answer: 0,
        }
    }
}

impl Hold for Arc<Holder> {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn hold(&self) -> u32 {
        self.holding.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.acquire().await;
        0
    }
    async fn hold_idempotent(&self) -> u32 {
        self.holding.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.acquire().await;
        self.answer
    }
}

async fn serve(holder: &Arc<Holder>, addr: SocketAddr) -> rpc::ServerHandle {
    rpc::Server::new()
        .serve(HoldServer::new(Arc::clone(holder)))
        .bind(addr)
        .await
        .unwrap()
}

async fn until_closed(client: &rpc::Client) {
    while !client.is_closed() {
        tokio::task::yield_now().await;
    }
}

async fn until_holding(holder: &Holder, count: usize) {
    while holder.holding.load(Ordering::SeqCst) < count {
        tokio::task::yield_now().await;
    }
}

fn backoff(delay: Duration) -> rpc::Backoff {
    rpc::Backoff {
        initial: delay,
        max: delay,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_backing_off_waits_for_the_next_attempt_and_reaches_the_server() {
    let holder = Arc::new(Holder::default());
    let first = serve(&holder, "127.0.0.1:0".parse().unwrap()).await;
    let addr = first.local_addr();
    let client = HoldClient::from_client(
        rpc::ClientBuilder::new()
            .backoff(backoff(Duration::from_millis(300)))
            .connect(addr)
            .await
            .unwrap(),
    );
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    first.stop().await;
    until_closed(client.rpc_client()).await;
    // The first attempt after the loss fails: nobody listens.
    let err = client.add(1, 1).await.unwrap_err();
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err:?}");

    // The server is back while the client waits out its backoff: a call
    // with time to spare waits for the next attempt instead of repeating
    // the last attempt's error.
    let second = serve(&holder, addr).await;
    let sum = client.with_timeout(Duration::from_secs(30)).add(2, 2).await;
    assert_eq!(sum.unwrap(), 4);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_deadline_comes_before_the_next_attempt_says_when_that_is() {
    let holder = Arc::new(Holder::default());
    let server = serve(&holder, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let client = HoldClient::from_client(
        rpc::ClientBuilder::new()
            .backoff(backoff(Duration::from_secs(60)))
            .connect(addr)
            .await
            .unwrap(),
    );
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    server.stop().await;
    until_closed(client.rpc_client()).await;
    assert!(matches!(
        client.add(1, 1).await.unwrap_err(),
        rpc::Error::Connect { .. }
    ));

    let err = client
        .with_timeout(Duration::from_millis(200))
        .add(1, 1)
        .await
        .unwrap_err();
    let rpc::Error::Unreachable {
        last_error, retry_in, ..
    } = &err
    else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(
        matches!(**last_error, rpc::Error::Connect { .. }),
        "{last_error:?}"
    );
    // Half the backoff at least, by its jitter: far past the deadline.
    assert!(*retry_in >= Duration::from_secs(29), "{retry_in:?}");
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("the next is due in"), "{message}");
    assert!(message.contains("after this call's deadline"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_running_when_the_grace_period_ends_are_told_and_idempotent_ones_move_on() {
    let holder = Arc::new(Holder::default());
    let first = serve(&holder, "127.0.0.1:0".parse().unwrap()).await;
    let addr = first.local_addr();
    let client = HoldClient::from_client(
        rpc::ClientBuilder::new()
            .backoff(backoff(Duration::ZERO))
            .connect(addr)
            .await
            .unwrap(),
    );
    let plain = tokio::spawn(client.hold());
    let idempotent = tokio::spawn(client.hold_idempotent());
    until_holding(&holder, 2).await;

    let shutdown = tokio::spawn(first.shutdown(Duration::from_millis(100)));
    // The listener closes at once: a successor can take the port while the
    // old server's grace period runs.
    let successor = Arc::new(Holder {
        answer: 7,
        ..Holder::default()
    });
    successor.gate.add_permits(1);
    let second = loop {
        match rpc::Server::new()
            .serve(HoldServer::new(Arc::clone(&successor)))
            .bind(addr)
            .await
        {
            Ok(server) => break server,
            Err(_) => tokio::task::yield_now().await,
        }
    };
    shutdown.await.unwrap();

    // The plain call may have partly run: its caller hears that the
    // shutdown interrupted it.
    let err = plain.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, rpc::Error::Disconnected { reason } if reason.contains("grace period")),
        "{err:?}"
    );
    // The idempotent one runs again, on the successor.
    assert_eq!(idempotent.await.unwrap().unwrap(), 7);
    assert_eq!(holder.holding.load(Ordering::SeqCst), 2);
    second.stop().await;
}
