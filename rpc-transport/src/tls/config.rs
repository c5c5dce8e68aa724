//! What a user hands over to turn TLS on: certificates, keys and trust,
//! checked when they are given, so a bad file fails at start-up with its
//! name in the error rather than at the first handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{ALPN_HTTP, ALPN_RPC, provider};

/// A TLS configuration that could not be built, naming the file or value
/// at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path} failed: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why, as the system said.
        reason: String,
    },
    /// PEM text held no certificate.
    #[error("{what} holds no certificate (a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate {
        /// The file, or "the certificate PEM".
        what: String,
    },
    /// PEM text held no private key.
    #[error(
        "{what} holds no private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)"
    )]
    NoKey {
        /// The file, or "the key PEM".
        what: String,
    },
    /// PEM text could not be read.
    #[error("{what} is not valid PEM: {reason}")]
    BadPem {
        /// The file, or what the text was for.
        what: String,
        /// What the parser said.
        reason: String,
    },
    /// A certificate, key or CA that rustls refused.
    #[error("{what}: {reason}")]
    Refused {
        /// What was being set up.
        what: &'static str,
        /// What rustls said.
        reason: String,
    },
    /// A server name that is neither a DNS name nor an IP address.
    #[error("`{0}` is not a server name (a DNS name such as users.internal, or an IP address)")]
    BadServerName(String),
    /// `reload_tls` on a server started without TLS.
    #[error("this server was started without TLS; turn it on with `Server::tls` before starting it")]
    NotTls,
}

/// Where PEM text came from, for errors.
enum Source<'a> {
    File(&'a Path),
    Memory(&'static str),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Memory(what) => f.write_str(what),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|err| TlsError::Read {
        path: path.to_owned(),
        reason: err.to_string(),
    })
}

fn certificates(pem: &[u8], from: &Source<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadPem {
            what: from.to_string(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: from.to_string(),
        });
    }
    Ok(certs)
}

fn key(pem: &[u8], from: &Source<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            what: from.to_string(),
        },
        err => TlsError::BadPem {
            what: from.to_string(),
            reason: err.to_string(),
        },
    })
}

/// A certificate chain and its private key: who this side proves to be.
/// A server's is required; a client's is needed when the server asks for
/// client certificates.
///
/// The key must belong to the first certificate of the chain; that is
/// checked here.
#[derive(Clone)]
pub struct Identity {
    key: Arc<CertifiedKey>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// From PEM text: the certificate chain (leaf first) and the private
    /// key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Identity, TlsError> {
        Identity::build(
            certificates(chain.as_ref(), &Source::Memory("the certificate PEM"))?,
            self::key(key.as_ref(), &Source::Memory("the key PEM"))?,
        )
    }

    /// From PEM files: the certificate chain (leaf first) and the private
    /// key.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Identity, TlsError> {
        let (chain, key) = (chain.as_ref(), key.as_ref());
        Identity::build(
            certificates(&read(chain)?, &Source::File(chain))?,
            self::key(&read(key)?, &Source::File(key))?,
        )
    }

    /// From DER: the certificate chain (leaf first) and the private key.
    pub fn from_der(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Identity, TlsError> {
        let key = PrivateKeyDer::try_from(key).map_err(|reason| TlsError::Refused {
            what: "the private key",
            reason: reason.to_owned(),
        })?;
        Identity::build(chain.into_iter().map(CertificateDer::from).collect(), key)
    }

    fn build(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Identity, TlsError> {
        let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|err| TlsError::Refused {
            what: "the certificate and key",
            reason: err.to_string(),
        })?;
        Ok(Identity { key: Arc::new(key) })
    }
}

/// The certificate authorities one side trusts to vouch for the other.
#[derive(Clone)]
pub struct Roots {
    store: Arc<RootCertStore>,
}

impl fmt::Debug for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Roots")
            .field("authorities", &self.store.len())
            .finish()
    }
}

impl Roots {
    /// The CA certificates in PEM text (one or more).
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Roots, TlsError> {
        Roots::build(certificates(pem.as_ref(), &Source::Memory("the CA PEM"))?)
    }

    /// The CA certificates in a PEM file (a bundle of one or more).
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Roots, TlsError> {
        let path = path.as_ref();
        Roots::build(certificates(&read(path)?, &Source::File(path))?)
    }

    /// CA certificates in DER.
    pub fn from_der(certificates: Vec<Vec<u8>>) -> Result<Roots, TlsError> {
        Roots::build(certificates.into_iter().map(CertificateDer::from).collect())
    }

