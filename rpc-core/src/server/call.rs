//! One call's task: decode the arguments, run the method, encode the
//! result, send the answer (or the stream of items and its end).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::codec::Codec;
use crate::context::Context;
use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{Frame, Kind};
use crate::permit::CallPermit;
use crate::server::report::Report;
use crate::server::{Outcome, ServerState};
use crate::service::{Answer, Args};
use crate::streaming::{ItemStream, SendCredit};
use crate::writer::Outgoing;

/// Where a server connection's frames go: its writer task.
pub(super) type Outbox = mpsc::UnboundedSender<Outgoing<CallPermit>>;

/// One call, ready to run: the server it runs on, the work, and how its
/// end is reported.
pub(crate) struct Call {
    pub(super) state: Arc<ServerState>,
    pub(super) work: Work,
    pub(super) end: End,
}

/// What running a call needs.
pub(super) struct Work {
    /// The call's id, method, deadline and caller.
    pub(super) ctx: Context,
    pub(super) args: Args,
    pub(super) codec: Codec,
    /// Credit for the items and their way out, for methods that return a
    /// stream.
    pub(super) output: Option<(Arc<SendCredit>, Outbox)>,
    pub(super) client_max_frame_len: usize,
}

/// How a call's end leaves its task.
pub(super) struct End {
    pub(super) outbox: Outbox,
    /// How the task tells the connection it has ended.
    pub(super) report: Report,
    /// The call's permit under the connection's cap, held until its last
    /// frame is written.
    pub(super) permit: Option<CallPermit>,
    /// `#[rpc(no_cancel)]`: neither a cancel nor the connection closing
    /// stops it.
    pub(super) to_completion: bool,
}

