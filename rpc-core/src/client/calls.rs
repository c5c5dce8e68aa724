//! [`CallTable`]: a client connection's calls, from the request id each
//! gets to the end of its wait, and the places they hold under the
//! connection's cap on calls in flight.
//!
//! A call whose connection has no place free queues its request here
//! (`queue`); a call that ends hands its place to the oldest queued one,
//! whose request leaves at once. A waiting caller is woken once, by its
//! answer, not first by its place.

use std::collections::{VecDeque, hash_map};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::client::queue::Queued;
use crate::client::waiter::{Ending, Event, Reply, Slot, Waiter, Wake};
use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{self, Kind, ProtocolError};
use crate::outbox::{self, WeakOutbox};
use crate::permit::{CallPermit, CallPermits};
use crate::streaming::{MAX_STREAM_CREDIT, STREAM_WINDOW};

/// Where a client connection's frames go: its writer task. Frames hold no
/// permit: a call's place is held apart, and freed once its request has
/// been written ([`CallTable::written`]) and the call is over.
pub(super) type Outbox = outbox::Outbox<Infallible>;

/// A call the table took: its request id, and its place if its request
/// left at once. The place of a call whose request was queued is kept in
/// the table once the request leaves, for [`CallTable::release`] to find.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) id: u64,
    pub(super) permit: Option<CallPermit>,
}

/// The calls of one connection.
#[derive(Debug)]
pub(super) struct CallTable {
    inner: Mutex<Inner>,
    /// The connection's places: a call holds one from the moment its
    /// request leaves until it is over and its request has been written.
    pub(super) permits: CallPermits,
    /// Wakes the deadline sweep when a call's deadline comes before the
    /// one it sleeps until.
    pub(super) rearm: Notify,
    /// Cleared, under the lock, when the connection closes or the server
    /// says goodbye: what every call asks first, answered without the lock.
    usable: AtomicBool,
    /// The id of the last request the writer has written (requests leave
    /// in id order): a call over before its request left keeps its place,
    /// parked, until this passes its id.
    written: AtomicU64,
    /// Whether places are parked: the writer takes the lock after a batch
    /// only if so.
    has_parked: AtomicBool,
    /// Requests queued for a place, as of the last change under the lock:
    /// a place freed without the lock looks here for requests to hand it
    /// to.
    pub(super) queued: AtomicUsize,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    /// The last request id given; ids go up by one per call.
    pub(super) last_id: u64,
    /// The id of the last request sent to the writer. Requests leave in id
    /// order, so a call with a higher id is queued, or gone.
    pub(super) last_sent: u64,
    /// The calls waiting for their answers, and the unary calls answered
    /// until their callers take the answers. Keyed by our own sequential
    /// ids, so a fast unkeyed hash is safe.
    pub(super) calls: FxHashMap<u64, Slot>,
    /// Requests waiting for a place, in id order.
    pub(super) queue: VecDeque<Queued>,
    /// Places of calls whose requests left from the queue, until their
    /// callers release them.
    pub(super) granted: FxHashMap<u64, CallPermit>,
    /// Set once, when the connection ends; later calls fail with it at once.
    pub(super) closed: Option<Error>,
    /// Set when the server said goodbye: the last request id it started.
    pub(super) goodbye: Option<u64>,
    /// When the deadline sweep next runs: no later than the earliest
    /// deadline of a waiting call (earlier is harmless; it runs again).
    pub(super) armed: Option<Instant>,
    /// Places of calls that ended before their requests were written, by
    /// request id.
    parked: Vec<(u64, CallPermit)>,
}

impl Inner {
    /// How many requests went out.
    pub(super) fn sent(&self) -> u64 {
        self.last_sent
    }

    pub(super) fn unusable_error(&self) -> Error {
        // After a goodbye, a call that finds the connection unusable was
        // never sent: the server is shutting down, whatever came after.
        match (self.goodbye, &self.closed) {
            (Some(_), _) => Error::ShuttingDown,
            (None, Some(err)) => err.clone(),
            (None, None) => Error::disconnected("the connection closed"),
        }
    }

