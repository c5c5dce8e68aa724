//! Requests waiting for a place on their connection: queued in id order,
//! sent by whoever frees a place, with the time their callers have left
//! then.
//!
//! A caller whose call finds every place taken does not wait for one: its
//! request waits, and the call that frees a place sends it. The caller is
//! woken once, by its answer, where waiting for a place would wake it
//! twice (once to send, once to read).

use tokio::time::Instant;

use crate::client::calls::{CallTable, Inner};
use crate::client::later::Later;
use crate::client::waiter::{Ending, Slot};
use crate::codec::Message;
use crate::error::Error;
use crate::permit::CallPermit;

/// A request waiting for a place.
#[derive(Debug)]
pub(super) struct Queued {
    id: u64,
    /// The caller's deadline: the request leaves with the time left until
    /// then, not the time left when it was encoded.
    deadline: Instant,
    payload: Message,
}

/// Uses of one reading of the clock, at most, before [`Now`] reads it
/// again: a bound on how stale a long burst's reading can get.
const USES_PER_READING: u8 = 32;

/// A reading of the clock, taken when first needed and shared by the work
/// done back to back, with no `.await` between (one lock's worth, or a
/// connection reader's burst of buffered frames): what a queued request's
/// budget is measured from. At 30 ns a reading, one a call is a few per
/// cent of a small call's cost on the client.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Now {
    reading: Option<Instant>,
    uses: u8,
}

impl Now {
    /// The time: the reading, taken now if there is none yet.
    pub(super) fn get(&mut self) -> Instant {
        if self.uses >= USES_PER_READING {
            *self = Now::default();
        }
        self.uses += 1;
        *self.reading.get_or_insert_with(Instant::now)
    }
}

impl Queued {
    pub(super) fn new(id: u64, deadline: Instant, payload: Message) -> Queued {
        Queued {
            id,
            deadline,
            payload,
        }
    }
}

impl CallTable {
    /// Sends queued requests, oldest first, while there are places for
    /// them: `permit` first (a place just freed), then free ones. A request
    /// whose deadline has passed never leaves: its call ends, and its place
    /// goes to the next. Under the lock, as every place is freed: so a free
    /// place and a queued request never wait for each other.
    #[inline(never)]
    pub(super) fn dispatch(&self, inner: &mut Inner, mut permit: Option<CallPermit>, later: &mut Later) {
        while !inner.queue.is_empty() && inner.closed.is_none() && inner.goodbye.is_none() {
            let Some(place) = permit.take().or_else(|| self.permits.try_acquire()) else {
                break;
            };
            let Some(queued) = inner.queue.pop_front() else {
                break;
            };
            let budget = queued.deadline.saturating_duration_since(later.now.get());
            // A caller that gives up takes its request out of the queue, so
            // every queued request has a call waiting for it.
            let Some(Slot::Waiting { waiter, place: held }) = inner.calls.get_mut(&queued.id) else {
                permit = Some(place);
                continue;
            };
            let ending = match budget.is_zero() {
                true => Ending::Expired,
                false => match self.outbox.send_request(queued.id, budget, &queued.payload) {
                    Ok(Ok(())) => {
                        *held = Some(place);
                        waiter.left();
                        inner.mark_sent(queued.id);
                        continue;
                    }
                    Ok(Err(_closed)) => Ending::Unsent(inner.unusable_error()),
                    Err(violation) => Ending::Unsent(Error::from(violation)),
                },
            };
            permit = Some(place);
            self.end(inner, queued.id, ending, later);
        }
    }
}

impl Inner {
    /// Takes queued request `id` out of the queue: its caller gave up.
    pub(super) fn unqueue(&mut self, id: u64) {
        if let Ok(at) = self.queue.binary_search_by_key(&id, |queued| queued.id) {
            self.queue.remove(at);
        }
    }

    /// Takes out of the queue the requests whose calls no longer wait
    /// (their deadline passed).
    pub(super) fn unqueue_ended(&mut self) {
        let Inner { queue, calls, .. } = self;
        queue.retain(|queued| calls.get(&queued.id).is_some_and(|slot| slot.waiter().is_some()));
    }
}

#[cfg(test)]
mod tests;
