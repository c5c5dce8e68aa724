//! Call semantics over real TCP: deadlines that travel, cancellation,
//! limits, graceful shutdown and reconnection.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "common/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// A service whose handlers report what happened to them.
#[rpc::service]
pub trait Lab {
    /// Sleeps, then marks itself finished.
    async fn sleep(&self, millis: u64) -> u64;
    /// Waits at the gate, then marks itself finished.
    async fn gated(&self, tag: u32) -> u32;
    /// Waits at the gate and runs to completion even if its caller leaves.
    #[rpc(no_cancel)]
    async fn must_finish(&self) -> u32;
    /// Waits at the gate; may run twice.
    #[rpc(idempotent)]
    async fn idempotent_gated(&self) -> u32;
    /// The call's remaining budget, in microseconds.
    async fn remaining(&self) -> u64;
    /// What the handler knows of its call.
    async fn whoami(&self) -> (u64, String, Option<SocketAddr>);
    /// A big answer, to fill a slow reader's socket.
    async fn blob(&self, len: u64) -> Vec<u8>;
    /// Sleeps, under a default deadline of its own.
    #[rpc(timeout = "150ms")]
    async fn hurried(&self, millis: u64) -> u64;
}

pub struct LabImpl {
    gate: Semaphore,
    /// Handlers that reached the gate (or their sleep).
    waiting: AtomicUsize,
    /// Handlers that ran to their end.
    finished: AtomicUsize,
    /// Handlers stopped before their end.
    dropped: AtomicUsize,
    /// Calls of `idempotent_gated` started.
    idempotent_runs: AtomicUsize,
}

impl Default for LabImpl {
    fn default() -> Self {
        LabImpl {
            gate: Semaphore::new(0),
            waiting: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            idempotent_runs: AtomicUsize::new(0),
        }
    }
}

/// Counts the handler as dropped unless it was disarmed at its end.
struct Watch<'a>(&'a LabImpl, bool);

