//! [`Server`]: services, a listener, and a task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::frame::{DEFAULT_MAX_FRAME_LEN, MIN_FRAME_LEN, ProtocolError};
use rpc_core::{Error, Router, Service};
use rpc_transport::io::{FrameReader, FrameWriter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};

/// An RPC server: the services it offers and its settings.
///
/// Build it, add services with [`serve`](Server::serve), then
/// [`listen`](Server::listen) (run until the process ends) or
/// [`bind`](Server::bind) (run in the background and get a handle).
///
/// ```
/// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
/// # struct Calc;
/// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
/// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
/// let server = rpc::Server::new()
///     .serve(CalculatorServer::new(Calc))
///     .bind("127.0.0.1:0")
///     .await?;
/// println!("serving on {}", server.local_addr());
/// # server.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Server {
    router: Arc<Router>,
    max_frame_len: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with no services and the default settings.
    pub fn new() -> Server {
        Server {
            router: Arc::new(Router::new()),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Adds a service (a generated `FooServer`). Any number of services can
    /// share one server; calls are routed by service name.
    ///
    /// # Panics
    ///
    /// If a service of the same name was already added.
    pub fn serve(mut self, service: impl Service) -> Server {
        Arc::make_mut(&mut self.router).add(service);
        self
    }

    /// The largest request payload accepted, in bytes. Default 16 MiB.
    ///
    /// Clients learn the limit when they connect and refuse a larger request
    /// themselves with [`Error::FrameTooLarge`], before sending it. Values
    /// are clamped to 1 KiB ..= 4 GiB - 1.
    pub fn max_frame_len(mut self, bytes: usize) -> Server {
        self.max_frame_len = bytes.clamp(MIN_FRAME_LEN as usize, u32::MAX as usize);
        self
    }

    /// Listens on `addr` and serves until the process ends.
    ///
    /// Fails only if the address cannot be bound.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        let handle = self.bind(addr).await?;
        handle.wait().await;
        Ok(())
    }

    /// Listens on `addr` and serves in a background task.
    ///
    /// Bind to port 0 to let the system choose, then ask the handle for
    /// [`local_addr`](ServerHandle::local_addr).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<ServerHandle, Error> {
        let listener = rpc_transport::tcp::bind(addr).await?;
        let local_addr = listener.local_addr().map_err(|err| Error::Bind {
            addr: "the bound socket".to_owned(),
            source: Arc::new(err),
        })?;
        tracing::info!(%local_addr, services = ?self.router.service_names(), "rpc server listening");
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, self, Arc::clone(&open)));
        Ok(ServerHandle {
            local_addr,
            task,
            open,
        })
    }

    /// Serves one connection over any byte stream (a Unix socket, an
    /// in-memory pipe, a TLS stream), until the client leaves.
    ///
    /// ```
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
    /// let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    /// let server = rpc::Server::new().serve(CalculatorServer::new(Calc));
    /// tokio::spawn(async move { server.serve_io(server_end).await });
    ///
    /// let client = rpc::ClientBuilder::new().connect_io(client_end).await?;
    /// let calc = CalculatorClient::from_client(client);
    /// assert_eq!(calc.add(2, 2).await?, 4);
    /// # Ok(()) }
    /// ```
    pub async fn serve_io<IO>(&self, mut io: IO) -> Result<(), Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let peer = rpc_transport::handshake::exchange(&mut io, self.max_frame_len).await?;
        let (read, write) = tokio::io::split(io);
        let conn = rpc_core::transport::Connection {
            reader: FrameReader::new(read, self.max_frame_len),
            writer: FrameWriter::new(write),
            peer,
            peer_addr: None,
        };
        rpc_core::server::serve_connection(Arc::clone(&self.router), conn).await;
        Ok(())
    }
}

/// A server running in the background, from [`Server::bind`].
///
/// Dropping the handle leaves the server running; call
/// [`stop`](ServerHandle::stop) to end it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    open: Arc<AtomicUsize>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many client connections are open (preface exchanged, not yet
    /// closed).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Stops at once: closes the listener and every connection. Calls in
    /// flight fail on their clients with [`Error::Disconnected`].
    ///
    /// When this returns the port is free to bind again.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits until the server ends (it runs until stopped or the process
    /// ends).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// How long to pause accepting after an error such as "too many open files",
/// so a full file table does not become a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

async fn accept_loop(listener: TcpListener, server: Server, open: Arc<AtomicUsize>) {
    // Owning every connection task here means stopping the loop (dropping
    // this future) aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer_addr)) => {
                    connections.spawn(serve_tcp(stream, peer_addr, server.clone(), Arc::clone(&open)));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed; pausing before the next accept");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_tcp(stream: TcpStream, peer_addr: SocketAddr, server: Server, open: Arc<AtomicUsize>) {
    match rpc_transport::tcp::establish(stream, peer_addr, server.max_frame_len).await {
        Ok(conn) => {
            let _open = OpenConnection::count(open);
            rpc_core::server::serve_connection(server.router, conn).await;
        }
        Err(Error::Protocol(ProtocolError::HttpPeer)) => tracing::warn!(
            %peer_addr,
            "an HTTP client connected to this rpc port; it was refused (point HTTP clients at an HTTP server)"
        ),
        Err(err) => tracing::info!(%peer_addr, error = %err, "refused a connection"),
    }
}

/// Counts a connection as open for as long as it lives, however it ends
/// (including being aborted by [`ServerHandle::stop`]).
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn count(open: Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