    /// The platform's trusted CAs (the system store), for servers with
    /// public certificates. Certificates the platform holds but rustls
    /// cannot use are skipped.
    #[cfg(feature = "native-roots")]
    pub fn native() -> Result<Roots, TlsError> {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let reason = found
                .errors
                .first()
                .map_or_else(|| "it holds none".to_owned(), ToString::to_string);
            return Err(TlsError::Refused {
                what: "the platform's trusted certificates",
                reason,
            });
        }
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(found.certs);
        Ok(Roots {
            store: Arc::new(store),
        })
    }

    fn build(certificates: Vec<CertificateDer<'static>>) -> Result<Roots, TlsError> {
        let mut store = RootCertStore::empty();
        for cert in certificates {
            store.add(cert).map_err(|err| TlsError::Refused {
                what: "a CA certificate",
                reason: err.to_string(),
            })?;
        }
        Ok(Roots {
            store: Arc::new(store),
        })
    }
}

/// Whether a server asks its clients for certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificates: any client that trusts the server may call
    /// (the default).
    #[default]
    Off,
    /// Clients may present a certificate, which must then be issued by one
    /// of these CAs; clients without one are served too. Handlers tell them
    /// apart by `Context::peer().certificate()`.
    Optional(Roots),
    /// Every client must present a certificate issued by one of these CAs
    /// (mutual TLS).
    Required(Roots),
}

/// A server's TLS configuration: its identity and whether it asks for
/// client certificates. Checked when built; hand it to `Server::tls`, or
/// to `ServerHandle::reload_tls` to rotate certificates.
///
/// TLS 1.3 and 1.2, rustls's safe defaults, with the ring provider. ALPN
/// offers `rpc/1` and `http/1.1`.
#[derive(Clone)]
pub struct ServerTls {
    pub(super) config: Arc<ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A server proving `identity`, with client certificates as
    /// `client_auth` says.
    pub fn new(identity: Identity, client_auth: ClientAuth) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Refused {
                what: "the TLS versions",
                reason: err.to_string(),
            })?;
        let verifier = |roots: &Roots, optional: bool| {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots.store), Arc::clone(&provider));
            let builder = if optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|err| TlsError::Refused {
                what: "the client CAs",
                reason: err.to_string(),
            })
        };
        let builder = match &client_auth {
            ClientAuth::Off => builder.with_no_client_auth(),
            ClientAuth::Optional(roots) => builder.with_client_cert_verifier(verifier(roots, true)?),
            ClientAuth::Required(roots) => builder.with_client_cert_verifier(verifier(roots, false)?),
        };
        let mut config =
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&identity.key))));
        config.alpn_protocols = vec![ALPN_RPC.to_vec(), ALPN_HTTP.to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// A server proving the identity in these PEM files, without client
    /// certificates.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ServerTls, TlsError> {
        ServerTls::new(Identity::from_pem_files(chain, key)?, ClientAuth::Off)
    }
}

/// A client's TLS configuration: the CAs it trusts, the name it expects
/// the server's certificate to carry, and its own certificate if the
/// server asks for one. Hand it to `ClientBuilder::tls`.
#[derive(Clone)]
pub struct ClientTls {
    pub(super) config: Arc<ClientConfig>,
    pub(super) server_name: Option<ServerName<'static>>,
    roots: Roots,
    identity: Option<Identity>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("roots", &self.roots)
            .field("identity", &self.identity)
            .finish()
    }
}

impl ClientTls {
    /// A client trusting the CAs in `roots`, presenting no certificate,
    /// and expecting the server's certificate to name the address it
    /// dials (its IP address, unless [`server_name`](Self::server_name)
    /// says otherwise).
    pub fn new(roots: Roots) -> Result<ClientTls, TlsError> {
        let config = client_config(&provider(), &roots, None)?;
        Ok(ClientTls {
            config,
            server_name: None,
            roots,
            identity: None,
        })
    }

    /// Presents `identity` to servers that ask for a client certificate
    /// (mutual TLS).
    pub fn identity(self, identity: Identity) -> Result<ClientTls, TlsError> {
        let config = client_config(&provider(), &self.roots, Some(&identity))?;
        Ok(ClientTls {
            config,
            identity: Some(identity),
            ..self
        })
    }

    /// The name the server's certificate must carry (`users.internal`),
    /// and the name sent in the handshake. Without it, the client expects
    /// the IP address it dialled.
    pub fn server_name(self, name: impl Into<String>) -> Result<ClientTls, TlsError> {
        let name = name.into();
        let server_name = ServerName::try_from(name.clone()).map_err(|_| TlsError::BadServerName(name))?;
        Ok(ClientTls {
            server_name: Some(server_name),
            ..self
        })
    }
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: &Roots,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots.store), Arc::clone(provider))
            .build()
            .map_err(|err| TlsError::Refused {
                what: "the CAs to trust",
                reason: err.to_string(),
            })?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Refused {
            what: "the TLS versions",
            reason: err.to_string(),
        })?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&identity.key))))
        }
    };
    config.alpn_protocols = vec![ALPN_RPC.to_vec()];
    Ok(Arc::new(config))
}
