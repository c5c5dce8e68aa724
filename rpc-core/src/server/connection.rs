//! One server connection: read requests, run each in its own task, write
//! answers (single values or streams of items) through the connection's
//! single writer.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::context::Context;
use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{self, CONNECTION_ID, Frame, Kind, ProtocolError};
use crate::payload::RequestHead;
use crate::server::{Router, ServerState};
use crate::service::{Service, Shape};
use crate::streaming::{Answer, Incoming, STREAM_WINDOW, SendCredit};
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::writer::{self, Hold, Outgoing, Places};

/// Serves one connection until the client leaves, breaks the protocol, or
/// the server shuts down.
///
/// Every request runs in a task of its own, so a slow call never holds up a
/// fast one; answers go out in completion order. At most
/// `max_calls_per_connection` calls are in progress (running, or answered
/// and waiting to be written); at the cap the server stops reading, and TCP
/// pushes back on the client.
///
/// When the client closes its side, calls already running finish and are
/// answered. When the server shuts down, the connection sends a goodbye
/// naming the last request it read, reads no more, and finishes the rest.
pub async fn serve_connection<R: FrameRead, W: FrameWrite>(state: Arc<ServerState>, conn: Connection<R, W>) {
    let Connection {
        mut reader,
        writer,
        peer,
        peer_addr,
    } = conn;
    let _open = state.metrics.connection_opened();
    let (outbox, queued) = mpsc::unbounded_channel();
    let cap = state.config.max_calls_per_connection.max(1);
    let places = Places::new(cap);
    let writing = writer::run(
        writer,
        queued,
        places.clone(),
        CancellationToken::new(),
        state.config.write_timeout,
    );
    let writer = AbortOnDropHandle::new(tokio::spawn(writing));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut conn = ConnState {
        state: Arc::clone(&state),
        outbox,
        done: done_tx,
        done_rx,
        next_seq: 0,
        launched: 0,
        running: FxHashMap::default(),
        waiting: VecDeque::new(),
        permits: Arc::clone(places.semaphore()),
        cap,
        last_read_id: 0,
        armed: None,
        last_started_id: 0,
        peer_addr,
        client_max_frame_len: peer.max_frame_len as usize,
    };

    let idle_timeout = state.config.idle_timeout;
    let mut last_frame = Instant::now();
    // One timer for the connection, for both the idle limit and the call
    // deadlines: pushed back lazily when it fires early, rather than a new
    // one per frame or per call.
    let mut timer_at = later(last_frame, idle_timeout);
    let timer = tokio::time::sleep_until(timer_at);
    tokio::pin!(timer);
    let ending = loop {
        // Completed calls are tidied away here, not by waking this task for
        // each one: a wake-up per call is latency the client would feel.
        conn.collect_finished();
        if let Some(armed) = conn.armed.filter(|armed| *armed < timer_at) {
            timer_at = armed;
            timer.as_mut().reset(armed);
        }
        tokio::select! {
            biased;
            () = state.shutdown.cancelled() => break Ending::ShuttingDown,
            permit = Arc::clone(&conn.permits).acquire_owned(), if !conn.waiting.is_empty() => {
                if let Ok(permit) = permit {
                    conn.launch_next(permit);
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                conn.collect_finished();
                conn.expire(now);
                let idle_due = if conn.running.is_empty() {
                    let due = later(last_frame, idle_timeout);
                    if now >= due {
                        break Ending::Idle;
                    }
                    due
                } else {
                    later(now, idle_timeout)
                };
                timer_at = conn.next_wake(idle_due);
                timer.as_mut().reset(timer_at);
            }
            // At the cap, requests wait in a queue as long as the cap, and
            // the reader goes on: the cancels, credit and items that running
            // calls need are never stuck behind a request. With the queue
            // full it stops reading, and TCP pushes back on the client.
            frame = reader.read_frame(), if conn.waiting.len() < conn.cap => match frame {
                Ok(Some(frame)) => {
                    last_frame = Instant::now();
                    if let Err(err) = conn.on_frame(frame) {
                        break Ending::Failed(err);
                    }
                }
                Ok(None) => break Ending::ClientClosed,
                Err(err) => break Ending::Failed(err),
            },
        }
    };

    match ending {
        Ending::ClientClosed => {
            tracing::debug!(
                ?peer_addr,
                in_flight = conn.running.len(),
                "client closed its side"
            );
            // No more frames can come: streams that need the client's
            // credit or items end now; everything read is still answered.
            conn.end_streams();
            conn.drain(None::<&mut R>).await;
        }
        Ending::ShuttingDown | Ending::Idle => {
            let why = if matches!(ending, Ending::Idle) {
                "idle"
            } else {
                "shutting down"
            };
            tracing::debug!(?peer_addr, in_flight = conn.running.len(), why, "saying goodbye");
            // Calls still queued never ran; the goodbye tells the client so.
            conn.drop_waiting();
            let goodbye = Frame::new(
                Kind::Goodbye,
                CONNECTION_ID,
                frame::goodbye_payload(conn.last_started_id),
            );
            if let Ok(goodbye) = goodbye {
                let _ = conn.outbox.send(goodbye.into());
            }
            conn.drain(Some(&mut reader)).await;
        }
        Ending::Failed(err) => {
            tracing::info!(?peer_addr, error = %err, "closing connection");
            conn.abort_all();
            if let Error::Protocol(violation) = &err {
                let notice = WireError::new(ErrorCode::Protocol, violation.to_string());
                let _ = conn.outbox.send(notice.to_frame(CONNECTION_ID).into());
            }
        }
    }
    drop(conn);
    // The writer drains what is queued (the answers, the goodbye or the
    // notice) and closes our side.
    if let Ok(Err(err)) = writer.await {
        tracing::debug!(?peer_addr, error = %err, "writer stopped");
    }
    // Closing a socket with unread bytes makes the kernel send a reset,
    // which can destroy the notice we just wrote before the peer reads it.
    // Read and discard a little first (a "lingering close").
    let _ = tokio::time::timeout(LINGER, reader.discard(LINGER_BYTES)).await;
}

/// `at + wait`, or as far off as a timer goes if that overflows (an idle
/// limit of `Duration::MAX` means none).
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait.min(MAX_SWEEP_SLEEP))
        .unwrap_or(at + MAX_SWEEP_SLEEP)
}

