//! [`CallTable`]: a client connection's calls, from the request id each
//! gets to the end of its wait, and the places they hold under the
//! connection's cap on calls in flight.
//!
//! A call holds its place from the moment its request leaves until it is
//! over (its caller took its answer, or gave up; a stream ended) and its
//! request has been written; a unary call answered while a request waits
//! for a place, until its answer came; a unary `no_cancel` call given up
//! on, until the server answers it, since the server runs it on. The
//! table keeps the place, so it is freed where the call ends, under the
//! lock taken anyway. A call that finds no
//! place free queues its request (`queue`); a freed place goes to the
//! oldest queued request, which leaves at once. A waiting caller is woken
//! once, by its answer.

use std::collections::{VecDeque, hash_map};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::client::later::Later;
use crate::client::queue::{Now, Queued};
use crate::client::waiter::{Ending, Event, Payload, Reply, Slot, StreamEnd, Waiter, Wake};
use crate::codec::Message;
use crate::codec::splice::Encoding;
use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{self, Kind, ProtocolError};
use crate::outbox;
use crate::permit::{CallPermit, CallPermits};
use crate::streaming::{MAX_STREAM_CREDIT, STREAM_WINDOW};

/// Where a client connection's frames go: its writer task. Frames hold no
/// place: the table holds a call's place, and frees it once the call is
/// over and its request has been written ([`CallTable::written`]).
pub(super) type Outbox = outbox::Outbox<Infallible>;

/// The calls of one connection.
#[derive(Debug)]
pub(super) struct CallTable {
    inner: Mutex<Inner>,
    /// The connection's places for calls in flight.
    pub(super) permits: CallPermits,
    /// Where requests go, including those sent from the queue by whoever
    /// frees a place.
    pub(super) outbox: Outbox,
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
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    /// The last request id given; ids go up by one per call.
    pub(super) last_id: u64,
    /// The id of the last request sent to the writer. Requests leave in id
    /// order, so a call with a higher id is queued, or gone.
    pub(super) last_sent: u64,
    /// Requests sent to the writer, in all (ids of requests that were
    /// queued and never left are skipped).
    sent: u64,
    /// The calls waiting for their answers, and the unary calls answered
    /// until their callers take the answers. Keyed by our own sequential
    /// ids, so a fast unkeyed hash is safe.
    pub(super) calls: FxHashMap<u64, Slot>,
    /// Requests waiting for a place, in id order.
    pub(super) queue: VecDeque<Queued>,
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
    /// Places of calls given up on that the server runs to their end
    /// anyway ([`Waiter::cancellable`]), by request id: each goes when the
    /// answer comes, at a goodbye if the server never started the call, or
    /// when the connection closes.
    kept: Vec<(u64, CallPermit)>,
}

impl Inner {
    /// How many requests went out.
    pub(super) fn sent(&self) -> u64 {
        self.sent
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

    /// Request `id` has gone to the writer.
    pub(super) fn mark_sent(&mut self, id: u64) {
        self.last_sent = id;
        self.sent += 1;
    }

    /// The place kept for call `id`, given up on, if any.
    fn unkeep(&mut self, id: u64) -> Option<CallPermit> {
        let at = self.kept.iter().position(|(kept, _)| *kept == id)?;
        Some(self.kept.swap_remove(at).1)
    }

    /// The calls still waiting for their answers.
    pub(super) fn waiting(&self) -> impl Iterator<Item = (u64, &Waiter)> {
        self.calls
            .iter()
            .filter_map(|(id, slot)| slot.waiter().map(|waiter| (*id, waiter)))
    }
}

impl CallTable {
    /// The table of a connection with `permits` places, whose frames go
    /// to `outbox`.
    pub(super) fn new(permits: CallPermits, outbox: Outbox) -> CallTable {
        CallTable {
            inner: Mutex::default(),
            permits,
            outbox,
            rearm: Notify::new(),
            usable: AtomicBool::new(true),
            written: AtomicU64::new(0),
            has_parked: AtomicBool::new(false),
        }
    }

