//! One call's work: decode the arguments, run the method, encode the
//! result, send a returned stream's items; and how it ended, as
//! [`Finished`]. `task.rs` spawns it and sends its end on its way.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::codec::{Codec, Message};
use crate::context::Context;
use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{Frame, Kind};
use crate::observe::{self, CallOutcome};
use crate::outbox::Outgoing;
use crate::permit::CallPermit;
use crate::server::report::{Report, Reports};
use crate::server::{Outcome, ServerState};
use crate::service::{Answer, Args};
use crate::streaming::{ItemStream, SendCredit};

/// Where a binary connection's frames go: its writer task.
pub(crate) type Outbox = crate::outbox::Outbox<CallPermit>;

/// One call, ready to run: the server it runs on, the work, and where its
/// end goes. What it borrows is cloned only by a call that outlives its
/// launch.
pub(crate) struct Call<'a> {
    pub(crate) state: &'a Arc<ServerState>,
    pub(crate) work: Work,
    pub(crate) end: End<'a>,
}

/// What running a call needs.
pub(crate) struct Work {
    /// The call's id, method, deadline and caller.
    pub(crate) ctx: Context,
    pub(crate) args: Args,
    pub(crate) codec: Codec,
    /// Where a returned stream's items go, for methods that return one
    /// (boxed: most return a value, and every call's future holds this).
    pub(crate) items: Option<Box<ItemSink>>,
    /// The largest answer (or item) the caller accepts.
    pub(crate) max_answer_len: usize,
}

/// Where the items of a returned stream go.
pub(crate) enum ItemSink {
    /// Item frames on a binary connection, one per unit of the client's
    /// credit.
    Frames {
        id: u64,
        credit: Arc<SendCredit>,
        outbox: Outbox,
    },
    /// Encoded items for a JSON caller, each between `open` and `close`
    /// (the notification that carries it); each waits for room in the
    /// caller's queue, so a slow reader holds the producer back.
    Queue {
        queue: mpsc::Sender<Bytes>,
        open: Bytes,
        close: Bytes,
    },
}

/// Where a call's end goes.
pub(crate) enum End<'a> {
    /// Frames to a binary connection's writer.
    Frames(Launch<'a>),
    /// A JSON caller that runs the call itself, in its own task, under
    /// the call's own timer: [`Call::spawn`] hands back the call as a
    /// future ([`CallHandle::Inline`]), and dropping it stops the call.
    Inline,
    /// A JSON caller waiting for a call that runs to completion in a task
    /// of its own (`#[rpc(no_cancel)]`), whether or not the caller stays.
    Reply(oneshot::Sender<Finished>),
}

/// A binary connection's call at its launch: what its end needs from the
/// connection, borrowed (a call answered on its first poll, most of them,
/// clones none of it).
pub(crate) struct Launch<'a> {
    pub(super) outbox: &'a Outbox,
    /// How the call's task, if it gets one, tells the connection it has
    /// ended.
    pub(super) reports: &'a Reports,
    /// The call's launch number on its connection.
    pub(super) seq: u64,
    /// The call's permit under the connection's cap, held until its last
    /// frame is written.
    pub(super) permit: Option<CallPermit>,
    /// `#[rpc(no_cancel)]`: neither a cancel nor the connection closing
    /// stops it.
    pub(super) to_completion: bool,
}

impl Launch<'_> {
    /// The report of call `id`'s task.
    pub(crate) fn report(&self, id: u64) -> Report {
        self.reports.report(id, self.seq)
    }
}

/// A started call. Only [`Call::spawn`] makes one, so nothing can start a
/// call that cannot be stopped.
pub(crate) enum CallHandle {
    /// Running in a task of its own.
    Spawned {
        /// `None` for a method that runs to completion whatever happens.
        stop: Option<Stop>,
    },
    /// For its caller to run ([`End::Inline`]).
    Inline(InlineCall),
    /// Done already, answered on its first poll: nothing of it is left
    /// running, and it reported nothing ([`End::Frames`] only). Its
    /// context is handed back, for the connection's next call to reuse.
    Finished(Context),
}

/// How a connection stops a call running in a task of its own: the task's
/// abort handle, and the call's context, which holds the deadline the
/// sweep enforces and is marked expired by it (so the task, aborted,
/// answers `DeadlineExceeded`).
pub(crate) struct Stop {
    pub(crate) abort: AbortHandle,
    pub(crate) ctx: Context,
}

