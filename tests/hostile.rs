//! Black-box abuse over raw TCP: every kind of bad input gets its specific
//! answer, costs only its own connection, and never disturbs a well-behaved
//! client on another connection.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::ShapesClient;
use common::raw::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends `bytes` instead of a preface and expects only the server's own
/// preface, then the close. (A peer that sends nothing at all gets nothing:
/// the server speaks once the first byte says which protocol it is.)
async fn expect_refused_preface(addr: SocketAddr, name: &str, bytes: &[u8]) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    socket.shutdown().await.unwrap();
    let got = until_closed(&mut socket).await;
    let expected: &[u8] = if bytes.is_empty() {
        &[]
    } else {
        &SERVER_PREFACE_V3[..]
    };
    assert_eq!(&got[..], expected, "{name}");
}

/// Sends a request and expects an error answer with `code`, the connection
/// still serving afterwards.
async fn expect_answer(addr: SocketAddr, name: &str, bytes: &[u8], code: u8) {
    let mut socket = raw(addr).await;
    socket.write_all(bytes).await.unwrap();
    let (kind, _, payload) = read_frame(&mut socket).await;
    assert_eq!((kind, payload[0]), (3, code), "{name}: {payload:02x?}");
    socket.write_all(&add_2_3(1000)).await.unwrap();
    let (kind, id, payload) = read_frame(&mut socket).await;
    assert_eq!(
        (kind, id, &payload[..]),
        (2, 1000, &[0x0a][..]),
        "{name}: still serving"
    );
}

/// Sends a request and expects its response with `result`, the connection
/// still serving afterwards.
async fn expect_served(addr: SocketAddr, name: &str, bytes: &[u8], result: &[u8]) {
    let mut socket = raw(addr).await;
    socket.write_all(bytes).await.unwrap();
    let (kind, _, payload) = read_frame(&mut socket).await;
    assert_eq!((kind, &payload[..]), (2, result), "{name}: {payload:02x?}");
    socket.write_all(&add_2_3(1000)).await.unwrap();
    let (kind, id, _) = read_frame(&mut socket).await;
    assert_eq!((kind, id), (2, 1000), "{name}: still serving");
}

