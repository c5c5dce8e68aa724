//! [`ServerHandle`]: a server running in the background, and how it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::ServerStats;
use rpc_core::server::ServerState;
use tokio::task::JoinHandle;

/// A server running in the background, from [`Server::bind`](crate::Server::bind) (whose
/// address is a `SocketAddr`), [`Server::bind_unix`](crate::Server::bind_unix) (a path) or
/// [`Server::start`](crate::Server::start).
///
/// Dropping the handle leaves the server running; end it with
/// [`shutdown`](ServerHandle::shutdown) (graceful) or
/// [`stop`](ServerHandle::stop) (at once).
#[derive(Debug)]
#[must_use = "dropping the handle leaves the server running with no way to stop it"]
pub struct ServerHandle<A = SocketAddr> {
    pub(super) local_addr: A,
    pub(super) task: JoinHandle<()>,
    pub(super) state: Arc<ServerState>,
    /// The TLS acceptor every connection's task shares, to rotate
    /// certificates.
    #[cfg(feature = "tls")]
    pub(super) tls: Option<rpc_transport::tls::Acceptor>,
}

/// How long, after a graceful shutdown's grace period, connections get to
/// tell their clients which calls were interrupted before they are closed.
const INTERRUPT_NOTICE: Duration = Duration::from_secs(2);

impl<A: Clone + std::fmt::Debug> ServerHandle<A> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> A {
        self.local_addr.clone()
    }

    /// The server's counters: open connections, calls in progress and
    /// their peak, requests received, calls by how they ended.
    pub fn stats(&self) -> ServerStats {
        self.state.stats()
    }

    /// Rotates the server's certificate, key or client CAs without a
    /// restart: connections accepted from now on use `tls`; established
    /// ones keep what they negotiated. Fails only for a server started
    /// without [`Server::tls`](crate::Server::tls).
    ///
    /// `tls` was checked when it was built, so a bad new certificate fails
    /// there, and the server goes on serving the old one.
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, tls: rpc_transport::tls::ServerTls) -> Result<(), rpc_transport::tls::TlsError> {
        let acceptor = self.tls.as_ref().ok_or(rpc_transport::tls::TlsError::NotTls)?;
        acceptor.reload(tls);
        tracing::info!(local_addr = ?self.local_addr, "TLS configuration reloaded; new connections use it");
        Ok(())
    }

    /// Shuts down gracefully: stops accepting, sends every client a goodbye
    /// (they send no new calls on that connection, and calls the server had
    /// not started are retried elsewhere or fail with
    /// [`Error::ShuttingDown`](crate::Error::ShuttingDown)), and lets the calls it started finish and
    /// be answered for up to `grace`. Calls still running then are stopped,
    /// and their callers told so (a [`Error::Disconnected`](crate::Error::Disconnected) that says the
    /// shutdown interrupted the call; `#[rpc(idempotent)]` calls are
    /// retried elsewhere); then the connections close.
    ///
    /// When this returns the port is free to bind again.
    pub async fn shutdown(mut self, grace: Duration) {
        self.state.shutdown.cancel();
        if tokio::time::timeout(grace, &mut self.task).await.is_ok() {
            return;
        }
        tracing::info!(local_addr = ?self.local_addr, ?grace, "grace period over; interrupting the calls still running");
        self.state.interrupt.cancel();
        if tokio::time::timeout(INTERRUPT_NOTICE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = self.task.await;
        }
    }

    /// Stops at once: closes the listener and every connection. Calls in
    /// flight fail on their clients with [`Error::Disconnected`](crate::Error::Disconnected).
    ///
    /// When this returns the port is free to bind again.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits until the server ends (it runs until stopped or the process
    /// ends).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
