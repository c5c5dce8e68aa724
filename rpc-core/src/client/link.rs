//! One live client connection: request ids, the table of calls waiting for
//! an answer, and the reader task that hands answers out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, WireError};
use crate::frame::{self, CONNECTION_ID, Frame, Kind, ProtocolError};
use crate::payload::RequestHead;
use crate::service::RequestMessage;
use crate::streaming::{ItemStream, MAX_STREAM_CREDIT, RecvWindow, STREAM_WINDOW, SendCredit};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::writer::{self, DEFAULT_WRITE_TIMEOUT, Hold, Outgoing, Places};

/// What a call's wait ends with.
#[derive(Debug)]
pub(crate) enum Reply {
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
pub(crate) enum Event {
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
enum Waiter {
    /// A one-answer call, and when its caller stops waiting.
    Unary {
        reply: oneshot::Sender<Reply>,
        deadline: Instant,
    },
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

    fn lost(self, err: Error) {
        match self {
            Waiter::Unary { reply, .. } => {
                let _ = reply.send(Reply::Lost(err));
            }
            Waiter::Stream { events, credit } => {
                let _ = events.try_send(Event::Lost(err));
                if let Some(credit) = credit {
                    credit.close();
                }
            }
        }
    }

    fn not_run(self) {
        match self {
            Waiter::Unary { reply, .. } => {
                let _ = reply.send(Reply::NotRun);
            }
            Waiter::Stream { events, credit } => {
                let _ = events.try_send(Event::NotRun);
                if let Some(credit) = credit {
                    credit.close();
                }
            }
        }
    }
}

/// A started connection. Dropping it stops its tasks.
#[derive(Debug)]
pub(crate) struct Link {
    outbox: mpsc::UnboundedSender<Outgoing>,
    calls: Arc<Calls>,
    /// The server's announced frame limit: larger requests are refused here,
    /// before they cost the network anything.
    server_max_frame_len: usize,
    /// Whether any call on this connection got an answer; a connection that
    /// dies before serving one counts as a failed attempt for the backoff.
    served: AtomicBool,
    /// Places for calls in flight: the client's own limit, or the server's
    /// announced one if smaller, so a server never has to hold back a
    /// request of ours (and with it, frames that running calls need).
    places: Places,
    reader: AbortHandle,
    writer: AbortHandle,
    sweeper: AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Nobody can be waiting on this connection any more (calls hold the
        // link while they wait). The writer is stopped too: a server that
        // stopped reading must not keep it, and the socket, alive.
        self.reader.abort();
        self.writer.abort();
        self.sweeper.abort();
    }
}

impl Link {
    /// Spawns the connection's reader and writer tasks.
    pub(crate) fn start<R: FrameRead, W: FrameWrite>(conn: Connection<R, W>, max_in_flight: usize) -> Link {
        let server_cap = match conn.peer.max_calls {
            0 => usize::MAX,
            cap => usize::from(cap),
        };
        let places = Places::new(max_in_flight.min(server_cap).max(1));
        // Unbounded, because what enters it is bounded: each request holds a
        // place under the client's in-flight limit until it is written, and
        // each call adds at most one cancel.
        let (outbox, queued) = mpsc::unbounded_channel();
        let calls = Arc::new(Calls::default());
        // When the server is gone, stop writing at once and close our side,
        // so the server's lingering close is not kept waiting.
        let stop = CancellationToken::new();
        let reader = tokio::spawn(read_loop(conn.reader, Arc::clone(&calls), stop.clone()));
        let sweeper = tokio::spawn(sweep_deadlines(Arc::clone(&calls), outbox.downgrade()));
        let writer_calls = Arc::clone(&calls);
        let writer_places = places.clone();
        let writer = tokio::spawn(async move {
            if let Err(err) =
                writer::run(conn.writer, queued, writer_places, stop, DEFAULT_WRITE_TIMEOUT).await
            {
                writer_calls.close(err);
            }
        });
        Link {
            outbox,
            calls,
            server_max_frame_len: conn.peer.max_frame_len as usize,
            served: AtomicBool::new(false),
            places,
            reader: reader.abort_handle(),
            writer: writer.abort_handle(),
            sweeper: sweeper.abort_handle(),
        }
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        let calls = self.calls.lock();
        calls.closed.is_none() && calls.goodbye.is_none()
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.calls.lock().closed.is_some()
    }

