//! A call's task: [`Call::spawn`] starts it, and its way out sends how it
//! ended: frames to a binary connection's writer (with the call's permit),
//! or the finished call to a JSON caller.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::oneshot;

use crate::codec::Codec;
use crate::context::Context;
use crate::error::{Error, ErrorCode, WireError};
use crate::outbox::Outgoing;
use crate::permit::CallPermit;
use crate::server::call::{
    Call, CallHandle, End, Finished, Launch, Outbox, Stop, Timing, deadline_exceeded, log_guarded,
    panic_message,
};
use crate::server::report::Report;
use crate::server::{Outcome, ServerState};
use crate::service::{Answer, Args};

/// Requests whose arguments are at most this long get their first poll in
/// the connection's task.
const INLINE_ARGS_LEN: usize = 16 * 1024;

impl Call<'_> {
    /// Starts the call, in which `handler` turns the arguments into the
    /// method's answer: polled once here, and spawned as a task of its own
    /// if it has to wait.
    ///
    /// The call runs under its context and deadline, turns a panic
    /// (decoding included) into an error answer, and sends the answer with
    /// the call's permit.
    pub(crate) fn spawn<F, Fut>(self, handler: F) -> CallHandle
    where
        F: FnOnce(Args, Codec) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, Error>> + Send + 'static,
    {
        let Call { state, work, end } = self;
        let id = work.ctx.request_id();
        let launch = match end {
            End::Frames(launch) => launch,
            End::Inline => {
                let mut guard = InlineGuard {
                    ctx: work.ctx.clone(),
                    state: Arc::clone(state),
                    running: true,
                };
                // Boxed rather than spawned: the caller's task runs it, with
                // no task of its own to allocate, schedule and wake.
                return CallHandle::Inline(Box::pin(async move {
                    let running = work.run(Arc::clone(&guard.state), handler, Timing::OwnTimer);
                    let finished = caught(running, &guard.state, id).await;
                    guard.finished();
                    finished
                }));
            }
            End::Reply(reply) => {
                let guard = ReplyGuard {
                    ctx: work.ctx.clone(),
                    state: Arc::clone(state),
                    reply: Some(reply),
                };
                // Detached: it runs to its end whether or not anyone waits.
                drop(tokio::spawn(async move {
                    let mut guard = guard;
                    let running = work.run(Arc::clone(&guard.state), handler, Timing::OwnTimer);
                    let finished = caught(running, &guard.state, id).await;
                    guard.send(finished);
                }));
                return CallHandle::Spawned { stop: None };
            }
        };
        // The end is reported before the answer is queued: the writer,
        // woken last, runs first (tokio runs the task woken last next), so
        // the report costs the answer no latency.
        if launch.to_completion {
            let report = launch.report(id);
            // The task holds the outbox only weakly, so a closing
            // connection never waits for it.
            let outbox = launch.outbox.downgrade();
            let permit = launch.permit;
            let state = Arc::clone(state);
            drop(tokio::spawn(async move {
                let running = work.run(Arc::clone(&state), handler, Timing::OwnTimer);
                let frame = caught(running, &state, id).await.into_frame(id);
                report.ended();
                if let Some(outbox) = outbox.upgrade() {
                    let _ = outbox.send(frame, permit);
                }
            }));
            return CallHandle::Spawned { stop: None };
        }
        // A large request (a blob to store, to echo) is likely work to
        // match, as is a method that once computed for long before its
        // first await: their tasks run beside the connection's reader.
        let method = work.ctx.descriptor();
        let first_poll_here = work.args.len() <= INLINE_ARGS_LEN && !state.slow.spawns(method);
        let ctx = work.ctx.clone();
        // Boxed alone, so that it may be polled here and still move into a
        // task: the responder and the report stay out of it.
        let mut running = Box::pin(work.run(Arc::clone(state), handler, Timing::Swept));
        if !first_poll_here {
            let (responder, report) = outliving(id, ctx, state, launch);
            return spawn_answering(running, responder, report);
        }
        // Most handlers answer on their first poll: run that here, in the
        // connection's task, and spawn only a call that has to wait. (The
        // waker of this poll wakes nothing; the task's first poll, which
        // tokio runs at once, registers its own.)
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        // The handler's panics are the call's (caught inside); this guards
        // the connection from the rest (a subscriber's or a recorder's),
        // which would otherwise end it: the call ends as a panicked task
        // would.
        let polled = state.slow.first_poll(method, || {
            std::panic::catch_unwind(AssertUnwindSafe(|| running.as_mut().poll(&mut first)))
        });
        match polled {
            // Done: answered now, and forgotten by the connection at once,
            // with nothing reported; its context goes back to the
            // connection, for the next call to be made in (`running`, which
            // holds the other reference, is gone by the time it looks).
            Ok(Poll::Ready(finished)) => {
                let frame = finished.into_frame(id);
                // A closed outbox means the connection is gone; nobody to
                // tell.
                let _ = launch.outbox.send(frame, launch.permit);
                CallHandle::Finished(ctx)
            }
            Ok(Poll::Pending) => {
                let (responder, report) = outliving(id, ctx, state, launch);
                spawn_answering(running, responder, report)
            }
            // Answered as a panicked handler would be, and done with: a
            // call left running, with no task to report its end, would
            // never be answered nor forgotten.
            Err(panic) => {
                drop(running);
                let frame = panicked_outside(state, id, panic.as_ref()).into_frame(id);
                let _ = launch.outbox.send(frame, launch.permit);
                CallHandle::Finished(ctx)
            }
        }
    }
}