impl Watch<'_> {
    fn done(mut self) {
        self.1 = true;
        self.0.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl LabImpl {
    async fn pass_gate(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
    }
}

impl Lab for Arc<LabImpl> {
    async fn sleep(&self, millis: u64) -> u64 {
        let watch = Watch(self, false);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        watch.done();
        millis
    }
    async fn gated(&self, tag: u32) -> u32 {
        let watch = Watch(self, false);
        self.pass_gate().await;
        watch.done();
        tag
    }
    async fn must_finish(&self) -> u32 {
        let watch = Watch(self, false);
        self.pass_gate().await;
        watch.done();
        1
    }
    async fn idempotent_gated(&self) -> u32 {
        let run = self.idempotent_runs.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        self.pass_gate().await;
        run
    }
    async fn remaining(&self) -> u64 {
        rpc::Context::current().unwrap().remaining().as_micros() as u64
    }
    async fn whoami(&self) -> (u64, String, Option<SocketAddr>) {
        let ctx = rpc::Context::current().unwrap();
        (ctx.request_id(), ctx.method().to_owned(), ctx.peer_addr())
    }
    async fn blob(&self, len: u64) -> Vec<u8> {
        vec![1; len as usize]
    }
    async fn hurried(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }
}

async fn serve(server: rpc::Server) -> (rpc::ServerHandle, Arc<LabImpl>) {
    let lab = Arc::new(LabImpl::default());
    let handle = server
        .serve(LabServer::new(Arc::clone(&lab)))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (handle, lab)
}

async fn start(server: rpc::Server) -> (rpc::ServerHandle, Arc<LabImpl>, LabClient) {
    let (handle, lab) = serve(server).await;
    let client = LabClient::connect(handle.local_addr()).await.unwrap();
    (handle, lab, client)
}

/// A server, and a client of it that keeps at most `max_in_flight` calls
/// in flight.
async fn capped(max_in_flight: usize) -> (rpc::ServerHandle, Arc<LabImpl>, LabClient) {
    let (handle, lab) = serve(rpc::Server::new()).await;
    let client = LabClient::from_client(
        rpc::ClientBuilder::new()
            .max_in_flight(max_in_flight)
            .connect(handle.local_addr())
            .await
            .unwrap(),
    );
    (handle, lab, client)
}

/// Waits until `counter` reaches `at_least`. The time limit only turns a
/// regression into a failure instead of a hung CI run; it decides nothing.
async fn until(counter: &AtomicUsize, at_least: usize) {
    let reached = async {
        while counter.load(Ordering::SeqCst) < at_least {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .is_err()
    {
        panic!(
            "the counter stayed at {} (wanted {at_least})",
            counter.load(Ordering::SeqCst)
        );
    }
}

/// Waits until `condition` holds, with the same safety limit as [`until`].
async fn until_true(what: &str, condition: impl Fn() -> bool) {
    let reached = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .is_err()
    {
        panic!("gave up waiting until {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_fails_close_to_it_and_its_handler_is_stopped() {
    let (server, lab, client) = start(rpc::Server::new()).await;
    let started = Instant::now();
    let err = client
        .with_timeout(Duration::from_millis(200))
        .sleep(10_000)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, rpc::Error::DeadlineExceeded { timeout } if timeout == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    until(&lab.dropped, 1).await;
    assert_eq!(lab.finished.load(Ordering::SeqCst), 0);
    server.stop().await;
}

/// A server that reads requests and never answers: only the client's own
/// deadline can end a call, and the frames it sends are there to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_cannot_outlast_the_clients_deadline_and_hears_the_cancel() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // (kind, id) of every frame the server reads.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 16];
        socket.read_exact(&mut preface).await.unwrap();
        socket.write_all(raw::SERVER_PREFACE_V3).await.unwrap();
        loop {
            let (kind, id, _) = raw::read_frame(&mut socket).await;
            if seen_tx.send((kind, id)).is_err() {
                return;
            }
        }
    });
    let mut next_frame = async || {
        tokio::time::timeout(Duration::from_secs(30), seen.recv())
            .await
            .expect("the silent server should have read another frame")
            .unwrap()
    };
    let client = LabClient::connect(addr).await.unwrap();
    // An hour-long call first, so the short one must pull the client's
    // deadline sweep forward rather than find it already due.
    let long = tokio::spawn({
        let client = client.clone();
        async move { client.with_timeout(Duration::from_secs(3600)).gated(1).await }
    });
    assert_eq!(next_frame().await, (1, 1), "the long request");
    let hurried = client.with_timeout(Duration::from_millis(100));
    let err = tokio::time::timeout(Duration::from_secs(30), hurried.gated(2))
        .await
        .expect("the short call must end at its own deadline")
        .unwrap_err();
    assert!(
        matches!(err, rpc::Error::DeadlineExceeded { timeout } if timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    assert_eq!(next_frame().await, (1, 2), "the short request");
    assert_eq!(next_frame().await, (4, 2), "the short call's cancel");
    assert!(!long.is_finished(), "the hour-long call is still waiting");
    long.abort();
    assert_eq!(next_frame().await, (4, 1), "the abandoned call's cancel");
}

/// A raw `Lab.gated` request `id`, with a budget of `budget_micros`.
fn gated_request(id: u64, budget_micros: u64) -> Vec<u8> {
    raw::frame(
        1,
        id,
        &raw::request_payload(budget_micros, b"Lab.gated", &[id as u8]),
    )
}

/// The server side of the same: one request with an hour's budget, then
/// one with 100 ms, both parked at the gate. The server's deadline sweep,
/// armed for the hour, must be pulled forward; the short call is stopped
/// and answered `DeadlineExceeded` while the long one keeps waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_and_answers_a_call_at_its_deadline_while_a_longer_one_waits() {
    let (server, lab) = serve(rpc::Server::new()).await;
    let mut socket = raw::raw(server.local_addr()).await;
    socket.write_all(&gated_request(1, 3_600_000_000)).await.unwrap();
    until(&lab.waiting, 1).await;
    socket.write_all(&gated_request(2, 100_000)).await.unwrap();
    let (kind, id, payload) = tokio::time::timeout(Duration::from_secs(30), raw::read_frame(&mut socket))
        .await
        .expect("the short call must be answered at its deadline");
    assert_eq!((kind, id), (3, 2), "an error frame for the short call");
    assert_eq!(payload[0], 5, "code 5, deadline exceeded");
    let message = String::from_utf8_lossy(&payload[1..]);
    assert!(
        message.contains("Lab.gated") && message.contains("time budget"),
        "{message}"
    );
    until(&lab.dropped, 1).await;
    assert_eq!(lab.finished.load(Ordering::SeqCst), 0);
    // The short call's place is freed once its answer is written, which
    // can be just after we read it.
    until_true("only the long call is in progress", || {
        server.stats().calls_in_progress == 1
    })
    .await;
    // Its handler is still there to be released and answered.
    lab.gate.add_permits(1);
    let (kind, id, payload) = raw::read_frame(&mut socket).await;
    assert_eq!((kind, id, payload), (2, 1, vec![1]));
    server.stop().await;
}

/// A request that waits in the server's queue past its caller's deadline
/// is answered `DeadlineExceeded` when its turn comes, and never runs. The
/// raw client sends no cancel: the case of a cancel still on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_deadline_passes_in_the_servers_queue_is_answered_and_never_run() {
    let (server, lab) = serve(rpc::Server::new().max_calls_per_connection(1)).await;
    let mut socket = raw::raw(server.local_addr()).await;
    socket.write_all(&gated_request(1, 3_600_000_000)).await.unwrap();
    until(&lab.waiting, 1).await;
    socket.write_all(&gated_request(2, 100_000)).await.unwrap();
    until_true("the second request is read, and queued", || {
        server.stats().requests_received == 2
    })
    .await;
    // Past its 100 ms by any clock: this sets the scene, and decides nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lab.gate.add_permits(2);
    assert_eq!(raw::read_frame(&mut socket).await, (2, 1, vec![1]));
    let (kind, id, payload) = raw::read_frame(&mut socket).await;
    assert_eq!((kind, id), (3, 2), "an error frame for the late call");
    assert_eq!(payload[0], 5, "code 5, deadline exceeded");
    assert_eq!(lab.waiting.load(Ordering::SeqCst), 1, "the late call never ran");
    assert_eq!(lab.finished.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// A connection that breaks the protocol ends its calls: the running ones
/// are stopped and the queued one dropped, and each is counted once, as
/// cancelled, so the server's outcomes add up to the requests it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ended_with_their_connection_are_each_counted_once() {
    // Two run, and one waits in a queue that holds two: not full, so the
    // server goes on reading.
    let (server, lab) = serve(rpc::Server::new().max_calls_per_connection(2)).await;
    let mut socket = raw::raw(server.local_addr()).await;
    for id in 1..=3 {
        socket.write_all(&gated_request(id, 3_600_000_000)).await.unwrap();
    }
    until(&lab.waiting, 2).await;
    until_true("the third request is read, and queued", || {
        server.stats().requests_received == 3
    })
    .await;
    // A cancel for a request never sent breaks the protocol.
    socket.write_all(&raw::frame(4, 99, &[])).await.unwrap();
    until(&lab.dropped, 2).await;
    let ended = || {
        let stats = server.stats();
        stats.calls_succeeded
            + stats.calls_failed
            + stats.handler_panics
            + stats.deadlines_exceeded
            + stats.calls_cancelled
    };
    until_true("every call is counted", || ended() == 3).await;
    assert_eq!(server.stats().calls_cancelled, 3, "{:?}", server.stats());
    assert_eq!(lab.waiting.load(Ordering::SeqCst), 2, "the queued call never ran");
    server.stop().await;
}

/// A `no_cancel` call its caller gives up on (at its deadline, or by
/// dropping it) still runs on the server, so it keeps its place on the
/// client until its answer comes: the next call waits on the client, not in
/// the server's queue, where it would be one call more than the client
/// counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cancel_call_given_up_on_keeps_its_place_until_the_server_answers() {
    let (server, lab) = serve(rpc::Server::new().max_calls_per_connection(1)).await;
    let client = LabClient::connect(server.local_addr()).await.unwrap();

    // Given up on at its deadline.
    let err = client
        .with_timeout(Duration::from_millis(100))
        .must_finish()
        .await
        .unwrap_err();
    assert!(matches!(err, rpc::Error::DeadlineExceeded { .. }), "{err:?}");
    until(&lab.waiting, 1).await;
    let next = next_waits_for_the_place(&client, &server, 7, 1).await;
    lab.gate.add_permits(2);
    assert_eq!(next.await.unwrap().unwrap(), 7);

    // Given up on by dropping it.
    let dropped = tokio::time::timeout(Duration::from_millis(100), client.must_finish()).await;
    assert!(dropped.is_err(), "the call waits at the gate");
    until(&lab.waiting, 3).await;
    let next = next_waits_for_the_place(&client, &server, 8, 3).await;
    lab.gate.add_permits(2);
    assert_eq!(next.await.unwrap().unwrap(), 8);
    assert_eq!(
        lab.finished.load(Ordering::SeqCst),
        4,
        "both no_cancel calls ran to their end"
    );
    server.stop().await;
}

/// Starts `gated(tag)`, and waits until it waits on the client for a
/// place, the server having read `read` requests.
async fn next_waits_for_the_place(
    client: &LabClient,
    server: &rpc::ServerHandle,
    tag: u32,
    read: u64,
) -> tokio::task::JoinHandle<Result<u32, rpc::Error>> {
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.gated(tag).await }
    });
    until_true("the next call waits on the client", || {
        client.rpc_client().endpoints()[0].queued == 1
    })
    .await;
    assert_eq!(
        server.stats().requests_received,
        read,
        "the next call stayed on the client"
    );
    next
}

