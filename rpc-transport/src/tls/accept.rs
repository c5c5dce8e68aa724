//! The server's side: an [`Acceptor`] whose configuration can be replaced
//! while it serves, and the answer a plaintext client gets on a TLS port.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rpc_core::peer::Peer;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;

use super::certificate;
use super::config::ServerTls;
use super::words::{Side, Worded, describe_io};
use crate::sniff::Protocol;
use crate::stream::Io;

/// A server connection after its TLS handshake.
pub type Accepted<S> = Io<Worded<TlsStream<S>>>;

/// Accepts TLS connections with the server's current configuration. Cheap
/// to clone; clones share the configuration, so [`reload`](Self::reload)
/// on one is seen by all.
#[derive(Clone)]
pub struct Acceptor {
    current: Arc<RwLock<ServerTls>>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor serving `tls`.
    pub fn new(tls: ServerTls) -> Acceptor {
        Acceptor {
            current: Arc::new(RwLock::new(tls)),
        }
    }

    /// Serves `tls` to connections accepted from now on; connections
    /// already established keep what they negotiated.
    pub fn reload(&self, tls: ServerTls) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = tls;
    }

    /// Runs the server's side of the handshake on `stream`: the stream,
    /// and `peer` with the client certificate it verified, if any. The
    /// error says why, in words.
    pub async fn accept<S>(&self, stream: S, peer: Peer) -> Result<(Accepted<S>, Peer), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner).config);
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .await
            .map_err(|err| describe_io(&err, Side::Server).unwrap_or_else(|| err.to_string()))?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| certificate::read(leaf));
        let peer = match certificate {
            Some(certificate) => peer.with_certificate(certificate),
            None => peer,
        };
        Ok((Io(Worded::new(stream, Side::Server)), peer))
    }
}

/// Answers a client that spoke plaintext to a TLS port, in its own
/// protocol, so it can say why: an HTTP client gets a `400` saying to use
/// `https://`; a client of the binary protocol gets a TLS alert record,
/// which it recognises as "the server speaks TLS". What the log line
/// should say is returned.
pub async fn refuse_plaintext<S: AsyncWrite + Unpin>(stream: &mut S, protocol: Protocol) -> &'static str {
    let (answer, why): (&[u8], _) = match protocol {
        Protocol::Http => (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 60\r\n\r\nthis port speaks HTTPS; send the request to https:// instead\n",
            "a plain HTTP request came to this TLS port; it was answered 400, saying to use https://",
        ),
        // Fatal (2), protocol_version (70), in a TLS 1.2 record.
        _ => (
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70],
            "a client without TLS connected to this TLS port; it was refused (give it `ClientBuilder::tls`)",
        ),
    };
    let _ = stream.write_all(answer).await;
    let _ = stream.flush().await;
    why
}
