//! Streaming calls over real TCP: server, client and bidirectional streams,
//! flow control, cancellation, errors, deadlines and hostile stream frames.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::raw::{expect_notice, frame, raw, read_frame, request};
use futures::StreamExt;
use rpc::{Bytes, Streaming};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

#[rpc::service]
pub trait Streams {
    /// 0, 1, ... n-1.
    async fn count(&self, n: u64) -> Streaming<u64>;
    /// Like `count`, noting each item the handler's stream produces.
    async fn produce(&self, n: u64) -> Streaming<u64>;
    /// Total length and checksum of the chunks.
    async fn upload(&self, chunks: Streaming<Bytes>) -> (u64, u64);
    /// Each message back, uppercased.
    async fn echo(&self, incoming: Streaming<String>) -> Streaming<String>;
    /// Numbers until the caller goes away.
    async fn forever(&self) -> Streaming<u64>;
    /// `n` numbers, then an error.
    async fn fail_after(&self, n: u64) -> Streaming<u64>;
    /// Waits at the gate without reading its input.
    async fn hold(&self, numbers: Streaming<u64>) -> u64;
    /// An ordinary call.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Reads its input to the end and notes how that end came.
    async fn note_end(&self, numbers: Streaming<u64>) -> u64;
}

pub struct StreamsImpl {
    /// 1 once `note_end` saw its input end cleanly, 2 once it saw it break.
    input_end: AtomicUsize,
    produced: AtomicU64,
    forever_dropped: AtomicUsize,
    gate: Semaphore,
}

impl Default for StreamsImpl {
    fn default() -> Self {
        StreamsImpl {
            input_end: AtomicUsize::new(0),
            produced: AtomicU64::new(0),
            forever_dropped: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        }
    }
}

/// Counts when the handler's stream is dropped.
struct DropCount(Arc<StreamsImpl>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.forever_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn checksum(chunk: &[u8], acc: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(chunk);
    acc.rotate_left(7) ^ hasher.finish()
}

impl Streams for Arc<StreamsImpl> {
    async fn count(&self, n: u64) -> Streaming<u64> {
        Streaming::iter(0..n)
    }
    async fn produce(&self, n: u64) -> Streaming<u64> {
        let this = Arc::clone(self);
        Streaming::new(futures::stream::iter(0..n).inspect(move |_| {
            this.produced.fetch_add(1, Ordering::SeqCst);
        }))
    }
    async fn upload(&self, chunks: Streaming<Bytes>) -> (u64, u64) {
        let mut chunks = chunks;
        let (mut len, mut sum) = (0u64, 0u64);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.unwrap();
            len += chunk.len() as u64;
            sum = checksum(&chunk, sum);
        }
        (len, sum)
    }
    async fn echo(&self, incoming: Streaming<String>) -> Streaming<String> {
        Streaming::from_results(incoming.map(|message| message.map(|m| m.to_uppercase())))
    }
    async fn forever(&self) -> Streaming<u64> {
        let guard = DropCount(Arc::clone(self));
        Streaming::new(futures::stream::iter(0u64..).map(move |n| {
            let _ = &guard;
            n
        }))
    }
    async fn fail_after(&self, n: u64) -> Streaming<u64> {
        Streaming::from_results(
            futures::stream::iter(0..n)
                .map(Ok)
                .chain(futures::stream::once(async {
                    Err(rpc::Error::failed("out of numbers"))
                })),
        )
    }
    async fn hold(&self, _numbers: Streaming<u64>) -> u64 {
        self.gate.acquire().await.unwrap().forget();
        0
    }
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn note_end(&self, mut numbers: Streaming<u64>) -> u64 {
        let mut count = 0;
        while let Some(item) = numbers.next().await {
            match item {
                Ok(_) => count += 1,
                Err(_) => {
                    self.input_end.store(2, Ordering::SeqCst);
                    return count;
                }
            }
        }
        self.input_end.store(1, Ordering::SeqCst);
        count
    }
}

async fn start(server: rpc::Server) -> (rpc::ServerHandle, Arc<StreamsImpl>, StreamsClient) {
    let streams = Arc::new(StreamsImpl::default());
    let handle = server
        .serve(StreamsServer::new(Arc::clone(&streams)))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = StreamsClient::connect(handle.local_addr()).await.unwrap();
    (handle, streams, client)
}