/// B's handler waits, then asks C how much budget it has.
#[rpc::service]
pub trait Middle {
    async fn ask_downstream(&self, wait_millis: u64) -> u64;
}

struct MiddleImpl {
    downstream: LabClient,
}

impl Middle for MiddleImpl {
    async fn ask_downstream(&self, wait_millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(wait_millis)).await;
        // Asks for far more time than the caller has left.
        self.downstream
            .with_timeout(Duration::from_secs(60))
            .remaining()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_calls_never_outlives_the_first_callers_deadline() {
    let (c_server, _, c_client) = start(rpc::Server::new()).await;
    let b_server = rpc::Server::new()
        .serve(MiddleServer::new(MiddleImpl { downstream: c_client }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let b = MiddleClient::connect(b_server.local_addr()).await.unwrap();

    // A gives 2 s; B spends at least 300 ms before calling C.
    let c_remaining = b
        .with_timeout(Duration::from_secs(2))
        .ask_downstream(300)
        .await
        .unwrap();
    let c_remaining = Duration::from_micros(c_remaining);
    // Relative budgets gain the transit time per hop; without inheritance
    // C would see about 60 s, so a generous slack still proves the point.
    let slack = Duration::from_millis(500);
    assert!(
        c_remaining <= Duration::from_millis(1700) + slack,
        "{c_remaining:?}"
    );
    assert!(c_remaining > Duration::ZERO);
    b_server.stop().await;
    c_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_the_budget_a_client_asks_for() {
    let (server, _, client) = start(rpc::Server::new().max_budget(Duration::from_secs(1))).await;
    let remaining = client
        .with_timeout(Duration::from_secs(3600))
        .remaining()
        .await
        .unwrap();
    assert!(Duration::from_micros(remaining) <= Duration::from_secs(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_knows_its_request_id_method_and_peer() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let (first, method, peer) = client.whoami().await.unwrap();
    let (second, _, _) = client.whoami().await.unwrap();
    assert_eq!(method, "Lab.whoami");
    assert!(second > first);
    assert!(peer.unwrap().ip().is_loopback());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_stops_its_server_handler() {
    let (server, lab, client) = start(rpc::Server::new()).await;
    // An hour's deadline: only the cancel can stop the handler in time.
    let call = tokio::spawn({
        let client = client.with_timeout(Duration::from_secs(3600));
        async move { client.gated(1).await }
    });
    until(&lab.waiting, 1).await;
    call.abort();
    until(&lab.dropped, 1).await;
    lab.gate.add_permits(1);
    assert_eq!(lab.finished.load(Ordering::SeqCst), 0);
    // The connection is still good.
    assert_eq!(client.sleep(0).await.unwrap(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_cancel_handler_completes_after_its_caller_left() {
    let (server, lab, client) = start(rpc::Server::new()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.must_finish().await }
    });
    until(&lab.waiting, 1).await;
    call.abort();
    // A cancellable call dropped after it on the same connection is
    // stopped: cancels are handled in order, so the first one was seen.
    let later = tokio::spawn({
        let client = client.with_timeout(Duration::from_secs(3600));
        async move { client.gated(2).await }
    });
    until(&lab.waiting, 2).await;
    later.abort();
    until(&lab.dropped, 1).await;
    // Its caller is gone, its cancel was read; the handler still finishes.
    lab.gate.add_permits(1);
    until(&lab.finished, 1).await;
    assert_eq!(lab.dropped.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_every_accepted_call_then_refuses_new_ones() {
    let (server, lab, client) = start(rpc::Server::new()).await;
    let calls: Vec<_> = (0..100u32)
        .map(|tag| {
            let client = client.clone();
            tokio::spawn(async move { client.gated(tag).await })
        })
        .collect();
    until(&lab.waiting, 100).await;

    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(60)));
    // The goodbye arrives: the client stops using that connection.
    until_true("the goodbye arrived", || !client.rpc_client().is_connected()).await;
    lab.gate.add_permits(100);
    for (tag, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), tag as u32);
    }
    shutdown.await.unwrap();

    let err = client.gated(0).await.unwrap_err();
    assert!(
        matches!(err, rpc::Error::Connect { .. } | rpc::Error::ShuttingDown),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reached_without_building_a_new_client() {
    let lab = Arc::new(LabImpl::default());
    let serve = || rpc::Server::new().serve(LabServer::new(Arc::clone(&lab)));
    let first = serve().bind("127.0.0.1:0").await.unwrap();
    let addr = first.local_addr();
    let client = LabClient::from_client(
        rpc::ClientBuilder::new()
            .backoff(rpc::Backoff {
                initial: Duration::ZERO,
                max: Duration::ZERO,
            })
            .connect(addr)
            .await
            .unwrap(),
    );
    assert_eq!(client.sleep(1).await.unwrap(), 1);

    first.stop().await;
    until_true("the client saw the loss", || client.rpc_client().is_closed()).await;
    // Down: a clear error, at once.
    let err = client.sleep(2).await.unwrap_err();
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err:?}");

    let second = serve().bind(addr).await.unwrap();
    for millis in 3..10 {
        assert_eq!(client.sleep(millis).await.unwrap(), millis);
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_calls_in_flight_but_retries_idempotent_ones_once() {
    let (server, lab) = serve(rpc::Server::new()).await;
    let proxy = proxy::Proxy::start(server.local_addr()).await;
    let client = LabClient::connect(proxy.addr).await.unwrap();

    let plain = tokio::spawn({
        let client = client.clone();
        async move { client.gated(5).await }
    });
    let retried = tokio::spawn({
        let client = client.clone();
        async move { client.idempotent_gated().await }
    });
    until(&lab.waiting, 2).await;
    proxy.cut();

    // Not idempotent: the caller hears that the connection was lost.
    let err = plain.await.unwrap().unwrap_err();
    assert!(matches!(err, rpc::Error::Disconnected { .. }), "{err:?}");
    // Idempotent: run again on a fresh connection, and that answer counts.
    until(&lab.idempotent_runs, 2).await;
    lab.gate.add_permits(3);
    assert_eq!(retried.await.unwrap().unwrap(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_callers_wait_for_a_place_under_the_clients_in_flight_cap() {
    let (server, lab, client) = capped(4).await;
    let calls: Vec<_> = (0..20u32)
        .map(|tag| {
            let client = client.clone();
            tokio::spawn(async move { client.gated(tag).await })
        })
        .collect();
    until(&lab.waiting, 4).await;
    // Four are on the server; the other sixteen never left the client.
    assert_eq!(server.stats().requests_received, 4);
    lab.gate.add_permits(20);
    for (tag, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), tag as u32);
    }
    assert_eq!(server.stats().requests_received, 20);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_for_a_place_gives_up_at_its_deadline_and_the_others_keep_their_turn() {
    let (server, lab, client) = capped(1).await;
    let first = tokio::spawn({
        let client = client.with_timeout(Duration::from_secs(3600));
        async move { client.gated(1).await }
    });
    until(&lab.waiting, 1).await;
    // Behind it, one caller that waits long and one that does not.
    let patient = tokio::spawn({
        let client = client.with_timeout(Duration::from_secs(3600));
        async move { client.gated(2).await }
    });
    let hurried = client.with_timeout(Duration::from_millis(100));
    let err = tokio::time::timeout(Duration::from_secs(30), hurried.gated(3))
        .await
        .expect("a caller waiting for a place must give up at its deadline")
        .unwrap_err();
    assert!(
        matches!(err, rpc::Error::DeadlineExceeded { timeout } if timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    // It never left the client; the patient one still has its turn.
    assert_eq!(server.stats().requests_received, 1);
    lab.gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(patient.await.unwrap().unwrap(), 2);
    assert_eq!(server.stats().requests_received, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_waited_for_a_place_leaves_with_the_time_its_caller_has_left_then() {
    const TIMEOUT: Duration = Duration::from_secs(10);
    const HELD: Duration = Duration::from_millis(300);
    let (server, lab, client) = capped(1).await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    until(&lab.waiting, 1).await;
    let queued = tokio::spawn({
        let client = client.with_timeout(TIMEOUT);
        async move { client.remaining().await }
    });
    until_true("the call waits for the place", || {
        client.rpc_client().endpoints()[0].queued == 1
    })
    .await;
    // It waits at least this long; the server must see its budget less
    // that much (encoded when it was called, it would see about all 10 s).
    tokio::time::sleep(HELD).await;
    lab.gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let remaining = Duration::from_micros(queued.await.unwrap().unwrap());
    assert!(remaining <= TIMEOUT - HELD, "{remaining:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_giving_up_at_random_past_the_cap_leave_no_place_taken_nor_request_queued() {
    let (server, _lab, client) = capped(2).await;
    // Calls end every way at once, on both threads: answered, given up
    // while queued, given up while sent, answered after their caller left.
    let callers: Vec<_> = (0..32u64)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                // From no patience to 20 ms: on this machine about a third
                // of the calls are answered.
                for call in 0..50u64 {
                    let patience = Duration::from_micros((caller * 7 + call * 13) % 40 * 500);
                    if let Ok(result) = tokio::time::timeout(patience, client.sleep(0)).await {
                        assert_eq!(result.unwrap(), 0);
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    until_true("every place is free and nothing is queued", || {
        let stats = &client.rpc_client().endpoints()[0];
        stats.in_flight == 0 && stats.queued == 0
    })
    .await;
    // And the connection still takes calls, up to its cap.
    let last: Vec<_> = (0..4).map(|_| client.sleep(0)).collect();
    for result in futures::future::join_all(last).await {
        assert_eq!(result.unwrap(), 0);
    }
    server.stop().await;
}

/// A request frame for `Lab.blob(len)`, written by hand.
fn blob_request(id: u64, len: u64) -> Vec<u8> {
    let mut args = vec![252];
    args.extend_from_slice(&(len as u32).to_le_bytes());
    raw::request(id, "Lab.blob", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_make_the_server_queue_past_its_cap() {
    const CAP: usize = 16;
    const CALLS: u64 = 2_000;
    const BLOB: u64 = 16 * 1024;
    let (server, _, good) = start(rpc::Server::new().max_calls_per_connection(CAP)).await;

    let raw = raw::raw(server.local_addr()).await;
    let (mut rx, mut tx) = raw.into_split();
    // 2 000 requests whose answers (32 MiB) dwarf any socket buffer.
    let flood = tokio::spawn(async move {
        for id in 1..=CALLS {
            tx.write_all(&blob_request(id, BLOB)).await.unwrap();
        }
        tx
    });

    // The server fills its cap, and then can go no further.
    while server.stats().calls_in_progress < CAP {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(server.stats().peak_calls_in_progress, CAP);
    // Other clients are served meanwhile.
    assert_eq!(good.sleep(0).await.unwrap(), 0);

    // Now read everything: every call is answered, and the peak held.
    let mut answered = 0u64;
    let mut header = [0u8; 16];
    while answered < CALLS {
        rx.read_exact(&mut header).await.unwrap();
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        assert_eq!(header[4], 2, "a response");
        let mut payload = vec![0u8; len];
        rx.read_exact(&mut payload).await.unwrap();
        answered += 1;
    }
    let _tx = flood.await.unwrap();
    let stats = server.stats();
    // The cap, plus the one call of the good client on its own connection.
    assert!(stats.peak_calls_in_progress <= CAP + 1, "{stats:?}");
    assert!(stats.requests_received >= CALLS);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_held_back_at_a_goodbye_run_on_the_next_server() {
    const CAP: usize = 10;
    const CALLS: u32 = 30;
    let (old, old_lab) = serve(rpc::Server::new().max_calls_per_connection(CAP)).await;
    let (new, new_lab) = serve(rpc::Server::new()).await;
    new_lab.gate.add_permits(CALLS as usize);
    let proxy = proxy::Proxy::start(old.local_addr()).await;
    let client = LabClient::connect(proxy.addr).await.unwrap();

    let calls: Vec<_> = (0..CALLS)
        .map(|tag| {
            let client = client.clone();
            tokio::spawn(async move { client.gated(tag).await })
        })
        .collect();
    // The old server runs its cap's worth and queues all but one of as
    // many again. It announced that cap, so the client keeps the rest back
    // rather than sending them.
    until(&old_lab.waiting, CAP).await;
    until_true("the old server read all it queues", || {
        old.stats().requests_received == 2 * CAP as u64 - 1
    })
    .await;
    proxy.retarget(new.local_addr());
    let shutdown = tokio::spawn(old.shutdown(Duration::from_secs(60)));
    // At the goodbye, the calls held back and those the old server queued
    // (which never ran) leave for the new server, while the ones it
    // started still run there; those finish where they started.
    until(&new_lab.finished, CALLS as usize - CAP).await;
    assert_eq!(old_lab.finished.load(Ordering::SeqCst), 0);
    old_lab.gate.add_permits(CAP);
    for (tag, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), tag as u32);
    }
    shutdown.await.unwrap();
    assert_eq!(old_lab.finished.load(Ordering::SeqCst), CAP, "nothing ran twice");
    assert_eq!(new_lab.finished.load(Ordering::SeqCst), CALLS as usize - CAP);
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_way_to_redial_unread_calls_fail_with_shutting_down() {
    const CAP: usize = 4;
    let (server, lab) = serve(rpc::Server::new().max_calls_per_connection(CAP)).await;
    let socket = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let client = LabClient::from_client(rpc::ClientBuilder::new().connect_io(socket).await.unwrap());
    let calls: Vec<_> = (0..10u32)
        .map(|tag| {
            let client = client.clone();
            tokio::spawn(async move { client.gated(tag).await })
        })
        .collect();
    until(&lab.waiting, CAP).await;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(60)));
    until_true("the goodbye arrived", || !client.rpc_client().is_connected()).await;
    lab.gate.add_permits(CAP);
    let mut answered = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(rpc::Error::ShuttingDown) => {}
            Err(other) => panic!("expected ShuttingDown, got {other:?}"),
        }
    }
    assert_eq!(answered, CAP);
    shutdown.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_can_carry_its_own_default_deadline() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let err = client.hurried(10_000).await.unwrap_err();
    assert!(
        matches!(err, rpc::Error::DeadlineExceeded { timeout } if timeout == Duration::from_millis(150)),
        "{err:?}"
    );
    // An explicit deadline still wins.
    assert_eq!(
        client
            .with_timeout(Duration::from_secs(10))
            .hurried(300)
            .await
            .unwrap(),
        300
    );
    server.stop().await;
}
