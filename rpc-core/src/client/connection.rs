//! [`Connection`]: one live client connection: its reader, writer and
//! deadline-sweep tasks, its permits, and the unary round trip.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::client::Callee;
use crate::client::calls::{CallTable, Outbox};
use crate::client::queue::Now;
use crate::client::sweep::sweep_deadlines;
use crate::client::waiter::{Payload, Reply, Short, Waiter};
use crate::codec::splice;
use crate::codec::{Claims, DecodeLimits};
use crate::error::{Error, WireError};
use crate::frame::{self, CONNECTION_ID, Frame, Header, Kind, ProtocolError, RequestHead};
use crate::metadata::Metadata;
use crate::outbox::{self, Batch};
use crate::permit::CallPermits;
use crate::scratch::Block;
use crate::service::RequestMessage;
use crate::signal::Signal;
use crate::transport::{Established, FrameRead, FrameWrite};
use crate::writer::{self, DEFAULT_WRITE_TIMEOUT};

/// A started connection. Dropping it stops its tasks.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(super) outbox: Outbox,
    pub(super) calls: Arc<CallTable>,
    /// The server's announced frame limit: larger requests are refused here,
    /// before they cost the network anything.
    pub(super) server_max_frame_len: usize,
    /// The protocol version the connection speaks (1: no metadata).
    pub(super) version: u16,
    /// Whether any call on this connection got an answer; a connection that
    /// dies before serving one counts as a failed attempt for the backoff.
    served: AtomicBool,
    /// Permits for calls in flight: the client's own limit, or what the
    /// server runs and queues less one, if fewer ([`places`]), so a server
    /// never has to hold back a request of ours for long (and with it,
    /// frames that running calls need).
    permits: CallPermits,
    /// What decoding the server's answers may cost.
    pub(super) decode: DecodeLimits,
    tasks: [AbortHandle; 3],
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Nobody can be waiting on this connection any more (calls hold the
        // connection while they wait). The writer is stopped too: a server
        // that stopped reading must not keep it, and the socket, alive.
        for task in &self.tasks {
            task.abort();
        }
        self.permits.close();
    }
}

/// How many calls a client keeps in flight on a connection whose server
/// announced `max_calls` (0: no limit), within its own `max_in_flight`.
///
/// The server runs `max_calls` at once and queues as many again before it
/// stops reading (PROTOCOL.md, section 3). A request past the cap waits
/// better in that queue than in the client's: it starts the moment a
/// place frees, where one held back by the client starts a round trip
/// later, and with 1 024 callers on a 256-call server the round trips
/// were what bounded the calls a second. One less than the queue holds:
/// the server stops reading a client that keeps to this at most for the
/// moment a call it stopped takes to let its place go (a cancel and the
/// request taking its place can come in one read), so the cancels, credit
/// and items its running calls need always get through.
fn places(max_in_flight: usize, max_calls: u16) -> usize {
    match usize::from(max_calls) {
        0 => max_in_flight,
        cap => max_in_flight.min(2 * cap - 1),
    }
}

