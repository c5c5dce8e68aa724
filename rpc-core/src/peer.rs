//! [`Peer`]: who is on the other end of a connection, as its transport
//! knows it, and the certificate it proved it holds, when TLS verified one.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Who is on the other end of a connection: what every handler can learn
/// about its caller through [`Context::peer`](crate::Context::peer), and
/// what a client's errors name.
///
/// Built by the transport that accepted or dialled the connection; cheap to
/// clone (one reference count).
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    inner: Arc<Inner>,
}

#[derive(PartialEq, Eq)]
struct Inner {
    addr: PeerAddr,
    /// Boxed: most peers have none, and every connection holds a peer.
    certificate: Option<Box<PeerCertificate>>,
}

/// The certificate a peer presented over TLS, verified against the trusted
/// CAs: who it proved to be.
///
/// A server sees its client's when it asks for client certificates
/// (`ClientAuth::Required` or `Optional`); a client sees its server's.
///
/// ```
/// # fn handler(ctx: &rpc_core::Context) -> Result<(), rpc_core::Error> {
/// let who = ctx.peer().certificate().map(|cert| cert.subject().to_owned());
/// if who.as_deref() != Some("CN=order-service") {
///     return Err(rpc_core::Error::failed("only the order service may call this"));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    subject: String,
    common_name: Option<String>,
    alt_names: Vec<AltName>,
    der: Vec<u8>,
}

/// One of a certificate's subject alternative names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AltName {
    /// A DNS name (`users.internal`, `*.example.com`).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// An email address.
    Email(String),
    /// A URI (SPIFFE ids are URIs: `spiffe://cluster/ns/default/sa/orders`).
    Uri(String),
}

impl PeerCertificate {
    /// A verified certificate: its subject as a distinguished name
    /// (`CN=order-service, O=Example`), the subject's common name, its
    /// alternative names, and its DER bytes. Built by the TLS transport.
    pub fn new(
        subject: String,
        common_name: Option<String>,
        alt_names: Vec<AltName>,
        der: Vec<u8>,
    ) -> PeerCertificate {
        PeerCertificate {
            subject,
            common_name,
            alt_names,
            der,
        }
    }

    /// The subject, as a distinguished name in the certificate's order,
    /// with special characters escaped as RFC 4514 says:
    /// `CN=order-service, O=Example`. Compare it whole; to check one
    /// attribute, use [`common_name`](Self::common_name) or the DER.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject's common name (`CN`; the last, if there are several),
    /// read from the certificate itself.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The subject alternative names, in the certificate's order.
    pub fn alt_names(&self) -> &[AltName] {
        &self.alt_names
    }

    /// The certificate itself, DER-encoded, for checks this type does not
    /// offer (extensions, policies, the issuer).
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

impl fmt::Display for AltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AltName::Dns(name) => write!(f, "DNS:{name}"),
            AltName::Ip(ip) => write!(f, "IP:{ip}"),
            AltName::Email(email) => write!(f, "email:{email}"),
            AltName::Uri(uri) => write!(f, "URI:{uri}"),
        }
    }
}

/// The address part of a [`Peer`], by transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP connection from (or to) this address.
    Tcp(SocketAddr),
    /// A Unix domain socket. The other end's path is usually unnamed for
    /// accepted connections; its process credentials, where the system
    /// reports them, say who it is.
    Unix {
        /// The socket's path, when it has one.
        path: Option<PathBuf>,
        /// The peer process's user id, group id and process id.
        credentials: Option<Credentials>,
    },
    /// An in-memory pipe in this process.
    Memory,
    /// Some other transport, described in words (for logs and errors).
    Other(Arc<str>),
    /// A stream handed over by the caller (`serve_io`, `connect_io`), whose
    /// other end nothing here knows.
    Unknown,
}

/// The credentials of the process at the other end of a Unix socket, as
/// the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The process id, on systems that report it.
    pub pid: Option<i32>,
}

impl Peer {
    /// Whether `other` is this very peer (a clone of it), not merely an
    /// equal one.
    pub(crate) fn is(&self, other: &Peer) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A peer at `addr`.
    pub fn new(addr: PeerAddr) -> Peer {
        Peer {
            inner: Arc::new(Inner {
                addr,
                certificate: None,
            }),
        }
    }

    /// This peer, having proved over TLS that it holds `certificate`.
    pub fn with_certificate(self, certificate: PeerCertificate) -> Peer {
        Peer {
            inner: Arc::new(Inner {
                addr: self.inner.addr.clone(),
                certificate: Some(Box::new(certificate)),
            }),
        }
    }

    /// A peer nothing is known about.
    pub fn unknown() -> Peer {
        Peer::new(PeerAddr::Unknown)
    }

    /// The peer's address, by transport.
    pub fn addr(&self) -> &PeerAddr {
        &self.inner.addr
    }

    /// The certificate the peer presented over TLS and that was verified;
    /// `None` without TLS, or when the peer presented none.
    pub fn certificate(&self) -> Option<&PeerCertificate> {
        self.inner.certificate.as_deref()
    }

    /// The peer's IP address and port, for TCP connections.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.inner.addr {
            PeerAddr::Tcp(addr) => Some(addr),
            _ => None,
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer::new(PeerAddr::Tcp(addr))
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.certificate {
            None => fmt::Debug::fmt(&self.inner.addr, f),
            Some(cert) => f
                .debug_struct("Peer")
                .field("addr", &self.inner.addr)
                .field("subject", &cert.subject)
                .finish(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.addr, f)?;
        match &self.inner.certificate {
            Some(cert) => write!(f, " ({})", cert.subject),
            None => Ok(()),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix { path: Some(path), .. } => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix {
                path: None,
                credentials: Some(who),
            } => match who.pid {
                Some(pid) => write!(f, "unix socket (pid {pid}, uid {})", who.uid),
                None => write!(f, "unix socket (uid {})", who.uid),
            },
            PeerAddr::Unix { .. } => f.write_str("unix socket"),
            PeerAddr::Memory => f.write_str("in-memory pipe"),
            PeerAddr::Other(what) => f.write_str(what),
            PeerAddr::Unknown => f.write_str("a stream of unknown origin"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_say_who_they_are() {
        let tcp = Peer::from(SocketAddr::from(([127, 0, 0, 1], 7000)));
        assert_eq!(tcp.to_string(), "127.0.0.1:7000");
        assert_eq!(tcp.socket_addr(), Some(SocketAddr::from(([127, 0, 0, 1], 7000))));
        let unix = Peer::new(PeerAddr::Unix {
            path: None,
            credentials: Some(Credentials {
                uid: 1000,
                gid: 1000,
                pid: Some(42),
            }),
        });
        assert_eq!(unix.to_string(), "unix socket (pid 42, uid 1000)");
        assert_eq!(unix.socket_addr(), None);
    }
}