    /// Waits for a place for one more call in flight on this connection.
    pub(crate) async fn place(&self) -> Result<Arc<OwnedSemaphorePermit>, Error> {
        Arc::clone(self.places.semaphore())
            .acquire_owned()
            .await
            .map(Arc::new)
            .map_err(|_| Error::disconnected("the connection closed"))
    }

    /// A place, if one is free now.
    pub(crate) fn try_place(&self) -> Option<Arc<OwnedSemaphorePermit>> {
        Arc::clone(self.places.semaphore())
            .try_acquire_owned()
            .ok()
            .map(Arc::new)
    }

    /// Marks the connection as having served a call.
    pub(crate) fn mark_served(&self) {
        // Read first: after the first answer this is a read, not a write to
        // a line every caller shares.
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
        }
    }

    /// Whether any call on this connection was answered.
    pub(crate) fn served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Why the connection is unusable, for calls that find it so.
    pub(crate) fn unusable_error(&self) -> Error {
        self.calls.lock().unusable_error()
    }

    /// Refuses, before sending, a request over the server's frame limit.
    fn check_request_len(&self, method: &str, len: usize) -> Result<(), Error> {
        let limit = self.server_max_frame_len;
        if len > limit {
            return Err(Error::FrameTooLarge {
                what: format!("the request to `{method}`"),
                len,
                limit,
                side: "server",
                setting: "Server::max_frame_len",
            });
        }
        Ok(())
    }

    /// Sends one call and waits for its answer, until `deadline` at the
    /// latest. `place` is the call's place under the in-flight limit; the
    /// queued request shares it.
    ///
    /// If this future is dropped before the answer arrives (a `select!`, a
    /// dropped caller), the server is told to stop the call, as it is when
    /// the deadline passes.
    pub(crate) async fn round_trip<Q>(
        &self,
        request: &Q,
        deadline: Instant,
        place: &Arc<OwnedSemaphorePermit>,
    ) -> Result<Reply, Error>
    where
        Q: RequestMessage + ?Sized,
    {
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Ok(Reply::Expired);
        }
        let method = request.method();
        let mut payload = BytesMut::with_capacity(64);
        RequestHead::encode(method, budget, &mut payload);
        request.encode_args(&mut payload)?;
        self.check_request_len(method, payload.len())?;
        let (tx, waiter) = oneshot::channel();
        let id = match self.calls.send(
            &self.outbox,
            payload.freeze(),
            place,
            Waiter::Unary { reply: tx, deadline },
        )? {
            Ok(id) => id,
            Err(refused) => return Ok(refused),
        };
        let mut pending = Pending {
            link: self,
            id,
            answered: false,
        };
        let reply = waiter
            .await
            .unwrap_or_else(|_| Reply::Lost(self.unusable_error()));
        pending.answered = true;
        if matches!(reply, Reply::Response(_) | Reply::Failed(_)) {
            self.mark_served();
        }
        Ok(reply)
    }
}

/// A call waiting for its answer. Dropped unanswered, it forgets the call
/// and sends the server a cancel, so abandoned calls leave nothing behind on
/// either side.
struct Pending<'a> {
    link: &'a Link,
    id: u64,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let was_waiting = self.link.calls.forget(self.id);
        if was_waiting {
            if let Ok(cancel) = Frame::new(Kind::Cancel, self.id, Bytes::new()) {
                let _ = self.link.outbox.send(cancel.into());
            }
        }
    }
}

/// The table of calls waiting for an answer.
#[derive(Debug, Default)]
struct Calls {
    inner: Mutex<CallsInner>,
    /// Wakes the deadline sweep when a call's deadline comes before the
    /// one it sleeps until.
    rearm: Notify,
}

