//! [`Server`]: services, limits, a listener, and a task per connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::codec::DecodeLimits;
use rpc_core::frame::{MIN_FRAME_LEN, ProtocolError};
use rpc_core::peer::Peer;
use rpc_core::server::ServerState;
use rpc_core::{Error, ServerStats, Service};
use rpc_transport::Limits;
use rpc_transport::stream::{ByteStream, Io, Listener};
use rpc_transport::tcp::TcpListener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::ToSocketAddrs;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// An RPC server: the services it offers and its limits.
///
/// Build it, add services with [`serve`](Server::serve), then
/// [`listen`](Server::listen) (run until the process ends) or
/// [`bind`](Server::bind) (run in the background and get a handle). A
/// server listens on TCP, on a Unix socket ([`bind_unix`](Server::bind_unix)),
/// or on any [`Listener`](crate::transport::Listener) of your own
/// ([`start`](Server::start)).
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
/// | [`max_connections`](Server::max_connections) | 4096 | past it, new clients wait in the kernel's accept queue instead of exhausting file descriptors |
/// | [`preface_timeout`](Server::preface_timeout) | 10 s | a connection that says nothing (a port scanner, a slowloris) is closed |
/// | [`frame_timeout`](Server::frame_timeout) | 30 s | a frame that starts arriving must finish; dribbling bytes cannot hold a connection |
/// | [`idle_timeout`](Server::idle_timeout) | 10 min | an unused connection is closed with a goodbye; its client redials when next needed |
/// | [`write_timeout`](Server::write_timeout) | 30 s | a client that stops reading is disconnected instead of holding its queued answers for ever |
/// | [`max_nesting`](Server::max_nesting) | 128 levels | a value nested deeper (a few hundred bytes can spell thousands of levels) is refused instead of overflowing the stack |
///
/// `docs/SECURITY.md` explains what each protects against.
#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<ServerState>,
    limits: Limits,
    preface_timeout: Duration,
    max_connections: usize,
}

