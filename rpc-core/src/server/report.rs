//! How a connection's call tasks tell it they have ended.
//!
//! Each finished call reports its request id and launch number on a
//! channel the connection reads when it next wakes: waking it for every
//! call would cost a task switch per call, on the answer's path. But a
//! connection whose last running call has ended may not wake again for
//! minutes, and until it does, its finished calls' tasks stay allocated.
//! So the last call to end marks the connection quiet, and the writer,
//! once it has written everything and is about to wait, wakes the
//! connection to tidy up: after the answers have left, and so an idle
//! connection holds nothing of its calls.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::mpsc;

/// The connection's side: the reports, and the wake-up.
pub(super) struct Reports {
    shared: Arc<Shared>,
    ended: mpsc::UnboundedReceiver<(u64, u64)>,
    /// Whether a report may come: false once the connection has found no
    /// call task running and none of their reports left to read, until it
    /// makes the next report. Most calls answer on their first poll and
    /// make none, and a connection's loop looks for news on every turn:
    /// while there can be none it reads no shared memory for it. (Only
    /// the connection's task reads or writes it: an atomic only because a
    /// wait borrows the reports across an `.await`.)
    expecting: AtomicBool,
}

struct Shared {
    ended: mpsc::UnboundedSender<(u64, u64)>,
    /// Call tasks alive now (counted in [`ONE_TASK`]s), and the [`QUIET`]
    /// mark, set in the same step as the count falls to zero (so the
    /// connection never sees the count at zero before the mark) until the
    /// connection takes it.
    tasks: AtomicUsize,
    waker: AtomicWaker,
}

/// The quiet mark in [`Shared::tasks`].
const QUIET: usize = 1;

/// One call task in [`Shared::tasks`].
const ONE_TASK: usize = 2;

/// A call task's side. Dropped (the task ended, or was aborted), it counts
/// the task out, and marks the connection quiet if it was the last.
pub(crate) struct Report {
    shared: Arc<Shared>,
    id: u64,
    seq: u64,
    /// Whether the call ended on its own, its answer following.
    ended: bool,
}

impl Reports {
    pub(super) fn new() -> Reports {
        let (ended, receiver) = mpsc::unbounded_channel();
        Reports {
            shared: Arc::new(Shared {
                ended,
                tasks: AtomicUsize::new(0),
                waker: AtomicWaker::new(),
            }),
            ended: receiver,
            expecting: AtomicBool::new(false),
        }
    }

    /// What the task of call `id`, launch `seq`, reports with.
    pub(super) fn report(&self, id: u64, seq: u64) -> Report {
        self.expecting.store(true, Ordering::Relaxed);
        self.shared.tasks.fetch_add(ONE_TASK, Ordering::AcqRel);
        Report {
            shared: Arc::clone(&self.shared),
            id,
            seq,
            ended: false,
        }
    }

    /// A call that ended, if one has reported.
    pub(super) fn try_next(&mut self) -> Option<(u64, u64)> {
        if !self.expecting.load(Ordering::Relaxed) {
            return None;
        }
        if let Ok(ended) = self.ended.try_recv() {
            return Some(ended);
        }
        // A task sends its report before it counts itself out: once none
        // is running, what they sent is all in the channel.
        if self.shared.tasks.load(Ordering::Acquire) < ONE_TASK {
            let last = self.ended.try_recv().ok();
            if last.is_none() {
                // Nothing is left to tidy: the last task's mark goes too
                // (`quiet` no longer takes it, and the writer would wake
                // the connection for it). No task can come and count
                // itself in meanwhile: only this one makes them.
                self.expecting.store(false, Ordering::Relaxed);
                self.shared.tasks.store(0, Ordering::Release);
            }
            return last;
        }
        None
    }

    /// Waits for a call to report its end.
    pub(super) async fn next(&mut self) -> Option<(u64, u64)> {
        self.ended.recv().await
    }