    /// Whether new calls may use the connection: neither closed nor told
    /// goodbye. (A call that finds it usable and sends as it closes learns
    /// so from [`CallTable::send`].)
    pub(super) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // No update under this lock can panic halfway (map and queue
        // operations, a frame copied into the outbox; callers' wakers run
        // after it), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next id and registers a waiter for it; sends the request
    /// if a place is free and no request is queued for one (a short one
    /// copied into the outbox from where it was encoded), else queues it
    /// (as bytes of its own). All under one lock: requests reach the wire
    /// in id order, which the protocol requires and the goodbye's "last id
    /// started" relies on. `deadline` is the caller's, for the budget a
    /// queued request leaves with.
    ///
    /// The call's id, and whether its request was queued; the inner `Err`
    /// says why the connection took no call.
    pub(super) fn send(
        &self,
        payload: Encoding<'_>,
        waiter: Waiter,
        deadline: Instant,
    ) -> Result<Result<(u64, bool), Reply>, Error> {
        let mut inner = self.lock();
        if inner.goodbye.is_some() {
            return Ok(Err(Reply::NotRun));
        }
        if inner.closed.is_some() {
            return Ok(Err(Reply::Unsent(Box::new(inner.unusable_error()))));
        }
        let id = inner.last_id + 1;
        // Newcomers queue behind queued requests. (Places are freed only
        // under the lock, and a freed place goes to the queue first: with
        // requests queued, none is free.)
        let place = match inner.queue.is_empty() {
            true => self.permits.try_acquire(),
            false => None,
        };
        if place.is_some() {
            if self.outbox.send_encoding(Kind::Request, id, payload)?.is_err() {
                return Ok(Err(Reply::Unsent(Box::new(inner.unusable_error()))));
            }
            inner.mark_sent(id);
            waiter.left();
        } else {
            inner
                .queue
                .push_back(Queued::new(id, deadline, payload.into_message()));
        }
        inner.last_id = id;
        if let Some(deadline) = waiter.deadline()
            && inner.armed.is_none_or(|armed| deadline < armed)
        {
            inner.armed = Some(deadline);
            self.rearm.notify_one();
        }
        let queued = place.is_none();
        inner.calls.insert(id, Slot::Waiting { waiter, place });
        Ok(Ok((id, queued)))
    }

    /// Ends the wait of call `id`, if it still waits, and lets its place
    /// go: a unary call's reply stays in its slot for its caller, with its
    /// place until the caller takes the reply if no request waits for one
    /// (the writer counts places held to tell whether more requests are
    /// coming: a caller about to read its answer is likely to send again),
    /// else the place goes to the oldest queued request at once (which
    /// keeps that count); a stream's event goes out once the lock is let
    /// go, and its place at once.
    pub(super) fn end(&self, inner: &mut Inner, id: u64, ending: Ending, later: &mut Later) {
        let Some(slot) = inner.calls.get_mut(&id) else {
            return;
        };
        let place = match slot {
            Slot::Waiting {
                waiter: Waiter::Unary {
                    waker, to_completion, ..
                },
                place,
            } => {
                let mut place = place.take();
                // The deadline sweep is the one ending that gives up on a
                // call the server may still be running; the others are its
                // answer, or a connection that ended.
                if *to_completion && matches!(ending, Ending::Expired) {
                    inner.kept.extend(place.take().map(|place| (id, place)));
                }
                later.wake(waker.take().map(Wake::Caller));
                // A request waits for the place: it goes now, not once
                // the caller has run to take its reply.
                let hold = match inner.queue.is_empty() {
                    true => place.take(),
                    false => None,
                };
                *slot = Slot::Answered {
                    reply: ending.into_reply(),
                    place: hold,
                };
                place
            }
            Slot::Waiting {
                waiter: Waiter::Stream { .. },
                ..
            } => match inner.calls.remove(&id) {
                Some(Slot::Waiting {
                    waiter: Waiter::Stream { events, credit },
                    place,
                }) => {
                    later.wake(Some(Wake::Stream(Box::new(StreamEnd {
                        events,
                        credit,
                        event: ending.into_event(),
                    }))));
                    place
                }
                _ => None,
            },
            Slot::Answered { .. } => None,
        };
        if let Some(place) = place {
            self.let_go(inner, id, place, later);
        }
    }

    /// Tells the server to stop call `id`, under the lock and before the
    /// call's place goes, so that no request taking the place leaves first
    /// (`connection::places`). A closed connection, or writer, tells nobody.
    pub(super) fn cancel(&self, inner: &Inner, id: u64) {
        if inner.closed.is_none() {
            let _ = self.outbox.send_payload(Kind::Cancel, id, Message::new());
        }
    }

