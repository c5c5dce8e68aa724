//! Telling the binary protocol from HTTP on one port: [`sniff`] reads a
//! connection's first byte, and [`Rewind`] gives it back to whoever reads
//! the stream next.
//!
//! The binary protocol's preface starts with `0x89`, which no text
//! protocol's first byte can be; an HTTP request starts with an ASCII
//! letter (`GET`, `POST`, `OPTIONS`). A server that serves both reads one
//! byte before it says anything. A TLS client's first byte is `0x16`,
//! the type of a handshake record.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::stream::ByteStream;

/// The type of a TLS record that carries a handshake: what a TLS client's
/// first byte is.
const TLS_HANDSHAKE: u8 = 0x16;

/// What a connection's first byte says it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Our binary protocol (or something else that is not HTTP: its
    /// preface check says what).
    Binary,
    /// HTTP/1.x.
    Http,
    /// A TLS handshake (its first record's type, 22).
    Tls,
}

/// Reads the first byte of `stream`: what it speaks, and the byte.
/// `Ok(None)` if the peer closed without sending anything.
pub async fn sniff<S: ByteStream>(stream: &mut S) -> io::Result<Option<(Protocol, u8)>> {
    let mut first = [0u8; 1];
    if stream.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let byte = first[0];
    // An HTTP request starts with its method, in capitals; a server
    // should also ignore an empty line before it (RFC 9112, 2.2).
    let protocol = if byte.is_ascii_uppercase() || byte == b'\r' || byte == b'\n' {
        Protocol::Http
    } else if byte == TLS_HANDSHAKE {
        Protocol::Tls
    } else {
        Protocol::Binary
    };
    Ok(Some((protocol, byte)))
}

/// A stream with bytes already read put back in front of it.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Option<u8>,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, with `byte` read first.
    pub fn new(byte: u8, inner: S) -> Rewind<S> {
        Rewind {
            prefix: Some(byte),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(byte) = self.prefix
            && buf.remaining() > 0
        {
            buf.put_slice(&[byte]);
            self.prefix = None;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_first_byte_tells_http_from_the_binary_protocol_and_is_given_back() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"POST /rpc HTTP/1.1\r\n").await.unwrap();
        let (protocol, byte) = sniff(&mut server).await.unwrap().unwrap();
        assert_eq!(protocol, Protocol::Http);
        let mut rewound = Rewind::new(byte, server);
        let mut line = [0u8; 9];
        rewound.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"POST /rpc");

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"\x89RPC").await.unwrap();
        assert_eq!(sniff(&mut server).await.unwrap().unwrap().0, Protocol::Binary);
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(&mut server).await.unwrap().is_none());
    }
}
