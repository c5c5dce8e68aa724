//! [`CallTable`]: a client connection's calls waiting for their answers,
//! and the one deadline sweep that gives up on them on time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{self, Kind, ProtocolError};
use crate::outbox::{self, WeakOutbox};
use crate::permit::{CallPermit, CallPermits};
use crate::streaming::{MAX_STREAM_CREDIT, STREAM_WINDOW, SendCredit};

/// Where a client connection's frames go: its writer task. Frames hold no
/// permit: a call keeps its own, and frees it once its request has been
/// written ([`CallTable::written`]) and the call is over.
pub(super) type Outbox = outbox::Outbox<Infallible>;

/// What a call's wait ends with.
#[derive(Debug)]
pub(super) enum Reply {
    /// The server's result.
    Response(Bytes),
    /// The server's error.
    Failed(WireError),
    /// The connection ended after the request left; it may have run.
    Lost(Error),
    /// The request never left this client (the connection had already
    /// ended): sending it elsewhere is safe.
    Unsent(Error),
    /// The server said goodbye without reading the call: it did not run.
    NotRun,
    /// The call's deadline passed before its answer came; the server has
    /// been told to stop it.
    Expired,
}

impl From<Result<Bytes, WireError>> for Reply {
    fn from(answer: Result<Bytes, WireError>) -> Reply {
        match answer {
            Ok(payload) => Reply::Response(payload),
            Err(err) => Reply::Failed(err),
        }
    }
}

/// What a streaming call's consumer receives, in order.
#[derive(Debug)]
pub(super) enum Event {
    /// One item of the server's stream.
    Item(Bytes),
    /// The server's stream ended normally.
    End,
    /// The single answer of a method that takes a stream.
    Response(Bytes),
    /// The server failed the call.
    Failed(WireError),
    /// The connection ended; the call may or may not have run.
    Lost(Error),
    /// The server said goodbye without reading the call.
    NotRun,
}

/// Who waits for a call's answer.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A one-answer call: its caller's task once it has polled for the
    /// answer, and when it stops waiting. The answer goes in the table
    /// ([`CallTable::poll_reply`]): a call costs no channel.
    Unary { waker: Option<Waker>, deadline: Instant },
    /// A streaming call: events in order, and the credit of the stream the
    /// client sends, if it sends one.
    Stream {
        events: mpsc::Sender<Event>,
        credit: Option<Arc<SendCredit>>,
    },
}

impl Waiter {
    /// The deadline the connection's sweep enforces; streaming calls keep
    /// their own.
    fn deadline(&self) -> Option<Instant> {
        match self {
            Waiter::Unary { deadline, .. } => Some(*deadline),
            Waiter::Stream { .. } => None,
        }
    }

    /// Ends the wait of call `id`: a unary call's reply is filed in
    /// `answered`, a stream's event goes out with the returned [`Wake`],
    /// once the table's lock is let go.
    fn end(self, id: u64, answered: &mut FxHashMap<u64, Reply>, ending: Ending) -> Option<Wake> {
        match self {
            Waiter::Unary { waker, .. } => {
                answered.insert(id, ending.into_reply());
                waker.map(Wake::Caller)
            }
            Waiter::Stream { events, credit } => Some(Wake::Stream {
                events,
                credit,
                event: ending.into_event(),
            }),
        }
    }
}

/// How a call's wait ends, whichever kind of call it is.
enum Ending {
    /// The server's final answer.
    Answer(Result<Bytes, WireError>),
    /// The connection ended after the request left.
    Lost(Error),
    /// The server said goodbye without reading the call.
    NotRun,
    /// The deadline the sweep enforces passed (unary calls only: a stream
    /// keeps its own deadline).
    Expired,
}

impl Ending {
    fn into_reply(self) -> Reply {
        match self {
            Ending::Answer(answer) => answer.into(),
            Ending::Lost(err) => Reply::Lost(err),
            Ending::NotRun => Reply::NotRun,
            Ending::Expired => Reply::Expired,
        }
    }

