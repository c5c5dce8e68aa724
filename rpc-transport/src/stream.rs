//! The byte-stream seam: a [`Listener`] yields streams and who is on their
//! other end, a [`Connector`] dials one. TCP, Unix sockets and in-memory
//! pipes are implementations; TLS wraps them. [`establish`] turns any such
//! stream into a connection the runtime can serve or call over.

use std::fmt::Debug;
use std::future::Future;
use std::io;

use rpc_core::Error;
use rpc_core::peer::Peer;
use rpc_core::transport::Established;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Limits;
use crate::handshake;
use crate::reader::FrameReader;
use crate::writer::FrameWriter;

/// A byte stream a connection runs over, and how it splits into a reading
/// and a writing half.
///
/// TCP and Unix streams split without a lock; any other
/// `AsyncRead + AsyncWrite` can be wrapped in [`Io`], which splits it with
/// `tokio::io::split`.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The reading half.
    type Read: ReadHalf + 'static;
    /// The writing half.
    type Write: AsyncWrite + Send + Unpin + 'static;

    /// Splits the stream.
    fn split(self) -> (Self::Read, Self::Write);
}

/// The reading half of a byte stream.
pub trait ReadHalf: AsyncRead + Send + Unpin {
    /// Whether [`readable`](ReadHalf::readable) waits for bytes (a
    /// socket's does), so that an idle reader can give its memory back.
    /// A stream that says so must override `readable`.
    const WAITS_FOR_BYTES: bool = false;

    /// Completes when the stream has bytes to read (or has ended).
    ///
    /// Streams that can wait for data without a buffer (sockets) let an
    /// idle connection hold no read buffer at all; the default completes at
    /// once, and the reader waits in `read` with its buffer.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Any `AsyncRead + AsyncWrite`, as a [`ByteStream`] (split with
/// `tokio::io::split`).
#[derive(Debug)]
pub struct Io<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for Io<T> {
    type Read = tokio::io::ReadHalf<Io<T>>;
    type Write = tokio::io::WriteHalf<Io<T>>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl<T: AsyncRead + Send + Unpin> ReadHalf for tokio::io::ReadHalf<T> {}

impl ReadHalf for &[u8] {}

/// Accepts connections: a TCP or Unix listener, an in-memory one for tests.
pub trait Listener: Send + 'static {
    /// The streams it yields.
    type Stream: ByteStream;
    /// The address it listens on: a `SocketAddr` for TCP, a path for Unix.
    type Addr: Clone + Debug + Send + Sync + 'static;

    /// The next connection and who is on its other end.
    ///
    /// Errors are the listener's (too many open files, say): the server
    /// logs them, pauses, and accepts again. Must be cancel-safe: the
    /// server drops this future when it shuts down, and a connection
    /// accepted by a dropped future is lost.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, Peer)>> + Send;

    /// The address it listens on.
    fn local_addr(&self) -> Self::Addr;
}

/// Dials one server, as many times as a client needs to reconnect.
pub trait Connector: Send + Sync + 'static {
    /// The streams it opens.
    type Stream: ByteStream;

    /// Opens a stream to the server, and says who answered.
    fn connect(&self) -> impl Future<Output = Result<(Self::Stream, Peer), Error>> + Send;

    /// What it dials, in words (`127.0.0.1:7000`, `unix:/run/app.sock`),
    /// for errors and stats.
    fn target(&self) -> String;
}

/// Exchanges prefaces over `stream` and splits it into a frame reader and
/// writer that enforce `limits`: a connection ready to serve or call over.
pub async fn establish<S: ByteStream>(
    mut stream: S,
    peer: Peer,
    limits: Limits,
) -> Result<Established<FrameReader<S::Read>, FrameWriter<S::Write>>, Error> {
    let preface = handshake::exchange(&mut stream, limits.preface()).await?;
    Ok(framed(stream, preface, peer, limits))
}

/// Like [`establish`], speaking protocol `version` rather than this
/// build's: what a client speaks to a server of an older version (which
/// refused this build's preface and announced its own).
pub async fn establish_version<S: ByteStream>(
    mut stream: S,
    peer: Peer,
    limits: Limits,
    version: u16,
) -> Result<Established<FrameReader<S::Read>, FrameWriter<S::Write>>, Error> {
    let preface = handshake::exchange(&mut stream, limits.preface().with_version(version)).await?;
    Ok(framed(stream, preface, peer, limits))
}

/// A stream past its preface exchange, split into frame reader and writer.
fn framed<S: ByteStream>(
    stream: S,
    preface: rpc_core::frame::Preface,
    peer: Peer,
    limits: Limits,
) -> Established<FrameReader<S::Read>, FrameWriter<S::Write>> {
    let (read, write) = stream.split();
    Established {
        reader: limits.reader(read),
        writer: FrameWriter::new(write),
        preface,
        peer,
    }
}

/// The server's side of [`establish`], for a stream a server accepted,
/// whose `first` byte the server may have read already (to tell the binary
/// protocol from HTTP). The server reads the client's preface before it
/// answers, and answers in the client's version. When the preface exchange fails it first reads and discards what
/// the peer still sends (up to a second, or 64 KiB), because closing a
/// socket with unread bytes makes the kernel reset the connection, which
/// can destroy our preface before a confused peer (an HTTP client, say)
/// reads it.
pub async fn accept<S: ByteStream>(
    mut stream: S,
    peer: Peer,
    limits: Limits,
    first: Option<u8>,
) -> Result<Established<FrameReader<S::Read>, FrameWriter<S::Write>>, Error> {
    match handshake::answer(&mut stream, limits.preface(), first).await {
        Ok(preface) => Ok(framed(stream, preface, peer, limits)),
        Err(err) => {
            // Said before the lingering close, so it is said even if the
            // server stops while lingering.
            if let Error::Protocol(rpc_core::frame::ProtocolError::HttpPeer) = err {
                tracing::warn!(
                    %peer,
                    "an HTTP client connected to this rpc port; it was refused, as this server does not serve JSON-RPC (`Server::json(false)`, or the `json` feature is off)"
                );
            }
            handshake::linger(&mut stream).await;
            Err(err)
        }
    }
}
