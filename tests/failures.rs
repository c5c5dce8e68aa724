//! Each failure gives its own error, and the server keeps serving.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{EchoClient, ShapesClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The service as an old server knows it.
mod v1 {
    #[rpc::service]
    pub trait Store {
        async fn get(&self, key: String) -> Option<String>;
        async fn put(&self, key: String, value: String);
    }
}

/// The same service one release later: reordered, one method added, and
/// `get` changed incompatibly.
mod v2 {
    #[rpc::service]
    pub trait Store {
        async fn put(&self, key: String, value: String);
        async fn rename(&self, from: String, to: String) -> bool;
        async fn get(&self, key: u64) -> Option<String>;
    }
}

struct OldStore;

impl v1::Store for OldStore {
    async fn get(&self, key: String) -> Option<String> {
        (key == "k").then(|| "v".to_owned())
    }
    async fn put(&self, _key: String, _value: String) {}
}

async fn old_store_server() -> rpc::ServerHandle {
    rpc::Server::new()
        .serve(v1::StoreServer::new(OldStore))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_client_reaches_an_older_server_and_learns_which_method_is_missing() {
    let server = old_store_server().await;
    let client = v2::StoreClient::connect(server.local_addr()).await.unwrap();

    // Reordering methods changes nothing on the wire.
    client.put("k".to_owned(), "v".to_owned()).await.unwrap();

    let err = client.rename("a".to_owned(), "b".to_owned()).await.unwrap_err();
    assert!(
        matches!(&err, rpc::Error::UnknownMethod { method } if method == "Store.rename"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`Store.rename`"), "{err}");

    // A changed method is refused, by its fingerprint, before it is decoded.
    let err = client.get(5).await.unwrap_err();
    assert!(
        matches!(&err, rpc::Error::IncompatibleMethod { method, difference }
            if method == "Store.get" && difference == "argument `key`: the client has u64, the server has String"),
        "{err:?}"
    );

    // The connection is still good.
    client.put("x".to_owned(), "y".to_owned()).await.unwrap();
    let old = v1::StoreClient::from_client(client.rpc_client().clone());
    assert_eq!(old.get("k".to_owned()).await.unwrap(), Some("v".to_owned()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_server_lacks_is_named_in_the_error() {
    let server = old_store_server().await;
    let echo = EchoClient::connect(server.local_addr()).await.unwrap();
    let err = echo.echo("hi".to_owned()).await.unwrap_err();
    assert!(
        matches!(&err, rpc::Error::UnknownService { service } if service == "Echo"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`Echo`"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_with_an_error_and_the_server_keeps_serving() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::connect(addr).await.unwrap();
    for round in 0..20 {
        let err = client.explode(format!("boom {round}")).await.unwrap_err();
        match err {
            rpc::Error::HandlerPanicked { method, message } => {
                assert_eq!(method, "Shapes.explode");
                assert_eq!(message, format!("boom {round}"));
            }
            other => panic!("expected HandlerPanicked, got {other:?}"),
        }
        assert_eq!(client.add(round, 1).await.unwrap(), round + 1);
    }
    let other = ShapesClient::connect(addr).await.unwrap();
    assert_eq!(other.answer().await.unwrap(), 42);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_fail_with_disconnected_when_the_server_goes_away() {
    let (server, shapes, addr) = common::start().await;
    // A deadline far beyond the test: only the disconnect can end these calls.
    let client = ShapesClient::from_client(
        rpc::ClientBuilder::new()
            .timeout(Duration::from_secs(3600))
            .connect(addr)
            .await
            .unwrap(),
    );
    let in_flight: Vec<_> = (0..50)
        .map(|tag| {
            let client = client.clone();
            tokio::spawn(async move { client.wait_for_release(tag).await })
        })
        .collect();
    common::until_waiting(&shapes, 50).await;

    server.stop().await;
    for call in in_flight {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, rpc::Error::Disconnected { .. }), "{err:?}");
    }
    assert!(client.rpc_client().is_closed());
    // The next call redials, and says plainly that nobody answers.
    let err = client.add(1, 1).await.unwrap_err();
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_servers_limit_is_refused_before_sending() {
    let (server, _, _) = common::start_with(|server| server.max_frame_len(64 * 1024)).await;
    let client = ShapesClient::connect(server.local_addr()).await.unwrap();

    let err = client.reverse(vec![0; 100_000]).await.unwrap_err();
    match &err {
        rpc::Error::FrameTooLarge { limit, side, .. } => {
            assert_eq!(*limit, 64 * 1024);
            assert_eq!(*side, "server");
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("65536") && message.contains("Server::max_frame_len"),
        "{message}"
    );

    // Just under the limit still goes through, on the same connection.
    assert_eq!(client.reverse(vec![1; 60_000]).await.unwrap().len(), 60_000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_clients_limit_comes_back_as_an_error() {
    let (server, _, addr) = common::start().await;
    let client = ShapesClient::from_client(
        rpc::ClientBuilder::new()
            .max_frame_len(64 * 1024)
            .connect(addr)
            .await
            .unwrap(),
    );
    let err = client.sized(100_000).await.unwrap_err();
    match &err {
        rpc::Error::FrameTooLarge { len, limit, side, .. } => {
            assert!(*len > 100_000, "{len}");
            assert_eq!(*limit, 64 * 1024);
            assert_eq!(*side, "client");
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("65536") && message.contains("ClientBuilder::max_frame_len"),
        "{message}"
    );
    assert_eq!(client.sized(1000).await.unwrap().len(), 1000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_length_prefix_closes_only_that_connection() {
    let (server, _, addr) = common::start().await;
    let good = ShapesClient::connect(addr).await.unwrap();

    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut preface = [0u8; 16];
    raw.write_all(b"\x89RPC\r\n\x1a\n\x01\x00\x00\x00\x00\x00\x01\x00")
        .await
        .unwrap();
    raw.read_exact(&mut preface).await.unwrap();
    // A 4 GiB request.
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut reply = Vec::new();
    raw.read_to_end(&mut reply).await.unwrap();
    // One connection-level error frame (kind 3, id 0, code 9), then EOF.
    assert_eq!(&reply[4..16], &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(reply[16], 9);
    let message = String::from_utf8_lossy(&reply[17..]);
    assert!(
        message.contains("4294967295") && message.contains("16777216"),
        "{message}"
    );

    assert_eq!(good.add(2, 2).await.unwrap(), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_says_where_and_why() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = ShapesClient::connect(addr).await.unwrap_err();
    assert!(matches!(err, rpc::Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_something_that_is_not_an_rpc_server_is_refused_clearly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
        let _ = socket.read(&mut [0u8; 64]).await;
    });
    let err = ShapesClient::connect(addr).await.unwrap_err();
    assert!(
        matches!(err, rpc::Error::Protocol(rpc::ProtocolError::BadMagic(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("not speaking the rpc protocol"), "{err}");
}

/// A server that says hello, then never reads again: what the client
/// writes to it piles up in the socket until the socket is full.
async fn deaf_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(common::raw::SERVER_PREFACE_V3).await.unwrap();
            let mut theirs = [0u8; 16];
            socket.read_exact(&mut theirs).await.unwrap();
            held.push(socket);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_cannot_pile_requests_up_behind_a_server_that_stopped_reading() {
    const CALLS: usize = 40;
    const BLOB: usize = 4 << 20;
    let addr = deaf_server().await;
    let inner = rpc::ClientBuilder::new()
        .max_in_flight(2)
        .connect(addr)
        .await
        .unwrap();
    let client = ShapesClient::from_client(inner.clone());
    let blob = vec![7u8; BLOB];
    for _ in 0..CALLS {
        let err = client
            .with_timeout(Duration::from_millis(50))
            .reverse(blob.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, rpc::Error::DeadlineExceeded { .. }), "{err:?}");
    }
    // A call's place is free only once its request has been written, so
    // once the socket is full the calls given up on keep theirs, and the
    // calls after them never get one, nor queue a request.
    let stats = &inner.endpoints()[0];
    assert_eq!(stats.in_flight, 2, "{stats:?}");
    assert!(
        (stats.calls as usize) < CALLS / 2,
        "{} of {CALLS} requests were queued for a server that reads nothing",
        stats.calls
    );
}
