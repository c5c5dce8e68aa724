//! Transports as users plug them in: Unix domain sockets, in-memory
//! listeners, and connectors of their own, each reconnecting like TCP, each
//! telling the handler who called.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc::transport::{Connector, TcpConnector};
use rpc::{Peer, PeerAddr};

/// Tells the caller who it is, as the server sees it.
#[rpc::service]
pub trait Whoami {
    async fn peer(&self) -> String;
    async fn unix_credentials(&self) -> Option<(u32, Option<i32>)>;
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Who;

fn caller() -> Peer {
    rpc::Context::current().expect("inside a call").peer().clone()
}

impl Whoami for Who {
    async fn peer(&self) -> String {
        caller().to_string()
    }
    async fn unix_credentials(&self) -> Option<(u32, Option<i32>)> {
        match caller().addr() {
            PeerAddr::Unix {
                credentials: Some(who),
                ..
            } => Some((who.uid, who.pid)),
            _ => None,
        }
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn server() -> rpc::Server {
    rpc::Server::new().serve(WhoamiServer::new(Who))
}

/// Immediate redials, so tests never wait on a backoff.
fn eager() -> rpc::ClientBuilder {
    rpc::ClientBuilder::new().backoff(rpc::Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
    })
}

/// Waits (without a clock) until the client has seen its connection end.
async fn until_closed(client: &rpc::Client) {
    while !client.is_closed() {
        tokio::task::yield_now().await;
    }
}

/// A socket path of this test's own, in the system's temporary directory.
fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rpc-test-{}-{name}.sock", std::process::id()))
}

/// This process's user id, as the file system records it.
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let probe = std::env::temp_dir().join(format!("rpc-test-{}-uid", std::process::id()));
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::remove_file(&probe).unwrap();
    uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_client_survives_a_server_restart_and_the_handler_knows_the_caller() {
    let path = socket_path("restart");
    let first = server().bind_unix(&path).unwrap();
    assert_eq!(first.local_addr(), path);
    let client = WhoamiClient::from_client(eager().connect_unix(&path).await.unwrap());
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    assert_eq!(
        client.unix_credentials().await.unwrap(),
        Some((my_uid(), Some(std::process::id() as i32)))
    );
    assert!(client.peer().await.unwrap().starts_with("unix socket"));

    first.stop().await;
    assert!(!path.exists(), "a stopped server removes its socket file");
    until_closed(client.rpc_client()).await;
    // Down: the call says where it tried.
    let err = client.add(1, 1).await.unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");

    let second = server().bind_unix(&path).unwrap();
    assert_eq!(client.add(20, 22).await.unwrap(), 42);
    let stats = client.rpc_client().endpoints();
    assert_eq!(stats.len(), 1);
    assert!(stats[0].target.contains(&path.display().to_string()), "{stats:?}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let path = socket_path("stale");
    // A socket file nobody listens on, as a crashed server leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let live = server().bind_unix(&path).unwrap();
    let err = server().bind_unix(&path).unwrap_err();
    assert!(matches!(err, rpc::Error::Bind { .. }), "{err:?}");
    let client = WhoamiClient::from_client(rpc::ClientBuilder::new().connect_unix(&path).await.unwrap());
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    live.stop().await;
}

/// A connector of the user's own: TCP underneath, counting its dials.
struct Counting {
    tcp: TcpConnector,
    dials: Arc<AtomicUsize>,
}

impl Connector for Counting {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self) -> Result<(tokio::net::TcpStream, Peer), rpc::Error> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        self.tcp.connect().await
    }

    fn target(&self) -> String {
        format!("counted {}", self.tcp.target())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_built_from_a_custom_connector_reconnects_through_it() {
    let first = server().bind("127.0.0.1:0").await.unwrap();
    let addr = first.local_addr();
    let dials = Arc::new(AtomicUsize::new(0));
    let connector = Counting {
        tcp: TcpConnector::new(vec![addr]),
        dials: Arc::clone(&dials),
    };
    let client = WhoamiClient::from_client(eager().connect_with(connector).await.unwrap());
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    assert!(client.peer().await.unwrap().starts_with("127.0.0.1:"));

    first.stop().await;
    until_closed(client.rpc_client()).await;
    let second = server().bind(addr).await.unwrap();
    assert_eq!(client.add(2, 2).await.unwrap(), 4);
    assert!(
        dials.load(Ordering::SeqCst) >= 2,
        "the client redialled through its connector"
    );
    assert_eq!(
        client.rpc_client().endpoints()[0].target,
        format!("counted {addr}")
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_listener_serves_clients_that_reconnect() {
    let (listener, connector) = rpc::transport::memory::listener();
    let server = server().start(listener);
    let client = WhoamiClient::from_client(eager().connect_with(connector).await.unwrap());
    assert_eq!(client.add(3, 4).await.unwrap(), 7);
    assert_eq!(client.peer().await.unwrap(), "in-memory pipe");
    server.stop().await;
    until_closed(client.rpc_client()).await;
    // The listener is gone with the server: the error says so.
    let err = client.add(1, 1).await.unwrap_err();
    assert!(err.to_string().contains("listener is gone"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_stream_serves_calls_and_names_no_peer() {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn(async move { server().serve_io(server_end).await });
    let client = WhoamiClient::from_client(rpc::ClientBuilder::new().connect_io(client_end).await.unwrap());
    assert_eq!(client.add(5, 5).await.unwrap(), 10);
    assert_eq!(client.peer().await.unwrap(), "a stream of unknown origin");
    drop(client);
    serving.await.unwrap().unwrap();
}
