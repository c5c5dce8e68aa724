//! The client's side: [`handshake`] over one stream, and a [`TlsConnector`]
//! that wraps any connector, so each (re)connection runs a fresh handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rpc_core::Error;
use rpc_core::peer::Peer;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::certificate;
use super::config::ClientTls;
use super::words::{Side, Worded, describe_io};
use crate::stream::{Connector, Io};

/// A client connection after its TLS handshake.
pub type Connected<S> = Io<Worded<TlsStream<S>>>;

/// Runs the client's side of the handshake on `stream`, which reached
/// `peer` (named `target` in errors): the stream, and `peer` with the
/// server certificate it verified.
///
/// The server's certificate must carry `tls`'s server name, or else the
/// IP address of `peer`; a peer without one (a Unix socket, a stream of
/// unknown origin) needs the name set.
pub async fn handshake<S>(
    tls: &ClientTls,
    stream: S,
    peer: Peer,
    target: &str,
) -> Result<(Connected<S>, Peer), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = |why: String| Error::Connect {
        addr: target.to_owned(),
        source: Arc::new(io::Error::new(io::ErrorKind::InvalidData, why)),
    };
    let name = match (&tls.server_name, peer.socket_addr()) {
        (Some(name), _) => name.clone(),
        (None, Some(addr)) => ServerName::IpAddress(SocketAddr::ip(&addr).into()),
        (None, None) => {
            return Err(failed(format!(
                "{peer} has no IP address for the server's certificate to name; set the name it carries with `ClientTls::server_name`"
            )));
        }
    };
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
        .connect(name, stream)
        .await
        .map_err(|err| {
            failed(
                describe_io(&err, Side::Client).unwrap_or_else(|| format!("the TLS handshake failed: {err}")),
            )
        })?;
    let peer = match stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
    {
        None => peer,
        Some(leaf) => match certificate::read(leaf) {
            Some(certificate) => peer.with_certificate(certificate),
            None => {
                return Err(failed(
                    "the server's certificate was verified but could not be read".to_owned(),
                ));
            }
        },
    };
    Ok((Io(Worded::new(stream, Side::Client)), peer))
}

/// Dials through `inner`, then runs the TLS handshake as `tls` says.
#[derive(Debug, Clone)]
pub struct TlsConnector<C> {
    inner: C,
    tls: ClientTls,
}

impl<C: Connector> TlsConnector<C> {
    /// TLS over the connections `inner` dials.
    pub fn new(inner: C, tls: ClientTls) -> TlsConnector<C> {
        TlsConnector { inner, tls }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = Connected<C::Stream>;

    async fn connect(&self) -> Result<(Self::Stream, Peer), Error> {
        let (stream, peer) = self.inner.connect().await?;
        handshake(&self.tls, stream, peer, &self.target()).await
    }

    fn target(&self) -> String {
        format!("{} (TLS)", self.inner.target())
    }
}
