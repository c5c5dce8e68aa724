//! [`CallTable`]: a connection's calls in flight, the queue of calls read
//! at the cap, and the one deadline sweep that stops calls on time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::context::Context;
use crate::error::{ErrorCode, WireError};
use crate::permit::{CallPermit, CallPermits};
use crate::server::call::{Call, CallHandle, End, Launch, Outbox, Stop, Work, deadline_exceeded};
use crate::server::report::Reports;
use crate::server::router::Route;
use crate::server::{Outcome, ServerState};
use crate::streaming::SendCredit;

/// What the connection knows about each call it has read and not yet
/// finished, and the permits that cap them.
pub(super) struct CallTable {
    /// Keyed by the client's ids with an unkeyed hash: the table never
    /// holds more than twice the call cap, which bounds what colliding ids
    /// cost.
    entries: FxHashMap<u64, Entry>,
    /// Calls read while every permit was taken, in order.
    queue: VecDeque<Queued>,
    permits: CallPermits,
    outbox: Outbox,
    /// Launched calls report here when they end. Plain spawned tasks and
    /// these reports cost less per call than a `JoinSet`, whose shared set
    /// every spawn and completion locks.
    reports: Reports,
    next_seq: u64,
    /// Calls launched and not yet reported done (or aborted).
    launched: usize,
    /// No later than the earliest deadline of a launched call that can be
    /// stopped: when the connection's one timer must wake to stop it. A
    /// timer per call would cost a timer-wheel insertion and removal per
    /// call; with every call on the same timeout this one wakes about once
    /// per timeout.
    armed: Option<Instant>,
    /// The last request id read: ids must increase, and a cancel or stream
    /// frame may name no id above it.
    pub(super) last_read_id: u64,
    /// The last request id started (or answered at once): what a goodbye
    /// reports.
    pub(super) last_started_id: u64,
    /// The server: its counters, and what each call runs on.
    state: Arc<ServerState>,
    /// The context of the last call answered on its first poll, stripped
    /// of what that call carried, for the next call's to be made in
    /// ([`Context::for_call`]): one per connection.
    pub(super) spare: Option<Context>,
}

/// A call in flight.
pub(super) struct Entry {
    /// The launch number of its task, once launched.
    seq: Option<u64>,
    /// How the sweep or a cancel stops it: `None` for methods that run to
    /// completion whatever happens, whose task keeps its own timer (the
    /// server's ceiling), and for calls not launched yet.
    stop: Option<Stop>,
    /// The client's stream, for methods that take one.
    pub(super) input: Option<Input>,
    /// The credit of the stream the server sends, for methods that return
    /// one.
    pub(super) output: Option<Arc<SendCredit>>,
}

impl Entry {
    /// A call just read, not yet launched.
    pub(super) fn new(input: Option<Input>, output: Option<Arc<SendCredit>>) -> Entry {
        Entry {
            seq: None,
            stop: None,
            input,
            output,
        }
    }

    /// Forgets the call: a stream it was sending ends.
    fn close(self) {
        if let Some(output) = self.output {
            output.close();
        }
    }

    /// The deadline the sweep enforces, if it enforces one.
    fn deadline(&self) -> Option<Instant> {
        self.stop.as_ref().map(|stop| stop.ctx.deadline())
    }
}

/// The server's end of a client's stream.
pub(super) struct Input {
    /// Where items go; `None` once the client ended the stream.
    pub(super) items: Option<mpsc::Sender<Bytes>>,
    /// Items received so far.
    pub(super) received: u64,
    /// Credit the handler has granted beyond the initial window.
    pub(super) granted: Arc<AtomicU64>,
    /// Set when the client's end frame arrives, so the handler can tell a
    /// finished stream from one that broke off.
    pub(super) ended: Arc<AtomicBool>,
}

/// A call read and accepted: to run on its route, or to answer at once.
pub(super) enum Admitted {
    /// Run the work on the route's service.
    Run {
        work: Work,
        route: Route,
        to_completion: bool,
    },
    /// Answer with this error, running nothing (an unknown method, a
    /// budget already spent), and count it so.
    Refuse(WireError, Outcome),
}

/// Where a call being launched has its entry.
enum Placed {
    /// In the table already (it was queued).
    InTable,
    /// With the launch: a call read and launched at once.
    Here(Entry),
}

/// A call waiting for a permit.
pub(super) struct Queued {
    id: u64,
    admitted: Admitted,
}

impl CallTable {
    pub(super) fn new(
        permits: CallPermits,
        outbox: Outbox,
        reports: Reports,
        state: Arc<ServerState>,
    ) -> CallTable {
        CallTable {
            entries: FxHashMap::default(),
            queue: VecDeque::new(),
            permits,
            outbox,
            reports,
            next_seq: 0,
            launched: 0,
            armed: None,
            last_read_id: 0,
            last_started_id: 0,
            state,
            spare: None,
        }
    }

