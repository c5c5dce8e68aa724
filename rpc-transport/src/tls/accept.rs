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
use crate::handshake::linger;
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
    /// error says why, in words; before returning it, what the client
    /// still sends is read and discarded for a moment, so closing does not
    /// reset the connection before the client reads the server's alert.
    pub async fn accept<S>(&self, stream: S, peer: Peer) -> Result<(Accepted<S>, Peer), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner).config);
        let accepted = tokio_rustls::TlsAcceptor::from(config)
            .accept(stream)
            .into_fallible()
            .await;
        let stream = match accepted {
            Ok(stream) => stream,
            Err((err, mut stream)) => {
                let why = describe_io(&err, Side::Server).unwrap_or_else(|| err.to_string());
                linger(&mut stream).await;
                return Err(why);
            }
        };
        let peer = match stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
        {
            None => peer,
            Some(leaf) => match certificate::read(leaf) {
                Some(certificate) => peer.with_certificate(certificate),
                // Never a verified caller who looks anonymous.
                None => return Err("the client's certificate was verified but could not be read".to_owned()),
            },
        };
        Ok((Io(Worded::new(stream, Side::Server)), peer))
    }
}

/// Answers a client that spoke plaintext to a TLS port, in its own
/// protocol, so it can say why: an HTTP client gets a `400` saying to use
/// `https://`; a client of the binary protocol gets a TLS alert record,
/// which it recognises as "the server speaks TLS". Then reads and discards
/// what the client still sends, for a moment, so closing does not reset the
/// connection before the answer is read. What the log line should say is
/// returned. The caller bounds how long this may take.
pub async fn refuse_plaintext<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    protocol: Protocol,
) -> &'static str {
    const BODY: &str = "this port speaks HTTPS; send the request to https:// instead\n";
    let (answer, why) = match protocol {
        Protocol::Http => (
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            )
            .into_bytes(),
            "a plain HTTP request came to this TLS port; it was answered 400, saying to use https://",
        ),
        // Fatal (2), protocol_version (70), in a TLS 1.2 record.
        _ => (
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70],
            "a client without TLS connected to this TLS port; it was refused (give it `ClientBuilder::tls`)",
        ),
    };
    if stream.write_all(&answer).await.is_ok() && stream.flush().await.is_ok() {
        linger(stream).await;
    }
    why
}