    /// Frees the place of call `id`, whose wait is over: at once if its
    /// request has been written, to the oldest queued request; else once it
    /// has been, so that calls given up on cannot pile requests up behind
    /// a stalled socket (even an answer does not prove the request left: a
    /// hostile server can answer a request it guessed the id of).
    fn let_go(&self, inner: &mut Inner, id: u64, place: CallPermit, later: &mut Later) {
        if self.written.load(Ordering::SeqCst) >= id {
            match inner.queue.is_empty() {
                true => drop(place),
                false => self.dispatch(inner, Some(place), later),
            }
        } else if inner.closed.is_none() {
            inner.parked.push((id, place));
            self.has_parked.store(true, Ordering::SeqCst);
            later.parked = true;
        }
        // A closed connection writes nothing more: nothing can pile up.
    }

    /// Hands the server's final answer to the call's waiter; `now` is the
    /// reader's reading of the clock, kept over a burst of answers.
    pub(super) fn complete(
        &self,
        id: u64,
        answer: Result<Payload, WireError>,
        now: &mut Now,
    ) -> Result<(), ProtocolError> {
        let mut later = Later::at(*now);
        {
            let mut inner = self.lock();
            if id > inner.last_sent {
                let kind = if answer.is_ok() {
                    Kind::Response
                } else {
                    Kind::Error
                };
                return Err(ProtocolError::NotSent { kind, id });
            }
            // Not waiting: the call already gave up (deadline, dropped
            // future).
            self.end(&mut inner, id, Ending::Answer(answer), &mut later);
            if let Some(place) = inner.unkeep(id) {
                self.let_go(&mut inner, id, place, &mut later);
            }
        }
        *now = later.now;
        later.run(self);
        Ok(())
    }

    /// Routes a stream frame (item, end, credit) from the server.
    pub(super) fn stream_frame(&self, kind: Kind, id: u64, payload: Bytes) -> Result<(), ProtocolError> {
        let mut later = Later::default();
        let routed = self.route(kind, id, payload, &mut later);
        later.run(self);
        routed
    }

