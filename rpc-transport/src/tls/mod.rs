//! TLS on every door: rustls with its ring provider.
//!
//! - [`config`]: what users hand over: an [`Identity`] (certificate chain
//!   and key), [`Roots`] to trust, [`ClientAuth`], and the finished
//!   [`ServerTls`] and [`ClientTls`].
//! - [`accept`]: the server's side, an [`Acceptor`] whose configuration can
//!   be replaced while it serves (certificate rotation).
//! - [`connect`]: the client's side, a [`TlsConnector`] around any
//!   [`Connector`](crate::stream::Connector), so reconnects redo the
//!   handshake.
//! - `certificate`: the verified peer certificate, read for handlers.
//! - `words`: every handshake failure, in words that name its cause.
//!
//! Every rustls configuration is built with an explicit provider (ring), so
//! a process that also links aws-lc-rs never trips over rustls's choice of
//! a process-wide default.

pub mod accept;
mod certificate;
pub mod config;
pub mod connect;
mod words;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use accept::Acceptor;
pub use config::{ClientAuth, ClientTls, Identity, Roots, ServerTls, TlsError};
pub use connect::TlsConnector;
pub use words::Worded;

/// The ALPN id of the binary protocol over TLS. Servers also offer
/// `http/1.1`, for JSON callers; which one a connection speaks is still
/// told by its first byte, inside TLS.
pub const ALPN_RPC: &[u8] = b"rpc/1";

/// The ALPN id of HTTP/1.1.
pub const ALPN_HTTP: &[u8] = b"http/1.1";

/// The one crypto provider every configuration is built with: ring's, with
/// AES-128-GCM preferred over AES-256-GCM (as Go's TLS does), since it is
/// about a third faster on large payloads and no less safe in practice.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        Arc::new(provider)
    }))
}
