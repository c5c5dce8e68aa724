//! TCP: a [`TcpListener`] that accepts clients and a [`TcpConnector`] that
//! dials a server, with `TCP_NODELAY` set on every connection (we coalesce
//! writes ourselves; Nagle's algorithm would only add latency to each
//! call).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rpc_core::Error;
use rpc_core::peer::Peer;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs, lookup_host};

use crate::stream::{ByteStream, Connector, Listener, ReadHalf};

impl ByteStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl ReadHalf for OwnedReadHalf {
    const WAITS_FOR_BYTES: bool = true;

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        OwnedReadHalf::readable(self)
    }
}

/// Accepts TCP connections.
#[derive(Debug)]
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

impl TcpListener {
    /// Binds to `addr` (the first of its addresses that can be bound), with
    /// a clear error when none can: the address is taken, or not this
    /// machine's.
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<TcpListener, Error> {
        let candidates: Vec<SocketAddr> = lookup_host(addr)
            .await
            .map_err(|err| Error::Bind {
                addr: "the given address".to_owned(),
                source: Arc::new(err),
            })?
            .collect();
        let mut last = None;
        for candidate in candidates {
            match tokio::net::TcpListener::bind(candidate).await {
                Ok(inner) => {
                    let local_addr = inner.local_addr().map_err(|err| Error::Bind {
                        addr: candidate.to_string(),
                        source: Arc::new(err),
                    })?;
                    return Ok(TcpListener { inner, local_addr });
                }
                Err(err) => last = Some((candidate, err)),
            }
        }
        let (addr, err) = last.unwrap_or_else(|| {
            (
                SocketAddr::from(([0, 0, 0, 0], 0)),
                io::Error::new(io::ErrorKind::NotFound, "it resolved to no IP address"),
            )
        });
        Err(Error::Bind {
            addr: addr.to_string(),
            source: Arc::new(err),
        })
    }

    /// Wraps a bound tokio listener.
    pub fn from_tokio(inner: tokio::net::TcpListener) -> io::Result<TcpListener> {
        let local_addr = inner.local_addr()?;
        Ok(TcpListener { inner, local_addr })
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> io::Result<(TcpStream, Peer)> {
        let (stream, addr) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, Peer::from(addr)))
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Dials a server over TCP: each of its addresses in turn, until one
/// answers.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    addrs: Arc<[SocketAddr]>,
}

impl TcpConnector {
    /// A connector to `addrs`, tried in order.
    pub fn new(addrs: impl Into<Arc<[SocketAddr]>>) -> TcpConnector {
        TcpConnector { addrs: addrs.into() }
    }

    /// A connector to the addresses `addr` resolves to now.
    pub async fn resolve(addr: impl ToSocketAddrs) -> Result<TcpConnector, Error> {
        let addrs: Vec<SocketAddr> = lookup_host(addr)
            .await
            .map_err(|err| Error::Connect {
                addr: "the given address (it did not resolve)".to_owned(),
                source: Arc::new(err),
            })?
            .collect();
        Ok(TcpConnector::new(addrs))
    }
}

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self) -> Result<(TcpStream, Peer), Error> {
        let mut last = None;
        for &addr in self.addrs.iter() {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream
                        .set_nodelay(true)
                        .map_err(|err| Error::io("setting TCP_NODELAY failed", &err))?;
                    return Ok((stream, Peer::from(addr)));
                }
                Err(err) => last = Some((addr, err)),
            }
        }
        Err(match last {
            Some((addr, err)) => Error::Connect {
                addr: addr.to_string(),
                source: Arc::new(err),
            },
            None => Error::Connect {
                addr: "the given address".to_owned(),
                source: Arc::new(io::Error::new(
                    io::ErrorKind::NotFound,
                    "it resolved to no IP address",
                )),
            },
        })
    }

    fn target(&self) -> String {
        let names: Vec<String> = self.addrs.iter().map(SocketAddr::to_string).collect();
        names.join(" or ")
    }
}