    fn route(&self, kind: Kind, id: u64, payload: Bytes, later: &mut Later) -> Result<(), ProtocolError> {
        let mut inner = self.lock();
        if id > inner.last_sent {
            return Err(ProtocolError::NotSent { kind, id });
        }
        let Some(Slot::Waiting { waiter, .. }) = inner.calls.get(&id) else {
            // Finished calls may still receive frames that crossed ours. A
            // stream's end is an answer: a place kept for the call goes.
            if let (Kind::End, Some(place)) = (kind, inner.unkeep(id)) {
                self.let_go(&mut inner, id, place, later);
            }
            return Ok(());
        };
        let Waiter::Stream { events, credit } = waiter else {
            // A server whose method streams where ours does not (a version
            // mismatch): that call fails, the connection goes on, and the
            // server's stream is stopped before the call's place goes.
            let failed = WireError::new(
                ErrorCode::Internal,
                "the server sent a stream where this client expects one value; client and server disagree on the method",
            );
            self.cancel(&inner, id);
            self.end(&mut inner, id, Ending::Answer(Err(failed)), later);
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
                if let Some(Slot::Waiting {
                    waiter: Waiter::Stream { credit, .. },
                    place,
                }) = inner.calls.remove(&id)
                {
                    if let Some(credit) = credit {
                        credit.close();
                    }
                    if let Some(place) = place {
                        self.let_go(&mut inner, id, place, later);
                    }
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

    /// The caller of call `id` stopped waiting: forgets the call (and its
    /// answer if nobody took it) and lets its place go. A call still
    /// waiting on a live connection for an answer gets a cancel, sent
    /// ahead of the request that takes its place, so the server never sees
    /// more calls than the client counts (`connection::places`); whether it
    /// got one. A queued request is taken out of the queue: it never left.
    pub(super) fn forget(&self, id: u64) -> bool {
        let mut later = Later::default();
        let cancel = {
            let mut inner = self.lock();
            let (place, cancel) = match inner.calls.remove(&id) {
                // Queued: it holds no place yet.
                Some(Slot::Waiting { .. }) if id > inner.last_sent => {
                    inner.unqueue(id);
                    (None, false)
                }
                Some(Slot::Waiting { waiter, place }) if !waiter.cancellable() && inner.closed.is_none() => {
                    inner.kept.extend(place.map(|place| (id, place)));
                    (None, false)
                }
                Some(Slot::Waiting { place, .. }) => (place, inner.closed.is_none()),
                // Its wait had ended: an answer nobody took.
                Some(Slot::Answered { place, .. }) => (place, false),
                None => (None, false),
            };
            if cancel {
                self.cancel(&inner, id);
            }
            if let Some(place) = place {
                self.let_go(&mut inner, id, place, &mut later);
            }
            cancel
        };
        later.run(self);
        cancel
    }

    /// The answer of unary call `id` once it has one; until then, wakes
    /// `cx` when it does.
    pub(super) fn poll_reply(&self, id: u64, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut slot = match inner.calls.entry(id) {
            hash_map::Entry::Occupied(slot) => slot,
            // Neither waiting nor answered: only the call itself forgets
            // its id, so this is a call polled after it gave up.
            hash_map::Entry::Vacant(_) => return Poll::Ready(Reply::Lost(Box::new(inner.unusable_error()))),
        };
        let (reply, place) = match slot.get_mut() {
            Slot::Waiting {
                waiter: Waiter::Unary { waker, .. },
                ..
            } => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            // Only a unary call polls for its reply.
            Slot::Waiting {
                waiter: Waiter::Stream { .. },
                ..
            } => return Poll::Pending,
            // Answered (as matched): taken out, with its reply.
            Slot::Answered { .. } => match slot.remove() {
                Slot::Answered { reply, place } => (reply, place),
                Slot::Waiting { .. } => return Poll::Pending,
            },
        };
        // The call is over: its place goes.
        if let Some(place) = place {
            if self.written.load(Ordering::SeqCst) >= id && inner.queue.is_empty() {
                // Nothing to hand it to: the common case, kept short.
                drop(place);
            } else {
                let mut later = Later::default();
                self.let_go(inner, id, place, &mut later);
                drop(guard);
                later.run(self);
            }
        }
        Poll::Ready(reply)
    }

    /// The writer has written every request up to `id`: parked places of
    /// those are free.
    pub(super) fn written(&self, id: u64) {
        self.written.fetch_max(id, Ordering::SeqCst);
        if self.has_parked.load(Ordering::SeqCst) {
            self.unpark();
        }
    }

    /// Frees the parked places whose requests have been written.
    pub(super) fn unpark(&self) {
        let mut later = Later::default();
        {
            let mut inner = self.lock();
            let written = self.written.load(Ordering::SeqCst);
            // At most a connection's cap of them: a look costs little.
            if inner.parked.iter().any(|(id, _)| *id <= written) {
                let (waiting, freed): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.parked)
                    .into_iter()
                    .partition(|(id, _)| *id > written);
                inner.parked = waiting;
                drop(freed);
                self.dispatch(&mut inner, None, &mut later);
            }
            if inner.parked.is_empty() {
                self.has_parked.store(false, Ordering::SeqCst);
            }
        }
        later.run(self);
    }

    pub(super) fn goodbye(&self, last_started: u64) {
        let mut later = Later::default();
        {
            let mut inner = self.lock();
            inner.goodbye = Some(last_started);
            self.usable.store(false, Ordering::Release);
            // Queued requests never left: none of them runs, whatever the
            // server says it started.
            let last_sent = inner.last_sent;
            inner.queue.clear();
            // The server never started these, and has forgotten them.
            inner.kept.retain(|(id, _)| *id <= last_started);
            let ids: Vec<u64> = inner
                .waiting()
                .map(|(id, _)| id)
                .filter(|id| *id > last_started || *id > last_sent)
                .collect();
            for id in ids {
                self.end(&mut inner, id, Ending::NotRun, &mut later);
            }
        }
        later.run(self);
    }

    pub(super) fn close(&self, err: Error) {
        let mut later = Later::default();
        let parked = {
            let mut inner = self.lock();
            if inner.closed.is_none() {
                inner.closed = Some(err.clone());
            }
            self.usable.store(false, Ordering::Release);
            inner.queue.clear();
            let last_sent = inner.last_sent;
            let ids: Vec<u64> = inner.waiting().map(|(id, _)| id).collect();
            for id in ids {
                let ending = match id > last_sent {
                    true => Ending::Unsent(err.clone()),
                    false => Ending::Lost(err.clone()),
                };
                self.end(&mut inner, id, ending, &mut later);
            }
            (std::mem::take(&mut inner.parked), std::mem::take(&mut inner.kept))
        };
        // Nothing more is written, or answered: the parked and kept places
        // are free.
        drop(parked);
        later.run(self);
    }
}
