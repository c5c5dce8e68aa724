//! The deadline sweep: one timer per connection that gives up on its
//! unary calls on time, whether their requests have left or still wait
//! for a place.

use std::sync::Arc;

use tokio::time::Instant;

use crate::client::calls::CallTable;
use crate::client::later::Later;
use crate::client::waiter::Ending;

impl CallTable {
    /// Fails every call whose deadline is `now` or earlier, tells the
    /// server to stop those whose requests left (but `no_cancel` ones,
    /// which keep their places), and takes the others out of the queue;
    /// re-arms the sweep for the calls left.
    pub(super) fn expire(&self, now: Instant) {
        let mut later = Later::default();
        {
            let mut inner = self.lock();
            // Only unary calls have deadlines here.
            let expired: Vec<(u64, bool)> = inner
                .waiting()
                .filter(|(_, waiter)| waiter.deadline().is_some_and(|deadline| deadline <= now))
                .map(|(id, waiter)| (id, waiter.cancellable()))
                .collect();
            // Cancelled before any call ends: a caller woken below may
            // free its place at once.
            let last_sent = inner.last_sent;
            for &(id, cancellable) in &expired {
                if cancellable && id <= last_sent {
                    self.cancel(&inner, id);
                }
            }
            for (id, _) in &expired {
                self.end(&mut inner, *id, Ending::Expired, &mut later);
            }
            if expired.iter().any(|(id, _)| *id > last_sent) {
                inner.unqueue_ended();
            }
            inner.armed = inner.waiting().filter_map(|(_, waiter)| waiter.deadline()).min();
        }
        later.run(self);
    }
}

/// Enforces the deadlines of a connection's unary calls with one timer,
/// re-armed at the earliest deadline, instead of one timer per call: with
/// a thousand calls in flight that is a thousand timer registrations and
/// removals fewer per thousand calls. With every call on the same timeout,
/// deadlines arrive in order and the sweep wakes about once per timeout.
pub(super) async fn sweep_deadlines(calls: Arc<CallTable>) {
    loop {
        // A call that arms an earlier deadline after the read below leaves
        // a permit here (`notify_one`), so the sleep is cut short.
        let rearmed = calls.rearm.notified();
        let armed = calls.lock().armed;
        match armed {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = rearmed => continue,
                }
            }
            None => {
                rearmed.await;
                continue;
            }
        }
        calls.expire(Instant::now());
    }
}
