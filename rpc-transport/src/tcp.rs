//! TCP: dialling a server and accepting clients, with `TCP_NODELAY` set on
//! every connection (we coalesce writes ourselves; Nagle would only add
//! latency to each call).

use std::net::SocketAddr;
use std::sync::Arc;

use rpc_core::Error;
use rpc_core::frame::ProtocolError;
use rpc_core::transport::Connection;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs, lookup_host};

use crate::Limits;
use crate::handshake;
use crate::io::{FrameReader, FrameWriter};

/// A TCP connection after its preface exchange.
pub type TcpConnection = Connection<FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>>;

/// Connects to `addr`, trying each address it resolves to in turn, and
/// exchanges prefaces. What the server may send us is bounded by `limits`.
pub async fn connect(addr: impl ToSocketAddrs, limits: Limits) -> Result<TcpConnection, Error> {
    let candidates = lookup_host(addr).await.map_err(|err| Error::Connect {
        addr: "the given address".to_owned(),
        source: Arc::new(err),
    })?;
    let mut last = None;
    for candidate in candidates {
        match TcpStream::connect(candidate).await {
            Ok(stream) => return establish(stream, candidate, limits).await,
            Err(err) => last = Some((candidate, err)),
        }
    }
    Err(match last {
        Some((addr, err)) => Error::Connect {
            addr: addr.to_string(),
            source: Arc::new(err),
        },
        None => Error::Connect {
            addr: "the given address".to_owned(),
            source: Arc::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "it resolved to no IP address",
            )),
        },
    })
}

/// Sets up an accepted or dialled stream: nodelay, preface exchange, split.
pub async fn establish(
    mut stream: TcpStream,
    peer_addr: SocketAddr,
    limits: Limits,
) -> Result<TcpConnection, Error> {
    nodelay(&stream)?;
    let peer = handshake::exchange(&mut stream, limits.preface()).await?;
    Ok(split(stream, peer, peer_addr, limits))
}

/// Sets up a stream a server accepted. Like [`establish`], but when the
/// preface exchange fails it first reads and discards what the peer still
/// sends (up to a second, or 64 KiB): closing a socket with unread bytes
/// makes the kernel reset the connection, which can destroy our preface
/// before a confused peer (an HTTP client, say) reads it.
pub async fn accept(
    mut stream: TcpStream,
    peer_addr: SocketAddr,
    limits: Limits,
) -> Result<TcpConnection, Error> {
    nodelay(&stream)?;
    match handshake::exchange(&mut stream, limits.preface()).await {
        Ok(peer) => Ok(split(stream, peer, peer_addr, limits)),
        Err(err) => {
            // Said before the lingering close, so it is said even if the
            // server stops while lingering.
            if let Error::Protocol(ProtocolError::HttpPeer) = err {
                tracing::warn!(
                    %peer_addr,
                    "an HTTP client connected to this rpc port; it was refused (point HTTP clients at an HTTP server)"
                );
            }
            handshake::linger(&mut stream).await;
            Err(err)
        }
    }
}

/// We coalesce writes ourselves; Nagle's algorithm would only delay them.
fn nodelay(stream: &TcpStream) -> Result<(), Error> {
    stream
        .set_nodelay(true)
        .map_err(|err| Error::io("setting TCP_NODELAY failed", &err))
}

fn split(
    stream: TcpStream,
    peer: rpc_core::frame::Preface,
    peer_addr: SocketAddr,
    limits: Limits,
) -> TcpConnection {
    let (read, write) = stream.into_split();
    Connection {
        reader: limits.reader(read),
        writer: FrameWriter::new(write),
        peer,
        peer_addr: Some(peer_addr),
    }
}

/// Binds a listener, with a clear error when the address is taken.
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
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some((candidate, err)),
        }
    }
    let (addr, err) = last.unwrap_or_else(|| {
        (
            SocketAddr::from(([0, 0, 0, 0], 0)),
            std::io::Error::new(std::io::ErrorKind::NotFound, "it resolved to no IP address"),
        )
    });
    Err(Error::Bind {
        addr: addr.to_string(),
        source: Arc::new(err),
    })
}
