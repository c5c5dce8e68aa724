//! [`Server`]: services, limits, a listener, and a task per connection.
//!
//! - `mod.rs`: the builder, its settings and their defaults.
//! - `accept`: the accept loop, the connection limit, and the first byte
//!   that picks a connection's door.
//! - `handle`: a running server, and how it ends.
//! - `signal`: ending it on SIGTERM and Ctrl-C.

mod accept;
mod handle;
mod signal;

pub use handle::ServerHandle;
pub use signal::{DEFAULT_GRACE, shutdown_signal};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::codec::DecodeLimits;
use rpc_core::frame::MIN_FRAME_LEN;
use rpc_core::peer::Peer;
use rpc_core::server::ServerState;
use rpc_core::{Error, Service};
use rpc_transport::Limits;
#[cfg(feature = "json")]
use rpc_transport::http::Cors;
use rpc_transport::stream::{Io, Listener};
use rpc_transport::tcp::TcpListener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::ToSocketAddrs;

#[cfg(feature = "json")]
use crate::door;

/// An RPC server: the services it offers and its limits.
///
/// Build it, add services with [`serve`](Server::serve), then
/// [`listen`](Server::listen) (run until SIGTERM or Ctrl-C, then stop
/// gracefully) or
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
    /// Whether clients of the binary protocol are served.
    binary: bool,
    /// The JSON-RPC door.
    #[cfg(feature = "json")]
    json: door::Door,
    /// TLS on every door, when set.
    #[cfg(feature = "tls")]
    tls: Option<rpc_transport::tls::Acceptor>,
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
            binary: true,
            #[cfg(feature = "json")]
            json: door::Door::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves every connection over TLS: the binary protocol and the
    /// JSON-RPC door (HTTPS and WSS) alike, on the same port. The
    /// handshake shares the preface timeout; clients that speak plaintext
    /// to the port are refused with a message saying to use TLS.
    ///
    /// With [`ClientAuth::Required`](crate::tls::ClientAuth) or `Optional`,
    /// handlers see the client's verified certificate in
    /// [`Context::peer`](crate::Context::peer). Replace the certificate
    /// while serving with [`ServerHandle::reload_tls`].
    ///
    /// ```no_run
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rpc::tls::{ClientAuth, Identity, Roots, ServerTls};
    ///
    /// let identity = Identity::from_pem_files("server.pem", "server.key")?;
    /// let clients = ClientAuth::Required(Roots::from_pem_file("clients-ca.pem")?);
    /// let server = rpc::Server::new()
    ///     .tls(ServerTls::new(identity, clients)?)
    ///     .serve(CalculatorServer::new(Calc))
    ///     .bind("0.0.0.0:7443")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: rpc_transport::tls::ServerTls) -> Server {
        self.tls = Some(rpc_transport::tls::Acceptor::new(tls));
        self
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

    /// Puts a tower [`Layer`](tower::Layer) around every service served so
    /// far: each call passes through it on its way to the handler, as a
    /// [`ServerCall`](crate::middleware::ServerCall) (method, metadata,
    /// peer, deadline, arguments). A layer can refuse a call
    /// (`rpc::Error::unauthenticated(..)`), observe it, or pass it on.
    /// tower's own middleware works as it is:
    /// `tower::limit::ConcurrencyLimitLayer::new(8)` caps the calls the
    /// services run at once. Layers added later wrap those added before;
    /// services served after this call are not wrapped.
    ///
    /// # Panics
    ///
    /// If no service was served before it: a layer meant to guard every
    /// service must not silently guard none.
    ///
    /// ```
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// use rpc::middleware::{ServerCall, ServerNext, from_fn};
    ///
    /// let server = rpc::Server::new()
    ///     .serve(CalculatorServer::new(Calc))
    ///     // At most 64 calls at once, across the server's services.
    ///     .layer(tower::limit::ConcurrencyLimitLayer::new(64))
    ///     // Only callers with the token.
    ///     .layer(from_fn(|call: ServerCall, next: ServerNext| async move {
    ///         match call.metadata().get_str("authorization") {
    ///             Some("Bearer let-me-in") => next.run(call).await,
    ///             _ => Err(rpc::Error::unauthenticated("send `authorization: Bearer <token>`")),
    ///         }
    ///     }));
    /// # let _ = server;
    /// ```
    pub fn layer(mut self, layer: impl rpc_core::middleware::ServerLayer) -> Server {
        Arc::make_mut(&mut self.state).router.layer(layer);
        self
    }

    /// Puts a tower [`Layer`](tower::Layer) around one service (by its
    /// name, `Calculator`), served already; see [`Server::layer`].
    ///
    /// # Panics
    ///
    /// If the server does not serve a service of that name (yet).
    pub fn layer_service(mut self, service: &str, layer: impl rpc_core::middleware::ServerLayer) -> Server {
        Arc::make_mut(&mut self.state)
            .router
            .layer_service(service, layer);
        self
    }

    /// Serves `GET /metrics` on the HTTP door with what `render` returns:
    /// the Prometheus text of the metrics recorder the application
    /// installed (with the `prometheus` feature, `rpc::prometheus`
    /// installs one and gives the renderer). Off by default.
    ///
    /// ```no_run
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[cfg(feature = "prometheus")]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let metrics = rpc::prometheus::install()?;
    /// let server = rpc::Server::new()
    ///     .serve(CalculatorServer::new(Calc))
    ///     .metrics(move || metrics.render())
    ///     .bind("0.0.0.0:7000")
    ///     .await?;
    /// // curl http://127.0.0.1:7000/metrics
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "json")]
    pub fn metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Server {
        self.json.http.metrics = Some(rpc_transport::http::MetricsPage(Arc::new(render)));
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
    /// Default 30 s: enough for a 16 MiB frame at 1 MB/s. `Duration::MAX`
    /// means none.
    pub fn frame_timeout(mut self, timeout: Duration) -> Server {
        self.limits.frame_timeout = timeout;
        self
    }

    /// How long a connection may go with no call in progress and no frame
    /// from its client before the server closes it with a goodbye (the
    /// client redials on its next call). Default 10 minutes.
    pub fn idle_timeout(mut self, timeout: Duration) -> Server {
        Arc::make_mut(&mut self.state).config.idle_timeout = timeout;
        #[cfg(feature = "json")]
        {
            self.json.http.idle_timeout = timeout;
        }
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
    /// not yet written), announced to clients. Requests past the cap wait
    /// in order, up to as many again; a client of this crate keeps one
    /// fewer than that in flight, so its next request is here when a place
    /// frees. With that queue full the server stops reading from the
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

    /// How long writing one batch of answers to a client may take, from
    /// the moment the write first has to wait for the client, before the
    /// client is taken to have stopped reading and is disconnected.
    /// Default 30 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Server {
        Arc::make_mut(&mut self.state).config.write_timeout = timeout;
        self
    }

    /// Whether clients of the binary protocol (Rust clients) are served.
    /// Default `true`; with `false` the server answers JSON-RPC only, and
    /// closes connections that open with the binary preface.
    pub fn binary(mut self, on: bool) -> Server {
        self.binary = on;
        self
    }

    /// Whether callers in other languages are served JSON-RPC 2.0 over
    /// HTTP and WebSocket, on the same port as the binary protocol.
    /// Default `true`; with `false` an HTTP request is refused as it was
    /// before the door existed. `docs/JSON.md` is the mapping.
    ///
    /// ```
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let server = rpc::Server::new().serve(CalculatorServer::new(Calc)).bind("127.0.0.1:0").await?;
    ///
    /// // What `curl -d '{"jsonrpc":"2.0","id":1,"method":"add","params":[2,3]}' http://HOST/rpc` sends.
    /// let body = r#"{"jsonrpc":"2.0","id":1,"method":"add","params":[2,3]}"#;
    /// let mut http = tokio::net::TcpStream::connect(server.local_addr()).await?;
    /// let request = format!(
    ///     "POST /rpc HTTP/1.1\r\nHost: calc\r\nContent-Type: application/json\r\n\
    ///      Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
    ///     body.len()
    /// );
    /// http.write_all(request.as_bytes()).await?;
    /// let mut response = String::new();
    /// http.read_to_string(&mut response).await?;
    /// assert!(response.starts_with("HTTP/1.1 200 OK"));
    /// assert!(response.ends_with(r#"{"jsonrpc":"2.0","result":5,"id":1}"#));
    /// server.stop().await;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "json")]
    pub fn json(mut self, on: bool) -> Server {
        self.json.enabled = on;
        self
    }

    /// The HTTP path JSON-RPC requests are posted to (and WebSockets open
    /// on). Default `/rpc`; `/` is accepted as well, and the OpenRPC
    /// document is served at `<path>/openrpc.json`.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    #[cfg(feature = "json")]
    pub fn json_path(mut self, path: impl Into<String>) -> Server {
        let path = path.into();
        assert!(
            path.starts_with('/'),
            "a JSON-RPC path starts with `/`, as in `/rpc`; got {path:?}"
        );
        self.json.http.path = path;
        self
    }

    /// Which web pages, served from other origins, may call the JSON-RPC
    /// door from a browser. Default [`Cors::none`]: only pages from the
    /// server's own origin.
    ///
    /// ```
    /// let server = rpc::Server::new().cors(rpc::Cors::origins(["https://app.example.com"]));
    /// # drop(server);
    /// ```
    #[cfg(feature = "json")]
    pub fn cors(mut self, cors: Cors) -> Server {
        self.json.http.cors = cors;
        self
    }

    /// The most requests one JSON-RPC batch may hold. Default 1 000; a
    /// larger batch is answered with one `-32600` error and none of it runs.
    #[cfg(feature = "json")]
    pub fn max_batch(mut self, requests: usize) -> Server {
        self.json.json.max_batch = requests.max(1);
        self
    }

    /// How long a JSON caller's HTTP request may take to send its headers,
    /// and its body, and how long a kept-alive HTTP connection may sit
    /// between requests. Default 30 s.
    #[cfg(feature = "json")]
    pub fn http_timeout(mut self, timeout: Duration) -> Server {
        self.json.http.header_timeout = timeout;
        self.json.http.body_timeout = timeout;
        self
    }

    fn serves_json(&self) -> bool {
        #[cfg(feature = "json")]
        return self.json.enabled;
        #[cfg(not(feature = "json"))]
        false
    }

    /// What each connection enforces, and announces: the frame limits, and
    /// the call cap the server's config holds.
    fn limits(&self) -> Limits {
        Limits {
            max_calls: self.state.config.max_calls_per_connection,
            ..self.limits
        }
    }

    /// Listens on `addr` and serves until the process is asked to stop
    /// (SIGTERM, or Ctrl-C), then shuts down gracefully: clients get a
    /// goodbye, and calls in flight get [`DEFAULT_GRACE`] to finish.
    /// Use [`bind`](Server::bind) and
    /// [`serve_until`](ServerHandle::serve_until) to choose the signal or
    /// the grace period.
    ///
    /// Fails only if the address cannot be bound.
    pub async fn listen(self, addr: impl ToSocketAddrs) -> Result<(), Error> {
        let handle = self.bind(addr).await?;
        handle.serve_until(shutdown_signal(), DEFAULT_GRACE).await;
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
    ///
    /// # Panics
    ///
    /// If both the binary protocol and JSON are switched off: such a
    /// server would serve nobody.
    pub fn start<L: Listener>(self, listener: L) -> ServerHandle<L::Addr> {
        assert!(
            self.binary || self.serves_json(),
            "this server serves neither the binary protocol nor JSON (`Server::binary(false)` with `Server::json(false)`)"
        );
        let local_addr = listener.local_addr();
        tracing::info!(?local_addr, services = ?self.state.router.service_names(), "rpc server listening");
        let state = Arc::clone(&self.state);
        let doors = accept::Doors {
            state: Arc::clone(&self.state),
            limits: self.limits(),
            preface_timeout: self.preface_timeout,
            binary: self.binary,
            #[cfg(feature = "json")]
            json: self.json.open(&self.state, self.limits.max_frame_len),
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        };
        let task = tokio::spawn(accept::accept_loop(
            listener,
            Arc::new(doors),
            self.max_connections,
        ));
        ServerHandle {
            local_addr,
            task,
            state,
            #[cfg(feature = "tls")]
            tls: self.tls,
        }
    }

    /// Serves one connection over any byte stream (a Unix socket, an
    /// in-memory pipe, a TLS stream), until the client leaves. With
    /// [`Server::tls`], the stream is served over TLS like any other.
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
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            // The handshake and the preface share the preface timeout.
            let serving = async {
                let (stream, peer) = tls
                    .accept(io, Peer::unknown())
                    .await
                    .map_err(|why| Error::disconnected(format!("the TLS handshake failed: {why}")))?;
                rpc_transport::stream::accept(stream, peer, self.limits(), None).await
            };
            let conn = tokio::time::timeout(self.preface_timeout, serving)
                .await
                .map_err(|_| no_preface(self.preface_timeout))??;
            rpc_core::server::serve_connection(Arc::clone(&self.state), conn).await;
            return Ok(());
        }
        let establishing = rpc_transport::stream::accept(Io(io), Peer::unknown(), self.limits(), None);
        let conn = tokio::time::timeout(self.preface_timeout, establishing)
            .await
            .map_err(|_| no_preface(self.preface_timeout))??;
        rpc_core::server::serve_connection(Arc::clone(&self.state), conn).await;
        Ok(())
    }
}

fn no_preface(timeout: Duration) -> Error {
    Error::disconnected(format!(
        "the peer sent no connection preface within {timeout:?} (raise `Server::preface_timeout` for very slow links)"
    ))
}