    /// What the writer calls when it is about to wait: wakes the
    /// connection if its calls have all ended since it last looked.
    pub(super) fn tidy(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            if shared.tasks.load(Ordering::Acquire) & QUIET != 0 {
                shared.waker.wake();
            }
        }
    }

    /// Completes once no call task is running any more (since the last
    /// time it completed) and the writer has let the connection know.
    ///
    /// Pending for good while no report can come: only the connection's
    /// own task makes one, and it looks again after it has.
    pub(super) async fn quiet(&self) {
        poll_fn(|cx| {
            if !self.expecting.load(Ordering::Relaxed) {
                return Poll::Pending;
            }
            self.shared.waker.register(cx.waker());
            if self.shared.tasks.fetch_and(!QUIET, Ordering::AcqRel) & QUIET != 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl Report {
    /// The call ended on its own (it was not aborted): the connection may
    /// forget it.
    pub(super) fn ended(mut self) {
        let _ = self.shared.ended.send((self.id, self.seq));
        self.ended = true;
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let counted_out = |tasks: usize| match tasks.wrapping_sub(ONE_TASK) {
            // The last: marked quiet in the same step.
            0 => Some(QUIET),
            left => Some(left),
        };
        let (Ok(before) | Err(before)) =
            self.shared
                .tasks
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, counted_out);
        if before & !QUIET == ONE_TASK {
            // A call that ended on its own has an answer on its way, and
            // the writer wakes the connection once it is out (see
            // `Reports::tidy`): no wake on the answer's path. An aborted
            // call may have none, so it wakes the connection itself.
            if !self.ended {
                self.shared.waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn reports_are_read_until_no_task_is_left_and_then_not_looked_for() {
        let mut reports = Reports::new();
        assert_eq!(reports.try_next(), None);
        assert!(reports.quiet().now_or_never().is_none());
        let first = reports.report(1, 10);
        let second = reports.report(2, 11);
        first.ended();
        assert_eq!(reports.try_next(), Some((1, 10)));
        assert_eq!(reports.try_next(), None);
        assert!(
            reports.expecting.load(Ordering::Relaxed),
            "a task is still running"
        );
        // The last task, aborted: it reports nothing, marks the connection
        // quiet and wakes it.
        drop(second);
        assert_eq!(reports.shared.tasks.load(Ordering::Acquire), QUIET);
        assert_eq!(reports.try_next(), None);
        assert!(
            !reports.expecting.load(Ordering::Relaxed),
            "no task is left to report"
        );
        assert_eq!(
            reports.shared.tasks.load(Ordering::Acquire),
            0,
            "the mark went with the last look, or the writer would wake the connection for it"
        );
        assert!(reports.quiet().now_or_never().is_none());
        // The next task the connection makes is looked for again.
        let third = reports.report(3, 12);
        third.ended();
        assert_eq!(reports.try_next(), Some((3, 12)));
        assert_eq!(reports.try_next(), None);
        assert!(!reports.expecting.load(Ordering::Relaxed));
    }

    #[test]
    fn a_task_made_while_the_mark_is_set_leaves_it_set_and_ends_with_it() {
        let reports = Reports::new();
        drop(reports.report(1, 10));
        let second = reports.report(2, 11);
        assert_eq!(reports.shared.tasks.load(Ordering::Acquire), ONE_TASK | QUIET);
        drop(second);
        assert_eq!(reports.shared.tasks.load(Ordering::Acquire), QUIET);
        assert!(reports.quiet().now_or_never().is_some());
        assert!(reports.quiet().now_or_never().is_none(), "taken once");
    }

    #[test]
    fn the_last_task_to_end_makes_the_connection_quiet_once() {
        let reports = Reports::new();
        let report = reports.report(1, 10);
        assert!(reports.quiet().now_or_never().is_none());
        report.ended();
        assert!(reports.quiet().now_or_never().is_some());
        assert!(reports.quiet().now_or_never().is_none(), "taken once");
    }
}
