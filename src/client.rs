//! [`ClientBuilder`]: connecting a [`Client`] with chosen settings, over
//! any transport.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::codec::DecodeLimits;
use rpc_core::frame::MIN_FRAME_LEN;
use rpc_core::peer::Peer;
use rpc_core::transport::Established;
use rpc_core::{Backoff, Client, ClientConfig, Error};
use rpc_transport::Limits;
use rpc_transport::reader::FrameReader;
use rpc_transport::stream::{ByteStream, Connector, Io};
use rpc_transport::tcp::TcpConnector;
use rpc_transport::writer::FrameWriter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::ToSocketAddrs;

/// How long [`ClientBuilder::connect`] waits for the TCP connection and the
/// server's preface by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for a client connection.
///
/// Generated clients connect with the defaults through `FooClient::connect`;
/// use the builder for anything else, then wrap the connection:
///
/// ```
/// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
/// # struct Calc;
/// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
/// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
/// # let server = rpc::Server::new().serve(CalculatorServer::new(Calc)).bind("127.0.0.1:0").await?;
/// # let addr = server.local_addr();
/// use std::time::Duration;
///
/// let client = rpc::ClientBuilder::new()
///     .timeout(Duration::from_secs(2))
///     .connect(addr)
///     .await?;
/// let calc = CalculatorClient::from_client(client);
/// assert_eq!(calc.add(1, 2).await?, 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    config: ClientConfig,
    frame_timeout: Duration,
    connect_timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<rpc_transport::tls::ClientTls>,
    /// Metadata every call sends.
    metadata: Vec<(String, rpc_core::metadata::MetadataValue)>,
    /// Middleware around every call, innermost first.
    layers: Layers,
    /// How a client of many servers spreads its calls.
    policy: rpc_core::Policy,
}

