//! Handshake failures in words that name their cause and the fix, for
//! whichever side reads them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::{AlertDescription, CertificateError, Error};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which side of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Server,
}

impl Side {
    fn own_certificate(self) -> &'static str {
        match self {
            Side::Client => "this client's certificate",
            Side::Server => "this server's certificate",
        }
    }

    fn other(self) -> &'static str {
        match self {
            Side::Client => "server",
            Side::Server => "client",
        }
    }
}

/// What went wrong during the handshake, for the person reading this
/// side's error.
pub(super) fn describe(err: &Error, side: Side) -> String {
    let peer = side.other();
    match err {
        Error::InvalidCertificate(cert) => certificate(cert, peer),
        Error::NoCertificatesPresented if side == Side::Server => {
            "the client sent no certificate, and this server requires one (`ClientAuth::Required`); give the client one with `ClientTls::identity`".to_owned()
        }
        Error::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        Error::AlertReceived(alert) => alert_received(*alert, side),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => format!(
            "the {peer} did not answer in TLS: it does not serve TLS on this port (use TLS on both sides, `Server::tls` and `ClientBuilder::tls`, or on neither)"
        ),
        Error::NoApplicationProtocol => format!(
            "the {peer} offered no protocol this side speaks (ALPN: `rpc/1` or `http/1.1`)"
        ),
        Error::PeerIncompatible(why) => format!(
            "the {peer} shares no TLS version or cipher suite with this side ({why:?})"
        ),
        other => format!("the TLS handshake failed: {other}"),
    }
}

fn certificate(err: &CertificateError, peer: &str) -> String {
    match err {
        CertificateError::UnknownIssuer => format!(
            "the {peer}'s certificate was not issued by a CA this side trusts (check the CA certificates given to {})",
            if peer == "server" {
                "`ClientTls::new`"
            } else {
                "`ClientAuth`"
            }
        ),
        CertificateError::Expired => format!("the {peer}'s certificate has expired"),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the {peer}'s certificate has expired: it was valid until {}, and it is now {}",
            date(not_after.as_secs()),
            date(time.as_secs())
        ),
        CertificateError::NotValidYet => {
            format!("the {peer}'s certificate is not valid yet (check both machines' clocks)")
        }
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the {peer}'s certificate is not valid yet: it is valid from {}, and it is now {} (check both machines' clocks)",
            date(not_before.as_secs()),
            date(time.as_secs())
        ),
        CertificateError::NotValidForName => format!(
            "the {peer}'s certificate does not carry the name expected; set the name it carries with `ClientTls::server_name` (without it, the client expects the IP address it dialled)"
        ),
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "the {peer}'s certificate is not valid for {} (it names {}); set one of its names with `ClientTls::server_name` (without it, the client expects the IP address it dialled)",
            expected.to_str(),
            if presented.is_empty() {
                "no name".to_owned()
            } else {
                presented
                    .iter()
                    .map(|name| bare(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::Revoked => format!("the {peer}'s certificate has been revoked"),
        CertificateError::BadSignature => format!("the {peer}'s certificate has a bad signature"),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => format!(
            "the {peer}'s certificate is not meant for this use (its extended key usage does not allow TLS {})",
            if peer == "server" { "servers" } else { "clients" }
        ),
        other => format!("the {peer}'s certificate was refused: {other:?}"),
    }
}

/// A name as rustls lists it (`DnsName("localhost")`, `IpAddress(10.0.0.7)`),
/// as a person writes it.
fn bare(name: &str) -> &str {
    let inner = name
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(name);
    inner.trim_matches('"')
}

/// A UNIX time as a UTC date and time: `2026-11-29 08:15:00 UTC`.
fn date(secs: u64) -> String {
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil from days (Howard Hinnant's algorithm), for days since 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// The other side refused the handshake and said why in an alert.
fn alert_received(alert: AlertDescription, side: Side) -> String {
    let peer = side.other();
    match (alert, side) {
        (AlertDescription::CertificateRequired, Side::Client) => {
            "the server requires a client certificate and this client sent none; give it one with `ClientTls::identity`".to_owned()
        }
        (AlertDescription::UnknownCA, Side::Client) => {
            "the server refused this client's certificate: it does not trust the CA that issued it".to_owned()
        }
        (AlertDescription::UnknownCA, Side::Server) => {
            "the client refused this server's certificate: it does not trust the CA that issued it".to_owned()
        }
        (AlertDescription::CertificateExpired, _) => {
            format!("the {peer} refused {}: it has expired (or is not valid yet)", side.own_certificate())
        }
        (AlertDescription::BadCertificate, Side::Server) => {
            "the client refused this server's certificate (bad certificate): most often its names do not include the name the client dialled".to_owned()
        }
        (AlertDescription::BadCertificate | AlertDescription::CertificateUnknown, _) => {
            format!("the {peer} refused {} ({alert:?})", side.own_certificate())
        }
        (AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure, _) => format!(
            "the {peer} refused the TLS handshake ({alert:?}): they share no TLS version or cipher suite"
        ),
        (AlertDescription::NoApplicationProtocol, _) => format!(
            "the {peer} speaks none of the protocols this side offered (ALPN `rpc/1`, `http/1.1`)"
        ),
        (alert, _) => format!("the {peer} ended the TLS handshake with the alert {alert:?}"),
    }
}

/// The words for an I/O error from a handshake, if rustls is its cause.
pub(super) fn describe_io(err: &io::Error, side: Side) -> Option<String> {
    let tls = err.get_ref()?.downcast_ref::<Error>()?;
    Some(describe(tls, side))
}

/// What went wrong after this side's part of the handshake: under TLS 1.3
/// a server's refusal of the client's certificate arrives here; anything
/// else is the session failing.
fn describe_session(err: &Error, side: Side) -> String {
    let peer = side.other();
    match err {
        Error::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied),
        ) => alert_received(*alert, side),
        Error::AlertReceived(alert) => format!("the {peer} ended the TLS session with the alert {alert:?}"),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("the {peer} sent bytes that are not valid TLS records")
        }
        Error::DecryptError => {
            format!("a TLS record from the {peer} failed to decrypt (altered in transit?)")
        }
        other => format!("the TLS session failed: {other}"),
    }
}

/// A TLS stream whose errors are put in `describe`'s words: under TLS
/// 1.3 a server refuses a client's certificate after the client's side of
/// the handshake is done, so the client reads the refusal on its first
/// read.
#[derive(Debug)]
pub struct Worded<S> {
    inner: S,
    side: Side,
}

impl<S> Worded<S> {
    pub(super) fn new(inner: S, side: Side) -> Worded<S> {
        Worded { inner, side }
    }

    fn word<T>(&self, result: io::Result<T>) -> io::Result<T> {
        result.map_err(
            |err| match err.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
                Some(tls) => io::Error::new(err.kind(), describe_session(tls, self.side)),
                None => err,
            },
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Worded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        polled.map(|result| self.word(result))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Worded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        polled.map(|result| self.word(result))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        polled.map(|result| self.word(result))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        polled.map(|result| self.word(result))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        polled.map(|result| self.word(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names_read_as_people_write_them() {
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(1_735_689_600), "2025-01-01 00:00:00 UTC");
        assert_eq!(date(951_827_696), "2000-02-29 12:34:56 UTC");
        assert_eq!(bare("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare("plain"), "plain");
    }
}
