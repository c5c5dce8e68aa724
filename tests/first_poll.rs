//! A call's first poll runs in its connection's task; a method that once
//! computed for long before its first await is spawned from then on, so
//! it no longer holds up the other calls on its connection (and is tried
//! in place again now and then, in case the machine was to blame); and
//! answers given in the connection's task leave before a long burst of
//! them ends.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::failing::{Fails, FailsAt};
use common::held::{self, Hold};
use common::raw::{raw, read_frame, request};
use tokio::io::AsyncWriteExt;

#[rpc::service]
pub trait Work {
    /// Computes (spins) for `millis` without awaiting.
    async fn spin(&self, millis: u64) -> u64;
    /// Answers at once.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Computes for `millis`, then names the task it ran in.
    async fn whose(&self, millis: u64) -> String;
    /// Yields once, then answers: it waits, so it gets a task.
    async fn nap(&self) -> u64;
    /// Answers at once, and runs to its end whatever its caller does: it
    /// gets a task of its own from the start.
    #[rpc(no_cancel)]
    async fn keep(&self) -> u64;
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

    async fn whose(&self, millis: u64) -> String {
        let until = Instant::now() + Duration::from_millis(millis);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        format!("{:?}", tokio::task::try_id())
    }

    async fn nap(&self) -> u64 {
        tokio::task::yield_now().await;
        7
    }

    async fn keep(&self) -> u64 {
        9
    }
}