/// A client's middleware, innermost first.
#[derive(Clone, Default)]
struct Layers(Vec<rpc_core::middleware::Wrap<rpc_core::middleware::ClientService>>);

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} layers", self.0.len())
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    /// The default settings: 30 s call deadline, 16 MiB frames, 1024 calls
    /// in flight, 10 s to connect, reconnect backoff from 50 ms to 5 s.
    pub fn new() -> ClientBuilder {
        ClientBuilder {
            config: ClientConfig::default(),
            frame_timeout: Limits::default().frame_timeout,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: None,
            metadata: Vec::new(),
            layers: Layers::default(),
            policy: rpc_core::Policy::default(),
        }
    }

    /// The deadline of calls that set none with `with_timeout`.
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.config.timeout = timeout;
        self
    }

    /// The largest response payload accepted, in bytes. Default 16 MiB.
    ///
    /// The server learns it when the client connects and answers a call
    /// whose result would be larger with an error instead of the result.
    /// Clamped to 1 KiB ..= 4 GiB - 1.
    pub fn max_frame_len(mut self, bytes: usize) -> ClientBuilder {
        self.config.max_frame_len = bytes.clamp(MIN_FRAME_LEN as usize, u32::MAX as usize);
        self
    }

    /// Calls in flight at once on each connection, and never more than the
    /// server runs and queues, less one (511 for a server's default cap of
    /// 256); the requests of further calls wait in order for a place
    /// (within their callers' deadlines), and leave with the time their
    /// callers have left then. Default 1024; at least 1.
    pub fn max_in_flight(mut self, calls: usize) -> ClientBuilder {
        self.config.max_in_flight = calls.max(1);
        self
    }

    /// Delays between reconnect attempts after the connection is lost.
    ///
    /// A client made by [`connect`](Self::connect) (or any of the
    /// `connect_*` that take an address or a connector) redials on the next
    /// call after its connection drops or its server says goodbye. After a
    /// failed attempt, a call waits for the next attempt if it is due
    /// before the call's deadline, and otherwise fails at once with an
    /// error that says when the last attempt failed and when the next is
    /// due.
    pub fn backoff(mut self, backoff: Backoff) -> ClientBuilder {
        self.config.backoff = backoff;
        self
    }

    /// How deeply an answer (or a stream item) from the server may nest:
    /// every struct, enum, tuple, sequence, map and option is a level.
    /// Default 128. A deeper value fails its call with an error naming this
    /// setting, instead of overflowing the stack.
    pub fn max_nesting(mut self, levels: usize) -> ClientBuilder {
        self.config.decode = DecodeLimits { max_nesting: levels };
        self
    }

    /// How long one frame from the server may take to arrive once its first
    /// byte has. Default 30 s; `Duration::MAX` means none.
    pub fn frame_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.frame_timeout = timeout;
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            max_frame_len: self.config.max_frame_len,
            frame_timeout: self.frame_timeout,
            max_calls: 0,
        }
    }

    /// Sends `key: value` as metadata with every call of the client (an
    /// auth token, say); a call can add more with `with_metadata`. Keys
    /// are lowercase ASCII (`authorization`, `x-tenant`); a bad key fails
    /// the calls, saying why.
    pub fn metadata(
        mut self,
        key: &str,
        value: impl Into<rpc_core::metadata::MetadataValue>,
    ) -> ClientBuilder {
        self.metadata.push((key.to_owned(), value.into()));
        self
    }

    /// Puts a tower [`Layer`](tower::Layer) around each call the client
    /// makes (each call that returns one value; streams go straight to
    /// the network): the layer sees a
    /// [`ClientCall`](crate::middleware::ClientCall) (method, encoded
    /// arguments, metadata, deadline) and can add metadata, refuse the
    /// call, or observe it. Layers added later wrap those added before.
    pub fn layer(mut self, layer: impl rpc_core::middleware::ClientLayer) -> ClientBuilder {
        self.layers.0.push(layer.into_wrap());
        self
    }

    /// `client` with this builder's metadata and middleware.
    fn with_metadata(&self, client: Client) -> Client {
        let client = self.metadata.iter().fold(client, |client, (key, value)| {
            client.with_metadata(key, value.clone())
        });
        self.layers
            .0
            .iter()
            .fold(client, |client, wrap| client.with_layers(&**wrap))
    }

    /// How a client of many servers ([`connect_many`](Self::connect_many),
    /// [`connect_dns`](Self::connect_dns), [`discover`](Self::discover))
    /// spreads its calls: [`Policy::PeakEwma`](crate::discover::Policy)
    /// (the default: the less loaded of two picked at random) or round
    /// robin.
    pub fn balance(mut self, policy: rpc_core::Policy) -> ClientBuilder {
        self.policy = policy;
        self
    }

    /// How long [`connect`](Self::connect) (and each reconnect) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Connects over TCP. The client reconnects by itself after the
    /// connection is lost (to the addresses `addr` resolved to now).
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let connector = TcpConnector::resolve(addr).await?;
        self.connect_with(connector).await
    }

    /// Connects to a server's Unix domain socket at `path`, reconnecting
    /// after the connection is lost.
    #[cfg(unix)]
    pub async fn connect_unix(self, path: impl AsRef<Path>) -> Result<Client, Error> {
        self.connect_with(rpc_transport::unix::UnixConnector::new(path))
            .await
    }

    /// Connects over TLS: every connection (and every reconnection) runs
    /// a handshake as `tls` says, verifying the server's certificate
    /// against its CAs and, if the server asks, presenting the client's.
    /// Works with every way of connecting: [`connect`](Self::connect),
    /// [`connect_unix`](Self::connect_unix) and
    /// [`connect_with`](Self::connect_with).
    ///
    /// The server's certificate must name the address dialled (its IP
    /// address) unless [`ClientTls::server_name`](crate::tls::ClientTls::server_name)
    /// gives the name to expect.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rpc::tls::{ClientTls, Identity, Roots};
    ///
    /// let tls = ClientTls::new(Roots::from_pem_file("ca.pem")?)?
    ///     .server_name("users.internal")?
    ///     .identity(Identity::from_pem_files("orders.pem", "orders.key")?)?;
    /// let client = rpc::ClientBuilder::new().tls(tls).connect("10.0.0.7:7443").await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: rpc_transport::tls::ClientTls) -> ClientBuilder {
        self.tls = Some(tls);
        self
    }

    /// Connects through `connector`, a transport of your own, and
    /// reconnects through it (after [`backoff`](Self::backoff)) whenever
    /// the connection is lost.
    ///
    /// ```
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
    /// // An in-process transport: a listener and the connector that dials it.
    /// let (listener, connector) = rpc::transport::memory::listener();
    /// let server = rpc::Server::new().serve(CalculatorServer::new(Calc)).start(listener);
    ///
    /// let client = rpc::ClientBuilder::new().connect_with(connector).await?;
    /// let calc = CalculatorClient::from_client(client);
    /// assert_eq!(calc.add(2, 2).await?, 4);
    /// server.stop().await;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with<C: Connector>(self, connector: C) -> Result<Client, Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.clone() {
            return self
                .dial(rpc_transport::tls::TlsConnector::new(connector, tls), true)
                .await;
        }
        self.dial(connector, false).await
    }

    /// Connects through `connector`, as it is.
    async fn dial<C: Connector>(self, connector: C, over_tls: bool) -> Result<Client, Error> {
        let dialer = Arc::new(self.dialer(connector, over_tls));
        let target = dialer.connector.target();
        let client =
            Client::connect_with(target, move || Arc::clone(&dialer).dial(), self.config.clone()).await?;
        Ok(self.with_metadata(client))
    }

    /// What opens each connection through `connector` with this builder's
    /// limits and connect timeout.
    pub(crate) fn dialer<C: Connector>(&self, connector: C, over_tls: bool) -> Dialer<C> {
        Dialer {
            connector,
            limits: self.limits(),
            connect_timeout: self.connect_timeout,
            over_tls,
        }
    }

    /// `client` with this builder's metadata and middleware (what the
    /// discovery module hands back).
    pub(crate) fn finish(&self, client: Client) -> Client {
        self.with_metadata(client)
    }

    /// The client's settings.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// How a client of many servers spreads its calls.
    pub(crate) fn policy(&self) -> rpc_core::Policy {
        self.policy
    }

    /// How long each connection may take to open.
    pub(crate) fn connect_timeout_setting(&self) -> Duration {
        self.connect_timeout
    }

    /// The TLS settings, if the client connects over TLS.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_config(&self) -> Option<&rpc_transport::tls::ClientTls> {
        self.tls.as_ref()
    }

    /// Connects over one byte stream you opened (a stream from another
    /// library, one end of a pipe) whose other end a
    /// [`Server`](crate::Server) serves.
    ///
    /// The client cannot reconnect once that stream ends: it knows no way
    /// to open another. Give it a [`Connector`](crate::transport::Connector)
    /// through [`connect_with`](Self::connect_with) for a client that does.
    pub async fn connect_io<IO>(self, io: IO) -> Result<Client, Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let timed_out = |connect_timeout: Duration| Error::Connect {
            addr: "the given stream".to_owned(),
            source: Arc::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the peer sent no preface within {connect_timeout:?}"),
            )),
        };
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            // The handshake and the preface share the connect timeout.
            let establishing = async {
                let (stream, peer) =
                    rpc_transport::tls::connect::handshake(tls, io, Peer::unknown(), "the given stream")
                        .await?;
                rpc_transport::stream::establish(stream, peer, self.limits()).await
            };
            let conn = tokio::time::timeout(self.connect_timeout, establishing)
                .await
                .map_err(|_| timed_out(self.connect_timeout))??;
            older_server(conn.preface.version)?;
            return Ok(self.with_metadata(Client::new(conn, self.config.clone())));
        }
        let establishing = rpc_transport::stream::establish(Io(io), Peer::unknown(), self.limits());
        let conn = tokio::time::timeout(self.connect_timeout, establishing)
            .await
            .map_err(|_| timed_out(self.connect_timeout))??;
        older_server(conn.preface.version)?;
        Ok(self.with_metadata(Client::new(conn, self.config.clone())))
    }
}