/// Connections a server serves at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a new connection may take to send its preface, by default.
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

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
            limits: Limits::default(),
            preface_timeout: DEFAULT_PREFACE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
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
        self.limits.max_frame_len = bytes.clamp(MIN_FRAME_LEN as usize, u32::MAX as usize);
        self
    }

    /// Connections served at once. Past it the server stops accepting until
    /// one closes; new clients wait in the kernel's accept queue (their
    /// connect timeout applies). Default 4096; at least 1. The process's
    /// file-descriptor limit (`ulimit -n`) must be higher.
    pub fn max_connections(mut self, connections: usize) -> Server {
        self.max_connections = connections.max(1);
        self
    }

    /// How long a new connection may take to send its 16-byte preface
    /// before it is closed. Default 10 s.
    pub fn preface_timeout(mut self, timeout: Duration) -> Server {
        self.preface_timeout = timeout;
        self
    }

    /// How long one frame may take to arrive once its first byte has.
    /// Default 30 s: enough for a 16 MiB frame at 1 MB/s.
    pub fn frame_timeout(mut self, timeout: Duration) -> Server {
        self.limits.frame_timeout = timeout;
        self
    }

    /// How long a connection may go with no call in progress and no frame
    /// from its client before the server closes it with a goodbye (the
    /// client redials on its next call). Default 10 minutes.
    pub fn idle_timeout(mut self, timeout: Duration) -> Server {
        Arc::make_mut(&mut self.state).config.idle_timeout = timeout;
        self
    }

    /// How deeply a call's arguments (or stream items) may nest: every
    /// struct, enum, tuple, sequence, map and option is a level. Default
    /// 128. A deeper value is refused with an error naming this setting;
    /// the connection goes on. Each level costs the decoding thread about a
    /// kilobyte of stack in a debug build, so stay well under the 2 MiB a
    /// tokio worker has.
    pub fn max_nesting(mut self, levels: usize) -> Server {
        Arc::make_mut(&mut self.state).config.decode = DecodeLimits { max_nesting: levels };
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
        let budget = budget.clamp(Duration::from_millis(1), rpc_core::frame::MAX_WIRE_BUDGET);
        Arc::make_mut(&mut self.state).config.max_budget = budget;
        self
    }

    /// How long writing one batch of answers to a client may take before
    /// the client is taken to have stopped reading and is disconnected.
    /// Default 30 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Server {
        Arc::make_mut(&mut self.state).config.write_timeout = timeout;
        self
    }

    /// What each connection enforces, and announces: the frame limits, and
    /// the call cap the server's config holds.
    fn limits(&self) -> Limits {
        Limits {
            max_calls: self.state.config.max_calls_per_connection,
            ..self.limits
        }
    }

    /// Listens on `addr` and serves until the process ends.
    ///
    /// Fails only if the address cannot be bound.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        let handle = self.bind(addr).await?;
        handle.wait().await;
        Ok(())
    }

    /// Listens on `addr` over TCP and serves in a background task.
    ///
    /// Bind to port 0 to let the system choose, then ask the handle for
    /// [`local_addr`](ServerHandle::local_addr).
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<ServerHandle, Error> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.start(listener))
    }

    /// Listens on a Unix domain socket at `path` and serves in a background
    /// task. A socket file left at `path` by a server that is gone is
    /// replaced; the file is removed when the server stops.
    ///
    /// Handlers see the calling process's user, group and process id in
    /// [`Context::peer`](crate::Context::peer).
    ///
    /// ```
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
    /// let path = std::env::temp_dir().join(format!("calc-{}.sock", std::process::id()));
    /// let server = rpc::Server::new().serve(CalculatorServer::new(Calc)).bind_unix(&path)?;
    ///
    /// let client = rpc::ClientBuilder::new().connect_unix(&path).await?;
    /// let calc = CalculatorClient::from_client(client);
    /// assert_eq!(calc.add(2, 3).await?, 5);
    /// server.stop().await;
    /// # Ok(()) }
    /// ```
    #[cfg(unix)]
    pub fn bind_unix(self, path: impl AsRef<Path>) -> Result<ServerHandle<PathBuf>, Error> {
        let listener = rpc_transport::unix::UnixListener::bind(path)?;
        Ok(self.start(listener))
    }

    /// Serves the connections `listener` accepts, in a background task: a
    /// transport of your own (or a TCP or Unix listener you bound
    /// yourself).
    ///
    /// Must be called inside a tokio runtime.
    pub fn start<L: Listener>(self, listener: L) -> ServerHandle<L::Addr> {
        let local_addr = listener.local_addr();
        tracing::info!(?local_addr, services = ?self.state.router.service_names(), "rpc server listening");
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(accept_loop(listener, self));
        ServerHandle {
            local_addr,
            task,
            state,
        }
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
    pub async fn serve_io<IO>(&self, io: IO) -> Result<(), Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let establishing = rpc_transport::stream::establish(Io(io), Peer::unknown(), self.limits());
        let conn = tokio::time::timeout(self.preface_timeout, establishing)
            .await
            .map_err(|_| no_preface(self.preface_timeout))??;
        rpc_core::server::serve_connection(Arc::clone(&self.state), conn).await;
        Ok(())
    }
}

/// A server running in the background, from [`Server::bind`] (whose
/// address is a `SocketAddr`), [`Server::bind_unix`] (a path) or
/// [`Server::start`].
///
/// Dropping the handle leaves the server running; end it with
/// [`shutdown`](ServerHandle::shutdown) (graceful) or
/// [`stop`](ServerHandle::stop) (at once).
#[derive(Debug)]
#[must_use = "dropping the handle leaves the server running with no way to stop it"]
pub struct ServerHandle<A = SocketAddr> {
    local_addr: A,
    task: JoinHandle<()>,
    state: Arc<ServerState>,
}