    /// Ends the wait of call `id`, if it still waits: a unary call's reply
    /// stays in its slot for its caller, a stream's event goes out with
    /// the returned [`Wake`], once the lock is let go.
    pub(super) fn end(&mut self, id: u64, ending: Ending) -> Option<Wake> {
        let slot = self.calls.get_mut(&id)?;
        match slot {
            Slot::Waiting(Waiter::Unary { waker, .. }) => {
                let wake = waker.take().map(Wake::Caller);
                *slot = Slot::Answered(ending.into_reply());
                wake
            }
            Slot::Waiting(Waiter::Stream { .. }) => match self.calls.remove(&id) {
                Some(Slot::Waiting(Waiter::Stream { events, credit })) => Some(Wake::Stream {
                    events,
                    credit,
                    event: ending.into_event(),
                }),
                _ => None,
            },
            Slot::Answered(_) => None,
        }
    }

    /// The calls still waiting for their answers.
    pub(super) fn waiting(&self) -> impl Iterator<Item = (u64, &Waiter)> {
        self.calls
            .iter()
            .filter_map(|(id, slot)| slot.waiter().map(|waiter| (*id, waiter)))
    }
}

impl CallTable {
    /// The table of a connection with `permits` places.
    pub(super) fn new(permits: CallPermits) -> CallTable {
        CallTable {
            inner: Mutex::default(),
            permits,
            rearm: Notify::new(),
            usable: AtomicBool::new(true),
            written: AtomicU64::new(0),
            has_parked: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        }
    }

    /// Whether new calls may use the connection: neither closed nor told
    /// goodbye. (A call that finds it usable and sends as it closes learns
    /// so from [`CallTable::send`].)
    pub(super) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update under this lock is a single map or field operation, so
        // a panic elsewhere cannot leave it half-done: poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next id and registers a waiter for it; sends the request
    /// if a place is free and no request is queued for one, else queues
    /// it. All under one lock: requests reach the wire in id order, which
    /// the protocol requires and the goodbye's "last id started" relies
    /// on. `deadline` is the caller's, for the budget a queued request
    /// leaves with.
    ///
    /// The inner `Err` says why the connection took no call.
    pub(super) fn send(
        &self,
        outbox: &Outbox,
        payload: Bytes,
        waiter: Waiter,
        deadline: Instant,
    ) -> Result<Result<Admitted, Reply>, Error> {
        let mut inner = self.lock();
        if inner.goodbye.is_some() {
            return Ok(Err(Reply::NotRun));
        }
        if inner.closed.is_some() {
            return Ok(Err(Reply::Unsent(inner.unusable_error())));
        }
        let id = inner.last_id + 1;
        // Newcomers queue behind queued requests.
        let permit = match inner.queue.is_empty() {
            true => self.permits.try_acquire(),
            false => None,
        };
        let queued = permit.is_none();
        match permit {
            Some(_) => {
                if outbox.send_payload(Kind::Request, id, payload)?.is_err() {
                    return Ok(Err(Reply::Unsent(inner.unusable_error())));
                }
                inner.last_sent = id;
            }
            None => inner.queue.push_back(Queued::new(id, deadline, payload)),
        }
        inner.last_id = id;
        if let Some(deadline) = waiter.deadline() {
            if inner.armed.is_none_or(|armed| deadline < armed) {
                inner.armed = Some(deadline);
                self.rearm.notify_one();
            }
        }
        inner.calls.insert(id, Slot::Waiting(waiter));
        if queued {
            // A place freed since the look above, by a call that found no
            // request queued, goes to the oldest request now.
            let wakes = self.dispatch(&mut inner, outbox, None);
            drop(inner);
            wakes.into_iter().for_each(Wake::wake);
        }
        Ok(Ok(Admitted { id, permit }))
    }

    /// Hands the server's final answer to the call's waiter.
    pub(super) fn complete(&self, id: u64, answer: Result<Bytes, WireError>) -> Result<(), ProtocolError> {
        let wake = {
            let mut inner = self.lock();
            if id > inner.last_sent {
                let kind = if answer.is_ok() {
                    Kind::Response
                } else {
                    Kind::Error
                };
                return Err(ProtocolError::NotSent { kind, id });
            }
            // None: the call already gave up (deadline, dropped future).
            inner.end(id, Ending::Answer(answer))
        };
        if let Some(wake) = wake {
            wake.wake();
        }
        Ok(())
    }