/// An older server refused this build's preface and closes: with one
/// given stream there is no redialling in its version.
fn older_server(version: u16) -> Result<(), Error> {
    if version >= rpc_core::frame::VERSION {
        return Ok(());
    }
    Err(Error::Connect {
        addr: "the given stream".to_owned(),
        source: Arc::new(std::io::Error::other(format!(
            "the server speaks rpc protocol version {version}, and closes on this build's version {}; upgrade the server, or connect with `connect`/`connect_with`, which redial in its version",
            rpc_core::frame::VERSION
        ))),
    })
}

/// Opens connections through a connector: a stream, the preface exchange
/// (again in an older server's version if it asks), all within the
/// connect timeout.
pub(crate) struct Dialer<C> {
    connector: C,
    limits: Limits,
    connect_timeout: Duration,
    /// Over TLS 1.3 a server refuses a client's certificate after the
    /// client's side of the handshake is done, so the refusal arrives
    /// during the preface exchange: this makes it read as the failed
    /// connect it is.
    over_tls: bool,
}

/// A connection as a [`Dialer`] over `C` opens it.
type Dialed<C> = Established<
    FrameReader<<<C as Connector>::Stream as ByteStream>::Read>,
    FrameWriter<<<C as Connector>::Stream as ByteStream>::Write>,
>;

impl<C: Connector> Dialer<C> {
    /// Opens one connection.
    pub(crate) async fn dial(self: Arc<Self>) -> Result<Dialed<C>, Error> {
        let connector = &self.connector;
        let limits = self.limits;
        let connecting = async {
            let (stream, peer) = connector.connect().await?;
            let established = match rpc_transport::stream::establish(stream, peer, limits).await {
                // A server of an older protocol version announced it, and
                // refused this build's preface: dial again, speaking its
                // version.
                Ok(conn) if conn.preface.version < rpc_core::frame::VERSION => {
                    let version = conn.preface.version;
                    drop(conn);
                    let (stream, peer) = connector.connect().await?;
                    rpc_transport::stream::establish_version(stream, peer, limits, version).await
                }
                established => established,
            };
            match established {
                Err(Error::Disconnected { reason }) if self.over_tls => Err(Error::Connect {
                    addr: connector.target(),
                    source: Arc::new(std::io::Error::other(reason.to_string())),
                }),
                established => established,
            }
        };
        let connect_timeout = self.connect_timeout;
        match tokio::time::timeout(connect_timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(Error::Connect {
                addr: connector.target(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {connect_timeout:?}; is the server running and reachable?"),
                )),
            }),
        }
    }
}