/// A server of `Worker` with default settings, and a client of it.
async fn serve(spinning: Arc<AtomicBool>) -> (rpc::ServerHandle, WorkClient) {
    let server = rpc::Server::new()
        .serve(WorkServer::new(Worker { spinning }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = WorkClient::connect(server.local_addr()).await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_that_computes_before_awaiting_is_spawned_once_seen() {
    let spinning = Arc::new(AtomicBool::new(false));
    let (server, client) = serve(Arc::clone(&spinning)).await;
    // The first spins run their first polls in the connection's task: the
    // first makes the method a suspect, and three slow ones in a row after
    // it mark it.
    for _ in 0..4 {
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

/// A method marked slow by a stall is not spawned for good: one call in
/// 256 gets its first poll in the connection's task again, and if that is
/// fast the mark goes. Where a call ran tells it: calls answered in the
/// connection's task share its task; spawned ones each have their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_marked_slow_is_tried_in_place_again_and_unmarked_if_fast() {
    let (server, client) = serve(Arc::new(AtomicBool::new(false))).await;
    for _ in 0..4 {
        client.whose(5).await.unwrap();
    }
    // Marked: 255 calls in tasks of their own before the first trial.
    let mut tasks = Vec::new();
    for _ in 0..255 {
        tasks.push(client.whose(0).await.unwrap());
    }
    let mut distinct = tasks.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 255, "each spawned call has a task of its own");
    // The trial is fast, and from it on calls run in the connection's
    // task. (A trial the machine stalled would be slow; the next comes 512
    // calls later: three are allowed for.)
    let mut in_place = Vec::new();
    for _ in 0..(1 + 512 + 1024 + 10) {
        let task = client.whose(0).await.unwrap();
        in_place.push(task);
        if in_place.len() >= 10
            && in_place
                .iter()
                .rev()
                .take(10)
                .all(|task| *task == in_place[in_place.len() - 1])
        {
            break;
        }
    }
    let last = in_place.last().unwrap();
    assert!(
        in_place.iter().rev().take(10).all(|task| task == last),
        "no trial cleared the mark: {:?}",
        &in_place[in_place.len() - 10..]
    );
    assert!(
        !tasks.contains(last),
        "the connection's task served none of the spawned calls"
    );
    server.stop().await;
}

#[rpc::service]
pub trait Steps {
    /// Answers `n`; step `HELD` first waits, holding its thread, until the
    /// test says it may go on.
    async fn step(&self, n: u64) -> u64;
}

/// The step that waits for the client to have read an answer.
const HELD: u64 = 40;

struct Stepper {
    /// Where the held step waits for the client to have read an answer.
    hold: Hold,
}

impl Steps for Stepper {
    async fn step(&self, n: u64) -> u64 {
        if n == HELD {
            // Its writer can run no more until this returns.
            self.hold.wait();
        }
        n
    }
}

/// A current-thread server's one thread runs the connection's writer only
/// when the connection's task waits: a burst of requests answered in place
/// must let the first answers go before the whole burst is worked through,
/// or a client with 64 calls in flight sits idle while the server works.
#[tokio::test]
async fn a_current_thread_server_sends_the_first_answers_of_a_burst_before_its_end() {
    let (hold, release) = held::hold();
    let server = held::on_its_thread(move || async move {
        rpc::Server::new()
            .serve(StepsServer::new(Stepper { hold }))
            .bind("127.0.0.1:0")
            .await
            .unwrap()
    })
    .await;
    let mut socket = raw(server.addr).await;
    // 64 requests in one write: one burst for the server.
    let mut burst = Vec::new();
    for n in 1..=64u64 {
        burst.extend(request(n, "Steps.step", &[u8::try_from(n).unwrap()]));
    }
    socket.write_all(&burst).await.unwrap();
    let (kind, id, payload) = read_frame(&mut socket).await;
    assert_eq!((kind, payload), (2, vec![u8::try_from(id).unwrap()]));
    assert!(
        id < HELD,
        "the first answer to arrive is one before the held step"
    );
    release.release();
    let mut answered = vec![id];
    while answered.len() < 64 {
        let (kind, id, payload) = read_frame(&mut socket).await;
        assert_eq!((kind, payload), (2, vec![u8::try_from(id).unwrap()]));
        answered.push(id);
    }
    answered.sort_unstable();
    assert_eq!(answered, (1..=64).collect::<Vec<_>>());
    assert!(
        release.was_released(),
        "the held step was let go by its timeout: no answer left before it"
    );
    server.stop();
}

/// A call whose first poll panics outside its handler is answered as a
/// panicked handler's would be, and the connection goes on.
#[tokio::test]
async fn a_panic_outside_the_handler_in_a_first_poll_is_answered() {
    let (server, client) = serve(Arc::new(AtomicBool::new(false))).await;
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    // This runtime's one thread runs both sides: the subscriber is theirs.
    {
        let _guard = tracing::subscriber::set_default(Fails::at(FailsAt::ServerSpan));
        match client.add(1, 2).await {
            Err(rpc::Error::HandlerPanicked { message, .. }) => {
                assert!(message.contains("the subscriber failed"), "{message}");
            }
            other => panic!("expected the call to be answered as panicked, got {other:?}"),
        }
    }
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    let stats = server.stats();
    assert_eq!(
        (
            stats.requests_received,
            stats.calls_succeeded,
            stats.handler_panics
        ),
        (3, 2, 1),
        "{stats:?}"
    );
    server.stop().await;
}

/// Calls `call` (which answers `value`) three times, the second under a
/// subscriber that fails `at` its point: that call must be answered as a
/// panicked handler's would be (its task would otherwise take the answer
/// with it, and the caller wait for its deadline), the others as usual,
/// and the panic counted once.
async fn answered_as_panicked<F, Fut>(at: FailsAt, value: u64, call: F)
where
    F: Fn(WorkClient) -> Fut,
    Fut: std::future::Future<Output = Result<u64, rpc::Error>>,
{
    let (server, client) = serve(Arc::new(AtomicBool::new(false))).await;
    assert_eq!(call(client.clone()).await.unwrap(), value);
    {
        // This runtime's one thread runs both sides and the call's task.
        let _guard = tracing::subscriber::set_default(Fails::at(at));
        let answered = tokio::time::timeout(Duration::from_secs(60), call(client.clone()))
            .await
            .expect("the call was not answered");
        match answered {
            Err(rpc::Error::HandlerPanicked { message, .. }) => {
                assert!(message.contains("the subscriber failed"), "{message}");
            }
            other => panic!("expected the call to be answered as panicked, got {other:?}"),
        }
    }
    assert_eq!(call(client).await.unwrap(), value);
    let stats = server.stats();
    assert_eq!((stats.calls_succeeded, stats.handler_panics), (2, 1), "{stats:?}");
    server.stop().await;
}

/// A call that waited, in a task of its own, and then panics outside its
/// handler is answered as panicked, and counted once.
#[tokio::test]
async fn a_panic_outside_the_handler_in_a_later_poll_is_answered() {
    answered_as_panicked(
        FailsAt::SecondEntry,
        7,
        |client| async move { client.nap().await },
    )
    .await;
}

/// A call that runs to its end whatever its caller does, in a task of its
/// own from the start, and panics outside its handler there, is answered
/// as panicked, and counted once.
#[tokio::test]
async fn a_panic_outside_the_handler_of_a_call_run_to_its_end_is_answered() {
    answered_as_panicked(
        FailsAt::ServerSpan,
        9,
        |client| async move { client.keep().await },
    )
    .await;
}

/// A subscriber that panics at the event of a call's end leaves the call
/// as it ended: answered with its value (which a retry must not repeat),
/// counted once.
#[tokio::test]
async fn a_panic_watching_a_calls_end_leaves_the_call_as_it_ended() {
    let (server, client) = serve(Arc::new(AtomicBool::new(false))).await;
    let subscriber = Fails::at(FailsAt::CallEnd);
    {
        let _guard = tracing::subscriber::set_default(subscriber.clone());
        // In place, and in a task of its own.
        assert_eq!(client.add(1, 2).await.unwrap(), 3);
        assert_eq!(client.nap().await.unwrap(), 7);
    }
    assert_eq!(
        subscriber.failed.load(Ordering::SeqCst),
        2,
        "the subscriber failed at each call's end"
    );
    let stats = server.stats();
    assert_eq!((stats.calls_succeeded, stats.handler_panics), (2, 0), "{stats:?}");
    server.stop().await;
}