/// How long a draining connection's timer sleeps when no call deadline is
/// due sooner; also the longest the connection's timer is ever set for.
const MAX_SWEEP_SLEEP: Duration = Duration::from_secs(3600);

/// How long, and how many bytes, a closing connection reads and discards so
/// that its last frames reach the peer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

enum Ending {
    ClientClosed,
    ShuttingDown,
    Idle,
    Failed(Error),
}

/// A call the connection knows about: running, or read and waiting for a
/// place under the cap.
struct Running {
    /// The launch number of its task, once launched.
    seq: Option<u64>,
    /// `None` for methods that run to completion whatever happens (and for
    /// calls not launched yet).
    abort: Option<AbortHandle>,
    /// The client's stream, for methods that take one.
    input: Option<Input>,
    /// The call's context, which holds the deadline the sweep enforces and
    /// is marked expired by it: `None` for methods that run to completion,
    /// whose task keeps its own timer (the server's ceiling).
    ctx: Option<Context>,
    /// The credit of the stream the server sends, for methods that return
    /// one.
    output: Option<Arc<SendCredit>>,
}

impl Running {
    /// The deadline the connection's sweep enforces, if it enforces one.
    fn deadline(&self) -> Option<Instant> {
        self.ctx.as_ref().map(Context::deadline)
    }
}

/// The server's end of a client's stream.
struct Input {
    /// Where items go; `None` once the client ended the stream.
    items: Option<mpsc::Sender<Bytes>>,
    /// Items received so far.
    received: u64,
    /// Credit the handler has granted beyond the initial window.
    granted: Arc<AtomicU64>,
    /// Set when the client's end frame arrives, so the handler can tell a
    /// finished stream from one that broke off.
    ended: Arc<std::sync::atomic::AtomicBool>,
}

/// A call read while the connection was at its cap.
struct Waiting {
    id: u64,
    call: Call,
    /// The service that runs it; `None` when no service has that name.
    service: Option<Arc<dyn Service>>,
    to_completion: bool,
}

