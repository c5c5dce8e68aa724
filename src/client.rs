//! [`ClientBuilder`]: connecting a [`Client`] with chosen settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::frame::MIN_FRAME_LEN;
use rpc_core::{Backoff, Client, ClientConfig, Error};
use rpc_transport::Limits;
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

    /// Calls in flight at once; further callers wait for a place (within
    /// their deadline). Default 1024; at least 1.
    pub fn max_in_flight(mut self, calls: usize) -> ClientBuilder {
        self.config.max_in_flight = calls.max(1);
        self
    }

    /// Delays between reconnect attempts after the connection is lost.
    ///
    /// A client made by [`connect`](Self::connect) redials on the next call
    /// after its connection drops or its server says goodbye. After a failed
    /// attempt, calls fail at once with that attempt's error until the
    /// backoff delay has passed.
    pub fn backoff(mut self, backoff: Backoff) -> ClientBuilder {
        self.config.backoff = backoff;
        self
    }

    /// How long one frame from the server may take to arrive once its first
    /// byte has. Default 30 s.
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

    /// How long [`connect`](Self::connect) (and each reconnect) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Connects over TCP. The client reconnects by itself after the
    /// connection is lost (to the addresses `addr` resolved to now).
    pub async fn connect(self, addr: impl ToSocketAddrs) -> Result<Client, Error> {
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host(addr)
            .await
            .map_err(|err| Error::Connect {
                addr: "the given address (it did not resolve)".to_owned(),
                source: Arc::new(err),
            })?
            .collect();
        let limits = self.limits();
        let connect_timeout = self.connect_timeout;
        let dial = move || {
            let addrs = Arc::clone(&addrs);
            async move {
                let connecting = rpc_transport::tcp::connect(&addrs[..], limits);
                match tokio::time::timeout(connect_timeout, connecting).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::Connect {
                        addr: addr_list(&addrs),
                        source: Arc::new(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no answer within {connect_timeout:?}; is the server running and reachable?"
                            ),
                        )),
                    }),
                }
            }
        };
        Client::connect_with(dial, self.config).await
    }

    /// Connects over any byte stream (a Unix socket, an in-memory pipe, a
    /// TLS stream) whose other end a [`Server`](crate::Server) serves.
    pub async fn connect_io<IO>(self, io: IO) -> Result<Client, Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let establishing = rpc_transport::memory::establish_io(io, self.limits());
        let conn = tokio::time::timeout(self.connect_timeout, establishing)
            .await
            .map_err(|_| Error::Connect {
                addr: "the given stream".to_owned(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the peer sent no preface within {:?}", self.connect_timeout),
                )),
            })??;
        Ok(Client::new(conn, self.config))
    }
}

fn addr_list(addrs: &[SocketAddr]) -> String {
    let names: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    names.join(" or ")
}