    /// Routes a stream frame (item, end, credit) from the server.
    pub(super) fn stream_frame(&self, kind: Kind, id: u64, payload: Bytes) -> Result<(), ProtocolError> {
        let mut inner = self.lock();
        if id > inner.last_sent {
            return Err(ProtocolError::NotSent { kind, id });
        }
        let Some(Slot::Waiting(waiter)) = inner.calls.get(&id) else {
            // Finished calls may still receive frames that crossed ours.
            return Ok(());
        };
        let Waiter::Stream { events, credit } = waiter else {
            // A server whose method streams where ours does not (a version
            // mismatch): that call fails, the connection goes on.
            let failed = WireError::new(
                ErrorCode::Internal,
                "the server sent a stream where this client expects one value; client and server disagree on the method",
            );
            let wake = inner.end(id, Ending::Answer(Err(failed)));
            drop(inner);
            if let Some(wake) = wake {
                wake.wake();
            }
            return Ok(());
        };
        match kind {
            Kind::Item => match events.try_send(Event::Item(payload)) {
                Ok(()) => Ok(()),
                // Room is the window plus the final event: full means the
                // server sent without credit.
                Err(mpsc::error::TrySendError::Full(_)) => Err(ProtocolError::CreditExceeded {
                    id,
                    window: STREAM_WINDOW,
                }),
                Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            },
            Kind::End => {
                let _ = events.try_send(Event::End);
                if let Some(Slot::Waiting(Waiter::Stream {
                    credit: Some(credit), ..
                })) = inner.calls.remove(&id)
                {
                    credit.close();
                }
                Ok(())
            }
            Kind::Credit => {
                let items = frame::parse_credit(&payload)?;
                match credit {
                    Some(credit) => credit
                        .grant(items)
                        .map_err(|total| ProtocolError::CreditOverflow {
                            id,
                            total,
                            max: MAX_STREAM_CREDIT,
                        }),
                    None => Err(ProtocolError::NoSuchStream { kind, id }),
                }
            }
            _ => Ok(()),
        }
    }

    /// Removes `id`'s waiter, and its answer if nobody took it; whether it
    /// was still waiting on a live connection for an answer (and so
    /// deserves a cancel). A queued request is taken out of the queue: it
    /// never left.
    pub(super) fn forget(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let waiting = matches!(inner.calls.remove(&id), Some(Slot::Waiting(_)));
        if id > inner.last_sent {
            if waiting {
                self.unqueue(&mut inner, id);
            }
            return false;
        }
        waiting && inner.closed.is_none()
    }

    /// The answer of unary call `id` once it has one; until then, wakes
    /// `cx` when it does.
    pub(super) fn poll_reply(&self, id: u64, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut slot = match inner.calls.entry(id) {
            hash_map::Entry::Occupied(slot) => slot,
            // Neither waiting nor answered: only the call itself forgets
            // its id, so this is a call polled after it gave up.
            hash_map::Entry::Vacant(_) => return Poll::Ready(Reply::Lost(inner.unusable_error())),
        };
        match slot.get_mut() {
            Slot::Waiting(Waiter::Unary { waker, .. }) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // Answered (as matched): taken out, with its reply.
            Slot::Answered(_) => match slot.remove() {
                Slot::Answered(reply) => Poll::Ready(reply),
                Slot::Waiting(_) => Poll::Pending,
            },
            // Only a unary call polls for its reply.
            Slot::Waiting(Waiter::Stream { .. }) => Poll::Pending,
        }
    }