struct ConnState {
    state: Arc<ServerState>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// Launched calls report here when they end: (request id, launch
    /// number). Plain spawned tasks and this channel cost less per call
    /// than a `JoinSet`, whose shared set every spawn and completion locks.
    done: mpsc::UnboundedSender<(u64, u64)>,
    done_rx: mpsc::UnboundedReceiver<(u64, u64)>,
    next_seq: u64,
    /// Calls launched and not yet reported done (or aborted by a cancel or
    /// the deadline sweep).
    launched: usize,
    /// An unkeyed hash: the client picks the ids, but the map never holds
    /// more than twice the call cap, which bounds what colliding ids cost.
    running: FxHashMap<u64, Running>,
    waiting: VecDeque<Waiting>,
    permits: Arc<Semaphore>,
    cap: usize,
    /// The last request id read: ids must increase, and a cancel or stream
    /// frame may name no id above it.
    last_read_id: u64,
    /// No later than the earliest deadline of a launched call that can be
    /// stopped: when the connection's one timer must wake to stop it. A
    /// timer per call would cost a timer-wheel insertion and removal per
    /// call; with every call on the same timeout this one wakes about once
    /// per timeout.
    armed: Option<Instant>,
    /// The last request id launched: what a goodbye reports.
    last_started_id: u64,
    peer_addr: Option<SocketAddr>,
    client_max_frame_len: usize,
}

