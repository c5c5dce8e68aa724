//! Certificates made for the tests with rcgen: certificate authorities,
//! servers, clients, and the broken ones (expired, not yet valid, for
//! another name).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rpc::tls::{ClientAuth, ClientTls, Identity, Roots, ServerTls};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Issued {
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key).unwrap()
    }
}

/// What a leaf certificate is for, and how long it is valid.
pub struct Leaf<'a> {
    pub common_name: &'a str,
    pub names: &'a [&'a str],
    pub server: bool,
    /// Years before now it became valid, and after now it stops (negative:
    /// in the past).
    pub valid: (i32, i32),
}

impl Leaf<'_> {
    pub fn server(common_name: &str) -> Leaf<'_> {
        Leaf {
            common_name,
            names: &["localhost", "127.0.0.1"],
            server: true,
            valid: (-1, 1),
        }
    }

    pub fn client(common_name: &str) -> Leaf<'_> {
        Leaf {
            common_name,
            names: &[],
            server: false,
            valid: (-1, 1),
        }
    }
}

/// This year, near enough for certificates valid for whole years.
fn this_year() -> i32 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    1970 + (since_epoch.as_secs() / 31_556_952) as i32
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn roots(&self) -> Roots {
        Roots::from_pem(self.pem()).unwrap()
    }

    pub fn issue(&self, leaf: Leaf<'_>) -> Issued {
        let names: Vec<String> = leaf.names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        params.extended_key_usages = vec![if leaf.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        // January 1st of those years.
        params.not_before = rcgen::date_time_ymd(this_year() + leaf.valid.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(this_year() + leaf.valid.1 + 1, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server's TLS with a certificate from this CA for localhost and
    /// 127.0.0.1.
    pub fn server_tls(&self, common_name: &str, client_auth: ClientAuth) -> ServerTls {
        ServerTls::new(self.issue(Leaf::server(common_name)).identity(), client_auth).unwrap()
    }

    /// A client's TLS trusting this CA.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::new(self.roots()).unwrap()
    }
}

/// 127.0.0.1, which the test certificates name.
pub fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
