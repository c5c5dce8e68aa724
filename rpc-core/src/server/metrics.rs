//! Counters a running server keeps, for operators and for tests that must
//! assert limits without looking at a clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::OwnedSemaphorePermit;

/// Live counters of a server.
#[derive(Debug, Default)]
pub struct Metrics {
    open_connections: AtomicUsize,
    calls_in_progress: AtomicUsize,
    peak_calls_in_progress: AtomicUsize,
    requests_received: AtomicU64,
    stream_items_sent: AtomicU64,
    peak_stream_items_in_flight: AtomicU64,
}

/// A snapshot of a server's [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections past the preface exchange and not yet closed.
    pub open_connections: usize,
    /// Calls read and not yet fully answered: running, or answered with the
    /// answer still waiting to be written to a slow client.
    pub calls_in_progress: usize,
    /// The most `calls_in_progress` has ever been.
    pub peak_calls_in_progress: usize,
    /// Request frames read, in all.
    pub requests_received: u64,
    /// Stream items sent to clients, in all.
    pub stream_items_sent: u64,
    /// The most items any one stream has had sent and not yet acknowledged
    /// by its client's credit: never more than the stream window.
    pub peak_stream_items_in_flight: u64,
}

impl Metrics {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ServerStats {
        ServerStats {
            open_connections: self.open_connections.load(Ordering::Relaxed),
            calls_in_progress: self.calls_in_progress.load(Ordering::Relaxed),
            peak_calls_in_progress: self.peak_calls_in_progress.load(Ordering::Relaxed),
            requests_received: self.requests_received.load(Ordering::Relaxed),
            stream_items_sent: self.stream_items_sent.load(Ordering::Relaxed),
            peak_stream_items_in_flight: self.peak_stream_items_in_flight.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }

    pub(crate) fn stream_item_sent(&self, in_flight: u64) {
        self.stream_items_sent.fetch_add(1, Ordering::Relaxed);
        self.peak_stream_items_in_flight
            .fetch_max(in_flight, Ordering::Relaxed);
    }

    pub(crate) fn request_received(&self) {
        self.requests_received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call in progress until the returned slot is dropped.
    pub(crate) fn call_started(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> CallSlot {
        let now = self.calls_in_progress.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_calls_in_progress.fetch_max(now, Ordering::Relaxed);
        CallSlot {
            _permit: permit,
            metrics: Arc::clone(self),
        }
    }
}

/// Counts a connection as open for as long as it lives, however it ends.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One call's place under its connection's limit. It travels with the
/// call's answer to the writer and is released once the answer is written.
#[derive(Debug)]
pub(crate) struct CallSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.metrics.calls_in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}
