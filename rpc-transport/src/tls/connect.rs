//! The client's side: a [`TlsConnector`] that wraps any connector, so each
//! (re)connection runs a fresh handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rpc_core::Error;
use rpc_core::peer::Peer;
use rustls_pki_types::ServerName;
use tokio_rustls::client::TlsStream;

use super::certificate;
use super::config::ClientTls;
use super::words::{Side, Worded, describe_io};
use crate::stream::{Connector, Io};

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

    /// The name the server's certificate must carry for a connection to
    /// `peer`: the one configured, or else the IP address dialled.
    fn server_name(&self, peer: &Peer) -> Result<ServerName<'static>, Error> {
        if let Some(name) = &self.tls.server_name {
            return Ok(name.clone());
        }
        match peer.socket_addr() {
            Some(addr) => Ok(ServerName::IpAddress(SocketAddr::ip(&addr).into())),
            None => Err(self.failed(format!(
                "{peer} has no IP address for the server's certificate to name; set the name it carries with `ClientTls::server_name`"
            ))),
        }
    }

    fn failed(&self, why: String) -> Error {
        Error::Connect {
            addr: self.target(),
            source: Arc::new(io::Error::new(io::ErrorKind::InvalidData, why)),
        }
    }
}

impl<C: Connector> Connector for TlsConnector<C> {
    type Stream = Io<Worded<TlsStream<C::Stream>>>;

    async fn connect(&self) -> Result<(Self::Stream, Peer), Error> {
        let (stream, peer) = self.inner.connect().await?;
        let name = self.server_name(&peer)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls.config))
            .connect(name, stream)
            .await
            .map_err(|err| {
                self.failed(
                    describe_io(&err, Side::Client)
                        .unwrap_or_else(|| format!("the TLS handshake failed: {err}")),
                )
            })?;
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
        Ok((Io(Worded::new(stream, Side::Client)), peer))
    }

    fn target(&self) -> String {
        format!("{} (TLS)", self.inner.target())
    }
}