/// How call `id` ended when it panicked outside its handler (a
/// subscriber or a metrics recorder failed): as a panicked handler's
/// would, and counted so.
fn panicked_outside(state: &ServerState, id: u64, panic: &(dyn std::any::Any + Send)) -> Finished {
    let message = panic_message(panic);
    log_guarded(|| tracing::error!(id, %message, "a call panicked outside its handler"));
    state.counters.ended(Outcome::Panicked);
    Finished::Failed(WireError::new(ErrorCode::HandlerPanicked, message))
}

/// `running` (call `id`), ended by [`panicked_outside`] if it panics: for
/// a call whose task or caller would otherwise take its answer down with
/// it.
async fn caught(running: impl Future<Output = Finished>, state: &ServerState, id: u64) -> Finished {
    match futures::FutureExt::catch_unwind(AssertUnwindSafe(running)).await {
        Ok(finished) => finished,
        Err(panic) => panicked_outside(state, id, panic.as_ref()),
    }
}

/// What answers for call `id` once it outlives its launch: its responder
/// (with clones of what the launch lent it), and its task's report.
fn outliving(id: u64, ctx: Context, state: &Arc<ServerState>, launch: Launch<'_>) -> (Responder, Report) {
    let report = launch.report(id);
    let responder = Responder {
        id,
        ctx,
        state: Arc::clone(state),
        out: Some((launch.outbox.clone(), launch.permit)),
    };
    (responder, report)
}

/// Spawns the rest of a call: when `running` is done, it reports its end
/// to the connection (so the connection can forget it), then queues the
/// answer; in that order, for the reason `Call::spawn` gives.
fn spawn_answering<F>(running: F, responder: Responder, report: Report) -> CallHandle
where
    F: Future<Output = Finished> + Send + 'static,
{
    let id = responder.id;
    // The connection's copy, for its sweep: made only for a call that
    // outlives its launch.
    let ctx = responder.ctx.clone();
    // A later poll that panics outside the handler ends the call here, as
    // the first poll's does: the task would take the answer with it.
    let caught = futures::FutureExt::catch_unwind(AssertUnwindSafe(running));
    let answering = futures::FutureExt::map(caught, move |finished| {
        let finished =
            finished.unwrap_or_else(|panic| panicked_outside(&responder.state, id, panic.as_ref()));
        report.ended();
        responder.send(finished.into_frame(id));
    });
    let abort = tokio::spawn(answering).abort_handle();
    CallHandle::Spawned {
        stop: Some(Stop { abort, ctx }),
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
    fn send(mut self, frame: Outgoing) {
        self.queue(frame);
    }

    fn queue(&mut self, frame: impl Into<Outgoing>) {
        if let Some((outbox, permit)) = self.out.take() {
            // A closed outbox means the connection is gone; nobody to tell.
            let _ = outbox.send(frame, permit);
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
            self.queue(frame);
        } else {
            // Cancelled by its caller, or interrupted by the end of a
            // shutdown's grace period (the connection answers for it).
            self.state.counters.ended(Outcome::Cancelled);
        }
    }
}

/// Counts a call its caller runs as cancelled if the caller drops it
/// before it finishes (the caller went away, or cancelled it).
struct InlineGuard {
    ctx: Context,
    state: Arc<ServerState>,
    running: bool,
}

impl InlineGuard {
    /// The call ended by itself (and counted itself).
    fn finished(&mut self) {
        self.running = false;
    }
}

impl Drop for InlineGuard {
    fn drop(&mut self) {
        if self.running {
            self.ctx.cancel();
            self.state.counters.ended(Outcome::Cancelled);
        }
    }
}

/// The way out of a JSON call that runs to completion in its own task:
/// the finished call to its caller, if still there. Dropped unfinished (the
/// runtime shut down), it counts the call as cancelled.
struct ReplyGuard {
    ctx: Context,
    state: Arc<ServerState>,
    reply: Option<oneshot::Sender<Finished>>,
}

impl ReplyGuard {
    fn send(&mut self, finished: Finished) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(finished);
        }
    }
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if self.reply.is_some() {
            self.ctx.cancel();
            self.state.counters.ended(Outcome::Cancelled);
        }
    }
}