    /// The connection's permits.
    pub(super) fn permits(&self) -> &CallPermits {
        &self.permits
    }

    /// Whether calls are queued for a permit.
    pub(super) fn has_queue(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether the queue holds a cap's worth of calls: time to stop reading.
    pub(super) fn queue_full(&self) -> bool {
        self.queue.len() >= self.permits.total()
    }

    /// Whether any call is in flight (launched or queued).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.queue.is_empty()
    }

    /// Whether every accepted call has finished: what a draining connection
    /// waits for.
    pub(super) fn all_done(&self) -> bool {
        self.launched == 0 && self.queue.is_empty()
    }

    /// The call `id`, if it is in flight.
    pub(super) fn entry_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&id)
    }

    /// Takes in a call just read: launched at once if a permit is free and
    /// no call is queued before it, queued otherwise.
    pub(super) fn admit(&mut self, id: u64, admitted: Admitted, entry: Option<Entry>) {
        if self.queue.is_empty()
            && let Some(permit) = self.permits.try_acquire()
        {
            // The entry goes into the table only if the call outlives
            // its first poll: nothing can reach it during that poll.
            self.launch(id, admitted, entry.map(Placed::Here), permit);
            return;
        }
        if let Some(entry) = entry {
            self.entries.insert(id, entry);
        }
        self.queue.push_back(Queued { id, admitted });
    }

    /// Launches the first queued call under `permit`.
    pub(super) fn launch_next(&mut self, permit: CallPermit) {
        let Some(Queued { id, admitted }) = self.queue.pop_front() else {
            return;
        };
        let admitted = match admitted {
            // Its caller's deadline passed while it waited: answered so,
            // not run late. (One that runs to completion keeps only the
            // server's ceiling.)
            Admitted::Run {
                work,
                to_completion: false,
                ..
            } if Instant::now() >= work.ctx.deadline() => {
                self.forget(id);
                let late = deadline_exceeded(work.ctx.method());
                Admitted::Refuse(late, Outcome::DeadlineExceeded)
            }
            admitted => admitted,
        };
        self.launch(id, admitted, Some(Placed::InTable), permit);
    }

    fn launch(&mut self, id: u64, admitted: Admitted, entry: Option<Placed>, permit: CallPermit) {
        self.last_started_id = self.last_started_id.max(id);
        let (work, route, to_completion) = match admitted {
            Admitted::Refuse(error, outcome) => {
                self.state.counters.ended(outcome);
                crate::observe::refused(error.code);
                let frame = error.to_frame(id);
                let _ = self.outbox.send(frame, Some(permit));
                return;
            }
            Admitted::Run {
                work,
                route,
                to_completion,
            } => (work, route, to_completion),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let end = End::Frames(Launch {
            outbox: &self.outbox,
            reports: &self.reports,
            seq,
            permit: Some(permit),
            to_completion,
        });
        let call = Call {
            state: &self.state,
            work,
            end,
        };
        let stop = match route.service.start(route.method, call) {
            CallHandle::Spawned { stop } => stop,
            // Answered on its first poll, here: forgotten now, with no
            // report to come back for.
            CallHandle::Finished(ctx) => {
                self.spare = ctx.into_spare();
                match entry {
                    Some(Placed::Here(entry)) => entry.close(),
                    _ => self.forget(id),
                }
                return;
            }
            // `End::Frames` always spawns.
            CallHandle::Inline(_) => None,
        };
        self.launched += 1;
        let entry = match entry {
            Some(Placed::Here(entry)) => Some(self.entries.entry(id).insert_entry(entry).into_mut()),
            _ => self.entries.get_mut(&id),
        };
        if let Some(entry) = entry {
            entry.seq = Some(seq);
            entry.stop = stop;
            if let Some(deadline) = entry.deadline() {
                self.armed = Some(self.armed.map_or(deadline, |armed| armed.min(deadline)));
            }
        }
    }

    /// Tidies away every call that has reported its end, without waiting.
    pub(super) fn collect_finished(&mut self) {
        while let Some(ended) = self.reports.try_next() {
            self.finished(ended);
        }
    }

    /// Waits for news of the calls: `each` call's end (and tidies it
    /// away), or else the moment no call task is running any more.
    pub(super) async fn reported(&mut self, each: bool) {
        if each {
            if let Some(ended) = self.reports.next().await {
                self.finished(ended);
            }
        } else {
            self.reports.quiet().await;
        }
    }

    fn finished(&mut self, (id, seq): (u64, u64)) {
        // Only if it is still this launch's entry: a cancel or the deadline
        // sweep that raced the call's end has removed it, and counted it
        // out, already.
        if self.entries.get(&id).is_some_and(|entry| entry.seq == Some(seq)) {
            self.launched = self.launched.saturating_sub(1);
            self.forget(id);
        }
    }

    /// No later than the earliest deadline of a call the sweep must stop.
    pub(super) fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Stops every call whose deadline is `now` or earlier (its task then
    /// answers `DeadlineExceeded`), and notes the next deadline due.
    pub(super) fn expire(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.deadline().is_some_and(|deadline| deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for entry in due.into_iter().filter_map(|id| self.entries.remove(&id)) {
            if let Some(stop) = &entry.stop {
                stop.ctx.expire();
                stop.abort.abort();
            }
            if let Some(output) = entry.output {
                output.close();
            }
            self.launched = self.launched.saturating_sub(1);
        }
        self.armed = self.entries.values().filter_map(Entry::deadline).min();
    }

    /// Stops call `id` for its client, who no longer wants it: a running
    /// call's task is aborted (unless it runs to completion), a queued one
    /// never starts. Nothing is sent for it.
    pub(super) fn cancel(&mut self, id: u64) {
        match self.entries.get(&id) {
            Some(Entry { stop: Some(stop), .. }) => {
                stop.abort.abort();
                // An aborted task never reports; count it out here. (Its
                // own task counts how it ended.)
                self.launched = self.launched.saturating_sub(1);
                self.forget(id);
            }
            Some(Entry { seq: None, .. }) => {
                self.queue.retain(|queued| queued.id != id);
                self.state.counters.ended(Outcome::Cancelled);
                self.forget(id);
            }
            // Running to completion, or already finished: a cancel can
            // cross the answer on the wire.
            _ => {}
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            entry.close();
        }
    }

    /// Ends every stream that needs something more from the client, which
    /// will send nothing more.
    pub(super) fn end_streams(&mut self) {
        for entry in self.entries.values_mut() {
            if let Some(output) = &entry.output {
                output.close();
            }
            if let Some(input) = &mut entry.input {
                input.items = None;
            }
        }
    }

    /// Forgets the calls that never got a permit, counted as cancelled: a
    /// goodbye tells their client they never ran.
    pub(super) fn drop_queued(&mut self) {
        for queued in std::mem::take(&mut self.queue) {
            self.state.counters.ended(Outcome::Cancelled);
            self.forget(queued.id);
        }
    }

    /// Stops every call that can be stopped, sending nothing. (An aborted
    /// task counts how it ended; a queued call is counted here.)
    pub(super) fn abort_all(&mut self) {
        for entry in self.entries.values() {
            if let Some(stop) = &entry.stop {
                stop.abort.abort();
            }
        }
        self.launched = 0;
        self.drop_queued();
    }

    /// Tells every client whose call is still running that the call was
    /// interrupted (a graceful shutdown's grace period is over), and stops
    /// the calls that can be stopped. A `no_cancel` call runs on to its
    /// end, but its answer will find no connection.
    pub(super) fn interrupt_all(&mut self) {
        // Calls that have just ended are answered already.
        self.collect_finished();
        let running: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.seq.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            if let Some(entry) = self.entries.remove(&id) {
                if let Some(stop) = entry.stop {
                    stop.abort.abort();
                }
                self.launched = self.launched.saturating_sub(1);
                let notice = WireError::new(
                    ErrorCode::Interrupted,
                    "the server's graceful shutdown ran out of time before the call finished",
                );
                let _ = self.outbox.send(notice.to_frame(id), None);
            }
        }
    }
}

impl Drop for CallTable {
    /// A connection that goes away (closed, or its task aborted by a server
    /// stopping) takes its running calls with it, except those that run to
    /// completion, and counts those still queued as cancelled.
    fn drop(&mut self) {
        self.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_still_queued_when_a_connection_goes_are_counted_as_cancelled() {
        let state = Arc::new(ServerState::default());
        let (outbox, _queued) = crate::outbox::outbox();
        let mut calls = CallTable::new(CallPermits::new(1), outbox, Reports::new(), Arc::clone(&state));
        let refused = || Admitted::Refuse(WireError::new(ErrorCode::Failed, "no"), Outcome::Failed);
        // The first takes the one place (its answer, with the place, waits
        // for a writer that never comes); the second waits for it.
        calls.admit(1, refused(), None);
        calls.admit(2, refused(), None);
        assert!(calls.has_queue());
        drop(calls);
        let stats = state.stats();
        assert_eq!((stats.calls_failed, stats.calls_cancelled), (1, 1), "{stats:?}");
    }
}