    fn into_event(self) -> Event {
        match self {
            Ending::Answer(Ok(payload)) => Event::Response(payload),
            Ending::Answer(Err(err)) => Event::Failed(err),
            Ending::Lost(err) => Event::Lost(err),
            Ending::NotRun => Event::NotRun,
            // Never swept (`Waiter::deadline`); were one, it would be
            // over without an answer all the same.
            Ending::Expired => Event::Lost(Error::disconnected("the call's deadline passed")),
        }
    }
}

/// Who learns that a wait ended, told after the table's lock is let go.
enum Wake {
    /// A unary call's caller, whose answer is in the table.
    Caller(Waker),
    /// A stream's consumer, told by an event.
    Stream {
        events: mpsc::Sender<Event>,
        credit: Option<Arc<SendCredit>>,
        event: Event,
    },
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Caller(waker) => waker.wake(),
            Wake::Stream {
                events,
                credit,
                event,
            } => {
                let _ = events.try_send(event);
                if let Some(credit) = credit {
                    credit.close();
                }
            }
        }
    }
}

/// The calls of one connection waiting for their answers.
#[derive(Debug)]
pub(super) struct CallTable {
    inner: Mutex<Inner>,
    /// Wakes the deadline sweep when a call's deadline comes before the
    /// one it sleeps until.
    rearm: Notify,
    /// Cleared, under the lock, when the connection closes or the server
    /// says goodbye: what every call asks first, answered without the lock.
    usable: AtomicBool,
    /// The id of the last request the writer has written (requests leave
    /// in id order): a call over before its request left keeps its permit,
    /// parked, until this passes its id.
    written: AtomicU64,
    /// Whether permits are parked: the writer takes the lock after a batch
    /// only if so.
    has_parked: AtomicBool,
}