/// Waits until `condition` holds; the limit only turns a regression into a
/// failure instead of a hang.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let reached = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting until {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_items_arrive_complete_and_in_order() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let mut items = client.with_timeout(Duration::from_secs(300)).count(1_000_000);
    let mut expected = 0u64;
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, 1_000_000);
    assert_eq!(server.stats().stream_items_sent, 1_000_000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_holds_the_producer_to_the_window_and_other_calls_go_on() {
    let (server, streams, client) = start(rpc::Server::new()).await;
    let window = u64::from(rpc::STREAM_WINDOW);
    let mut items = client.produce(500);
    let mut consumed = 0u64;
    for _ in 0..5 {
        items.next().await.unwrap().unwrap();
        consumed += 1;
    }
    // The consumer stops. The producer fills the window and no more: the
    // server pulls an item only when it has credit for it.
    until("the window fills", || {
        streams.produced.load(Ordering::SeqCst) >= window
    })
    .await;
    for i in 0..100 {
        assert_eq!(
            client.add(i, 1).await.unwrap(),
            i + 1,
            "unary calls go on meanwhile"
        );
    }
    assert!(streams.produced.load(Ordering::SeqCst) - consumed <= window);
    // No credit was granted yet (that comes after 16 consumed): exactly the
    // window was produced, not one item more.
    assert_eq!(streams.produced.load(Ordering::SeqCst), window);

    // A slow consumer from here on: the gap never exceeds the window.
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap(), consumed);
        consumed += 1;
        let produced = streams.produced.load(Ordering::SeqCst);
        assert!(
            produced - consumed <= window,
            "{produced} produced, {consumed} consumed"
        );
        if consumed.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(consumed, 500);
    assert!(server.stats().peak_stream_items_in_flight <= window);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mebibytes_upload_with_a_matching_checksum() {
    let (server, _, client) = start(rpc::Server::new()).await;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1600;
    let patterns: Vec<Bytes> = (0..16u8)
        .map(|p| {
            Bytes::from(
                (0..CHUNK)
                    .map(|i| (i as u8).wrapping_mul(31) ^ p)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    let chunks: Vec<Bytes> = (0..CHUNKS).map(|i| patterns[(i * 7) % 16].clone()).collect();
    let expected = chunks.iter().fold(0, |acc, chunk| checksum(chunk, acc));

    let (len, sum) = client
        .with_timeout(Duration::from_secs(300))
        .upload(futures::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(len, (CHUNK * CHUNKS) as u64);
    assert_eq!(sum, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_echo_of_ten_thousand_messages_each_way() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let outgoing = futures::stream::iter(0..10_000u64).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        format!("message {i}")
    });
    let mut replies = client.with_timeout(Duration::from_secs(120)).echo(outgoing);
    let mut received = 0u64;
    let mut interleaved = false;
    while let Some(reply) = replies.next().await {
        assert_eq!(reply.unwrap(), format!("MESSAGE {received}"));
        received += 1;
        // Replies arrive while the client is still sending.
        interleaved |= sent.load(Ordering::SeqCst) < 10_000;
    }
    assert_eq!(received, 10_000);
    assert!(interleaved, "the echo should interleave with the sending");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_client_stream_stops_the_server_handler() {
    let (server, streams, client) = start(rpc::Server::new()).await;
    let mut numbers = client.with_timeout(Duration::from_secs(3600)).forever();
    for expected in 0..3 {
        assert_eq!(numbers.next().await.unwrap().unwrap(), expected);
    }
    drop(numbers);
    until("the handler's stream is dropped", || {
        streams.forever_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(client.add(2, 2).await.unwrap(), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_wait_for_a_place_in_line_with_other_calls_and_run_when_one_frees() {
    let (server, streams) = {
        let (server, streams, _) = start(rpc::Server::new()).await;
        (server, streams)
    };
    let client = StreamsClient::from_client(
        rpc::ClientBuilder::new()
            .max_in_flight(1)
            .connect(server.local_addr())
            .await
            .unwrap(),
    );
    let client = client.with_timeout(Duration::from_secs(3600));
    // The one place, held by a stream that never ends.
    let mut forever = client.forever();
    assert_eq!(forever.next().await.unwrap().unwrap(), 0);
    // Behind it, a stream and a call: neither leaves the client.
    let counting = tokio::spawn({
        let client = client.clone();
        async move { client.count(3).map(Result::unwrap).collect::<Vec<u64>>().await }
    });
    let adding = tokio::spawn({
        let client = client.clone();
        async move { client.add(2, 3).await.unwrap() }
    });
    // A stream the client sends: nothing of it may leave before its
    // request (the server would take items for an unknown call for a
    // violation, and close the connection).
    let uploading = tokio::spawn({
        let client = client.clone();
        let chunks = (0..100u8).map(|i| Bytes::from(vec![i; 1000]));
        async move { client.upload(futures::stream::iter(chunks)).await.unwrap() }
    });
    until("all three wait for the place", || {
        client.rpc_client().endpoints()[0].queued == 3
    })
    .await;
    assert_eq!(server.stats().requests_received, 1);
    assert!(!counting.is_finished() && !adding.is_finished() && !uploading.is_finished());
    // The place comes free: they run in turn.
    drop(forever);
    assert_eq!(counting.await.unwrap(), vec![0, 1, 2]);
    assert_eq!(adding.await.unwrap(), 5);
    assert_eq!(uploading.await.unwrap().0, 100_000);
    assert_eq!(server.stats().requests_received, 4);
    until("the handler's stream is dropped", || {
        streams.forever_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_mid_stream_is_the_last_item_the_client_sees() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let items: Vec<_> = client.fail_after(3).collect().await;
    assert_eq!(items.len(), 4);
    for (i, item) in items[..3].iter().enumerate() {
        assert_eq!(*item.as_ref().unwrap(), i as u64);
    }
    match &items[3] {
        Err(rpc::Error::Failed { message }) => assert_eq!(message, "out of numbers"),
        other => panic!("expected Failed, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_covers_the_whole_stream() {
    let (server, streams, client) = start(rpc::Server::new()).await;
    let mut numbers = client.with_timeout(Duration::from_millis(300)).forever();
    let mut last = None;
    while let Some(item) = numbers.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(rpc::Error::DeadlineExceeded { .. }))),
        "{last:?}"
    );
    until("the handler's stream is dropped", || {
        streams.forever_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_at_shutdown_ends_with_a_clear_error_after_the_grace_period() {
    let (server, streams, client) = start(rpc::Server::new()).await;
    let mut numbers = client.with_timeout(Duration::from_secs(3600)).forever();
    numbers.next().await.unwrap().unwrap();
    let shutdown = tokio::spawn(server.shutdown(Duration::from_millis(200)));
    let mut last = None;
    while let Some(item) = numbers.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(rpc::Error::Disconnected { .. }))),
        "{last:?}"
    );
    shutdown.await.unwrap();
    until("the handler's stream is dropped", || {
        streams.forever_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// `Streams.count(3)` by hand.
fn count_3(id: u64) -> Vec<u8> {
    request(id, "Streams.count", &[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_frames_close_only_their_connection() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let addr = server.local_addr();
    let item = |id: u64| frame(6, id, &[1]);
    let end = |id: u64| frame(7, id, &[]);
    let credit = |id: u64, n: u32| frame(8, id, &n.to_le_bytes());

    expect_notice(addr, "item for an id never sent", &item(9), "has no stream").await;
    expect_notice(
        addr,
        "credit for an id never sent",
        &credit(9, 1),
        "has no stream",
    )
    .await;
    // A call that takes no stream, surely still running (it never ends).
    let mut to_running_unary = request(1, "Streams.forever", &[]);
    to_running_unary.extend(item(1));
    expect_notice(
        addr,
        "item for a call that takes no stream",
        &to_running_unary,
        "has no stream",
    )
    .await;
    // A stream that never ends, so the credit surely reaches a live call.
    let mut credit_overflow = request(1, "Streams.forever", &[]);
    credit_overflow.extend(credit(1, u32::MAX));
    expect_notice(addr, "credit overflow", &credit_overflow, "more than the").await;
    let mut zero_credit = count_3(1);
    zero_credit.extend(frame(8, 1, &0u32.to_le_bytes()));
    expect_notice(addr, "zero credit", &zero_credit, "not a nonzero 4-byte count").await;
    let mut short_credit = count_3(1);
    short_credit.extend(frame(8, 1, &[1, 0]));
    expect_notice(addr, "short credit", &short_credit, "not a nonzero 4-byte count").await;
    let mut after_end = request(1, "Streams.hold", &[]);
    after_end.extend(end(1));
    after_end.extend(item(1));
    expect_notice(addr, "item after end", &after_end, "after ending it").await;
    let mut no_credit = request(1, "Streams.hold", &[]);
    for _ in 0..=rpc::STREAM_WINDOW {
        no_credit.extend(item(1));
    }
    expect_notice(addr, "items beyond credit", &no_credit, "must wait for credit").await;

    // Frames for a stream that has finished are normal (they cross on the
    // wire) and ignored.
    let mut socket = raw(addr).await;
    socket.write_all(&count_3(1)).await.unwrap();
    for expected in [6u8, 6, 6, 7] {
        assert_eq!(read_frame(&mut socket).await.0, expected);
    }
    socket.write_all(&credit(1, 5)).await.unwrap();
    socket
        .write_all(&request(2, "Streams.add", &[1, 2]))
        .await
        .unwrap();
    let (kind, id, payload) = read_frame(&mut socket).await;
    assert_eq!((kind, id, payload), (2, 2, vec![3]));

    assert_eq!(client.add(40, 2).await.unwrap(), 42, "good clients never notice");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finite_stream_open_at_a_graceful_shutdown_completes() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let mut numbers = client.count(1000);
    for expected in 0..10 {
        assert_eq!(numbers.next().await.unwrap().unwrap(), expected);
    }
    // The draining server still reads the credit this stream needs.
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(60)));
    let mut expected = 10;
    while let Some(n) = numbers.next().await {
        assert_eq!(n.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, 1000);
    shutdown.await.unwrap();
}

/// The client keeps all but one of the server's queue filled. A stream
/// dropped there must be cancelled before its place goes to a request
/// waiting on the client: the other way round, the server would read the
/// request first, find its queue full and stop reading, and the cancel and
/// the credit of the streams still running would never reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_cancelled_before_its_place_goes_to_the_next_request() {
    let (server, streams) = {
        let (server, streams, _) = start(rpc::Server::new().max_calls_per_connection(2)).await;
        (server, streams)
    };
    let client = StreamsClient::connect(server.local_addr()).await.unwrap();
    let client = client.with_timeout(Duration::from_secs(3600));
    // The server's two places, held by streams that never end.
    let mut dropped = client.forever();
    assert_eq!(dropped.next().await.unwrap().unwrap(), 0);
    let mut kept = client.forever();
    assert_eq!(kept.next().await.unwrap().unwrap(), 0);
    let counting = |client: StreamsClient| {
        tokio::spawn(async move { client.count(3).map(Result::unwrap).collect::<Vec<u64>>().await })
    };
    // One more waits in the server's queue (the client's third place) ...
    let queued_there = counting(client.clone());
    until("the server has read three requests", || {
        server.stats().requests_received == 3
    })
    .await;
    // ... and one on the client.
    let queued_here = counting(client.clone());
    until("a request waits on the client", || {
        client.rpc_client().endpoints()[0].queued == 1
    })
    .await;
    drop(dropped);
    // The stream still running needs the server to read its credit.
    for expected in 1..1000 {
        let item = tokio::time::timeout(Duration::from_secs(30), kept.next())
            .await
            .expect("the server stopped reading: a stream waits for credit");
        assert_eq!(item.unwrap().unwrap(), expected);
    }
    assert_eq!(queued_there.await.unwrap(), vec![0, 1, 2]);
    assert_eq!(queued_here.await.unwrap(), vec![0, 1, 2]);
    drop(kept);
    until("both never-ending handlers are dropped", || {
        streams.forever_dropped.load(Ordering::SeqCst) == 2
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_streams_than_the_servers_cap_share_one_connection_without_deadlock() {
    // Four run; the client sends three more, which wait in the server's
    // queue. One less than that queue holds, so the server goes on reading
    // the credit the running streams need (a client that filled the queue
    // would stall them all).
    let (server, _, client) = start(rpc::Server::new().max_calls_per_connection(4)).await;
    let streams: Vec<_> = (0..12u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut numbers = client.count(200 + i);
                let mut n = 0;
                while let Some(item) = numbers.next().await {
                    assert_eq!(item.unwrap(), n);
                    n += 1;
                    if n % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                n
            })
        })
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        assert_eq!(stream.await.unwrap(), 200 + i as u64);
    }
    assert!(server.stats().peak_calls_in_progress <= 4);
    server.stop().await;
}

/// A service the server does not have, whose method takes a stream.
#[rpc::service]
pub trait Missing {
    async fn swallow(&self, numbers: Streaming<u64>) -> u64;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sent_to_a_missing_method_is_refused_and_the_connection_goes_on() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let missing = MissingClient::from_client(client.rpc_client().clone());
    let err = missing
        .swallow(futures::stream::iter(0..1000u64))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, rpc::Error::UnknownService { service } if service == "Missing"),
        "{err:?}"
    );
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_that_panics_fails_its_call_instead_of_hanging() {
    let (server, _, client) = start(rpc::Server::new()).await;
    let chunks = futures::stream::iter(0..10u32).map(|i| {
        assert!(i < 3, "the source broke");
        Bytes::from_static(b"chunk")
    });
    let err = client
        .with_timeout(Duration::from_secs(3600))
        .upload(chunks)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, rpc::Error::Failed { message } if message.contains("panicked")),
        "{err:?}"
    );
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_can_tell_a_finished_input_from_one_that_broke_off() {
    let (server, streams, client) = start(rpc::Server::new()).await;
    assert_eq!(client.note_end(futures::stream::iter(0..5u64)).await.unwrap(), 5);
    assert_eq!(streams.input_end.load(Ordering::SeqCst), 1, "a clean end");

    // A client that goes away in the middle of its stream: a request, two
    // items, and the connection closes without an end frame.
    let mut socket = raw(server.local_addr()).await;
    let mut frames = request(1, "Streams.note_end", &[]);
    frames.extend(frame(6, 1, &[7]));
    frames.extend(frame(6, 1, &[8]));
    socket.write_all(&frames).await.unwrap();
    until("the handler is reading", || server.stats().calls_in_progress == 1).await;
    drop(socket);
    until("the handler saw its input break off", || {
        streams.input_end.load(Ordering::SeqCst) == 2
    })
    .await;
    server.stop().await;
}