impl Connection {
    /// Spawns the connection's reader, writer and deadline-sweep tasks.
    pub(crate) fn start<R: FrameRead, W: FrameWrite>(
        conn: Established<R, W>,
        max_in_flight: usize,
        decode: DecodeLimits,
    ) -> Connection {
        let permits = CallPermits::new(places(max_in_flight, conn.preface.max_calls));
        // Unbounded, because what enters it is bounded: each request's call
        // holds a permit under the client's in-flight limit until the
        // request is written (and the call is over), and each call adds at
        // most one cancel.
        let (outbox, queued) = outbox::outbox();
        let calls = Arc::new(CallTable::new(permits.clone(), outbox.clone()));
        // When the server is gone, stop writing at once and close our side,
        // so the server's lingering close is not kept waiting.
        let stop = Arc::new(Signal::new());
        let reader = tokio::spawn(read_loop(conn.reader, Arc::clone(&calls), Arc::clone(&stop)));
        let sweeper = tokio::spawn(sweep_deadlines(Arc::clone(&calls)));
        let writer_calls = Arc::clone(&calls);
        let written_calls = Arc::clone(&calls);
        let writing = writer::run(
            conn.writer,
            queued,
            permits.clone(),
            Some(stop),
            DEFAULT_WRITE_TIMEOUT,
            || {},
            // Requests leave in id order: the batch's last one is the
            // highest written.
            move |batch: &Batch<Infallible>| {
                if let Some(id) = batch.last_request() {
                    written_calls.written(id);
                }
            },
        );
        let writer = tokio::spawn(async move {
            if let Err(err) = writing.await {
                writer_calls.close(err);
            }
        });
        Connection {
            outbox,
            calls,
            server_max_frame_len: conn.preface.max_frame_len as usize,
            version: conn.preface.version,
            served: AtomicBool::new(false),
            permits,
            decode,
            tasks: [
                reader.abort_handle(),
                writer.abort_handle(),
                sweeper.abort_handle(),
            ],
        }
    }

    /// Whether new calls may use this connection.
    pub(crate) fn is_usable(&self) -> bool {
        self.calls.is_usable()
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.calls.lock().closed.is_some()
    }

    /// Calls sent on this connection, in all.
    pub(crate) fn sent(&self) -> u64 {
        self.calls.lock().sent()
    }

    /// Calls in flight on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.permits.in_use()
    }

    /// Calls whose requests wait for a place on this connection.
    pub(crate) fn queued(&self) -> usize {
        self.calls.lock().queue.len()
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
    #[inline]
    pub(super) fn check_request_len(&self, method: &str, len: usize) -> Result<(), Error> {
        if len > self.server_max_frame_len {
            return Err(self.too_large(method, len));
        }
        Ok(())
    }

    /// Why a request of `len` bytes to `method` is refused.
    #[cold]
    fn too_large(&self, method: &str, len: usize) -> Error {
        Error::FrameTooLarge {
            what: format!("the request to `{method}`"),
            len,
            limit: self.server_max_frame_len,
            side: "server",
            setting: "Server::max_frame_len",
        }
    }

    /// Encodes `request`, with `budget`, the time its caller has left, and
    /// sends it as one call (or queues it for a place under the
    /// connection's cap on calls in flight), whose answer, or end, wakes
    /// `waker`, until `deadline` at the latest: the wait for the call's
    /// reply, or the reply that says why the connection took no call.
    ///
    /// Encoded, checked and sent in one step, so that a short request
    /// that leaves at once is copied into the outbox from where it was
    /// encoded (the thread's block), never split off as bytes of its own;
    /// a long one, one with blobs left out of it, and a queued one are.
    /// The request is only borrowed, and not across a wait.
    ///
    /// The trip must be awaited at once, in the poll whose waker this is:
    /// its first poll does not look at the table (see `Trip::Sent`).
    ///
    /// If the wait is dropped before the answer arrives (a `select!`, a
    /// dropped caller), the server is told to stop the call, as it is when
    /// the deadline passes (unless it is `no_cancel`, which the server runs
    /// on: it keeps its place until answered); a request still queued never
    /// leaves.
    #[inline]
    pub(super) fn send<Q: RequestMessage + ?Sized>(
        &self,
        request: &Q,
        budget: Duration,
        metadata: Option<&Metadata>,
        deadline: Instant,
        waker: Waker,
    ) -> Result<Result<RoundTrip<'_>, Reply>, Error> {
        let callee = Callee::of(request);
        let mut block = Block::lend();
        let mut claims = Claims::new();
        encode_head(callee, budget, self.version, metadata, block.buf())?;
        request.encode_args_spliced(block.buf(), Some(&mut claims))?;
        let Some(payload) = claims.splice(&mut block) else {
            return Err(Error::Encode {
                what: format!("the arguments of `{}`", callee.name),
                reason: splice::REWORKED.to_owned(),
            });
        };
        self.check_request_len(callee.name, payload.len())?;
        let waiter = Waiter::Unary {
            waker: Some(waker),
            deadline,
            // Known from the method's descriptor: a request with none
            // counts as cancellable.
            to_completion: callee.descriptor.is_some_and(|method| method.no_cancel),
        };
        let sent = self.calls.send(payload, waiter, deadline)?;
        Ok(sent.map(|(id, queued)| RoundTrip {
            connection: self,
            id,
            queued,
            trip: Trip::Sent,
        }))
    }
}

