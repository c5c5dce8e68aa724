//! Credit-based flow control: how many items each direction of a stream
//! may have in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

use super::{MAX_STREAM_CREDIT, STREAM_WINDOW};

/// Counts items a receiver's consumer took, and says when to grant credit:
/// in batches of half the window, so credit frames stay few.
#[derive(Debug, Default)]
pub(crate) struct RecvWindow {
    since_grant: u32,
}

impl RecvWindow {
    /// One item consumed; `Some(n)` when `n` items of credit are due.
    pub(crate) fn consumed(&mut self) -> Option<u32> {
        self.since_grant += 1;
        (self.since_grant >= STREAM_WINDOW / 2).then(|| std::mem::take(&mut self.since_grant))
    }
}

/// A sender's credit on one stream: how many more items it may send.
#[derive(Debug)]
pub(crate) struct SendCredit {
    permits: Semaphore,
    sent: AtomicU64,
    granted: AtomicU64,
}

impl SendCredit {
    /// The credit of a stream whose call is under way: the first window,
    /// which the receiver grants by taking the call.
    pub(crate) fn new() -> Arc<SendCredit> {
        let credit = SendCredit::unopened();
        credit.open();
        credit
    }

    /// The credit of a stream whose call has not reached the receiver yet
    /// (its request waits for a place): none until [`SendCredit::open`],
    /// since the receiver would take items for a call it never heard of
    /// for a violation.
    pub(crate) fn unopened() -> Arc<SendCredit> {
        Arc::new(SendCredit {
            permits: Semaphore::new(0),
            sent: AtomicU64::new(0),
            granted: AtomicU64::new(0),
        })
    }

    /// The call's request has left: the first window is the sender's.
    pub(crate) fn open(&self) {
        self.permits.add_permits(STREAM_WINDOW as usize);
    }

    /// Waits for credit for one item and spends it; `false` once the
    /// stream is closed.
    pub(crate) async fn spend(&self) -> bool {
        match self.permits.acquire().await {
            Ok(permit) => {
                permit.forget();
                self.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Adds credit the receiver granted; `Err(total)` if that would exceed
    /// [`MAX_STREAM_CREDIT`].
    pub(crate) fn grant(&self, items: u32) -> Result<(), u64> {
        let total = self.permits.available_permits() as u64 + u64::from(items);
        if total > u64::from(MAX_STREAM_CREDIT) {
            return Err(total);
        }
        self.granted.fetch_add(u64::from(items), Ordering::Relaxed);
        self.permits.add_permits(items as usize);
        Ok(())
    }

    /// Items sent that the receiver has not yet acknowledged with credit.
    pub(crate) fn in_flight(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.granted.load(Ordering::Relaxed))
    }

    /// Stops the sender: `spend` returns `false` from now on.
    pub(crate) fn close(&self) {
        self.permits.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credit_runs_out_at_the_window_and_grants_refill_it() {
        let credit = SendCredit::new();
        for _ in 0..STREAM_WINDOW {
            assert!(credit.spend().await);
        }
        assert_eq!(credit.in_flight(), u64::from(STREAM_WINDOW));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(10), credit.spend()).await;
        assert!(waiting.is_err(), "no credit left");
        credit.grant(2).unwrap();
        assert!(credit.spend().await);
        assert_eq!(credit.in_flight(), u64::from(STREAM_WINDOW) - 1);
        assert!(credit.grant(MAX_STREAM_CREDIT).is_err());
        credit.close();
        assert!(!credit.spend().await);
    }

    #[test]
    fn credit_is_granted_in_half_windows() {
        let mut window = RecvWindow::default();
        let grants: Vec<u32> = (0..STREAM_WINDOW * 2).filter_map(|_| window.consumed()).collect();
        assert_eq!(grants, vec![STREAM_WINDOW / 2; 4]);
    }
}
