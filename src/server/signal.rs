//! Stopping on the signals a process manager sends: SIGTERM (Kubernetes,
//! systemd, Docker) and SIGINT (Ctrl-C).

use std::future::Future;
use std::time::Duration;

use super::ServerHandle;

/// How long [`Server::listen`](crate::Server::listen) lets calls finish
/// after a stop signal: under Kubernetes' default of 30 s between SIGTERM
/// and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// A future that resolves when the process is asked to stop: SIGTERM or
/// SIGINT (Ctrl-C) on Unix, Ctrl-C elsewhere. Hand it to
/// [`ServerHandle::serve_until`].
///
/// The signals are caught from the moment this is called, not from the
/// first poll, so a signal that comes in between is not lost. Once one
/// has arrived, a second one ends the process at once (exit code 130, as
/// a shell reports Ctrl-C): the way out of a graceful shutdown that is
/// taking too long. A signal whose handler cannot be installed is left
/// alone, with a warning; if neither can be, the future never resolves.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let mut signals = Signals::install();
    async move {
        let name = signals.recv().await;
        tracing::info!(
            signal = name,
            "stop signal received; shutting down gracefully (send another to exit at once)"
        );
        tokio::spawn(async move {
            let name = signals.recv().await;
            tracing::warn!(signal = name, "second stop signal; exiting now");
            std::process::exit(130);
        });
    }
}

/// The stop signals this process listens to.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind)
                    .inspect_err(|err| tracing::warn!(%err, "cannot listen for {name}; the server will not stop on it"))
                    .ok()
            };
            Signals {
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next stop signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                // No handler, or no more signals: never.
                let received = match signal {
                    Some(signal) => signal.recv().await.is_some(),
                    None => false,
                };
                if !received {
                    std::future::pending::<()>().await;
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => "SIGTERM",
                () = next(&mut self.interrupt) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::warn!(%err, "cannot listen for Ctrl-C; the server will not stop on it");
                std::future::pending::<()>().await;
            }
            "Ctrl-C"
        }
    }
}

impl<A: Clone + std::fmt::Debug> ServerHandle<A> {
    /// Serves until `stop` resolves, then shuts down gracefully, giving
    /// calls in flight up to `grace` (see [`shutdown`](Self::shutdown)):
    /// clients get a goodbye and move their new calls elsewhere, so a
    /// rolling restart fails no call. Returns when the server has ended,
    /// whether by `stop` or otherwise.
    ///
    /// ```no_run
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
    /// use std::time::Duration;
    ///
    /// let server = rpc::Server::new().serve(CalculatorServer::new(Calc)).bind("0.0.0.0:7000").await?;
    /// server.serve_until(rpc::shutdown_signal(), Duration::from_secs(20)).await;
    /// # Ok(()) }
    /// ```
    pub async fn serve_until(mut self, stop: impl Future<Output = ()>, grace: Duration) {
        tokio::select! {
            _ = &mut self.task => {}
            () = stop => self.shutdown(grace).await,
        }
    }
}
