//! Counters a running server keeps, for operators and for tests that must
//! assert limits without looking at a clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::permit::Gauge;

/// The live counters of a server, shared by its connections.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    open_connections: AtomicUsize,
    /// Calls holding a permit, on every connection.
    pub(crate) calls_in_progress: Arc<Gauge>,
    requests_received: AtomicU64,
    stream_items_sent: AtomicU64,
    peak_stream_items_in_flight: AtomicU64,
    calls_succeeded: AtomicU64,
    calls_failed: AtomicU64,
    handler_panics: AtomicU64,
    deadlines_exceeded: AtomicU64,
    calls_cancelled: AtomicU64,
}

/// How a call ended, as the server counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The method returned (an application error inside its result is
    /// still a value returned).
    Succeeded,
    /// The call failed: bad arguments, an error from the handler or its
    /// stream, a result too large.
    Failed,
    /// The handler panicked.
    Panicked,
    /// The deadline passed first.
    DeadlineExceeded,
    /// The caller cancelled it, or its connection closed.
    Cancelled,
}

/// A snapshot of a server's counters, from `ServerHandle::stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections past the preface exchange and not yet closed.
    pub open_connections: usize,
    /// Calls holding a place under the connection's cap: running, or
    /// answered with the answer still waiting to be written to a slow
    /// client. Requests queued past the cap are not counted.
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
    /// Calls whose method returned (application errors included: they are
    /// values the method returned).
    pub calls_succeeded: u64,
    /// Calls that failed: arguments that did not decode, an unknown
    /// method, an error from the handler or its stream.
    pub calls_failed: u64,
    /// Calls whose handler panicked.
    pub handler_panics: u64,
    /// Calls stopped at their deadline.
    pub deadlines_exceeded: u64,
    /// Calls stopped because their caller cancelled them or went away, and
    /// calls waiting past the cap that never started because the server
    /// said goodbye or the connection ended. With the other outcomes, it
    /// adds up to `requests_received` once every call has ended, but for
    /// requests that broke the protocol (their connection ended at once).
    pub calls_cancelled: u64,
}

impl Counters {
    /// A snapshot of the counters.
    pub(crate) fn snapshot(&self) -> ServerStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ServerStats {
            open_connections: self.open_connections.load(Ordering::Relaxed),
            calls_in_progress: self.calls_in_progress.now(),
            peak_calls_in_progress: self.calls_in_progress.peak(),
            requests_received: load(&self.requests_received),
            stream_items_sent: load(&self.stream_items_sent),
            peak_stream_items_in_flight: load(&self.peak_stream_items_in_flight),
            calls_succeeded: load(&self.calls_succeeded),
            calls_failed: load(&self.calls_failed),
            handler_panics: load(&self.handler_panics),
            deadlines_exceeded: load(&self.deadlines_exceeded),
            calls_cancelled: load(&self.calls_cancelled),
        }
    }

    /// Counts a connection as open for as long as the guard lives.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        let now = self.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        crate::observe::connections(now);
        OpenConnection(Arc::clone(self))
    }

    pub(crate) fn stream_item_sent(&self, in_flight: u64) {
        self.stream_items_sent.fetch_add(1, Ordering::Relaxed);
        // Looked at first, as the calls' peak is (see `Gauge::up`).
        if in_flight > self.peak_stream_items_in_flight.load(Ordering::Relaxed) {
            self.peak_stream_items_in_flight
                .fetch_max(in_flight, Ordering::Relaxed);
        }
    }

    pub(crate) fn request_received(&self) {
        self.requests_received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call's end.
    pub(crate) fn ended(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Succeeded => &self.calls_succeeded,
            Outcome::Failed => &self.calls_failed,
            Outcome::Panicked => &self.handler_panics,
            Outcome::DeadlineExceeded => &self.deadlines_exceeded,
            Outcome::Cancelled => &self.calls_cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a connection as open for as long as it lives, however it ends.
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<Counters>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let now = self
            .0
            .open_connections
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        crate::observe::connections(now);
    }
}