async fn abuse(addr: SocketAddr) {
    // The preface.
    expect_refused_preface(addr, "wrong magic", b"hello, world!!!!").await;
    expect_refused_preface(addr, "short preface", b"\x89RPC\r").await;
    expect_refused_preface(addr, "nothing at all", b"").await;
    let mut newer = *PREFACE;
    newer[8] = 9;
    expect_refused_preface(addr, "unsupported version", &newer).await;
    let mut tiny_limit = *PREFACE;
    tiny_limit[12..].copy_from_slice(&16u32.to_le_bytes());
    expect_refused_preface(addr, "a useless frame limit", &tiny_limit).await;

    // The frame header.
    let limit = 16 * 1024 * 1024;
    expect_notice(
        addr,
        "over the limit",
        &header(limit + 1, 1, 0, 0, 1),
        "exceeds the limit",
    )
    .await;
    expect_notice(addr, "4 GiB", &header(u32::MAX, 1, 0, 0, 1), "4294967295").await;
    expect_notice(addr, "unknown kind", &frame(200, 1, b""), "unknown kind 200").await;
    expect_notice(addr, "reserved kind", &frame(9, 1, b""), "reserved kind 9").await;
    expect_notice(
        addr,
        "bad flags",
        &header(0, 4, 0x80, 0, 1),
        "reserved bits in the flags",
    )
    .await;
    expect_notice(
        addr,
        "reserved bits",
        &header(0, 4, 0, 1, 1),
        "reserved bits in the header",
    )
    .await;
    expect_notice(addr, "request id 0", &add_2_3(0), "request id 0").await;

    // The request head.
    expect_notice(
        addr,
        "shorter than its head",
        &frame(1, 1, &[1, 2, 3]),
        "malformed request head",
    )
    .await;
    let not_utf8 = frame(1, 1, &request_payload(1000, b"\xff\xfe.x", &[]));
    expect_notice(addr, "name not UTF-8", &not_utf8, "not UTF-8").await;
    let overrun = frame(1, 1, &{
        let mut p = request_payload(1000, b"Shapes.add", &[]);
        p[8] = 200;
        p
    });
    expect_notice(addr, "name past the end", &overrun, "past the end").await;

    // Frames that make no sense where they are.
    expect_notice(addr, "cancel never sent", &frame(4, 77, b""), "never sent").await;
    let mut cancel_with_payload = add_2_3(1);
    cancel_with_payload.extend(frame(4, 1, b"junk"));
    expect_notice(
        addr,
        "cancel with payload",
        &cancel_with_payload,
        "cancel frames are empty",
    )
    .await;
    expect_notice(
        addr,
        "response from a client",
        &frame(2, 5, &[0x10]),
        "only a server may send",
    )
    .await;
    expect_notice(
        addr,
        "goodbye from a client",
        &frame(5, 0, &[0; 8]),
        "only a server may send",
    )
    .await;
    let mut reused = request(7, "Shapes.wait_for_release", &[1]);
    reused.extend(request(7, "Shapes.wait_for_release", &[2]));
    expect_notice(
        addr,
        "id reused in flight",
        &reused,
        "request id 7 after request id 7",
    )
    .await;
    let mut backwards = add_2_3(9);
    backwards.extend(add_2_3(8));
    expect_notice(addr, "ids out of order", &backwards, "must increase").await;

    // Bad calls: answered, and the connection goes on.
    expect_answer(addr, "not bincode", &request(1, "Shapes.add", &[0xff]), 3).await;
    expect_answer(addr, "trailing bytes", &request(1, "Shapes.add", &[4, 6, 8]), 3).await;
    expect_answer(addr, "too few arguments", &request(1, "Shapes.add", &[4]), 3).await;
    expect_answer(
        addr,
        "a lying string length",
        &request(1, "Shapes.greet", &[253, 0, 0, 0, 0, 0, 0, 0, 1]),
        3,
    )
    .await;
    // A budget already spent fails that call (deadline exceeded); "no
    // timeout" spelled as u64::MAX is capped by the server and served.
    let zero_budget = frame(1, 1, &request_payload(0, b"Shapes.add", &[4, 6]));
    expect_answer(addr, "zero budget", &zero_budget, 5).await;
    let endless = frame(1, 1, &request_payload(u64::MAX, b"Shapes.add", &[4, 6]));
    expect_served(addr, "endless budget", &endless, &[0x0a]).await;
    expect_answer(addr, "unknown service", &request(1, "Nope.add", &[]), 1).await;
    expect_answer(addr, "unknown method", &request(1, "Shapes.nope", &[]), 2).await;
    expect_answer(addr, "no service at all", &request(1, "add", &[]), 2).await;
}