impl ConnState {
    /// Tidies away every call that has reported its end.
    fn collect_finished(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.finished(done);
        }
    }

    fn finished(&mut self, (id, seq): (u64, u64)) {
        // Only if it is still this launch's entry: a cancel or the deadline
        // sweep that raced the call's end has removed it, and counted it
        // out, already.
        if self
            .running
            .get(&id)
            .is_some_and(|running| running.seq == Some(seq))
        {
            self.launched = self.launched.saturating_sub(1);
            self.forget(id);
        }
    }

    /// Stops every call whose deadline is `now` or earlier (its task then
    /// answers `DeadlineExceeded`), and notes the next deadline due.
    fn expire(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, running)| {
                running.abort.is_some() && running.deadline().is_some_and(|deadline| deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut count = 0;
        for running in due.into_iter().filter_map(|id| self.running.remove(&id)) {
            if let (Some(abort), Some(ctx)) = (&running.abort, &running.ctx) {
                ctx.expire();
                abort.abort();
            }
            if let Some(output) = running.output {
                output.close();
            }
            count += 1;
        }
        self.launched = self.launched.saturating_sub(count);
        self.armed = self
            .running
            .values()
            .filter(|running| running.abort.is_some())
            .filter_map(Running::deadline)
            .min();
    }

    /// When the connection's timer must next wake: the idle deadline, or
    /// the first call deadline due, if earlier.
    fn next_wake(&self, idle_due: Instant) -> Instant {
        self.armed.map_or(idle_due, |armed| armed.min(idle_due))
    }

    fn forget(&mut self, id: u64) {
        if let Some(running) = self.running.remove(&id) {
            if let Some(output) = running.output {
                output.close();
            }
        }
    }

    fn abort_all(&mut self) {
        for running in self.running.values() {
            if let Some(abort) = &running.abort {
                abort.abort();
            }
        }
        self.launched = 0;
        self.waiting.clear();
    }

    /// Forgets the calls that never got a place.
    fn drop_waiting(&mut self) {
        for waiting in std::mem::take(&mut self.waiting) {
            self.running.remove(&waiting.id);
        }
    }

    /// Ends every stream that needs something more from the client.
    fn end_streams(&mut self) {
        for running in self.running.values_mut() {
            if let Some(output) = &running.output {
                output.close();
            }
            if let Some(input) = &mut running.input {
                input.items = None;
            }
        }
    }

    /// Lets every accepted call finish and be answered. With a reader, frames
    /// other than requests are still read and handled meanwhile (streams
    /// need their credit and items); new requests are ignored, as the
    /// goodbye told the client.
    async fn drain<R: FrameRead>(&mut self, mut reader: Option<&mut R>) {
        // Deadlines still hold while draining; there is no idle limit.
        let far = Instant::now() + MAX_SWEEP_SLEEP;
        let mut timer_at = self.next_wake(far);
        let timer = tokio::time::sleep_until(timer_at);
        tokio::pin!(timer);
        loop {
            if self.launched == 0 && self.waiting.is_empty() {
                return;
            }
            if let Some(armed) = self.armed.filter(|armed| *armed < timer_at) {
                timer_at = armed;
                timer.as_mut().reset(armed);
            }
            tokio::select! {
                biased;
                Some(done) = self.done_rx.recv() => self.finished(done),
                () = &mut timer => {
                    let now = Instant::now();
                    self.expire(now);
                    timer_at = self.next_wake(now + MAX_SWEEP_SLEEP);
                    timer.as_mut().reset(timer_at);
                }
                permit = Arc::clone(&self.permits).acquire_owned(), if !self.waiting.is_empty() => {
                    if let Ok(permit) = permit {
                        self.launch_next(permit);
                    }
                }
                frame = read_some(&mut reader) => match frame {
                    Some(frame) if frame.header().kind() == Kind::Request => {}
                    Some(frame) => {
                        if let Err(err) = self.on_frame(frame) {
                            tracing::debug!(error = %err, "closing a draining connection");
                            self.abort_all();
                            return;
                        }
                    }
                    None => {
                        reader = None;
                        self.end_streams();
                    }
                },
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), Error> {
        let (header, payload) = frame.into_parts();
        let id = header.id();
        match header.kind() {
            Kind::Request => {
                self.state.metrics.request_received();
                if id <= self.last_read_id {
                    return Err(ProtocolError::IdNotIncreasing {
                        id,
                        last: self.last_read_id,
                    }
                    .into());
                }
                let (head, args) = RequestHead::decode(payload)?;
                self.last_read_id = id;
                let waiting = self.accept(id, head, args);
                match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(permit) if self.waiting.is_empty() => self.launch(waiting, permit),
                    _ => self.waiting.push_back(waiting),
                }
                Ok(())
            }
            Kind::Cancel if !payload.is_empty() => {
                Err(ProtocolError::CancelWithPayload(payload.len()).into())
            }
            Kind::Cancel if id > self.last_read_id => Err(ProtocolError::CancelForUnknownId(id).into()),
            Kind::Cancel => {
                // A cancel can cross the answer on the wire; one for a call
                // that already finished is normal and ignored.
                match self.running.get(&id) {
                    Some(Running {
                        abort: Some(abort), ..
                    }) => {
                        abort.abort();
                        // An aborted task never reports; count it out here.
                        self.launched = self.launched.saturating_sub(1);
                        self.forget(id);
                    }
                    Some(Running { seq: None, .. }) => {
                        self.waiting.retain(|waiting| waiting.id != id);
                        self.forget(id);
                    }
                    _ => {}
                }
                Ok(())
            }
            Kind::Item => self.on_item(id, payload),
            Kind::End => self.on_end(id),
            Kind::Credit => {
                let items = frame::parse_credit(&payload)?;
                match self.running.get(&id).map(|running| running.output.as_ref()) {
                    Some(Some(output)) => output.grant(items).map_err(|total| {
                        ProtocolError::CreditOverflow {
                            id,
                            total,
                            max: crate::streaming::MAX_STREAM_CREDIT,
                        }
                        .into()
                    }),
                    Some(None) => Err(no_stream(Kind::Credit, id)),
                    None => self.finished_or_unknown(Kind::Credit, id),
                }
            }
            Kind::Error if id == CONNECTION_ID => {
                let notice = WireError::decode(&payload)?;
                Err(Error::disconnected(format!(
                    "the client reported a protocol error: {}",
                    notice.message
                )))
            }
            kind @ (Kind::Response | Kind::Error | Kind::Goodbye) => Err(ProtocolError::WrongDirection {
                kind,
                sender: "server",
            }
            .into()),
        }
    }

    /// An item of a client's stream: handed to the handler, within credit.
    fn on_item(&mut self, id: u64, payload: Bytes) -> Result<(), Error> {
        let Some(running) = self.running.get_mut(&id) else {
            return self.finished_or_unknown(Kind::Item, id);
        };
        let Some(input) = &mut running.input else {
            return Err(no_stream(Kind::Item, id));
        };
        let Some(items) = &input.items else {
            return Err(ProtocolError::AfterEnd { kind: Kind::Item, id }.into());
        };
        input.received += 1;
        let allowed = u64::from(STREAM_WINDOW) + input.granted.load(Ordering::Acquire);
        let exceeded = ProtocolError::CreditExceeded {
            id,
            window: STREAM_WINDOW,
        };
        if input.received > allowed {
            return Err(exceeded.into());
        }
        match items.try_send(payload) {
            Ok(()) => Ok(()),
            // Cannot happen within credit (the channel holds the window).
            Err(TrySendError::Full(_)) => Err(exceeded.into()),
            // The handler stopped reading its input (or the method is
            // unknown and takes none); the rest is moot.
            Err(TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// The client's stream ended: the handler's input stream ends too.
    fn on_end(&mut self, id: u64) -> Result<(), Error> {
        let Some(running) = self.running.get_mut(&id) else {
            return self.finished_or_unknown(Kind::End, id);
        };
        match &mut running.input {
            None => Err(no_stream(Kind::End, id)),
            Some(Input { items: None, .. }) => Err(ProtocolError::AfterEnd { kind: Kind::End, id }.into()),
            Some(input) => {
                input.ended.store(true, Ordering::Release);
                input.items = None;
                Ok(())
            }
        }
    }

    /// A stream frame for a call that is not running: fine if the call has
    /// finished (frames cross on the wire), a violation if it never began.
    fn finished_or_unknown(&self, kind: Kind, id: u64) -> Result<(), Error> {
        if id > self.last_read_id {
            Err(no_stream(kind, id))
        } else {
            Ok(())
        }
    }

    /// Registers a call just read, ready to launch; its stream input (if
    /// any) is open from now on, so items sent right behind the request
    /// are kept even while the call waits for a place.
    fn accept(&mut self, id: u64, head: RequestHead, args: Bytes) -> Waiting {
        let budget = head.budget;
        let method = head.into_method();
        // Checked to be UTF-8 when the head was decoded.
        let name = std::str::from_utf8(&method).unwrap_or_default();
        let max_budget = self.state.config.max_budget;
        let service = self
            .state
            .router
            .find(name)
            .map(|(service, name)| (Arc::clone(service), name));
        let shape = service.as_ref().and_then(|(service, name)| service.shape(name));
        // An unknown method gets a stream input that discards, so a client
        // that sends items behind its request hears "unknown method" rather
        // than losing its connection.
        let unknown = shape.is_none();
        let shape = shape.unwrap_or(Shape {
            input: true,
            output: false,
        });
        // Streams end with their call, so a streaming method always honours
        // its caller's cancel and deadline.
        let streams = shape.input || shape.output;
        let to_completion = !streams
            && service
                .as_ref()
                .is_some_and(|(service, name)| service.runs_to_completion(name));
        let service = service.map(|(service, _)| service);
        // A method that runs to completion ignores its caller's deadline but
        // not the server's ceiling: a hung handler must end some time.
        let budget = if to_completion {
            max_budget
        } else {
            budget.min(max_budget)
        };
        let ctx = Context::from_wire(id, method, Instant::now() + budget, self.peer_addr);

        let mut input = None;
        let incoming = shape.input.then(|| {
            let (items, received) = mpsc::channel(STREAM_WINDOW as usize);
            let granted = Arc::new(AtomicU64::new(0));
            let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
            input = Some(Input {
                items: Some(items),
                received: 0,
                granted: Arc::clone(&granted),
                ended: Arc::clone(&ended),
            });
            // Weak: a handler that hands its input to a task of its own must
            // not keep the connection's writer alive.
            let outbox = self.outbox.downgrade();
            let grant = move |credit: u32| {
                // Counted before the credit leaves, so an item sent on it
                // is never mistaken for one sent without credit.
                granted.fetch_add(u64::from(credit), Ordering::Release);
                let frame = Frame::new(Kind::Credit, id, frame::credit_payload(credit));
                if let (Some(outbox), Ok(frame)) = (outbox.upgrade(), frame) {
                    let _ = outbox.send(frame.into());
                }
            };
            Incoming::new(received, Box::new(grant), ended)
        });
        let incoming = if unknown { None } else { incoming };
        let output = shape.output.then(SendCredit::new);
        let call = Call {
            state: Arc::clone(&self.state),
            ctx,
            args,
            input: incoming,
            items: output.clone().map(|credit| (credit, self.outbox.clone())),
            client_max_frame_len: self.client_max_frame_len,
        };
        let swept = (!to_completion).then(|| call.ctx.clone());
        self.running.insert(
            id,
            Running {
                seq: None,
                abort: None,
                input,
                ctx: swept,
                output,
            },
        );
        Waiting {
            id,
            call,
            service,
            to_completion,
        }
    }

    fn launch_next(&mut self, permit: OwnedSemaphorePermit) {
        if let Some(waiting) = self.waiting.pop_front() {
            self.launch(waiting, permit);
        }
    }

    /// Starts a call in a task of its own, under its place.
    fn launch(&mut self, waiting: Waiting, permit: OwnedSemaphorePermit) {
        let Waiting {
            id,
            call,
            service,
            to_completion,
        } = waiting;
        let slot = self.state.metrics.call_started(permit);
        self.last_started_id = self.last_started_id.max(id);
        let hold = Some(Hold::Call(slot));
        let seq = self.next_seq;
        self.next_seq += 1;
        let launch = Launch {
            call,
            id,
            seq,
            hold,
            outbox: self.outbox.clone(),
            done: self.done.clone(),
            to_completion,
        };
        let Launched { abort } = match service {
            Some(service) => service.launch(launch),
            None => Router::launch_unknown(launch),
        };
        self.launched += 1;
        if let Some(running) = self.running.get_mut(&id) {
            running.seq = Some(seq);
            if abort.is_some() {
                if let Some(deadline) = running.deadline() {
                    self.armed = Some(self.armed.map_or(deadline, |armed| armed.min(deadline)));
                }
            }
            running.abort = abort;
        }
    }
}

impl Drop for ConnState {
    /// A connection that goes away (closed, or its task aborted by a server
    /// stopping) takes its running calls with it, except those that run to
    /// completion.
    fn drop(&mut self) {
        for running in self.running.values() {
            if let Some(abort) = &running.abort {
                abort.abort();
            }
        }
    }
}

/// The next frame from `reader`, or `None` (at once, and for good) when
/// there is no reader or it has ended.
async fn read_some<R: FrameRead>(reader: &mut Option<&mut R>) -> Option<Frame> {
    match reader {
        Some(reader) => reader.read_frame().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

fn no_stream(kind: Kind, id: u64) -> Error {
    ProtocolError::NoSuchStream { kind, id }.into()
}

/// One call, ready for its service to run: what [`Service::launch`]
/// receives.
///
/// [`Service::launch`]: crate::service::Service::launch
pub struct Launch {
    call: Call,
    id: u64,
    seq: u64,
    hold: Option<Hold>,
    outbox: mpsc::UnboundedSender<Outgoing>,
    done: mpsc::UnboundedSender<(u64, u64)>,
    to_completion: bool,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("id", &self.id)
            .field("method", &self.full_method())
            .finish()
    }
}

impl Launch {
    /// The call's full wire name, e.g. `Calculator.add`.
    pub fn full_method(&self) -> &str {
        self.call.ctx.method()
    }

    /// Spawns the call's task, in which `handler` gets the method's name
    /// (without the service prefix), the encoded arguments and the
    /// client's stream, and returns the future that runs the method.
    ///
    /// Returns the receipt [`Service::launch`] hands back, through which
    /// the connection stops the call on a cancel or at its deadline.
    ///
    /// [`Service::launch`]: crate::service::Service::launch
    pub fn spawn<F, Fut>(self, handler: F) -> Launched
    where
        F: FnOnce(&str, Bytes, Option<Incoming>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, Error>> + Send + 'static,
    {
        let Launch {
            call,
            id,
            seq,
            hold,
            outbox,
            done,
            to_completion,
        } = self;
        if to_completion {
            // The handler runs in a task that neither a cancel nor the
            // connection closing aborts. It holds the outbox only weakly, so
            // a closing connection never waits for it.
            let outbox = outbox.downgrade();
            drop(tokio::spawn(async move {
                let frame = call.run(id, handler, Timing::OwnTimer).await;
                if let Some(outbox) = outbox.upgrade() {
                    let _ = outbox.send(Outgoing { frame, hold });
                }
                let _ = done.send((id, seq));
            }));
            Launched { abort: None }
        } else {
            let finish = Finish {
                id,
                ctx: call.ctx.clone(),
                out: Some((outbox, hold)),
            };
            let task = tokio::spawn(async move {
                let mut finish = finish;
                let frame = call.run(id, handler, Timing::Swept).await;
                finish.send(frame);
                let _ = done.send((id, seq));
            });
            Launched {
                abort: Some(task.abort_handle()),
            }
        }
    }
}

/// The way out of a call's task that the connection can abort: it sends
/// the call's last frame with the call's place, and if the task is aborted
/// because the deadline sweep expired the call, it still answers, with
/// `DeadlineExceeded`, and the place still travels with that answer.
struct Finish {
    id: u64,
    ctx: Context,
    out: Option<(mpsc::UnboundedSender<Outgoing>, Option<Hold>)>,
}

impl Finish {
    fn send(&mut self, frame: Frame) {
        if let Some((outbox, hold)) = self.out.take() {
            // A closed outbox means the connection is gone; nobody to tell.
            let _ = outbox.send(Outgoing { frame, hold });
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.out.is_some() && self.ctx.expired() {
            let frame = deadline_exceeded(self.ctx.method()).to_frame(self.id);
            self.send(frame);
        }
    }
}

/// Who stops a call when its deadline passes.
#[derive(Clone, Copy)]
enum Timing {
    /// The connection's deadline sweep aborts the task.
    Swept,
    /// Nobody can abort the task (it runs to completion): it keeps a timer
    /// of its own, at the server's ceiling.
    OwnTimer,
}

fn deadline_exceeded(method: &str) -> WireError {
    WireError::new(
        ErrorCode::DeadlineExceeded,
        format!("`{method}` did not finish within its time budget"),
    )
}

/// A call's task, spawned: what [`Service::launch`] returns. Only
/// [`Launch::spawn`] makes one, so a service cannot start a call the
/// connection has no way to stop.
///
/// [`Service::launch`]: crate::service::Service::launch
#[derive(Debug)]
pub struct Launched {
    /// `None` for a method that runs to completion whatever happens.
    abort: Option<AbortHandle>,
}

/// One call, ready to run.
struct Call {
    state: Arc<ServerState>,
    /// Holds the deadline the call runs under.
    ctx: Context,
    args: Bytes,
    /// The client's stream, for methods that take one.
    input: Option<Incoming>,
    /// Credit and a way out for the items, for methods that return a stream.
    items: Option<(Arc<SendCredit>, mpsc::UnboundedSender<Outgoing>)>,
    client_max_frame_len: usize,
}

/// How a call's work ended, before it becomes its last frame.
enum Outcome {
    /// A single value (the response).
    Value(Bytes),
    /// The stream of items ended normally.
    End,
}

impl Call {
    /// Runs the call, sending any stream items as it goes, and returns the
    /// frame that ends it: the response, the end of the stream, or an error.
    async fn run<F, Fut>(self, id: u64, handler: F, timing: Timing) -> Frame
    where
        F: FnOnce(&str, Bytes, Option<Incoming>) -> Fut,
        Fut: Future<Output = Result<Answer, Error>>,
    {
        let Call {
            state,
            ctx,
            args,
            input,
            items,
            client_max_frame_len,
        } = self;
        let deadline = ctx.deadline();
        // Cancels the context however the handler ends, aborts included, so
        // work it handed to other tasks hears about it.
        let _cancel = CancelOnDrop(ctx.clone());
        // Borrowed from the context, which lives as long as this call.
        let method = ctx.method();
        // Dispatch (which runs the user's `Deserialize`) and every poll of
        // the handler's stream are inside the unwind guard too: a panic
        // anywhere in the call is the call's problem.
        let work = async {
            let name = method.rsplit_once('.').map_or(method, |(_, name)| name);
            let answer = handler(name, args, input).await?;
            let stream = match answer {
                Answer::Value(result) if result.len() > client_max_frame_len => {
                    return Err(too_large(method, result.len(), client_max_frame_len));
                }
                Answer::Value(result) => return Ok(Outcome::Value(result)),
                Answer::Stream(stream) => stream,
            };
            let Some((credit, outbox)) = &items else {
                return Err(Error::failed(format!(
                    "`{method}` returned a stream it does not declare"
                )));
            };
            send_items(id, stream, credit, outbox, &state, method, client_max_frame_len).await
        };
        let work = ctx.clone().scope(AssertUnwindSafe(work).catch_unwind());
        let finished = match timing {
            Timing::Swept => Some(work.await),
            Timing::OwnTimer => tokio::time::timeout_at(deadline, work).await.ok(),
        };
        let answer = match finished {
            Some(Ok(Ok(Outcome::Value(result)))) => Ok(Frame::new(Kind::Response, id, result)),
            Some(Ok(Ok(Outcome::End))) => Ok(Frame::new(Kind::End, id, Bytes::new())),
            Some(Ok(Err(err))) => Err(to_wire(&err)),
            Some(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(%method, %message, "handler panicked");
                Err(WireError::new(ErrorCode::HandlerPanicked, message))
            }
            None => Err(deadline_exceeded(method)),
        };
        match answer {
            Ok(Ok(frame)) => frame,
            Err(err) => err.to_frame(id),
            // Only a result over 4 GiB fails to frame, and the client's limit
            // (a u32) has refused any such result above.
            Ok(Err(too_large)) => {
                WireError::new(ErrorCode::ResponseTooLarge, too_large.to_string()).to_frame(id)
            }
        }
    }
}

/// Sends a handler's stream, one item per unit of credit. The next item is
/// not even pulled from the handler's stream until there is credit for it:
/// a slow client holds back the producer itself.
async fn send_items(
    id: u64,
    mut stream: crate::streaming::ItemStream,
    credit: &SendCredit,
    outbox: &mpsc::UnboundedSender<Outgoing>,
    state: &ServerState,
    method: &str,
    client_max_frame_len: usize,
) -> Result<Outcome, Error> {
    loop {
        if !credit.spend().await {
            return Ok(Outcome::End);
        }
        let item = match stream.next().await {
            None => return Ok(Outcome::End),
            Some(item) => item?,
        };
        if item.len() > client_max_frame_len {
            return Err(too_large(method, item.len(), client_max_frame_len));
        }
        let frame = Frame::new(Kind::Item, id, item)?;
        state.metrics.stream_item_sent(credit.in_flight());
        if outbox.send(frame.into()).is_err() {
            return Ok(Outcome::End);
        }
    }
}

fn too_large(method: &str, len: usize, limit: usize) -> Error {
    Error::FrameTooLarge {
        what: format!("an answer of `{method}`"),
        len,
        limit,
        side: "client",
        setting: "ClientBuilder::max_frame_len",
    }
}

struct CancelOnDrop(Context);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The wire form of a dispatch failure. The message is the part the client
/// cannot know; the client rebuilds the rest of the sentence itself.
fn to_wire(err: &Error) -> WireError {
    match err {
        Error::UnknownService { service } => WireError::new(ErrorCode::UnknownService, service.clone()),
        Error::UnknownMethod { method } => WireError::new(ErrorCode::UnknownMethod, method.clone()),
        Error::BadRequest { reason, .. } => WireError::new(ErrorCode::BadRequest, reason.clone()),
        Error::Overloaded { reason } => WireError::new(ErrorCode::Overloaded, reason.clone()),
        Error::Failed { message } => WireError::new(ErrorCode::Failed, message.clone()),
        // The message is the length alone: the client knows its own limit
        // and builds the sentence (see `WireError::into_error`).
        Error::FrameTooLarge { len, .. } => WireError::new(ErrorCode::ResponseTooLarge, len.to_string()),
        Error::HandlerPanicked { message, .. } => WireError::new(ErrorCode::HandlerPanicked, message.clone()),
        Error::DeadlineExceeded { .. } => WireError::new(ErrorCode::DeadlineExceeded, err.to_string()),
        other => WireError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "the panic carried no message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_idle_limit_sets_the_timer_far_off_without_overflowing() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + MAX_SWEEP_SLEEP);
        assert_eq!(later(now, Duration::from_secs(5)), now + Duration::from_secs(5));
    }
}
