//! Metadata over real sockets: from a Rust client (per client and per
//! call) and from JSON callers' HTTP headers to the handler; not passed on
//! to nested calls; refused past its bounds with the connection kept;
//! clients and servers of protocol version 1 still served.
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

use common::json::Http;
use common::raw;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Says what metadata it got, and what a nested call gets.
#[rpc::service]
pub trait Echo {
    /// The metadata this call carried, as `key=value` (bytes as `<n bytes>`).
    async fn seen(&self) -> Vec<String>;
    /// What `seen` reports when this handler calls it in turn.
    async fn nested(&self, addr: String) -> Vec<String>;
}

struct Server;

fn seen_here() -> Vec<String> {
    let ctx = rpc::Context::current().expect("inside a call");
    ctx.metadata()
        .iter()
        .map(|(key, value)| match value.as_str() {
            Some(text) => format!("{key}={text}"),
            None => format!("{key}=<{} bytes>", value.as_bytes().len()),
        })
        .collect()
}

impl Echo for Server {
    async fn seen(&self) -> Vec<String> {
        seen_here()
    }
    async fn nested(&self, addr: String) -> Vec<String> {
        let next = EchoClient::connect(addr).await.unwrap();
        next.seen().await.unwrap()
    }
}

async fn start() -> (rpc::ServerHandle, SocketAddr) {
    let server = rpc::Server::new()
        .serve(EchoServer::new(Server))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    (server, addr)
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}