/// A unary call on a connection, sent: the wait for its reply, and whether
/// its request waited for a place. Returned by [`Connection::send`], to be
/// polled first in the poll that sent the call.
///
/// Written out rather than an `async fn`, which would keep a second copy
/// of its state: a busy client touches every byte of a call's future on
/// every call.
#[derive(Debug)]
pub(super) struct RoundTrip<'a> {
    connection: &'a Connection,
    id: u64,
    queued: bool,
    trip: Trip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    /// Sent in this poll, with this poll's waker: a look now would find the
    /// call waiting, that waker in place. The answer wakes the caller, which
    /// looks then.
    Sent,
    /// Waiting for the reply. Dropped now (or while `Sent`), it forgets the
    /// call ([`CallTable::forget`]: a queued request never leaves, and a
    /// call the server runs gets a cancel unless it is `no_cancel`), so an
    /// abandoned call leaves nothing behind on either side.
    Waiting,
    /// The reply was taken.
    Over,
}

impl Future for RoundTrip<'_> {
    type Output = (Reply, bool);

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.trip {
            Trip::Sent => {
                this.trip = Trip::Waiting;
                return Poll::Pending;
            }
            Trip::Waiting => {}
            Trip::Over => panic!("a call's round trip was polled after it completed"),
        }
        // Polled again sooner than its answer, with another waker, it
        // leaves that one.
        let reply = ready!(this.connection.calls.poll_reply(this.id, cx));
        this.trip = Trip::Over;
        if matches!(reply, Reply::Response(_) | Reply::Failed(_)) {
            this.connection.mark_served();
        }
        Poll::Ready((reply, this.queued))
    }
}

impl Drop for RoundTrip<'_> {
    fn drop(&mut self) {
        if self.trip != Trip::Over {
            self.connection.calls.forget(self.id);
        }
    }
}

/// Appends a request head for `callee` on a connection speaking
/// `version`, with `metadata`, or says why it cannot be sent.
pub(crate) fn encode_head(
    callee: Callee,
    budget: Duration,
    version: u16,
    metadata: Option<&Metadata>,
    out: &mut BytesMut,
) -> Result<(), Error> {
    static NONE: Metadata = Metadata::new();
    let metadata = metadata.unwrap_or(&NONE);
    let method = callee.name;
    let refused = |reason: String| Error::BadRequest {
        method: method.to_owned(),
        reason,
    };
    if version >= 3 {
        let encoded = match callee.described() {
            Some(descriptor) => RequestHead::encode_v3_tail(budget, descriptor.head_tail(), metadata, out),
            None => RequestHead::encode_v3(method, budget, callee.fingerprint(), metadata, out),
        };
        return encoded.map_err(|err| refused(err.to_string()));
    }
    // An older server checks no fingerprint: the call goes as it did.
    if version == 2 {
        return RequestHead::encode_v2(method, budget, metadata, out).map_err(|err| refused(err.to_string()));
    }
    // The trace context is best effort: an older server simply does not
    // continue the trace. Anything else the caller meant to send is refused.
    let meant = metadata
        .iter()
        .any(|(key, _)| key != crate::trace::TRACEPARENT && key != crate::trace::TRACESTATE);
    if meant {
        return Err(refused(
            "the server speaks protocol version 1, which carries no metadata; upgrade it to rpc 0.2 or later, or call without metadata"
                .to_owned(),
        ));
    }
    RequestHead::encode(method, budget, out);
    Ok(())
}

