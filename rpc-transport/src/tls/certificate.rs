//! Reading a verified certificate's subject and alternative names, which
//! rustls checks but does not expose.

use std::net::IpAddr;

use rpc_core::peer::{AltName, PeerCertificate};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// The peer certificate in `der`, already verified by rustls. `None` if it
/// cannot be parsed (rustls accepted it, so this does not happen with a
/// well-formed chain).
pub(super) fn read(der: &[u8]) -> Option<PeerCertificate> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = distinguished_name(cert.subject());
    // The last CN, as Go's crypto/x509 reads it; from the parsed
    // attributes, never from the rendered subject, which a value holding
    // ", CN=" could forge.
    let common_name = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .last()
        .map(str::to_owned);
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
    Some(PeerCertificate::new(
        subject,
        common_name,
        alt_names,
        der.to_vec(),
    ))
}

/// A name as RFC 4514 writes it, in the certificate's order, with the
/// special characters of each value escaped: `CN=order-service, O=Example`.
fn distinguished_name(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for rdn in name.iter_rdn() {
        for (i, attr) in rdn.iter().enumerate() {
            if !out.is_empty() {
                out.push_str(if i == 0 { ", " } else { "+" });
            }
            let oid = attr.attr_type().to_id_string();
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for byte in attr.attr_value().data.iter() {
                        out.push_str(&format!("{byte:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// The short names RFC 4514 (and OpenSSL) use for the usual attributes.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// RFC 4514, 2.4: a backslash before `"+,;<>\`, a leading `#` or space,
/// and a trailing space.
fn escape(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
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

    #[test]
    fn a_value_holding_a_comma_cannot_forge_another_attribute() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "x, CN=order-service");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "intruder");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let seen = read(cert.der()).unwrap();
        assert_eq!(seen.common_name(), Some("intruder"));
        assert_eq!(seen.subject(), "CN=intruder, O=x\\, CN=order-service");
    }
}