#[tokio::test]
async fn metadata_travels_from_the_client_to_the_handler_per_client_and_per_call() {
    within(async {
        let (server, addr) = start().await;
        let client = rpc::ClientBuilder::new()
            .metadata("x-tenant", "acme")
            .connect(addr)
            .await
            .unwrap();
        let echo = EchoClient::from_client(client);
        assert_eq!(echo.seen().await.unwrap(), ["x-tenant=acme"]);

        let with_token = echo
            .with_metadata("authorization", "Bearer s3cret")
            .with_metadata("trace-bin", vec![1u8, 2, 3]);
        assert_eq!(
            with_token.seen().await.unwrap(),
            [
                "x-tenant=acme",
                "authorization=Bearer s3cret",
                "trace-bin=<3 bytes>"
            ]
        );
        // A per-call value replaces the client's under the same key, and the
        // client it came from is unchanged.
        assert_eq!(
            echo.with_metadata("x-tenant", "globex").seen().await.unwrap(),
            ["x-tenant=globex"]
        );
        assert_eq!(echo.seen().await.unwrap(), ["x-tenant=acme"]);

        // Not passed on: the nested call sends its own (none).
        assert_eq!(
            with_token.nested(addr.to_string()).await.unwrap(),
            Vec::<String>::new()
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metadata_past_its_bounds_is_refused_naming_the_bound_and_the_connection_survives() {
    within(async {
        let (server, addr) = start().await;
        let echo = EchoClient::connect(addr).await.unwrap();

        let err = echo
            .with_metadata("blob", vec![0u8; 9000])
            .seen()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds the limit of 8192 bytes"), "{err}");
        let err = echo
            .with_metadata("Authorization", "x")
            .seen()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("lowercase"), "{err}");
        assert!(echo.seen().await.unwrap().is_empty());

        // A client that sends more than the bound anyway (by hand) gets an
        // error for that call; its connection goes on.
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let mut preface = *raw::PREFACE;
        preface[8] = 2;
        socket.write_all(&preface).await.unwrap();
        let mut theirs = [0u8; 16];
        socket.read_exact(&mut theirs).await.unwrap();
        assert_eq!(theirs[8], 2, "the server speaks version 2 to a version 2 client");
        let mut block = Vec::new();
        for i in 0..40u8 {
            let key = format!("k{i}");
            block.push(key.len() as u8);
            block.extend_from_slice(key.as_bytes());
            block.extend_from_slice(&[0, 1, 0, b'v']);
        }
        let request = |id: u64, block: &[u8]| {
            let mut payload = 5_000_000u64.to_le_bytes().to_vec();
            payload.push(9);
            payload.extend_from_slice(b"Echo.seen");
            payload.extend_from_slice(&(block.len() as u16).to_le_bytes());
            payload.extend_from_slice(block);
            raw::frame(1, id, &payload)
        };
        socket.write_all(&request(1, &block)).await.unwrap();
        let (kind, id, payload) = raw::read_frame(&mut socket).await;
        assert_eq!((kind, id), (3, 1), "an error frame for call 1");
        let message = String::from_utf8_lossy(&payload[1..]);
        assert!(message.contains("more than 32 metadata entries"), "{message}");
        socket.write_all(&request(2, &[])).await.unwrap();
        let (kind, id, _) = raw::read_frame(&mut socket).await;
        assert_eq!((kind, id), (2, 2), "call 2 is answered on the same connection");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn json_callers_send_metadata_as_http_headers() {
    within(async {
        let (server, addr) = start().await;
        let mut http = Http::connect(addr).await;
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "seen"}).to_string();
        let answer = http
            .post_to(
                "/rpc",
                body.clone(),
                &[
                    ("authorization", "Bearer abc"),
                    ("x-tenant", "acme"),
                    ("cookie", "session=1"),
                ],
            )
            .await;
        let result = answer.json()["result"].clone();
        // HTTP's own headers (host, content-type, cookie...) are not metadata.
        assert_eq!(result, json!(["authorization=Bearer abc", "x-tenant=acme"]));

        // Headers past the bounds (a proxy's, say) are left out; the call
        // goes on with what fits.
        let huge = "x".repeat(9000);
        let answer = http
            .post_to("/rpc", body, &[("x-tenant", "acme"), ("x-huge", &huge)])
            .await;
        assert_eq!(answer.json()["result"], json!(["x-tenant=acme"]));

        // Over a WebSocket, the upgrade request's headers apply to every call.
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            format!("ws://{addr}/rpc"),
        )
        .unwrap();
        request
            .headers_mut()
            .insert("authorization", "Bearer ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "seen"}).to_string();
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(call))
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(reply["result"], json!(["authorization=Bearer ws"]));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_of_protocol_version_1_is_still_served() {
    within(async {
        let (server, addr) = start().await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(raw::PREFACE).await.unwrap();
        let mut theirs = [0u8; 16];
        socket.read_exact(&mut theirs).await.unwrap();
        assert_eq!(&theirs, raw::SERVER_PREFACE, "answered in version 1");
        socket
            .write_all(&raw::request(1, "Echo.seen", &[]))
            .await
            .unwrap();
        let (kind, id, payload) = raw::read_frame(&mut socket).await;
        assert_eq!((kind, id, payload), (2, 1, vec![0]), "an empty list");
        server.stop().await;
    })
    .await;
}

/// A server of protocol version 1, as rpc 0.1 behaves: it sends its
/// preface, refuses a client of another version by closing, and otherwise
/// answers each `Echo.seen` with an empty list.
async fn old_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                socket.write_all(raw::SERVER_PREFACE).await.unwrap();
                let mut theirs = [0u8; 16];
                if socket.read_exact(&mut theirs).await.is_err() || theirs[8] != 1 {
                    return;
                }
                loop {
                    let mut head = [0u8; 16];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
                    let id = u64::from_le_bytes(head[8..].try_into().unwrap());
                    let mut payload = vec![0u8; len];
                    socket.read_exact(&mut payload).await.unwrap();
                    if head[4] == 1 {
                        socket.write_all(&raw::frame(2, id, &[0])).await.unwrap();
                    }
                }
            });
        }
    });
    addr
}

/// With a subscriber listening, every call carries a trace context; an
/// older server still gets its calls (without it).
#[test]
fn a_traced_client_still_calls_a_server_of_protocol_version_1() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_env_filter("rpc=info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(within(async {
            let addr = old_server().await;
            let echo = EchoClient::connect(addr).await.unwrap();
            assert!(echo.seen().await.unwrap().is_empty());
        }));
}

#[tokio::test]
async fn a_server_of_protocol_version_1_is_still_called_and_metadata_is_refused_in_words() {
    within(async {
        let addr = old_server().await;
        let echo = EchoClient::connect(addr).await.unwrap();
        assert!(echo.seen().await.unwrap().is_empty());
        let err = echo
            .with_metadata("authorization", "Bearer x")
            .seen()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("protocol version 1, which carries no metadata"),
            "{err}"
        );
        assert!(err.contains("upgrade it"), "{err}");
        assert!(echo.seen().await.unwrap().is_empty());
    })
    .await;
}