/// A call's task, spawned. Only [`Call::spawn`] makes one, so nothing can
/// start a call the connection has no way to stop.
#[derive(Debug)]
pub(crate) struct CallHandle {
    /// `None` for a method that runs to completion whatever happens.
    pub(super) abort: Option<AbortHandle>,
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

impl Call {
    /// Spawns the call's task, in which `handler` turns the arguments into
    /// the method's answer.
    ///
    /// The handler's future is spawned as it is, not boxed; the task runs
    /// it under the call's context and deadline, turns a panic (decoding
    /// included) into an error answer, and sends the answer with the
    /// call's permit.
    pub(crate) fn spawn<F, Fut>(self, handler: F) -> CallHandle
    where
        F: FnOnce(Args, Codec) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, Error>> + Send + 'static,
    {
        let Call { state, work, end } = self;
        let id = work.ctx.request_id();
        let End {
            outbox,
            report,
            permit,
            to_completion,
        } = end;
        // The end is reported before the answer is queued: the writer,
        // woken last, runs first (tokio runs the task woken last next), so
        // the report costs the answer no latency.
        if to_completion {
            // The task holds the outbox only weakly, so a closing
            // connection never waits for it.
            let outbox = outbox.downgrade();
            drop(tokio::spawn(async move {
                let frame = work.run(&state, handler, Timing::OwnTimer).await;
                report.ended();
                if let Some(outbox) = outbox.upgrade() {
                    let _ = outbox.send(Outgoing { frame, permit });
                }
            }));
            CallHandle { abort: None }
        } else {
            let responder = Responder {
                id,
                ctx: work.ctx.clone(),
                state,
                out: Some((outbox, permit)),
            };
            let task = tokio::spawn(async move {
                let mut responder = responder;
                let frame = work.run(&responder.state, handler, Timing::Swept).await;
                report.ended();
                responder.send(frame);
            });
            CallHandle {
                abort: Some(task.abort_handle()),
            }
        }
    }
}

/// The way out of a call's task that the connection can abort: it sends
/// the call's last frame with the call's permit, and if the task is aborted
/// because the deadline sweep expired the call, it still answers, with
/// `DeadlineExceeded`, and the permit still travels with that answer. It
/// counts how an aborted call ended (a finished one counts itself): the
/// task is the one place that knows which came first.
struct Responder {
    id: u64,
    ctx: Context,
    state: Arc<ServerState>,
    out: Option<(Outbox, Option<CallPermit>)>,
}

impl Responder {
    fn send(&mut self, frame: Frame) {
        if let Some((outbox, permit)) = self.out.take() {
            // A closed outbox means the connection is gone; nobody to tell.
            let _ = outbox.send(Outgoing { frame, permit });
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.out.is_none() {
            return;
        }
        if self.ctx.expired() {
            self.state.counters.ended(Outcome::DeadlineExceeded);
            let frame = deadline_exceeded(self.ctx.method()).to_frame(self.id);
            self.send(frame);
        } else {
            // Cancelled by its caller, or interrupted by the end of a
            // shutdown's grace period (the connection answers for it).
            self.state.counters.ended(Outcome::Cancelled);
        }
    }
}

/// How a call's work ended, before it becomes its last frame.
enum Ending {
    /// A single value (the response).
    Value(Bytes),
    /// The stream of items ended normally.
    End,
}

impl Work {
    /// Runs the call, sending any stream items as it goes, and returns the
    /// frame that ends it: the response, the end of the stream, or an error.
    async fn run<F, Fut>(self, state: &ServerState, handler: F, timing: Timing) -> Frame
    where
        F: FnOnce(Args, Codec) -> Fut,
        Fut: Future<Output = Result<Answer, Error>>,
    {
        let Work {
            ctx,
            args,
            codec,
            output,
            client_max_frame_len,
        } = self;
        let id = ctx.request_id();
        let started = Instant::now();
        let deadline = ctx.deadline();
        // Cancels the context however the handler ends, aborts included, so
        // work it handed to other tasks hears about it.
        let _cancel = CancelOnDrop(ctx.clone());
        // Borrowed from the context, which lives as long as this call.
        let method = ctx.method();
        // Decoding (which runs the user's `Deserialize`) and every poll of
        // the handler's stream are inside the unwind guard too: a panic
        // anywhere in the call is the call's problem.
        let work = async {
            let stream = match handler(args, codec).await? {
                Answer::Value(result) if result.len() > client_max_frame_len => {
                    return Err(too_large(method, result.len(), client_max_frame_len));
                }
                Answer::Value(result) => return Ok(Ending::Value(result)),
                Answer::Stream(stream) => stream,
            };
            let Some((credit, outbox)) = &output else {
                return Err(Error::failed(format!(
                    "`{method}` returned a stream it does not declare"
                )));
            };
            let items = Items {
                id,
                credit,
                outbox,
                state,
                method,
                client_max_frame_len,
            };
            items.send(stream).await
        };
        let work = ctx.clone().scope(AssertUnwindSafe(work).catch_unwind());
        let finished = match timing {
            Timing::Swept => Some(work.await),
            Timing::OwnTimer => tokio::time::timeout_at(deadline, work).await.ok(),
        };
        let (outcome, answer) = match finished {
            Some(Ok(Ok(Ending::Value(result)))) => {
                (Outcome::Succeeded, Ok(Frame::new(Kind::Response, id, result)))
            }
            Some(Ok(Ok(Ending::End))) => (Outcome::Succeeded, Ok(Frame::new(Kind::End, id, Bytes::new()))),
            Some(Ok(Err(err))) => (Outcome::Failed, Err(to_wire(&err))),
            Some(Err(panic)) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(%method, %message, "handler panicked");
                (
                    Outcome::Panicked,
                    Err(WireError::new(ErrorCode::HandlerPanicked, message)),
                )
            }
            None => (Outcome::DeadlineExceeded, Err(deadline_exceeded(method))),
        };
        observe(state, &ctx, outcome, started);
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

/// The point every call that runs to its end passes, whatever brought it
/// and whether it succeeded, failed or panicked: the server's counters,
/// and a debug event with the method, caller, outcome and duration. (A
/// call stopped from outside, by a cancel, its deadline or a shutdown, is
/// counted by its `Responder`; one refused before it ran, by the table.)
fn observe(state: &ServerState, ctx: &Context, outcome: Outcome, started: Instant) {
    state.counters.ended(outcome);
    tracing::debug!(
        method = ctx.method(),
        request_id = ctx.request_id(),
        peer = %ctx.peer(),
        ?outcome,
        elapsed = ?started.elapsed(),
        "call finished"
    );
}

/// Sends a handler's stream, one item per unit of credit.
struct Items<'a> {
    id: u64,
    credit: &'a SendCredit,
    outbox: &'a Outbox,
    state: &'a ServerState,
    method: &'a str,
    client_max_frame_len: usize,
}

impl Items<'_> {
    /// The next item is not even pulled from the handler's stream until
    /// there is credit for it: a slow client holds back the producer
    /// itself.
    async fn send(self, mut stream: ItemStream) -> Result<Ending, Error> {
        loop {
            if !self.credit.spend().await {
                return Ok(Ending::End);
            }
            let item = match stream.next().await {
                None => return Ok(Ending::End),
                Some(item) => item?,
            };
            if item.len() > self.client_max_frame_len {
                return Err(too_large(self.method, item.len(), self.client_max_frame_len));
            }
            let frame = Frame::new(Kind::Item, self.id, item)?;
            self.state.counters.stream_item_sent(self.credit.in_flight());
            if self.outbox.send(frame.into()).is_err() {
                return Ok(Ending::End);
            }
        }
    }
}

pub(super) fn deadline_exceeded(method: &str) -> WireError {
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

struct CancelOnDrop(Context);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The wire form of a call's failure. The message is the part the client
/// cannot know; the client rebuilds the rest of the sentence itself.
pub(super) fn to_wire(err: &Error) -> WireError {
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
