//! Reading a verified certificate's subject and alternative names, which
//! rustls checks but does not expose.

use std::net::IpAddr;

use rpc_core::peer::{AltName, PeerCertificate};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The peer certificate in `der`, already verified by rustls. `None` if it
/// cannot be parsed (rustls accepted it, so this does not happen with a
/// well-formed chain).
pub(super) fn read(der: &[u8]) -> Option<PeerCertificate> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject().to_string();
    let mut alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let name = match name {
                GeneralName::DNSName(name) => AltName::Dns((*name).to_owned()),
                GeneralName::RFC822Name(email) => AltName::Email((*email).to_owned()),
                GeneralName::URI(uri) => AltName::Uri((*uri).to_owned()),
                GeneralName::IPAddress(bytes) => match ip(bytes) {
                    Some(ip) => AltName::Ip(ip),
                    None => continue,
                },
                _ => continue,
            };
            alt_names.push(name);
        }
    }
    Some(PeerCertificate::new(subject, alt_names, der.to_vec()))
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_says_who_it_names() {
        let mut params = rcgen::CertificateParams::new(vec!["users.internal".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "order-service");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::from([10, 0, 0, 7])));
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster/sa/orders".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let seen = read(cert.der()).unwrap();
        assert_eq!(seen.common_name(), Some("order-service"));
        assert!(seen.subject().contains("CN=order-service"), "{}", seen.subject());
        assert!(seen.subject().contains("O=Example"), "{}", seen.subject());
        assert_eq!(
            seen.alt_names(),
            [
                AltName::Dns("users.internal".to_owned()),
                AltName::Ip(IpAddr::from([10, 0, 0, 7])),
                AltName::Uri("spiffe://cluster/sa/orders".to_owned()),
            ]
        );
        assert!(read(b"not a certificate").is_none());
    }
}