#[derive(Debug, Default)]
struct CallsInner {
    /// The last request id used; ids go up by one per call.
    last_id: u64,
    /// Keyed by our own sequential ids, so a fast unkeyed hash is safe.
    waiting: FxHashMap<u64, Waiter>,
    /// Set once, when the connection ends; later calls fail with it at once.
    closed: Option<Error>,
    /// Set when the server said goodbye: the last request id it read.
    goodbye: Option<u64>,
    /// When the deadline sweep next runs: no later than the earliest
    /// deadline of a waiting call (earlier is harmless; it runs again).
    armed: Option<Instant>,
}

impl CallsInner {
    fn unusable_error(&self) -> Error {
        // After a goodbye, a call that finds the connection unusable was
        // never sent: the server is shutting down, whatever came after.
        match (self.goodbye, &self.closed) {
            (Some(_), _) => Error::ShuttingDown,
            (None, Some(err)) => err.clone(),
            (None, None) => Error::disconnected("the connection closed"),
        }
    }
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, CallsInner> {
        // Every update under this lock is a single map or field operation, so
        // a panic elsewhere cannot leave it half-done: poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next id, registers a waiter for it and queues the request,
    /// all under one lock: requests reach the wire in id order, which the
    /// protocol requires and the goodbye's "last id read" relies on.
    ///
    /// The inner `Err` says why the connection took no call.
    fn send(
        &self,
        outbox: &mpsc::UnboundedSender<Outgoing>,
        payload: Bytes,
        place: &Arc<OwnedSemaphorePermit>,
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
        let frame = Frame::new(Kind::Request, id, payload)?;
        let out = Outgoing {
            frame,
            hold: Some(Hold::Place(Arc::clone(place))),
        };
        if outbox.send(out).is_err() {
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
    fn complete(&self, id: u64, answer: Result<Bytes, WireError>) {
        let waiter = self.lock().waiting.remove(&id);
        match waiter {
            Some(Waiter::Unary { reply, .. }) => {
                let _ = reply.send(answer.into());
            }
            Some(Waiter::Stream { events, credit }) => {
                let event = match answer {
                    Ok(payload) => Event::Response(payload),
                    Err(err) => Event::Failed(err),
                };
                let _ = events.try_send(event);
                if let Some(credit) = credit {
                    credit.close();
                }
            }
            // The call already gave up (deadline, dropped future).
            None => {}
        }
    }

    /// Routes a stream frame (item, end, credit) from the server.
    fn stream_frame(&self, kind: Kind, id: u64, payload: Bytes) -> Result<(), ProtocolError> {
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
            if let Some(Waiter::Unary { reply, .. }) = inner.waiting.remove(&id) {
                let _ = reply.send(Reply::Failed(WireError::new(
                    crate::error::ErrorCode::Internal,
                    "the server sent a stream where this client expects one value; client and server disagree on the method",
                )));
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

    /// Removes `id`'s waiter; whether it was still waiting on a live
    /// connection (and so deserves a cancel).
    fn forget(&self, id: u64) -> bool {
        let mut inner = self.lock();
        inner.waiting.remove(&id).is_some() && inner.closed.is_none()
    }

    /// Fails every call whose deadline is `now` or earlier, and tells the
    /// server to stop them; re-arms the sweep for the calls left.
    fn expire(&self, now: Instant, outbox: &mpsc::WeakUnboundedSender<Outgoing>) {
        let (expired, live) = {
            let mut inner = self.lock();
            let due: Vec<u64> = inner
                .waiting
                .iter()
                .filter(|(_, waiter)| waiter.deadline().is_some_and(|deadline| deadline <= now))
                .map(|(id, _)| *id)
                .collect();
            let expired: Vec<(u64, Waiter)> = due
                .into_iter()
                .filter_map(|id| inner.waiting.remove(&id).map(|waiter| (id, waiter)))
                .collect();
            inner.armed = inner.waiting.values().filter_map(Waiter::deadline).min();
            (expired, inner.closed.is_none())
        };
        let outbox = outbox.upgrade().filter(|_| live);
        for (id, waiter) in expired {
            if let Waiter::Unary { reply, .. } = waiter {
                let _ = reply.send(Reply::Expired);
            }
            let cancel = Frame::new(Kind::Cancel, id, Bytes::new());
            if let (Some(outbox), Ok(cancel)) = (&outbox, cancel) {
                let _ = outbox.send(cancel.into());
            }
        }
    }

    fn goodbye(&self, last_read: u64) {
        let not_run: Vec<_> = {
            let mut inner = self.lock();
            inner.goodbye = Some(last_read);
            let ids: Vec<u64> = inner
                .waiting
                .keys()
                .copied()
                .filter(|id| *id > last_read)
                .collect();
            ids.into_iter()
                .filter_map(|id| inner.waiting.remove(&id))
                .collect()
        };
        for waiter in not_run {
            waiter.not_run();
        }
    }

    fn close(&self, err: Error) {
        let waiting = {
            let mut inner = self.lock();
            if inner.closed.is_none() {
                inner.closed = Some(err.clone());
            }
            std::mem::take(&mut inner.waiting)
        };
        for (_, waiter) in waiting {
            waiter.lost(err.clone());
        }
    }
}

async fn read_loop<R: FrameRead>(mut reader: R, calls: Arc<Calls>, stop: CancellationToken) {
    let reason = loop {
        let frame = match reader.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Error::disconnected("the server closed the connection"),
            Err(err) => break err,
        };
        let (header, payload) = frame.into_parts();
        match header.kind() {
            Kind::Response => calls.complete(header.id(), Ok(payload)),
            Kind::Error => match WireError::decode(&payload) {
                Ok(err) if header.id() == CONNECTION_ID => {
                    break Error::disconnected(format!("the server closed the connection: {}", err.message));
                }
                Ok(err) => calls.complete(header.id(), Err(err)),
                Err(err) => break err.into(),
            },
            Kind::Goodbye => match frame::parse_goodbye(&payload) {
                Ok(last_read) => calls.goodbye(last_read),
                Err(err) => break err.into(),
            },
            kind @ (Kind::Item | Kind::End | Kind::Credit) => {
                if let Err(violation) = calls.stream_frame(kind, header.id(), payload) {
                    break violation.into();
                }
            }
            kind @ (Kind::Request | Kind::Cancel) => {
                break ProtocolError::WrongDirection {
                    kind,
                    sender: "client",
                }
                .into();
            }
        }
    };
    tracing::debug!(error = %reason, "client connection ended");
    calls.close(reason);
    stop.cancel();
}

/// Enforces the deadlines of a connection's unary calls with one timer,
/// re-armed at the earliest deadline, instead of one timer per call: with
/// a thousand calls in flight that is a thousand timer registrations and
/// removals fewer per thousand calls. With every call on the same timeout,
/// deadlines arrive in order and the sweep wakes about once per timeout.
async fn sweep_deadlines(calls: Arc<Calls>, outbox: mpsc::WeakUnboundedSender<Outgoing>) {
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
        calls.expire(Instant::now(), &outbox);
    }
}

impl Link {
    /// Starts a streaming call: sends the request, then (for methods that
    /// take a stream) pumps `input`'s items as the server grants credit.
    ///
    /// The returned call receives the server's events in order; dropping it
    /// before the call ends cancels the call and stops the pump.
    pub(crate) fn open(
        self: &Arc<Self>,
        method: &'static str,
        args: &[u8],
        budget: Duration,
        place: Arc<OwnedSemaphorePermit>,
        input: Option<ItemStream>,
    ) -> Result<Result<OpenCall, Reply>, Error> {
        let mut payload = BytesMut::with_capacity(64 + args.len());
        RequestHead::encode(method, budget, &mut payload);
        payload.extend_from_slice(args);
        self.check_request_len(method, payload.len())?;
        // Room for a full window of items and the event that ends the call.
        let (events, received) = mpsc::channel(STREAM_WINDOW as usize + 2);
        let credit = input.as_ref().map(|_| SendCredit::new());
        let waiter = Waiter::Stream {
            events,
            credit: credit.clone(),
        };
        let id = match self.calls.send(&self.outbox, payload.freeze(), &place, waiter)? {
            Ok(id) => id,
            Err(refused) => return Ok(Err(refused)),
        };
        let (failed, pump_error) = oneshot::channel();
        let limit = self.server_max_frame_len;
        let pump = input.zip(credit).map(|(items, credit)| {
            let pumping = pump(id, items, credit, self.outbox.clone(), limit, method, failed);
            AbortOnDropHandle::new(tokio::spawn(pumping))
        });
        Ok(Ok(OpenCall {
            link: Arc::clone(self),
            id,
            events: received,
            pump_error: pump.as_ref().map(|_| pump_error),
            pump,
            window: RecvWindow::default(),
            finished: false,
            _place: place,
        }))
    }
}

/// Sends a client's stream to the server, one item per unit of credit, then
/// the end of the stream. A local failure (an item that does not encode or
/// is too large) is reported through `failed`.
async fn pump(
    id: u64,
    mut items: ItemStream,
    credit: Arc<SendCredit>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    limit: usize,
    method: &'static str,
    failed: oneshot::Sender<Error>,
) {
    use futures::StreamExt;
    while credit.spend().await {
        // The user's stream runs here (its encoding too): a panic in it
        // must fail the call, not leave it waiting for an end that never
        // comes.
        let next = std::panic::AssertUnwindSafe(items.next()).catch_unwind().await;
        let item = match next {
            Ok(Some(Ok(item))) => item,
            Ok(Some(Err(err))) => {
                let _ = failed.send(err);
                return;
            }
            Err(_panic) => {
                let _ = failed.send(Error::failed(format!(
                    "the stream passed to `{method}` panicked while it was being sent"
                )));
                return;
            }
            Ok(None) => {
                if let Ok(end) = Frame::new(Kind::End, id, Bytes::new()) {
                    let _ = outbox.send(end.into());
                }
                return;
            }
        };
        if item.len() > limit {
            let _ = failed.send(Error::FrameTooLarge {
                what: format!("an item sent to `{method}`"),
                len: item.len(),
                limit,
                side: "server",
                setting: "Server::max_frame_len",
            });
            return;
        }
        let Ok(frame) = Frame::new(Kind::Item, id, item) else {
            return;
        };
        if outbox.send(frame.into()).is_err() {
            return;
        }
    }
}

/// A streaming call in progress, as its consumer holds it.
pub(crate) struct OpenCall {
    link: Arc<Link>,
    id: u64,
    events: mpsc::Receiver<Event>,
    pump: Option<AbortOnDropHandle<()>>,
    pump_error: Option<oneshot::Receiver<Error>>,
    window: RecvWindow,
    /// Set once the call has ended, so dropping it sends no cancel.
    finished: bool,
    _place: Arc<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for OpenCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCall").field("id", &self.id).finish()
    }
}

impl OpenCall {
    /// The next event of the call; a local failure of the client's own
    /// stream comes as `Lost`.
    pub(crate) fn poll_event(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Event> {
        use std::future::Future;
        use std::task::Poll;
        // What the server already said comes first: a call that succeeded is
        // not failed by the client's stream failing afterwards.
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                if !matches!(event, Event::Lost(_) | Event::NotRun) {
                    self.link.mark_served();
                }
                if !matches!(event, Event::Item(_)) {
                    self.finished = true;
                }
                return Poll::Ready(event);
            }
            Poll::Ready(None) => {
                self.finished = true;
                return Poll::Ready(Event::Lost(self.link.unusable_error()));
            }
            Poll::Pending => {}
        }
        if let Some(pump_error) = &mut self.pump_error {
            if let Poll::Ready(result) = std::pin::Pin::new(pump_error).poll(cx) {
                self.pump_error = None;
                if let Ok(err) = result {
                    return Poll::Ready(Event::Lost(err));
                }
            }
        }
        Poll::Pending
    }

    /// The next event of the call.
    pub(crate) async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The consumer took an item: grant the server more credit when due.
    pub(crate) fn consumed_item(&mut self) {
        if let Some(items) = self.window.consumed() {
            if let Ok(frame) = Frame::new(Kind::Credit, self.id, frame::credit_payload(items)) {
                let _ = self.link.outbox.send(frame.into());
            }
        }
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.pump = None;
        if !self.finished && self.link.calls.forget(self.id) {
            if let Ok(cancel) = Frame::new(Kind::Cancel, self.id, Bytes::new()) {
                let _ = self.link.outbox.send(cancel.into());
            }
        }
    }
}