/// A call its caller runs: it resolves to how the call ended.
pub(crate) type InlineCall = std::pin::Pin<Box<dyn Future<Output = Finished> + Send>>;

/// How a call ended.
#[derive(Debug)]
pub(crate) enum Finished {
    /// The method's value, encoded.
    Value(Message),
    /// The method's stream ended normally.
    End,
    /// The call failed.
    Failed(WireError),
}

impl Finished {
    /// The last frame of binary call `id`.
    pub(crate) fn into_frame(self, id: u64) -> Outgoing {
        let framed = match self {
            Finished::Value(result) => Outgoing::new(Kind::Response, id, result),
            Finished::End => Outgoing::new(Kind::End, id, Message::new()),
            Finished::Failed(err) => return err.to_frame(id).into(),
        };
        // Only a result over 4 GiB fails to frame, and the client's limit
        // (a u32) has refused any such result before.
        framed.unwrap_or_else(|too_large| {
            WireError::new(ErrorCode::ResponseTooLarge, too_large.to_string())
                .to_frame(id)
                .into()
        })
    }
}

/// Who stops a call when its deadline passes.
#[derive(Clone, Copy)]
pub(crate) enum Timing {
    /// The connection's deadline sweep aborts the task.
    Swept,
    /// The task keeps a timer of its own: for calls nobody sweeps.
    OwnTimer,
}

impl Work {
    /// Runs the call, sending any stream items as it goes, and says how it
    /// ended: its value, the end of its stream, or an error.
    ///
    /// An `async` block rather than an `async fn`, which would keep a
    /// second copy of its arguments: every call's box holds this future
    /// (536 bytes for the benchmark's service, 640 as an `async fn`).
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run<F, Fut>(
        self,
        state: Arc<ServerState>,
        handler: F,
        timing: Timing,
    ) -> impl Future<Output = Finished>
    where
        F: FnOnce(Args, Codec) -> Fut,
        Fut: Future<Output = Result<Answer, Error>>,
    {
        async move {
            let state = &*state;
            // Fields are used where they lie, not moved out into locals: this
            // future would hold them twice.
            let ctx = &self.ctx;
            let (codec, max_answer_len) = (self.codec, self.max_answer_len);
            let deadline = ctx.deadline();
            // Nobody watching (no metrics, no subscriber for `rpc` spans): the
            // call runs with nothing else to do, not even reading the clock. A
            // span, when there is one, is boxed, so the call's task is no
            // larger for it.
            let watched = observe::server_watched();
            let logged = tracing::enabled!(tracing::Level::DEBUG);
            let started = (watched || logged).then(Instant::now);
            let span = match watched {
                true => Some(Box::new(observe::server_span(ctx))),
                false => None,
            };
            // Cancels the context however the handler ends, aborts included, so
            // work it handed to other tasks hears about it.
            let _cancel = CancelOnDrop(ctx);
            // Borrowed from the context, which lives as long as this call.
            let method = ctx.method();
            let items = &self.items;
            // Decoding (which runs the user's `Deserialize`) and every poll of
            // the handler's stream are inside the unwind guard too: a panic
            // anywhere in the call is the call's problem. Made in one
            // expression, so that no copy of it is kept on the way.
            let args = self.args;
            let work = ctx.clone().scope(
                AssertUnwindSafe(async move {
                    let stream = match handler(args, codec).await? {
                        Answer::Value(result) if result.len() > max_answer_len => {
                            return Err(too_large(method, result.len(), max_answer_len));
                        }
                        Answer::Value(result) => return Ok(Finished::Value(result)),
                        Answer::Stream(stream) => stream,
                    };
                    let Some(sink) = items else {
                        return Err(Error::failed(format!(
                            "`{method}` returned a stream it does not declare"
                        )));
                    };
                    let items = Items {
                        sink,
                        state,
                        method,
                        max_answer_len,
                    };
                    // Boxed: every call's future would hold room for it, and
                    // most calls return one value.
                    Box::pin(items.send(stream)).await
                })
                .catch_unwind(),
            );
            // Unwatched, the call's future is awaited where it stands: moving
            // it into wrappers copies it, and it is the task's largest part.
            let finished = match (span.as_deref().filter(|span| !span.is_disabled()), timing) {
                (None, Timing::Swept) => Some(work.await),
                // Boxed: a timer and a copy of the call's future would make
                // every call's future larger, and most are swept instead.
                (None, Timing::OwnTimer) => tokio::time::timeout_at(deadline, Box::pin(work)).await.ok(),
                (Some(span), timing) => {
                    use tracing::Instrument;
                    timed(Box::pin(work.instrument(span.clone())), timing, deadline).await
                }
            };
            let (outcome, finished) = match finished {
                Some(Ok(Ok(finished))) => (Outcome::Succeeded, finished),
                Some(Ok(Err(err))) => (Outcome::Failed, Finished::Failed(to_wire(&err))),
                Some(Err(panic)) => {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(%method, %message, "handler panicked");
                    let panicked = WireError::new(ErrorCode::HandlerPanicked, message);
                    (Outcome::Panicked, Finished::Failed(panicked))
                }
                None => (
                    Outcome::DeadlineExceeded,
                    Finished::Failed(deadline_exceeded(method)),
                ),
            };
            // Read when someone logs or watches calls.
            if let Some(started) = started {
                tell_end(ctx, outcome, &finished, span, codec, started.elapsed());
            }
            state.counters.ended(outcome);
            finished
        }
    }
}