impl Default for CallTable {
    fn default() -> CallTable {
        CallTable {
            inner: Mutex::default(),
            rearm: Notify::new(),
            usable: AtomicBool::new(true),
            written: AtomicU64::new(0),
            has_parked: AtomicBool::new(false),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    /// The last request id used; ids go up by one per call.
    last_id: u64,
    /// Keyed by our own sequential ids, so a fast unkeyed hash is safe.
    waiting: FxHashMap<u64, Waiter>,
    /// Answers of unary calls that ended, until their callers take them.
    answered: FxHashMap<u64, Reply>,
    /// Set once, when the connection ends; later calls fail with it at once.
    pub(super) closed: Option<Error>,
    /// Set when the server said goodbye: the last request id it started.
    pub(super) goodbye: Option<u64>,
    /// When the deadline sweep next runs: no later than the earliest
    /// deadline of a waiting call (earlier is harmless; it runs again).
    armed: Option<Instant>,
    /// Permits of calls that ended before their requests were written, by
    /// request id.
    parked: Vec<(u64, CallPermit)>,
}

impl Inner {
    /// The last request id used: how many requests went out.
    pub(super) fn last_id(&self) -> u64 {
        self.last_id
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
}

impl CallTable {
    /// Whether new calls may use the connection: neither closed nor told
    /// goodbye. (A call that finds it usable and sends as it closes learns
    /// so from [`CallTable::send`].)
    pub(super) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// The writer has written every request up to `id`: parked permits of
    /// those are free.
    pub(super) fn written(&self, id: u64) {
        self.written.fetch_max(id, Ordering::SeqCst);
        if self.has_parked.load(Ordering::SeqCst) {
            drop(self.unpark());
        }
    }

    /// Frees the permit of call `id`, over now (answered, given up,
    /// refused): at once if its request has left, or once it has, so that
    /// calls given up on cannot pile requests up behind a stalled socket.
    pub(super) fn release(&self, id: u64, permit: CallPermit) {
        if self.written.load(Ordering::SeqCst) >= id {
            return;
        }
        {
            let mut inner = self.lock();
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
        // for parked permits before this one was there: one of the two
        // looks sees the other (SeqCst on both sides).
        drop(self.unpark());
    }

    /// Takes out the parked permits whose requests have been written; the
    /// caller drops them after the lock.
    fn unpark(&self) -> Vec<CallPermit> {
        let mut inner = self.lock();
        let written = self.written.load(Ordering::SeqCst);
        // At most a connection's cap of them: a look costs little.
        if !inner.parked.iter().any(|(id, _)| *id <= written) {
            if inner.parked.is_empty() {
                self.has_parked.store(false, Ordering::SeqCst);
            }
            return Vec::new();
        }
        let (waiting, freed): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.parked)
            .into_iter()
            .partition(|(id, _)| *id > written);
        inner.parked = waiting;
        if inner.parked.is_empty() {
            self.has_parked.store(false, Ordering::SeqCst);
        }
        freed.into_iter().map(|(_, permit)| permit).collect()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update under this lock is a single map or field operation, so
        // a panic elsewhere cannot leave it half-done: poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next id, registers a waiter for it and queues the request,
    /// all under one lock: requests reach the wire in id order, which the
    /// protocol requires and the goodbye's "last id started" relies on.
    ///
    /// The inner `Err` says why the connection took no call.
    pub(super) fn send(
        &self,
        outbox: &Outbox,
        payload: Bytes,
        waiter: Waiter,
    ) -> Result<Result<u64, Reply>, Error> {
        let mut inner = self.lock();
        if inner.goodbye.is_some() {
            return Ok(Err(Reply::NotRun));
        }
        if inner.closed.is_some() {
            return Ok(Err(Reply::Unsent(inner.unusable_error())));
        }
        let id = inner.last_id + 1;
        if outbox.send_payload(Kind::Request, id, payload)?.is_err() {
            return Ok(Err(Reply::Unsent(inner.unusable_error())));
        }
        inner.last_id = id;
        if let Some(deadline) = waiter.deadline() {
            if inner.armed.is_none_or(|armed| deadline < armed) {
                inner.armed = Some(deadline);
                self.rearm.notify_one();
            }
        }
        inner.waiting.insert(id, waiter);
        Ok(Ok(id))
    }

    /// Hands the server's final answer to the call's waiter.
    pub(super) fn complete(&self, id: u64, answer: Result<Bytes, WireError>) {
        let wake = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            // None: the call already gave up (deadline, dropped future).
            let waiter = inner.waiting.remove(&id);
            waiter.and_then(|waiter| waiter.end(id, &mut inner.answered, Ending::Answer(answer)))
        };
        if let Some(wake) = wake {
            wake.wake();
        }
    }

    /// Routes a stream frame (item, end, credit) from the server.
    pub(super) fn stream_frame(&self, kind: Kind, id: u64, payload: Bytes) -> Result<(), ProtocolError> {
        let mut inner = self.lock();
        let last_id = inner.last_id;
        let Some(waiter) = inner.waiting.get(&id) else {
            // Finished calls may still receive frames that crossed ours.
            return if id > last_id {
                Err(ProtocolError::NoSuchStream { kind, id })
            } else {
                Ok(())
            };
        };
        let Waiter::Stream { events, credit } = waiter else {
            // A server whose method streams where ours does not (a version
            // mismatch): that call fails, the connection goes on.
            let failed = WireError::new(
                ErrorCode::Internal,
                "the server sent a stream where this client expects one value; client and server disagree on the method",
            );
            let table = &mut *inner;
            let wake = table
                .waiting
                .remove(&id)
                .and_then(|waiter| waiter.end(id, &mut table.answered, Ending::Answer(Err(failed))));
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
                if let Some(Waiter::Stream {
                    credit: Some(credit), ..
                }) = inner.waiting.remove(&id)
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
    /// was still waiting on a live connection (and so deserves a cancel).
    pub(super) fn forget(&self, id: u64) -> bool {
        let mut inner = self.lock();
        inner.answered.remove(&id);
        inner.waiting.remove(&id).is_some() && inner.closed.is_none()
    }

    /// The answer of unary call `id` once it has one; until then, wakes
    /// `cx` when it does.
    pub(super) fn poll_reply(&self, id: u64, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut inner = self.lock();
        if let Some(reply) = inner.answered.remove(&id) {
            return Poll::Ready(reply);
        }
        match inner.waiting.get_mut(&id) {
            Some(Waiter::Unary { waker, .. }) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // Neither waiting nor answered: only the call itself forgets
            // its id, so this is a call polled after it gave up.
            _ => Poll::Ready(Reply::Lost(inner.unusable_error())),
        }
    }

    /// Fails every call whose deadline is `now` or earlier, and tells the
    /// server to stop them; re-arms the sweep for the calls left.
    fn expire(&self, now: Instant, outbox: &WeakOutbox<Infallible>) {
        let (expired, wakes, live) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            let expired: Vec<u64> = inner
                .waiting
                .iter()
                .filter(|(_, waiter)| waiter.deadline().is_some_and(|deadline| deadline <= now))
                .map(|(id, _)| *id)
                .collect();
            // Only unary calls have deadlines here.
            let wakes: Vec<Wake> = expired
                .iter()
                .filter_map(|id| {
                    let waiter = inner.waiting.remove(id)?;
                    waiter.end(*id, &mut inner.answered, Ending::Expired)
                })
                .collect();
            inner.armed = inner.waiting.values().filter_map(Waiter::deadline).min();
            (expired, wakes, inner.closed.is_none())
        };
        wakes.into_iter().for_each(Wake::wake);
        let outbox = outbox.upgrade().filter(|_| live);
        for id in expired {
            if let Some(outbox) = &outbox {
                // A gone writer means a closed connection: nobody to tell.
                let _ = outbox.send_payload(Kind::Cancel, id, Bytes::new());
            }
        }
    }

    pub(super) fn goodbye(&self, last_started: u64) {
        let wakes: Vec<Wake> = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            inner.goodbye = Some(last_started);
            self.usable.store(false, Ordering::Release);
            let ids: Vec<u64> = inner
                .waiting
                .keys()
                .copied()
                .filter(|id| *id > last_started)
                .collect();
            ids.into_iter()
                .filter_map(|id| {
                    let waiter = inner.waiting.remove(&id)?;
                    waiter.end(id, &mut inner.answered, Ending::NotRun)
                })
                .collect()
        };
        wakes.into_iter().for_each(Wake::wake);
    }

    pub(super) fn close(&self, err: Error) {
        let (wakes, parked) = {
            let mut inner = self.lock();
            let inner = &mut *inner;
            if inner.closed.is_none() {
                inner.closed = Some(err.clone());
            }
            self.usable.store(false, Ordering::Release);
            let wakes: Vec<Wake> = std::mem::take(&mut inner.waiting)
                .into_iter()
                .filter_map(|(id, waiter)| waiter.end(id, &mut inner.answered, Ending::Lost(err.clone())))
                .collect();
            (wakes, std::mem::take(&mut inner.parked))
        };
        // Nothing more is written: the parked permits are free.
        drop(parked);
        wakes.into_iter().for_each(Wake::wake);
    }
}

/// Enforces the deadlines of a connection's unary calls, and of the calls
/// waiting for a permit on it, with one timer, re-armed at the earliest
/// deadline, instead of one timer per call: with a thousand calls in
/// flight that is a thousand timer registrations and removals fewer per
/// thousand calls. With every call on the same timeout, deadlines arrive
/// in order and the sweep wakes about once per timeout.
pub(super) async fn sweep_deadlines(
    calls: Arc<CallTable>,
    permits: CallPermits,
    outbox: WeakOutbox<Infallible>,
) {
    loop {
        // A call that arms an earlier deadline after the reads below
        // leaves a permit here (`notify_one`), so the sleep is cut short.
        let rearmed = calls.rearm.notified();
        let waiter_rearmed = permits.rearmed();
        let armed = calls.lock().armed;
        let armed = match (armed, permits.earliest_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match armed {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = rearmed => continue,
                    () = waiter_rearmed => continue,
                }
            }
            None => {
                tokio::select! {
                    () = rearmed => {}
                    () = waiter_rearmed => {}
                }
                continue;
            }
        }
        let now = Instant::now();
        calls.expire(now, &outbox);
        permits.expire(now);
    }
}
