//! The server side: a [`Router`] of services by name, the limits a server
//! enforces, and [`serve_connection`], which runs one connection's calls.
//!
//! # Layout
//!
//! - `connection`: the loop of one connection, written once: open, then
//!   draining (after a goodbye, or once the client stopped sending).
//! - `inbound`: what each frame from the client does.
//! - `calls`: the table of calls in flight, the queue at the cap, and the
//!   deadline sweep.
//! - `dispatch`: the seam between a connection and a typed service.
//! - `call`: one call's work: decode, run, encode; how it ended.
//! - `task`: a call's task, and its way out (frames, or a JSON reply).
//! - `report`: how call tasks tell their connection they have ended.
//! - [`router`](Router): wire names to services and methods.
//! - `stats`: the counters behind [`ServerStats`].
//! - [`json`]: the JSON-RPC front: the same calls, for callers in other
//!   languages.

mod call;
mod calls;
mod connection;
mod dispatch;
mod inbound;
pub mod json;
mod report;
mod router;
mod slow;
mod stats;
mod task;

use std::sync::Arc;
use std::time::Duration;

use crate::codec::DecodeLimits;

pub use crate::signal::Signal;
pub use connection::serve_connection;
pub use router::Router;
pub use stats::ServerStats;
pub(crate) use stats::{Counters, Outcome};

/// Calls one connection may have running (or answered but not yet written);
/// requests past it queue, up to as many again, before the server stops
/// reading from the connection. Enough to keep a busy client's pipeline
/// full; small enough that one client cannot monopolise a server.
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
    /// How long writing one batch of answers may take, from its first wait
    /// for the client, before the client is taken to have stopped reading
    /// and is disconnected.
    pub write_timeout: Duration,
    /// What decoding a call's arguments and stream items may cost.
    pub decode: DecodeLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_calls_per_connection: DEFAULT_MAX_CALLS_PER_CONNECTION,
            max_budget: DEFAULT_MAX_BUDGET,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: crate::writer::DEFAULT_WRITE_TIMEOUT,
            decode: DecodeLimits::DEFAULT,
        }
    }
}

/// Everything a server's connections share.
///
/// Cloning copies the services and limits into a new server: the clone
/// has fresh counters and its own shutdown signals.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Where calls go.
    pub router: Router,
    /// The limits.
    pub config: ServerConfig,
    pub(crate) counters: Arc<Counters>,
    /// Raised when the server starts a graceful shutdown: connections
    /// say goodbye, stop reading and finish what they accepted.
    pub shutdown: Signal,
    /// Raised when a graceful shutdown's grace period is over: calls
    /// still running are stopped, and their callers told so.
    pub interrupt: Signal,
    /// Methods whose first poll was once slow: spawned from the start.
    pub(crate) slow: slow::SlowMethods,
}

impl ServerState {
    /// A snapshot of the server's counters.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }
}

impl Clone for ServerState {
    fn clone(&self) -> Self {
        ServerState {
            router: self.router.clone(),
            config: self.config.clone(),
            counters: Arc::default(),
            shutdown: Signal::new(),
            interrupt: Signal::new(),
            slow: slow::SlowMethods::default(),
        }
    }
}
