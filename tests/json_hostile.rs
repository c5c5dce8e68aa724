//! Hostile JSON callers, over real sockets: each abuse gets its documented
//! answer, costs only its own connection, and the binary side and other
//! JSON callers go on being served.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::ShapesClient;
use common::json::{Http, Ws};
use futures::{SinkExt, StreamExt};
use rpc::json::codes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Fails a test that hangs. Never reached when the code is right.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}

/// A Rust client, an HTTP caller and a WebSocket caller all get answers.
async fn still_serving(addr: SocketAddr) {
    within(async {
        let rust = ShapesClient::connect(addr).await.unwrap();
        assert_eq!(rust.add(20, 22).await.unwrap(), 42);
        let mut http = Http::connect(addr).await;
        let answer = http
            .call(json!({"id": 1, "method": "add", "params": [1, 2]}))
            .await;
        assert_eq!(answer["result"], 3, "{answer}");
        let mut ws = Ws::connect(addr).await;
        let answer = ws.call(json!({"id": 2, "method": "add", "params": [2, 2]})).await;
        assert_eq!(answer["result"], 4, "{answer}");
        ws.close().await;
    })
    .await;
}

/// Sends raw bytes and reads everything until the server closes.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    until_closed(&mut socket).await
}

async fn until_closed(socket: &mut TcpStream) -> String {
    let mut got = Vec::new();
    within(async {
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The JSON body of a raw HTTP response.
fn body_of(response: &str) -> Value {
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    let (server, _, addr) = common::start().await;
    let deep = "[".repeat(100_000);
    let balanced = format!("{deep}{}", "]".repeat(100_000));
    let mut http = Http::connect(addr).await;
    let answer = http.post(deep.clone()).await.json();
    assert_eq!(answer["error"]["code"], codes::PARSE_ERROR, "{answer}");
    // Well formed, it is a batch of one request that is not an object.
    let answer = http.post(balanced.clone()).await.json();
    assert_eq!(answer[0]["error"]["code"], codes::INVALID_REQUEST, "{answer}");
    // Deep inside params, as the argument of a real method.
    let params = format!(r#"{{"id": 1, "method": "promote", "params": [{balanced}]}}"#);
    let answer = http.post(params).await.json();
    assert_eq!(answer["error"]["code"], codes::INVALID_PARAMS, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("`user`"),
        "{answer}"
    );
    // Nesting under the parser's limit but past the server's `max_nesting`
    // names the setting.
    let (strict, _, strict_addr) = common::start_with(|server| server.max_nesting(8)).await;
    let mut http_strict = Http::connect(strict_addr).await;
    let nested = format!("{}{}", "[".repeat(20), "]".repeat(20));
    let answer = http_strict
        .post(format!(
            r#"{{"id": 1, "method": "Kinds.nested", "params": [{nested}]}}"#
        ))
        .await
        .json();
    // `Kinds` is not served here: a method that takes nested arguments is.
    assert_eq!(answer["error"]["code"], codes::METHOD_NOT_FOUND, "{answer}");
    let user = format!(
        r#"{{"id": 1, "method": "promote", "params": [{{"id": 1, "name": "a", "tags": [], "manager": {}}}]}}"#,
        (0..20).fold("null".to_owned(), |inner, _| format!(
            r#"{{"id": 1, "name": "a", "tags": [], "manager": {inner}}}"#
        ))
    );
    let answer = http_strict.post(user).await.json();
    assert_eq!(answer["error"]["code"], codes::INVALID_PARAMS, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_nesting"),
        "{answer}"
    );
    strict.stop().await;

    // Over a WebSocket too; the socket goes on.
    let mut ws = Ws::connect(addr).await;
    ws.send(deep).await;
    let answer = within(ws.next()).await.unwrap();
    assert_eq!(answer["error"]["code"], codes::PARSE_ERROR, "{answer}");
    let answer = ws.call(json!({"id": 2, "method": "add", "params": [1, 1]})).await;
    assert_eq!(answer["result"], 2);
    still_serving(addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_too_large_is_refused_before_it_is_read() {
    let (server, _, addr) = common::start().await;
    let response = raw_exchange(
        addr,
        b"POST /rpc HTTP/1.1\r\nHost: rpc\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{\"id\":",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.to_lowercase().contains("connection: close"),
        "{response}"
    );
    let answer = body_of(&response);
    assert_eq!(answer["error"]["code"], codes::INVALID_REQUEST, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1073741824") && message.contains("16777216"),
        "{message}"
    );
    still_serving(addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_declared_or_chunked_past_the_limit_is_cut_off() {
    let (server, _, addr) = common::start_with(|server| server.max_frame_len(16 * 1024)).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"POST /rpc HTTP/1.1\r\nHost: rpc\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // 4 KiB chunks, with no end, until the server answers.
    let chunk = format!("1000\r\n{}\r\n", " ".repeat(4096));
    for _ in 0..8 {
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let response = until_closed(&mut socket).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        body_of(&response)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16384")
    );
    still_serving(addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_and_headers_that_never_end_time_out() {
    let (server, _, addr) =
        common::start_with(|server| server.http_timeout(Duration::from_millis(200))).await;
    // The body stops after 10 of its 1000 bytes.
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(b"POST /rpc HTTP/1.1\r\nHost: rpc\r\nContent-Length: 1000\r\n\r\n{\"id\": 1, ")
        .await
        .unwrap();
    // The headers stop partway.
    let mut headers = TcpStream::connect(addr).await.unwrap();
    headers
        .write_all(b"POST /rpc HTTP/1.1\r\nHost: rp")
        .await
        .unwrap();
    // Others are served meanwhile.
    still_serving(addr).await;
    let response = until_closed(&mut body).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        body_of(&response)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("200ms")
    );
    // hyper closes a connection whose headers do not arrive in time.
    let response = until_closed(&mut headers).await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_limit_are_refused_whole_and_one_at_the_limit_runs() {
    let (server, _, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    let batch = |len: usize| {
        let calls: Vec<Value> = (0..len)
            .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "add", "params": [i, 1]}))
            .collect();
        Value::Array(calls).to_string()
    };
    for len in [10_000, 100_000] {
        let answer = within(http.post(batch(len))).await.json();
        assert_eq!(answer["error"]["code"], codes::INVALID_REQUEST, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&len.to_string()) && message.contains("1000"),
            "{message}"
        );
    }
    assert_eq!(
        server.stats().requests_received,
        0,
        "no part of a refused batch runs"
    );
    let answers = within(http.post(batch(1000))).await.json();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 1000);
    for answer in answers {
        assert_eq!(answer["result"], answer["id"].as_u64().unwrap() + 1, "{answer}");
    }
    // Over a WebSocket the same.
    let mut ws = Ws::connect(addr).await;
    ws.send(batch(10_000)).await;
    let answer = within(ws.next()).await.unwrap();
    assert_eq!(answer["error"]["code"], codes::INVALID_REQUEST, "{answer}");
    still_serving(addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_message_over_the_limit_closes_only_that_socket() {
    let (server, _, addr) = common::start_with(|server| server.max_frame_len(16 * 1024)).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/rpc"), stream)
        .await
        .unwrap();
    let huge = format!(
        r#"{{"id": 1, "method": "greet", "params": ["{}"]}}"#,
        "x".repeat(32 * 1024)
    );
    let _ = socket.send(Message::text(huge)).await;
    let closed = within(async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    if let Some(frame) = closed {
        assert_eq!(u16::from(frame.code), 1009, "message too big: {frame:?}");
    }
    still_serving(addr).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_quite_http_gets_a_400_and_a_closed_connection() {
    let (server, _, addr) = common::start().await;
    let response = raw_exchange(addr, b"HELLO THERE\r\n\r\n").await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 400"),
        "{response}"
    );
    let response = raw_exchange(
        addr,
        b"GET /rpc HTTP/1.1\r\nHost: rpc\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("Sec-WebSocket"), "{response}");
    let response = raw_exchange(
        addr,
        b"DELETE /rpc HTTP/1.1\r\nHost: rpc\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    still_serving(addr).await;
    server.stop().await;
}

/// Raises this process's open-file limit as far as it may go; returns it.
fn raise_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_silent_sockets_do_not_lock_callers_out() {
    // Client and server ends live in this one process.
    let limit = raise_file_limit();
    let (sockets, max_connections) = if limit >= 16_000 {
        (10_000, rpc::DEFAULT_MAX_CONNECTIONS)
    } else {
        // A smaller machine: the same shape, scaled to its limit.
        let sockets = (limit as usize / 2).saturating_sub(200);
        eprintln!("open-file limit {limit}: opening {sockets} sockets instead of 10 000");
        (sockets, sockets * 2 / 5)
    };
    let (server, _, addr) = common::start_with(|server| server.max_connections(max_connections)).await;
    let mut silent = Vec::with_capacity(sockets);
    within(async {
        for _ in 0..sockets {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
    })
    .await;
    // Every caller still gets in: each new connection closes the oldest
    // silent one.
    still_serving(addr).await;
    let stats = server.stats();
    assert!(stats.open_connections <= max_connections, "{stats:?}");
    // The oldest silent sockets were closed to make room (the accept queue
    // is first in, first out), and the newest are still open.
    let needed = sockets - max_connections;
    within(async {
        let mut buf = [0u8; 1];
        for socket in &mut silent[..needed] {
            let read = socket.read(&mut buf).await;
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "an old silent socket was left open: {read:?}"
            );
        }
    })
    .await;
    let mut buf = [0u8; 1];
    for socket in &silent[needed + 8..] {
        let read = socket.try_read(&mut buf);
        assert!(
            matches!(&read, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
            "a newer silent socket was closed: {read:?}"
        );
    }
    drop(silent);
    still_serving(addr).await;
    server.stop().await;
}

/// Set for the child process that serves with few file descriptors.
const FEW_DESCRIPTORS: &str = "RPC_TEST_SERVE_WITH_FEW_DESCRIPTORS";

/// The server runs in a child process of its own (this test binary again),
/// so that lowering its open-file limit affects no other test.
#[test]
fn a_server_out_of_file_descriptors_closes_silent_connections_to_make_room() {
    if std::env::var_os(FEW_DESCRIPTORS).is_some() {
        serve_with_few_descriptors();
        return;
    }
    raise_file_limit();
    let name = "a_server_out_of_file_descriptors_closes_silent_connections_to_make_room";
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(FEW_DESCRIPTORS, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let addr: SocketAddr = loop {
        let line = lines.next().expect("the child's address").unwrap();
        // The harness may have begun the line ("test name ... ").
        if let Some((_, addr)) = line.split_once("serving on ") {
            break addr.trim().parse().unwrap();
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Far more silent sockets than the server has descriptors, though
        // fewer than its connection limit (4096).
        let mut silent = Vec::new();
        for _ in 0..400 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        still_serving(addr).await;
        drop(silent);
    });
    let _ = child.kill();
    let _ = child.wait();
}

fn serve_with_few_descriptors() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, 128, hard).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Silent connections are never closed for being silent: only the
        // server's need for their descriptors closes them.
        let (server, _, addr) =
            common::start_with(|server| server.preface_timeout(Duration::from_secs(3600))).await;
        println!("serving on {addr}");
        // Until the parent is done with us (it kills us, or closes stdin).
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
        server.stop().await;
    });
}
