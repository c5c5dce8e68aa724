//! [`Server`]: services, limits, a listener, and a task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::frame::{DEFAULT_MAX_FRAME_LEN, MIN_FRAME_LEN, ProtocolError};
use rpc_core::server::ServerState;
use rpc_core::{Error, ServerStats, Service};
use rpc_transport::io::{FrameReader, FrameWriter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};

/// An RPC server: the services it offers and its limits.
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
/// use std::time::Duration;
///
/// let server = rpc::Server::new()
///     .serve(CalculatorServer::new(Calc))
///     .max_calls_per_connection(64)
///     .bind("127.0.0.1:0")
///     .await?;
/// println!("serving on {}", server.local_addr());
///
/// // Later: say goodbye to clients and give their calls 5 s to finish.
/// server.shutdown(Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
///
/// # Limits and their defaults
///
/// | setting | default | why |
/// | --- | --- | --- |
/// | [`max_frame_len`](Server::max_frame_len) | 16 MiB | any sane message fits; no peer makes us buffer more for one frame |
/// | [`max_calls_per_connection`](Server::max_calls_per_connection) | 256 | keeps a busy client's pipeline full; one client cannot take the whole server |
/// | [`max_budget`](Server::max_budget) | 5 min | a client that asks for hours (or forgot its timeout) cannot pin a handler |
#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<ServerState>,
    max_frame_len: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with no services and the default limits.
    pub fn new() -> Server {
        Server {
            state: Arc::new(ServerState::default()),
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
        Arc::make_mut(&mut self.state).router.add(service);
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

    /// Calls one connection may have in progress (running, or answered and
    /// not yet written). At the cap the server stops reading from that
    /// connection until a call finishes, so a client that floods requests,
    /// or never reads answers, is held back by TCP instead of filling the
    /// server's memory. Default 256; at least 1.
    pub fn max_calls_per_connection(mut self, calls: usize) -> Server {
        Arc::make_mut(&mut self.state).config.max_calls_per_connection = calls.max(1);
        self
    }

    /// The longest time budget a call gets, whatever its client asks for.
    /// Default 5 minutes.
    pub fn max_budget(mut self, budget: Duration) -> Server {
        Arc::make_mut(&mut self.state).config.max_budget = budget;
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
        tracing::info!(%local_addr, services = ?self.state.router.service_names(), "rpc server listening");
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(accept_loop(listener, self));
        Ok(ServerHandle {
            local_addr,
            task,
            state,
        })
    }

    /// Serves one connection over any byte stream (a Unix socket, an
    /// in-memory pipe, a TLS stream), until the client leaves.
    ///
    /// Fails only if the preface exchange fails; what happens afterwards is
    /// logged, as for TCP connections.
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
        rpc_core::server::serve_connection(Arc::clone(&self.state), conn).await;
        Ok(())
    }
}

/// A server running in the background, from [`Server::bind`].
///
/// Dropping the handle leaves the server running; end it with
/// [`shutdown`](ServerHandle::shutdown) (graceful) or
/// [`stop`](ServerHandle::stop) (at once).
#[derive(Debug)]
#[must_use = "dropping the handle leaves the server running with no way to stop it"]
pub struct ServerHandle {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    state: Arc<ServerState>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters: open connections, calls in progress and
    /// their peak, requests received.
    pub fn stats(&self) -> ServerStats {
        self.state.metrics.snapshot()
    }

    /// Shuts down gracefully: stops accepting, sends every client a goodbye
    /// (they send no new calls on that connection, and calls the server had
    /// not read are retried elsewhere or fail with
    /// [`Error::ShuttingDown`]), lets the calls it accepted finish and be
    /// answered for up to `grace`, then closes whatever is left.
    ///
    /// When this returns the port is free to bind again.
    pub async fn shutdown(mut self, grace: Duration) {
        self.state.shutdown.cancel();
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::info!(local_addr = %self.local_addr, ?grace, "grace period over; closing the remaining connections");
            self.task.abort();
            let _ = self.task.await;
        }
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

async fn accept_loop(listener: TcpListener, server: Server) {
    // Owning every connection task here means aborting this future (stop, or
    // the end of a shutdown's grace period) aborts them all.
    let mut connections = JoinSet::new();
    let shutdown = server.state.shutdown.clone();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer_addr)) => {
                    connections.spawn(serve_tcp(stream, peer_addr, server.clone()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed; pausing before the next accept");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    // Graceful shutdown: refuse new connections, let the open ones drain.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_tcp(stream: TcpStream, peer_addr: SocketAddr, server: Server) {
    match rpc_transport::tcp::establish(stream, peer_addr, server.max_frame_len).await {
        Ok(conn) => rpc_core::server::serve_connection(server.state, conn).await,
        Err(Error::Protocol(ProtocolError::HttpPeer)) => tracing::warn!(
            %peer_addr,
            "an HTTP client connected to this rpc port; it was refused (point HTTP clients at an HTTP server)"
        ),
        Err(err) => tracing::info!(%peer_addr, error = %err, "refused a connection"),
    }
}