/// `work`, stopped at `deadline` if `timing` says this task keeps its own
/// timer; `None` if it was.
async fn timed<W: Future>(work: W, timing: Timing, deadline: Instant) -> Option<W::Output> {
    match timing {
        Timing::Swept => Some(work.await),
        Timing::OwnTimer => tokio::time::timeout_at(deadline, work).await.ok(),
    }
}

/// Tells the watchers (the call's span, the metrics) how a call ended.
fn watch(
    span: &tracing::Span,
    ctx: &Context,
    outcome: Outcome,
    finished: &Finished,
    codec: Codec,
    elapsed: Duration,
) {
    let full_name = ctx.descriptor().map_or("", |method| method.full_name);
    let fallible = ctx.descriptor().is_some_and(|method| method.fallible);
    if let Finished::Value(value) = finished {
        observe::bytes(false, value.len());
    }
    let call_outcome = match (outcome, finished) {
        (Outcome::Succeeded, Finished::Value(value)) if fallible && returned_err(value, codec) => {
            CallOutcome::ApplicationError
        }
        (Outcome::Succeeded, _) => CallOutcome::Ok,
        (Outcome::Failed, _) => CallOutcome::Failed,
        (Outcome::Panicked, _) => CallOutcome::Panicked,
        (Outcome::DeadlineExceeded, _) => CallOutcome::DeadlineExceeded,
        (Outcome::Cancelled, _) => CallOutcome::Cancelled,
    };
    observe::server_call(span, full_name, call_outcome, elapsed);
}

/// Whether an encoded `Result` is its `Err`: bincode writes the variant
/// index first (`1`), serde_json an object keyed `Err`.
fn returned_err(value: &Message, codec: Codec) -> bool {
    // A result's first part holds at least its first bytes: a blob is
    // spliced in after the length before it.
    let first = value.parts().first().map_or(&[][..], |part| &part[..]);
    match codec {
        Codec::Binary => first.first() == Some(&1),
        Codec::Json => first.starts_with(b"{\"Err\""),
    }
}

/// Tells whoever watches (a subscriber, a recorder) how a call ended: its
/// event, its span's last fields and its close, its metrics. Their code's
/// panic is logged and leaves the call as it ended (an answer already
/// made, which a retry must not repeat). Out of line: most calls are
/// watched by nobody.
#[inline(never)]
fn tell_end(
    ctx: &Context,
    outcome: Outcome,
    finished: &Finished,
    span: Option<Box<tracing::Span>>,
    codec: Codec,
    elapsed: Duration,
) {
    let told = std::panic::catch_unwind(AssertUnwindSafe(|| {
        observe(ctx, outcome, elapsed);
        if let Some(span) = span {
            watch(&span, ctx, outcome, finished, codec, elapsed);
        }
    }));
    if let Err(panic) = told {
        let message = panic_message(panic.as_ref());
        log_guarded(|| tracing::error!(method = ctx.method(), %message, "watching a call's end panicked"));
    }
}

