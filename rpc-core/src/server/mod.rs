//! The server side: a [`Router`] of services by name, the limits a server
//! enforces, and [`serve_connection`], which runs one connection's calls.

mod connection;
pub(crate) mod metrics;
mod router;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use connection::{Launch, Launched, serve_connection};
pub use metrics::{Metrics, ServerStats};
pub use router::Router;

/// Calls one connection may have running (or answered but not yet written)
/// before the server stops reading from it. Enough to keep a busy client's
/// pipeline full; small enough that one client cannot monopolise a server.
pub const DEFAULT_MAX_CALLS_PER_CONNECTION: usize = 256;

/// The longest budget a server grants a call, whatever the client asks:
/// five minutes. A forgotten client timeout must not pin a handler forever.
pub const DEFAULT_MAX_BUDGET: Duration = Duration::from_secs(300);

/// How long a connection may sit with no call in progress and no frame
/// arriving before the server closes it (with a goodbye, so the client
/// simply redials on its next call): ten minutes. Idle connections hold a
/// socket and a little memory each; this returns them.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The limits a server enforces on each connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// See [`DEFAULT_MAX_CALLS_PER_CONNECTION`].
    pub max_calls_per_connection: usize,
    /// See [`DEFAULT_MAX_BUDGET`].
    pub max_budget: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// How long writing one batch of answers may take before the client is
    /// taken to have stopped reading and is disconnected.
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_calls_per_connection: DEFAULT_MAX_CALLS_PER_CONNECTION,
            max_budget: DEFAULT_MAX_BUDGET,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: crate::writer::DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// Everything a server's connections share.
///
/// Cloning copies the services and limits into a new server: the clone
/// has fresh metrics and its own shutdown signal.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Where calls go.
    pub router: Router,
    /// The limits.
    pub config: ServerConfig,
    /// Counters, readable while the server runs.
    pub metrics: std::sync::Arc<Metrics>,
    /// Cancelled when the server starts a graceful shutdown: connections
    /// say goodbye, stop reading and finish what they accepted.
    pub shutdown: CancellationToken,
}

impl Clone for ServerState {
    fn clone(&self) -> Self {
        ServerState {
            router: self.router.clone(),
            config: self.config.clone(),
            metrics: std::sync::Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }
}
