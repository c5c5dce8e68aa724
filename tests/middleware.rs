//! Middleware over real sockets: an auth layer refusing a bad token with
//! `Unauthenticated` (for Rust and JSON callers), tower's concurrency limit
//! capping a handler, a client layer adding metadata to every call, and
//! a layer on one service only.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::json::Http;
use rpc::middleware::{ClientCall, ClientNext, ServerCall, ServerNext, from_fn};
use serde_json::json;

#[rpc::service]
pub trait Vault {
    /// The caller's tenant, as its metadata says.
    async fn tenant(&self) -> Option<String>;
    /// Runs for a moment, counting how many run at once.
    async fn busy(&self) -> usize;
}

#[rpc::service]
pub trait Open {
    async fn ping(&self) -> u32;
}

#[derive(Default)]
struct Server {
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Vault for Arc<Server> {
    async fn tenant(&self) -> Option<String> {
        let ctx = rpc::Context::current().unwrap();
        ctx.metadata().get_str("x-tenant").map(str::to_owned)
    }
    async fn busy(&self) -> usize {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        now
    }
}

struct Pinger;

impl Open for Pinger {
    async fn ping(&self) -> u32 {
        1
    }
}

/// Lets calls with the right token through.
async fn check_token(call: ServerCall, next: ServerNext) -> Result<rpc::Answer, rpc::Error> {
    match call.metadata().get_str("authorization") {
        Some("Bearer good") => next.run(call).await,
        Some(_) => Err(rpc::Error::unauthenticated("the token is not valid")),
        None => Err(rpc::Error::unauthenticated(
            "send `authorization: Bearer <token>`",
        )),
    }
}

#[test]
#[should_panic(expected = "call `serve` first, then `layer`")]
fn a_layer_before_any_service_is_refused_rather_than_guarding_nothing() {
    let _ = rpc::Server::new().layer(from_fn(check_token));
}

#[test]
#[should_panic(expected = "names `Valt`, which this server does not serve")]
fn a_layer_for_a_service_not_served_is_refused() {
    let state = Arc::new(Server::default());
    let _ = rpc::Server::new()
        .serve(VaultServer::new(state))
        .layer_service("Valt", from_fn(check_token));
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}

#[tokio::test]
async fn an_auth_layer_refuses_a_bad_token_and_lets_a_good_one_through() {
    within(async {
        let state = Arc::new(Server::default());
        let server = rpc::Server::new()
            .serve(VaultServer::new(state))
            .layer(from_fn(check_token))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr();
        let vault = VaultClient::connect(addr).await.unwrap();

        let err = vault.tenant().await.unwrap_err();
        assert!(matches!(err, rpc::Error::Unauthenticated { .. }), "{err:?}");
        assert!(
            err.to_string().contains("send `authorization: Bearer <token>`"),
            "{err}"
        );
        let err = vault
            .with_metadata("authorization", "Bearer bad")
            .tenant()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the token is not valid"), "{err}");
        let allowed = vault
            .with_metadata("authorization", "Bearer good")
            .with_metadata("x-tenant", "acme");
        assert_eq!(allowed.tenant().await.unwrap().as_deref(), Some("acme"));

        // JSON callers get the documented code.
        let mut http = Http::connect(addr).await;
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tenant"}).to_string();
        let refused = http
            .post_to("/rpc", body.clone(), &[("authorization", "Bearer bad")])
            .await
            .json();
        assert_eq!(refused["error"]["code"], rpc::json::codes::UNAUTHENTICATED);
        let allowed = http
            .post_to(
                "/rpc",
                body,
                &[("authorization", "Bearer good"), ("x-tenant", "globex")],
            )
            .await
            .json();
        assert_eq!(allowed["result"], "globex");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn towers_concurrency_limit_caps_a_handler() {
    within(async {
        let state = Arc::new(Server::default());
        let server = rpc::Server::new()
            .serve(VaultServer::new(Arc::clone(&state)))
            .layer(tower::limit::ConcurrencyLimitLayer::new(2))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let vault = VaultClient::connect(server.local_addr()).await.unwrap();
        let calls: Vec<_> = (0..20).map(|_| vault.busy()).collect();
        for result in futures::future::join_all(calls).await {
            assert!(result.unwrap() <= 2);
        }
        assert!(state.most.load(Ordering::SeqCst) <= 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_layer_adds_metadata_to_every_call_and_a_service_layer_stays_on_its_service() {
    within(async {
        let state = Arc::new(Server::default());
        let server = rpc::Server::new()
            .serve(VaultServer::new(state))
            .layer_service("Vault", from_fn(check_token))
            .serve(OpenServer::new(Pinger))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr();
        let client = rpc::ClientBuilder::new()
            .layer(from_fn(|mut call: ClientCall, next: ClientNext| async move {
                call.insert_metadata("authorization", "Bearer good")?;
                call.insert_metadata("x-tenant", "from-the-layer")?;
                next.run(call).await
            }))
            .connect(addr)
            .await
            .unwrap();
        let vault = VaultClient::from_client(client.clone());
        assert_eq!(vault.tenant().await.unwrap().as_deref(), Some("from-the-layer"));

        // `Open` is not behind the token check.
        let plain = rpc::ClientBuilder::new().connect(addr).await.unwrap();
        assert_eq!(OpenClient::from_client(plain.clone()).ping().await.unwrap(), 1);
        let err = VaultClient::from_client(plain).tenant().await.unwrap_err();
        assert!(matches!(err, rpc::Error::Unauthenticated { .. }), "{err:?}");
        server.stop().await;
    })
    .await;
}