/// The point every call that runs to its end passes, whatever brought it
/// and whether it succeeded, failed or panicked: a debug event with the
/// method, caller, outcome and duration. (Counted by `Work::run` after
/// it; a call stopped from outside, by a cancel, its deadline or a
/// shutdown, is counted by the guard on its way out (`task.rs`); one
/// refused before it ran, by whoever refused it.)
fn observe(ctx: &Context, outcome: Outcome, elapsed: Duration) {
    tracing::debug!(
        method = ctx.method(),
        request_id = ctx.request_id(),
        peer = %ctx.peer(),
        ?outcome,
        ?elapsed,
        "call finished"
    );
}

/// Runs `log`, a log of a panic, which may panic in turn (the subscriber
/// that did may do so at every event): swallowed, for the caller has
/// still to count and answer the call.
pub(crate) fn log_guarded(log: impl FnOnce()) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(log));
}

/// Sends a handler's stream to its sink.
struct Items<'a> {
    sink: &'a ItemSink,
    state: &'a ServerState,
    method: &'a str,
    max_answer_len: usize,
}

impl Items<'_> {
    /// The next item is not even pulled from the handler's stream until
    /// there is room for it (credit, or space in the caller's queue): a
    /// slow caller holds back the producer itself.
    async fn send(self, mut stream: ItemStream) -> Result<Finished, Error> {
        loop {
            // Room first: credit, or a reserved place in the caller's queue.
            let place = match self.sink {
                ItemSink::Frames { credit, .. } => match credit.spend().await {
                    true => None,
                    false => return Ok(Finished::End),
                },
                ItemSink::Queue { queue, .. } => match queue.reserve().await {
                    Ok(place) => Some(place),
                    Err(_) => return Ok(Finished::End),
                },
            };
            let item = match stream.next().await {
                None => return Ok(Finished::End),
                Some(item) => item?,
            };
            if item.len() > self.max_answer_len {
                return Err(too_large(self.method, item.len(), self.max_answer_len));
            }
            match (self.sink, place) {
                (ItemSink::Frames { id, credit, outbox }, _) => {
                    let frame = Frame::new(Kind::Item, *id, item)?;
                    self.state.counters.stream_item_sent(credit.in_flight());
                    if outbox.send(frame, None).is_err() {
                        return Ok(Finished::End);
                    }
                }
                (ItemSink::Queue { open, close, .. }, Some(place)) => {
                    let mut message = bytes::BytesMut::with_capacity(open.len() + item.len() + close.len());
                    message.extend_from_slice(open);
                    message.extend_from_slice(&item);
                    message.extend_from_slice(close);
                    self.state.counters.stream_item_sent(0);
                    place.send(message.freeze());
                }
                // A queue's place is always reserved above.
                (ItemSink::Queue { .. }, None) => return Ok(Finished::End),
            }
        }
    }
}

pub(crate) fn deadline_exceeded(method: &str) -> WireError {
    WireError::new(
        ErrorCode::DeadlineExceeded,
        format!("`{method}` did not finish within its time budget"),
    )
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

struct CancelOnDrop<'a>(&'a Context);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The wire form of a call's failure. The message is the part the client
/// cannot know; the client rebuilds the rest of the sentence itself.
pub(crate) fn to_wire(err: &Error) -> WireError {
    match err {
        Error::UnknownService { service } => WireError::new(ErrorCode::UnknownService, service.clone()),
        Error::UnknownMethod { method } => WireError::new(ErrorCode::UnknownMethod, method.clone()),
        Error::BadRequest { reason, .. } => WireError::new(ErrorCode::BadRequest, reason.clone()),
        Error::Overloaded { reason } => WireError::new(ErrorCode::Overloaded, reason.clone()),
        Error::Failed { message } => WireError::new(ErrorCode::Failed, message.clone()),
        Error::Unauthenticated { message } => WireError::new(ErrorCode::Unauthenticated, message.clone()),
        Error::PermissionDenied { message } => WireError::new(ErrorCode::PermissionDenied, message.clone()),
        // The message is the length alone: the client knows its own limit
        // and builds the sentence (see `WireError::into_error`).
        Error::FrameTooLarge { len, .. } => WireError::new(ErrorCode::ResponseTooLarge, len.to_string()),
        Error::HandlerPanicked { message, .. } => WireError::new(ErrorCode::HandlerPanicked, message.clone()),
        Error::DeadlineExceeded { .. } => WireError::new(ErrorCode::DeadlineExceeded, err.to_string()),
        other => WireError::new(ErrorCode::Internal, other.to_string()),
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "the panic carried no message".to_owned()
    }
}
