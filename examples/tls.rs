//! Mutual TLS between two services, with certificates made on the spot:
//!
//! 1. a throwaway certificate authority (rcgen), which issues a server
//!    certificate for the users service and a client certificate for the
//!    order service;
//! 2. the users service serves over TLS and requires a client certificate
//!    from that CA; its handler reads who called from the verified
//!    certificate;
//! 3. the order service calls it, proving who it is; a caller without a
//!    certificate is refused, and says why;
//! 4. the users service rotates its certificate without a restart.
//!
//! ```text
//! cargo run --example tls
//! ```
//!
//! In production the PEM files come from your CA (cert-manager, Vault, a
//! corporate PKI): `Identity::from_pem_files` and `Roots::from_pem_file`
//! read them.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rpc::tls::{ClientAuth, ClientTls, Identity, Roots, ServerTls};

/// Users, by id.
#[rpc::service]
pub trait Users {
    /// The user's name; only callers with a certificate may ask.
    async fn name(&self, id: u64) -> Result<String, String>;
}

struct Directory;

impl Users for Directory {
    async fn name(&self, id: u64) -> Result<String, String> {
        // The certificate the caller proved it holds, verified against the CA.
        let caller = rpc::Context::current()
            .and_then(|ctx| ctx.peer().certificate().map(|cert| cert.subject().to_owned()));
        println!(
            "users: `name({id})` called by {}",
            caller.as_deref().unwrap_or("nobody")
        );
        match caller.as_deref() {
            Some("CN=order-service") => Ok(format!("user-{id}")),
            _ => Err("only the order service may read names".to_owned()),
        }
    }
}

/// A certificate authority of our own, for this example only.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Result<Ca, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Example CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// A certificate and key, in PEM, for `name` (a server's DNS name) or a
    /// client called `name`.
    fn issue(&self, name: &str, server: bool) -> Result<(String, String), rcgen::Error> {
        let names = if server { vec![name.to_owned()] } else { Vec::new() };
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = Ca::new()?;
    let trust = || Roots::from_pem(ca.cert.pem());

    // The users service: its own certificate, and client certificates
    // required from the same CA.
    let (cert, key) = ca.issue("users.internal", true)?;
    let server_tls = ServerTls::new(Identity::from_pem(cert, key)?, ClientAuth::Required(trust()?))?;
    let server = rpc::Server::new()
        .tls(server_tls)
        .serve(UsersServer::new(Directory))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    println!("users: serving over TLS at {addr}, client certificates required");

    // The order service: trusts the CA, expects the name `users.internal`
    // (we dial an IP address), and proves who it is.
    let (cert, key) = ca.issue("order-service", false)?;
    let orders_tls = ClientTls::new(trust()?)?
        .server_name("users.internal")?
        .identity(Identity::from_pem(cert, key)?)?;
    let users = UsersClient::from_client(rpc::ClientBuilder::new().tls(orders_tls).connect(addr).await?);
    println!("orders: name(7) = {:?}", users.name(7).await?);

    // A caller with no certificate does not get past the handshake.
    let anonymous = ClientTls::new(trust()?)?.server_name("users.internal")?;
    match rpc::ClientBuilder::new().tls(anonymous).connect(addr).await {
        Ok(_) => println!("anonymous: connected (unexpected)"),
        Err(err) => println!("anonymous: {err}"),
    }

    // Rotation: a renewed certificate, served to new connections at once.
    let (cert, key) = ca.issue("users.internal", true)?;
    server.reload_tls(ServerTls::new(
        Identity::from_pem(cert, key)?,
        ClientAuth::Required(trust()?),
    )?)?;
    println!("users: certificate rotated; established connections keep theirs");
    println!("orders: name(8) = {:?}", users.name(8).await?);

    server.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
