//! [`Gauge`]: a count of permits held across a server's connections.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A count that goes up and down, and the highest it has been.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    pub(super) fn up(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        // A new peak is rare once a server is warm: a look costs a load
        // where `fetch_max` is a locked write on every call. (The peak
        // never falls, so a look that finds it at `now` or above is
        // right to leave it.)
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        crate::observe::calls_in_progress(now);
    }

    pub(super) fn down(&self) {
        let now = self.now.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        crate::observe::calls_in_progress(now);
    }

    /// The count now.
    pub(crate) fn now(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// The highest the count has been.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}