async fn good_calls(client: &ShapesClient, count: i64) {
    for i in 0..count {
        assert_eq!(client.add(i, 7).await.unwrap(), i + 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_own_answer_and_good_clients_never_notice() {
    let (server, _, addr) = common::start().await;
    let good = ShapesClient::connect(addr).await.unwrap();
    let during = tokio::spawn({
        let good = good.clone();
        async move { good_calls(&good, 1000).await }
    });
    abuse(addr).await;
    during.await.unwrap();
    good_calls(&good, 1000).await;
    // Nothing leaked: only the good client's connection is left.
    while server.stats().open_connections != 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_cut_at_any_byte_closes_with_a_truncation_notice() {
    let (server, _, addr) = common::start().await;
    let good = ShapesClient::connect(addr).await.unwrap();
    let whole = add_2_3(1);
    for cut in 1..whole.len() {
        let mut socket = raw(addr).await;
        socket.write_all(&whole[..cut]).await.unwrap();
        socket.shutdown().await.unwrap();
        let got = until_closed(&mut socket).await;
        assert_eq!(got[4], 3, "cut at {cut}: an error frame");
        assert_eq!(got[16], 9, "cut at {cut}: code 9");
        let message = String::from_utf8_lossy(&got[17..]);
        assert!(message.contains("middle of a frame"), "cut at {cut}: {message}");
        assert_eq!(good.add(cut as i64, 1).await.unwrap(), cut as i64 + 1);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_are_closed_by_the_preface_timeout() {
    let (server, _, _) =
        common::start_with(|server| server.preface_timeout(Duration::from_millis(300))).await;
    let addr = server.local_addr();
    let mut silent = Vec::new();
    for _ in 0..1000 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let good = ShapesClient::connect(addr).await.unwrap();
    good_calls(&good, 100).await;
    for (i, socket) in silent.iter_mut().enumerate() {
        let got = until_closed(socket).await;
        // The server speaks once a peer's first byte says which protocol
        // it speaks; to a silent peer it says nothing.
        assert!(
            got.is_empty(),
            "connection {i}: closed without a word, got {got:02x?}"
        );
    }
    good_calls(&good, 100).await;
    assert_eq!(server.stats().open_connections, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_dribbles_in_is_cut_off_by_the_frame_timeout() {
    let (server, _, _) = common::start_with(|server| server.frame_timeout(Duration::from_millis(300))).await;
    let mut socket = raw(server.local_addr()).await;
    // Half a header, then nothing more.
    socket.write_all(&add_2_3(1)[..8]).await.unwrap();
    let got = until_closed(&mut socket).await;
    let message = String::from_utf8_lossy(&got[17..]);
    assert!(message.contains("to send one frame"), "{message}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_with_a_goodbye_and_the_client_redials() {
    let (server, _, _) = common::start_with(|server| server.idle_timeout(Duration::from_millis(200))).await;
    let client = ShapesClient::connect(server.local_addr()).await.unwrap();
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    while client.rpc_client().is_connected() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The goodbye said nothing was lost; the next call just redials.
    assert_eq!(client.add(2, 2).await.unwrap(), 4);

    let mut socket = raw(server.local_addr()).await;
    let got = until_closed(&mut socket).await;
    assert_eq!(&got[..16], &header(8, 5, 0, 0, 0)[..], "a goodbye frame");
    assert_eq!(&got[16..], &[0; 8], "having read no request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_new_clients_wait_for_a_place() {
    let (server, _, _) = common::start_with(|server| server.max_connections(2)).await;
    let addr = server.local_addr();
    let first = ShapesClient::connect(addr).await.unwrap();
    let second = ShapesClient::connect(addr).await.unwrap();
    assert_eq!(
        first.add(1, 1).await.unwrap() + second.add(1, 1).await.unwrap(),
        4
    );

    let third = tokio::spawn(async move {
        let client = ShapesClient::connect(addr).await.unwrap();
        client.add(3, 3).await.unwrap()
    });
    // The third is not served while the first two hold their places. (If
    // the limit were broken, it would have been served long before this.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished());
    assert_eq!(server.stats().open_connections, 2);

    drop(first);
    assert_eq!(third.await.unwrap(), 6);
    assert_eq!(second.add(2, 2).await.unwrap(), 4);
    server.stop().await;
}

/// Collects what the server logs, for the one test that checks a log line.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn with_json_off_an_http_client_is_refused_with_a_clear_log_line() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread, so every task logs through the subscriber set above.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (server, _, addr) = common::start_with(|server| server.json(false)).await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let got = until_closed(&mut socket).await;
        assert_eq!(
            &got[..],
            &SERVER_PREFACE_V3[..],
            "nothing but our preface goes back"
        );
        let good = ShapesClient::connect(addr).await.unwrap();
        assert_eq!(good.add(1, 1).await.unwrap(), 2);
        server.stop().await;
    });
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN") && logs.contains("an HTTP client connected to this rpc port; it was refused, as this server does not serve JSON-RPC"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_at_the_write_timeout() {
    let (server, _, addr) =
        common::start_with(|server| server.write_timeout(Duration::from_millis(200))).await;
    let mut socket = raw(addr).await;
    // Ask for far more than the socket buffers hold, and never read it.
    for id in 1..=12u64 {
        let len = 1024 * 1024u64;
        let mut args = vec![253];
        args.extend(len.to_le_bytes());
        socket
            .write_all(&request(id, "Shapes.sized", &args))
            .await
            .unwrap();
    }
    while server.stats().open_connections > 0 {
        tokio::task::yield_now().await;
    }
    // The server let go of every call on it, and serves others.
    while server.stats().calls_in_progress > 0 {
        tokio::task::yield_now().await;
    }
    let good = ShapesClient::connect(addr).await.unwrap();
    assert_eq!(good.add(1, 2).await.unwrap(), 3);
    drop(socket);
    server.stop().await;
}
