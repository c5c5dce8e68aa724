//! [`CallPermits`]: a connection's cap on calls in flight, and the
//! [`CallPermit`] each call holds under it.
//!
//! Both sides use the same pair. A server call holds its permit until its
//! last frame is written (a client that stops reading holds its calls'
//! permits, so it cannot make the server queue more); a client call until
//! its answer comes *and* its request has left (abandoned calls cannot pile
//! requests up behind a stalled socket). The writer reads how many permits
//! are held to tell whether more frames are on their way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// The permits of one connection.
#[derive(Debug, Clone)]
pub(crate) struct CallPermits {
    semaphore: Arc<Semaphore>,
    total: usize,
    /// Counts permits held across every connection of a server.
    gauge: Option<Arc<Gauge>>,
}

/// One call's permit under its connection's cap. Dropping it frees it.
#[derive(Debug)]
pub(crate) struct CallPermit {
    _permit: OwnedSemaphorePermit,
    gauge: Option<Arc<Gauge>>,
}

impl CallPermits {
    /// `total` permits (at least one).
    pub(crate) fn new(total: usize) -> CallPermits {
        let total = total.max(1);
        CallPermits {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
            gauge: None,
        }
    }

    /// The same permits, each also counted in `gauge` while held.
    pub(crate) fn counted(self, gauge: Arc<Gauge>) -> CallPermits {
        CallPermits {
            gauge: Some(gauge),
            ..self
        }
    }

    /// How many calls the cap allows.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// A permit, if one is free now.
    pub(crate) fn try_acquire(&self) -> Option<CallPermit> {
        let permit = Arc::clone(&self.semaphore).try_acquire_owned().ok()?;
        Some(self.issue(permit))
    }

    /// Waits for a permit; fails only once the permits are closed.
    pub(crate) async fn acquire(&self) -> Result<CallPermit, AcquireError> {
        let permit = Arc::clone(&self.semaphore).acquire_owned().await?;
        Ok(self.issue(permit))
    }

    /// Permits held now.
    pub(crate) fn in_use(&self) -> usize {
        self.total.saturating_sub(self.semaphore.available_permits())
    }

    /// Wakes every waiter with an error: the connection is gone.
    pub(crate) fn close(&self) {
        self.semaphore.close();
    }

    fn issue(&self, permit: OwnedSemaphorePermit) -> CallPermit {
        if let Some(gauge) = &self.gauge {
            gauge.up();
        }
        CallPermit {
            _permit: permit,
            gauge: self.gauge.clone(),
        }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.down();
        }
    }
}

/// A count that goes up and down, and the highest it has been.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn up(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        crate::observe::calls_in_progress(now);
    }

    fn down(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_are_capped_counted_and_returned_on_drop() {
        let gauge = Arc::new(Gauge::default());
        let permits = CallPermits::new(2).counted(Arc::clone(&gauge));
        let a = permits.try_acquire().unwrap();
        let b = permits.acquire().await.unwrap();
        assert!(permits.try_acquire().is_none());
        assert_eq!((permits.in_use(), gauge.now(), gauge.peak()), (2, 2, 2));
        drop(a);
        assert_eq!((permits.in_use(), gauge.now()), (1, 1));
        drop(b);
        assert_eq!((permits.in_use(), gauge.now(), gauge.peak()), (0, 0, 2));
        permits.close();
        assert!(permits.acquire().await.is_err());
    }
}
