//! TLS over real TCP with certificates made in the test: calls, streams and
//! JSON over HTTPS and WSS, with and without client certificates; every
//! handshake failure in words on the side that sees it; certificates
//! rotated while serving; hostile bytes on a TLS port.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::pki::{Ca, Leaf};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use rpc::tls::{ClientAuth, ClientTls, Identity, ServerTls};
use rpc::{Error, Streaming};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Tells the caller what the server knows of it.
#[rpc::service]
pub trait Who {
    /// The subject of the caller's verified certificate, if it sent one.
    async fn subject(&self) -> Option<String>;
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `0, 1, .. n - 1`.
    async fn count(&self, n: u32) -> Streaming<u32>;
}

struct Server;

impl Who for Server {
    async fn subject(&self) -> Option<String> {
        let ctx = rpc::Context::current().expect("inside a call");
        ctx.peer().certificate().map(|cert| cert.subject().to_owned())
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn count(&self, n: u32) -> Streaming<u32> {
        Streaming::iter(0..n)
    }
}

/// Fails a test that hangs. Never reached when the code is right.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}

async fn start(tls: ServerTls) -> rpc::ServerHandle {
    start_with(tls, |server| server).await
}

async fn start_with(tls: ServerTls, configure: impl FnOnce(rpc::Server) -> rpc::Server) -> rpc::ServerHandle {
    configure(rpc::Server::new().tls(tls).serve(WhoServer::new(Server)))
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// Immediate redials, so tests never wait on a backoff.
fn client(tls: ClientTls) -> rpc::ClientBuilder {
    rpc::ClientBuilder::new().tls(tls).backoff(rpc::Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
    })
}

async fn connect(addr: SocketAddr, tls: ClientTls) -> Result<WhoClient, Error> {
    Ok(WhoClient::from_client(client(tls).connect(addr).await?))
}

/// A TLS connection as any other TLS library makes it, for HTTPS and
/// WebSocket callers and to look at what the server presents.
async fn raw_tls(addr: SocketAddr, ca: &Ca, alpn: &[u8]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            <rustls_pki_types::CertificateDer<'_> as PemObject>::from_pem_slice(ca.pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap()
}

/// The subject of the certificate a server presents to new connections.
async fn presented(addr: SocketAddr, ca: &Ca) -> String {
    let stream = raw_tls(addr, ca, b"rpc/1").await;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    cert.subject().to_string()
}

/// The server's log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the server has logged `words`.
    async fn wait_for(&self, words: &str) {
        within(async {
            while !self.text().contains(words) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `test` on one thread with the server's logs captured, so every
/// task logs through the subscriber set here.
fn with_logs<F: std::future::Future<Output = ()>>(test: impl FnOnce(Logs) -> F) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test(logs));
}

// ---------------------------------------------------------------------------
// Calls, streams and JSON over TLS.

#[tokio::test]
async fn calls_and_streams_run_over_tls_1_3_and_the_handler_sees_the_client_certificate() {
    within(async {
        let ca = Ca::new("Test CA");
        // Optional client auth: callers with and without a certificate.
        let server = start(ca.server_tls("users", ClientAuth::Optional(ca.roots()))).await;
        let addr = server.local_addr();

        let anonymous = connect(addr, ca.client_tls()).await.unwrap();
        assert_eq!(anonymous.add(2, 3).await.unwrap(), 5);
        assert_eq!(anonymous.subject().await.unwrap(), None);
        let items: Vec<u32> = anonymous.count(5).try_collect().await.unwrap();
        assert_eq!(items, [0, 1, 2, 3, 4]);

        let orders = ca.issue(Leaf::client("order-service"));
        let mutual = connect(addr, ca.client_tls().identity(orders.identity()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            mutual.subject().await.unwrap().as_deref(),
            Some("CN=order-service")
        );
        let items: Vec<u32> = mutual.count(3).try_collect().await.unwrap();
        assert_eq!(items, [0, 1, 2]);

        // What was negotiated, seen by another TLS library.
        let raw = raw_tls(addr, &ca, b"rpc/1").await;
        let session = raw.get_ref().1;
        assert_eq!(session.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(session.alpn_protocol(), Some(&b"rpc/1"[..]));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn with_client_certificates_required_every_call_carries_the_callers_identity() {
    within(async {
        let ca = Ca::new("Test CA");
        let server = start(ca.server_tls("users", ClientAuth::Required(ca.roots()))).await;
        let orders = ca.issue(Leaf::client("order-service"));
        let tls = ca
            .client_tls()
            .server_name("localhost")
            .unwrap()
            .identity(orders.identity())
            .unwrap();
        let who = connect(server.local_addr(), tls).await.unwrap();
        let calls: Vec<_> = (0..20).map(|_| who.subject()).collect();
        for subject in futures::future::join_all(calls).await {
            assert_eq!(subject.unwrap().as_deref(), Some("CN=order-service"));
        }
        server.stop().await;
    })
    .await;
}

/// POSTs `body` over HTTPS to `/rpc` with hyper, as any HTTP library would.
async fn https_post(addr: SocketAddr, ca: &Ca, body: &Value) -> (hyper::StatusCode, Value) {
    let stream = raw_tls(addr, ca, b"http/1.1").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("/rpc")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn json_callers_are_served_over_https_and_wss_on_the_same_port() {
    within(async {
        let ca = Ca::new("Test CA");
        let server = start(ca.server_tls("users", ClientAuth::Off)).await;
        let addr = server.local_addr();

        let (status, answer) = https_post(
            addr,
            &ca,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "add", "params": [20, 22]}),
        )
        .await;
        assert_eq!(status, hyper::StatusCode::OK);
        assert_eq!(answer, json!({"jsonrpc": "2.0", "result": 42, "id": 1}));

        // A stream over a WebSocket inside TLS.
        let stream = raw_tls(addr, &ca, b"http/1.1").await;
        let (mut socket, _) = tokio_tungstenite::client_async("wss://localhost/rpc", stream)
            .await
            .unwrap();
        let request = json!({"jsonrpc": "2.0", "id": "c", "method": "count", "params": [2]});
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(request.to_string()))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(Ok(message)) = socket.next().await {
            let value: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
            let done = value.get("id").is_some();
            got.push(value);
            if done {
                break;
            }
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0]["params"]["item"], 0);
        assert_eq!(got[1]["params"]["item"], 1);
        assert_eq!(got[2], json!({"jsonrpc": "2.0", "result": null, "id": "c"}));

        // And the binary protocol on the same port, at the same time.
        let rust = connect(addr, ca.client_tls()).await.unwrap();
        assert_eq!(rust.add(1, 1).await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_redoes_the_handshake_when_it_reconnects() {
    within(async {
        let ca = Ca::new("Test CA");
        let first = start(ca.server_tls("users-1", ClientAuth::Off)).await;
        let addr = first.local_addr();
        let who = connect(addr, ca.client_tls()).await.unwrap();
        assert_eq!(who.add(1, 2).await.unwrap(), 3);
        first.stop().await;

        // Another server on the same port, with another certificate.
        let second = rpc::Server::new()
            .tls(ca.server_tls("users-2", ClientAuth::Off))
            .serve(WhoServer::new(Server))
            .bind(addr)
            .await
            .unwrap();
        let mut answer = who.add(3, 4).await;
        // The call in flight when the first server stopped may fail; the
        // next one reconnects.
        for _ in 0..10 {
            if answer.is_ok() {
                break;
            }
            answer = who.add(3, 4).await;
        }
        assert_eq!(answer.unwrap(), 7);
        second.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Handshake failures, in words, on the side that sees them.

/// The error a client gets, as a sentence.
async fn refused(addr: SocketAddr, tls: ClientTls) -> String {
    match connect(addr, tls).await {
        Ok(who) => match who.add(1, 1).await {
            Ok(_) => panic!("the call succeeded"),
            Err(err) => err.to_string(),
        },
        Err(err) => err.to_string(),
    }
}

/// A good client is served: the server is unharmed.
async fn still_serves(addr: SocketAddr, tls: ClientTls) {
    let who = connect(addr, tls).await.unwrap();
    assert_eq!(who.add(40, 2).await.unwrap(), 42);
}

#[test]
fn a_server_certificate_the_client_cannot_trust_is_refused_in_words_on_both_sides() {
    with_logs(|logs| async move {
        let ca = Ca::new("Test CA");
        let server = start(ca.server_tls("users", ClientAuth::Off)).await;
        let addr = server.local_addr();

        // Unknown CA.
        let stranger = Ca::new("Another CA");
        let said = refused(addr, stranger.client_tls()).await;
        assert!(said.contains("was not issued by a CA this side trusts"), "{said}");
        logs.wait_for("does not trust the CA that issued it").await;
        still_serves(addr, ca.client_tls()).await;

        // A name the certificate does not carry.
        let said = refused(addr, ca.client_tls().server_name("payments.internal").unwrap()).await;
        assert!(said.contains("not valid for payments.internal"), "{said}");
        assert!(said.contains("localhost"), "{said}");
        assert!(said.contains("ClientTls::server_name"), "{said}");
        logs.wait_for("most often its names do not include the name the client dialled")
            .await;
        still_serves(addr, ca.client_tls()).await;
        server.stop().await;

        // Expired, and not yet valid.
        let expired = Leaf {
            valid: (-3, -2),
            ..Leaf::server("old")
        };
        let server = start(ServerTls::new(ca.issue(expired).identity(), ClientAuth::Off).unwrap()).await;
        let said = refused(server.local_addr(), ca.client_tls()).await;
        assert!(said.contains("the server's certificate has expired"), "{said}");
        logs.wait_for("has expired").await;
        server.stop().await;

        let early = Leaf {
            valid: (1, 2),
            ..Leaf::server("early")
        };
        let server = start(ServerTls::new(ca.issue(early).identity(), ClientAuth::Off).unwrap()).await;
        let said = refused(server.local_addr(), ca.client_tls()).await;
        assert!(
            said.contains("the server's certificate is not valid yet"),
            "{said}"
        );
        assert!(said.contains("clocks"), "{said}");
        server.stop().await;
    });
}

#[test]
fn a_client_certificate_missing_or_refused_is_said_in_words_on_both_sides() {
    with_logs(|logs| async move {
        let ca = Ca::new("Test CA");
        let server = start(ca.server_tls("users", ClientAuth::Required(ca.roots()))).await;
        let addr = server.local_addr();
        let good = || {
            ca.client_tls()
                .identity(ca.issue(Leaf::client("order-service")).identity())
                .unwrap()
        };

        // No certificate.
        let said = refused(addr, ca.client_tls()).await;
        assert!(
            said.contains("the server requires a client certificate and this client sent none"),
            "{said}"
        );
        assert!(said.contains("ClientTls::identity"), "{said}");
        logs.wait_for("the client sent no certificate, and this server requires one")
            .await;
        still_serves(addr, good()).await;

        // A certificate from a CA the server does not trust.
        let stranger = Ca::new("Another CA");
        let tls = ca
            .client_tls()
            .identity(stranger.issue(Leaf::client("intruder")).identity())
            .unwrap();
        let said = refused(addr, tls).await;
        assert!(
            said.contains("the server refused this client's certificate"),
            "{said}"
        );
        logs.wait_for("the client's certificate was not issued by a CA this side trusts")
            .await;
        still_serves(addr, good()).await;

        // An expired one.
        let expired = Leaf {
            valid: (-3, -2),
            ..Leaf::client("retired")
        };
        let tls = ca.client_tls().identity(ca.issue(expired).identity()).unwrap();
        let said = refused(addr, tls).await;
        assert!(said.contains("expired"), "{said}");
        logs.wait_for("the client's certificate has expired").await;
        still_serves(addr, good()).await;
        server.stop().await;
    });
}

#[test]
fn plaintext_and_tls_on_the_wrong_ports_are_refused_in_words() {
    with_logs(|logs| async move {
        let ca = Ca::new("Test CA");
        let tls_server = start(ca.server_tls("users", ClientAuth::Off)).await;
        let tls_addr = tls_server.local_addr();

        // A plaintext client of the binary protocol, on the TLS port.
        let said = match rpc::ClientBuilder::new().connect(tls_addr).await {
            Ok(_) => panic!("a plaintext client connected to a TLS port"),
            Err(err) => err.to_string(),
        };
        assert!(
            said.contains("the peer speaks TLS and this side does not"),
            "{said}"
        );
        assert!(said.contains("ClientBuilder::tls"), "{said}");
        logs.wait_for("a client without TLS connected to this TLS port")
            .await;

        // Plain HTTP on the TLS port.
        let mut socket = TcpStream::connect(tls_addr).await.unwrap();
        socket
            .write_all(b"POST /rpc HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("https://"), "{answer}");
        logs.wait_for("a plain HTTP request came to this TLS port").await;
        still_serves(tls_addr, ca.client_tls()).await;

        // A TLS client on a plaintext port.
        let plain = rpc::Server::new()
            .serve(WhoServer::new(Server))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let said = refused(plain.local_addr(), ca.client_tls()).await;
        assert!(said.contains("the server did not answer in TLS"), "{said}");
        logs.wait_for("the peer speaks TLS and this side does not").await;
        let who = WhoClient::from_client(
            rpc::ClientBuilder::new()
                .connect(plain.local_addr())
                .await
                .unwrap(),
        );
        assert_eq!(who.add(1, 2).await.unwrap(), 3);
        plain.stop().await;
        tls_server.stop().await;
    });
}

#[test]
fn bad_configuration_fails_at_start_up_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("rpc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let err = Identity::from_pem_files(&missing, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");

    let ca = Ca::new("Test CA");
    let leaf = ca.issue(Leaf::server("users"));
    let cert_file = dir.join("cert.pem");
    std::fs::write(&cert_file, &leaf.cert).unwrap();
    let err = Identity::from_pem_files(&cert_file, &cert_file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds no private key") && err.contains("cert.pem"),
        "{err}"
    );

    // A key that belongs to another certificate.
    let other = ca.issue(Leaf::server("other"));
    let err = Identity::from_pem(&leaf.cert, &other.key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate and key"), "{err}");

    let err = ca
        .client_tls()
        .server_name("not a name!")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a server name"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// Rotation.

#[tokio::test]
async fn certificates_rotate_without_a_restart_and_established_connections_keep_theirs() {
    within(async {
        let old_ca = Ca::new("Old CA");
        let server = start(old_ca.server_tls("users-2025", ClientAuth::Off)).await;
        let addr = server.local_addr();
        assert_eq!(presented(addr, &old_ca).await, "CN=users-2025");
        let established = connect(addr, old_ca.client_tls()).await.unwrap();
        assert_eq!(established.add(1, 1).await.unwrap(), 2);

        // A new certificate from a new CA, and client certificates from now on.
        let new_ca = Ca::new("New CA");
        server
            .reload_tls(new_ca.server_tls("users-2026", ClientAuth::Required(new_ca.roots())))
            .unwrap();

        // New connections get the new certificate and the new rule.
        let said = refused(addr, old_ca.client_tls()).await;
        assert!(said.contains("not issued by a CA this side trusts"), "{said}");
        let said = refused(addr, new_ca.client_tls()).await;
        assert!(said.contains("requires a client certificate"), "{said}");
        let orders = new_ca.issue(Leaf::client("order-service"));
        let fresh = connect(addr, new_ca.client_tls().identity(orders.identity()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            fresh.subject().await.unwrap().as_deref(),
            Some("CN=order-service")
        );

        // The connection made before keeps its session.
        assert_eq!(established.add(2, 2).await.unwrap(), 4);
        assert_eq!(established.subject().await.unwrap(), None);

        // A server without TLS has nothing to reload.
        let plain = rpc::Server::new()
            .serve(WhoServer::new(Server))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let err = plain
            .reload_tls(new_ca.server_tls("x", ClientAuth::Off))
            .unwrap_err();
        assert!(err.to_string().contains("started without TLS"), "{err}");
        plain.stop().await;
        server.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Hostile bytes on the TLS port.

#[tokio::test]
async fn garbage_and_truncated_handshakes_cost_only_their_own_connection() {
    within(async {
        let ca = Ca::new("Test CA");
        let server = start_with(ca.server_tls("users", ClientAuth::Off), |server| {
            server.preface_timeout(Duration::from_millis(500))
        })
        .await;
        let addr = server.local_addr();
        let good = connect(addr, ca.client_tls()).await.unwrap();

        // A TLS record header followed by garbage.
        let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
        garbage.extend((0..64u8).map(|i| i.wrapping_mul(37)));
        // A record that claims 16 KiB and never delivers it.
        let truncated = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00];
        // Random bytes that happen to start like TLS, at length.
        let long: Vec<u8> = [0x16u8]
            .into_iter()
            .chain((0..100_000u32).map(|i| (i * 7919 % 251) as u8))
            .collect();
        for bytes in [&garbage[..], &truncated[..], &long[..]] {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let _ = socket.write_all(bytes).await;
            let mut rest = Vec::new();
            // The server closes the connection: after an alert, or when the
            // handshake's time is up.
            let _ = socket.read_to_end(&mut rest).await;
            assert!(rest.len() < 1024, "the server sent {} bytes", rest.len());
        }
        assert_eq!(good.add(1, 2).await.unwrap(), 3);
        still_serves(addr, ca.client_tls()).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_thousand_silent_sockets_and_half_handshakes_do_not_lock_callers_out() {
    within(async {
        let ca = Ca::new("Test CA");
        let server = start_with(ca.server_tls("users", ClientAuth::Off), |server| {
            server.max_connections(100)
        })
        .await;
        let addr = server.local_addr();
        let mut sockets = Vec::new();
        for i in 0..1000 {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                // Starts a handshake and stops.
                let _ = socket.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01]).await;
            }
            sockets.push(socket);
        }
        // At the limit, newcomers that have not finished a handshake make
        // room for callers.
        still_serves(addr, ca.client_tls()).await;
        let (status, answer) =
            https_post(addr, &ca, &json!({"id": 1, "method": "add", "params": [1, 2]})).await;
        assert_eq!(status, hyper::StatusCode::OK);
        assert_eq!(answer["result"], 3);
        drop(sockets);
        server.stop().await;
    })
    .await;
}

/// The platform's roots load, or fail saying where they were looked for.
#[cfg(feature = "native-roots")]
#[test]
fn the_platforms_roots_load_or_say_why_not() {
    match rpc::tls::Roots::native() {
        Ok(roots) => {
            ClientTls::new(roots).unwrap();
        }
        Err(err) => assert!(
            err.to_string().contains("platform's trusted certificates"),
            "{err}"
        ),
    }
}

#[tokio::test]
async fn one_stream_served_and_called_by_hand_is_still_tls() {
    within(async {
        let ca = Ca::new("Test CA");
        let server = rpc::Server::new()
            .tls(ca.server_tls("users", ClientAuth::Required(ca.roots())))
            .serve(WhoServer::new(Server));
        let server = Arc::new(server);

        // With a client certificate and the name to expect: served over TLS.
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn({
            let server = Arc::clone(&server);
            async move { server.serve_io(server_end).await }
        });
        let tls = ca
            .client_tls()
            .server_name("localhost")
            .unwrap()
            .identity(ca.issue(Leaf::client("order-service")).identity())
            .unwrap();
        let who = WhoClient::from_client(
            rpc::ClientBuilder::new()
                .tls(tls)
                .connect_io(client_end)
                .await
                .unwrap(),
        );
        assert_eq!(who.subject().await.unwrap().as_deref(), Some("CN=order-service"));
        drop(who);
        serving.await.unwrap().unwrap();

        // A plaintext client on such a stream is refused: no way around
        // `ClientAuth::Required`.
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn({
            let server = Arc::clone(&server);
            async move { server.serve_io(server_end).await }
        });
        let refused = rpc::ClientBuilder::new().connect_io(client_end).await;
        assert!(refused.is_err());
        let err = serving.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("TLS handshake failed"), "{err}");

        // A stream of unknown origin has no address to check the
        // certificate against: the name must be given.
        let (client_end, _server_end) = tokio::io::duplex(64 * 1024);
        let err = rpc::ClientBuilder::new()
            .tls(ca.client_tls())
            .connect_io(client_end)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ClientTls::server_name"), "{err}");
    })
    .await;
}