    /// Frees the place of call `id`, over now (answered, given up,
    /// refused): `permit` if the call holds it, else the one the table
    /// keeps for it. At once if its request has been written, so it goes
    /// to the oldest queued request; else once it has been, so that calls
    /// given up on cannot pile requests up behind a stalled socket.
    pub(super) fn release(&self, id: u64, permit: Option<CallPermit>, outbox: &Outbox) {
        let permit = match permit {
            Some(permit) if self.written.load(Ordering::SeqCst) >= id => {
                return self.free(Some(permit), outbox);
            }
            permit => permit,
        };
        {
            let mut inner = self.lock();
            // None: its request never left.
            let Some(permit) = permit.or_else(|| inner.granted.remove(&id)) else {
                return;
            };
            if self.written.load(Ordering::SeqCst) >= id {
                let wakes = self.dispatch(&mut inner, outbox, Some(permit));
                drop(inner);
                wakes.into_iter().for_each(Wake::wake);
                return;
            }
            // A closed connection writes nothing more: nothing can pile up.
            if inner.closed.is_some() {
                drop(inner);
                drop(permit);
                return;
            }
            inner.parked.push((id, permit));
        }
        self.has_parked.store(true, Ordering::SeqCst);
        // The writer may have passed `id` since the look above, and looked
        // for parked places before this one was there: one of the two
        // looks sees the other (SeqCst on both sides).
        self.unpark(outbox);
    }

    /// The writer has written every request up to `id`: parked places of
    /// those are free.
    pub(super) fn written(&self, id: u64, outbox: &WeakOutbox<Infallible>) {
        self.written.fetch_max(id, Ordering::SeqCst);
        if self.has_parked.load(Ordering::SeqCst) {
            if let Some(outbox) = outbox.upgrade() {
                self.unpark(&outbox);
            }
        }
    }

    /// Frees the parked places whose requests have been written.
    fn unpark(&self, outbox: &Outbox) {
        let freed = {
            let mut inner = self.lock();
            let written = self.written.load(Ordering::SeqCst);
            // At most a connection's cap of them: a look costs little.
            let freed = match inner.parked.iter().any(|(id, _)| *id <= written) {
                true => {
                    let (waiting, freed): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.parked)
                        .into_iter()
                        .partition(|(id, _)| *id > written);
                    inner.parked = waiting;
                    freed
                }
                false => Vec::new(),
            };
            if inner.parked.is_empty() {
                self.has_parked.store(false, Ordering::SeqCst);
            }
            freed
        };
        if !freed.is_empty() {
            drop(freed);
            self.free(None, outbox);
        }
    }

    pub(super) fn goodbye(&self, last_started: u64) {
        let wakes: Vec<Wake> = {
            let mut inner = self.lock();
            inner.goodbye = Some(last_started);
            self.usable.store(false, Ordering::Release);
            // Queued requests never left: none of them runs, whatever the
            // server says it started.
            let last_sent = inner.last_sent;
            inner.queue.clear();
            self.queued.store(0, Ordering::SeqCst);
            let ids: Vec<u64> = inner
                .waiting()
                .map(|(id, _)| id)
                .filter(|id| *id > last_started || *id > last_sent)
                .collect();
            ids.into_iter()
                .filter_map(|id| inner.end(id, Ending::NotRun))
                .collect()
        };
        wakes.into_iter().for_each(Wake::wake);
    }

    pub(super) fn close(&self, err: Error) {
        let (wakes, parked, granted) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            if inner.closed.is_none() {
                inner.closed = Some(err.clone());
            }
            self.usable.store(false, Ordering::Release);
            inner.queue.clear();
            self.queued.store(0, Ordering::SeqCst);
            let last_sent = inner.last_sent;
            let ids: Vec<u64> = inner.waiting().map(|(id, _)| id).collect();
            let wakes: Vec<Wake> = ids
                .into_iter()
                .filter_map(|id| {
                    let ending = match id > last_sent {
                        true => Ending::Unsent(err.clone()),
                        false => Ending::Lost(err.clone()),
                    };
                    inner.end(id, ending)
                })
                .collect();
            (
                wakes,
                std::mem::take(&mut inner.parked),
                std::mem::take(&mut inner.granted),
            )
        };
        // Nothing more is written: the parked places are free.
        drop((parked, granted));
        wakes.into_iter().for_each(Wake::wake);
    }
}