/// Reads the server's frames and hands each to its call, until the
/// connection ends; then fails every call still waiting.
async fn read_loop<R: FrameRead>(mut reader: R, calls: Arc<CallTable>, stop: Arc<Signal>) {
    // One reading of the clock serves a burst of frames that came
    // together; a wait for more starts over.
    let mut now = Now::default();
    // The caller a large frame went to runs, as a rule, before the next
    // frame is read, and lets its memory go for it (see `give_way`): the
    // turn after a large frame gives way first.
    let mut give_way = false;
    let reason = loop {
        if give_way {
            tokio::task::yield_now().await;
            now = Now::default();
        }
        // A short answer is copied out of the read buffer where it lies.
        if let Some(answered) =
            reader.lend_frame(|header, payload| short_answer(&calls, header, payload, &mut now))
        {
            give_way = false;
            match answered {
                Ok(()) => continue,
                Err(reason) => break reason,
            }
        }
        let read = match reader.buffered_frame() {
            Some(buffered) => buffered.map(Some),
            None => {
                now = Now::default();
                reader.read_frame().await
            }
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break Error::disconnected("the server closed the connection"),
            Err(err) => break err,
        };
        give_way = crate::give_way::after(frame.payload().len());
        if let Err(reason) = on_frame(&calls, frame, &mut now) {
            break reason;
        }
    };
    tracing::debug!(error = %reason, "client connection ended");
    calls.close(reason);
    stop.cancel();
}

/// Hands a short answer, lent where it lies, to its call (copied): the
/// reason the connection ends, if it ends it; `None`, leaving the frame,
/// if it is not a short answer.
#[inline(always)]
fn short_answer(
    calls: &CallTable,
    header: Header,
    payload: &[u8],
    now: &mut Now,
) -> Option<Result<(), Error>> {
    if header.kind() != Kind::Response {
        return None;
    }
    let short = Short::copy(payload)?;
    Some(
        calls
            .complete(header.id(), Ok(Payload::Short(short)), now)
            .map_err(Error::from),
    )
}

/// Hands one frame from the server to its call: the reason the connection
/// ends, if the frame ends it. Inlined: the loop hands on a frame per
/// small call.
#[inline(always)]
fn on_frame(calls: &CallTable, frame: Frame, now: &mut Now) -> Result<(), Error> {
    let (header, payload) = frame.into_parts();
    match header.kind() {
        Kind::Response => calls.complete(header.id(), Ok(Payload::Shared(payload)), now)?,
        Kind::Error => {
            let err = WireError::decode(&payload)?;
            if header.id() == CONNECTION_ID {
                return Err(Error::disconnected(format!(
                    "the server closed the connection: {}",
                    err.message
                )));
            }
            calls.complete(header.id(), Err(err), now)?;
        }
        Kind::Goodbye => calls.goodbye(frame::parse_goodbye(&payload)?),
        kind @ (Kind::Item | Kind::End | Kind::Credit) => calls.stream_frame(kind, header.id(), payload)?,
        kind @ (Kind::Request | Kind::Cancel) => {
            return Err(ProtocolError::WrongDirection {
                kind,
                sender: "client",
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::places;

    #[test]
    fn places_fill_the_servers_cap_and_all_but_one_of_its_queue() {
        assert_eq!(places(1024, 256), 511);
        assert_eq!(places(1024, 1), 1);
        assert_eq!(places(1024, 2), 3);
        // The client's own limit holds, and a server with no limit leaves
        // only that one.
        assert_eq!(places(100, 256), 100);
        assert_eq!(places(1024, 0), 1024);
        assert_eq!(places(usize::MAX, u16::MAX), 2 * usize::from(u16::MAX) - 1);
    }
}