/// How long, after a graceful shutdown's grace period, connections get to
/// tell their clients which calls were interrupted before they are closed.
const INTERRUPT_NOTICE: Duration = Duration::from_secs(2);

impl<A: Clone + std::fmt::Debug> ServerHandle<A> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> A {
        self.local_addr.clone()
    }

    /// The server's counters: open connections, calls in progress and
    /// their peak, requests received, calls by how they ended.
    pub fn stats(&self) -> ServerStats {
        self.state.stats()
    }

    /// Shuts down gracefully: stops accepting, sends every client a goodbye
    /// (they send no new calls on that connection, and calls the server had
    /// not started are retried elsewhere or fail with
    /// [`Error::ShuttingDown`]), and lets the calls it started finish and
    /// be answered for up to `grace`. Calls still running then are stopped,
    /// and their callers told so (a [`Error::Disconnected`] that says the
    /// shutdown interrupted the call; `#[rpc(idempotent)]` calls are
    /// retried elsewhere); then the connections close.
    ///
    /// When this returns the port is free to bind again.
    pub async fn shutdown(mut self, grace: Duration) {
        self.state.shutdown.cancel();
        if tokio::time::timeout(grace, &mut self.task).await.is_ok() {
            return;
        }
        tracing::info!(local_addr = ?self.local_addr, ?grace, "grace period over; interrupting the calls still running");
        self.state.interrupt.cancel();
        if tokio::time::timeout(INTERRUPT_NOTICE, &mut self.task)
            .await
            .is_err()
        {
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

async fn accept_loop<L: Listener>(mut listener: L, server: Server) {
    // Owning every connection task here means aborting this future (stop, or
    // the end of a shutdown's grace period) aborts them all.
    let mut connections = JoinSet::new();
    let shutdown = server.state.shutdown.clone();
    let room = Arc::new(Semaphore::new(server.max_connections));
    let mut was_full = false;
    loop {
        // At the connection limit, stop accepting: clients queue in the
        // kernel's backlog rather than costing us descriptors and memory.
        let full = room.available_permits() == 0;
        if full && !was_full {
            tracing::warn!(
                max_connections = server.max_connections,
                "at the connection limit; new connections wait until one closes"
            );
        }
        was_full = full;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (room_taken, accepted) = accept_with_room(&room, &mut listener) => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_stream(stream, peer, server.clone(), room_taken));
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

/// Waits for room under the connection limit, then for a connection.
/// Cancel-safe as long as the listener's `accept` is (tokio's are):
/// dropping it returns the room.
async fn accept_with_room<L: Listener>(
    room: &Arc<Semaphore>,
    listener: &mut L,
) -> (Option<OwnedSemaphorePermit>, std::io::Result<(L::Stream, Peer)>) {
    // The semaphore is never closed; `ok()` only satisfies the type.
    let taken = Arc::clone(room).acquire_owned().await.ok();
    (taken, listener.accept().await)
}

async fn serve_stream<S: ByteStream>(
    stream: S,
    peer: Peer,
    server: Server,
    _room: Option<OwnedSemaphorePermit>,
) {
    let establishing = rpc_transport::stream::accept(stream, peer.clone(), server.limits());
    let established = tokio::select! {
        established = tokio::time::timeout(server.preface_timeout, establishing) => {
            established.unwrap_or_else(|_| Err(no_preface(server.preface_timeout)))
        }
        // A graceful shutdown does not wait for half-open handshakes.
        () = server.state.shutdown.cancelled() => return,
    };
    match established {
        Ok(conn) => rpc_core::server::serve_connection(server.state, conn).await,
        // `stream::accept` has already said so, in words.
        Err(Error::Protocol(ProtocolError::HttpPeer)) => {}
        Err(err) => tracing::info!(%peer, error = %err, "refused a connection"),
    }
}

fn no_preface(timeout: Duration) -> Error {
    Error::disconnected(format!(
        "the peer sent no connection preface within {timeout:?} (raise `Server::preface_timeout` for very slow links)"
    ))
}
