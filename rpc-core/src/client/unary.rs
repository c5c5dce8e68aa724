//! A call that returns one value: picking an endpoint, the round trip,
//! and retrying where that is safe.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceExt;
use tower::retry::budget::Budget;

use crate::client::endpoint::{self, Endpoint};
use crate::client::waiter::{Payload, Reply};
use crate::client::{Client, Deadline, Watch, encoded_args};
use crate::error::{Error, ErrorCode};
use crate::metadata::Metadata;
use crate::middleware::{ClientCall, into_error};
use crate::observe;
use crate::service::RequestMessage;

/// Most times a balanced client sends one call again.
const MAX_RETRIES: u32 = 3;

/// Where a unary call starts.
pub(super) enum Start {
    /// A caller's call: its deadline from `timeout` (or the client's), its
    /// metadata the client's, watched as `watch` says, through the client's
    /// middleware if it has any.
    Caller { timeout: Option<Duration>, watch: Watch },
    /// The innermost middleware's call: the deadline and metadata the
    /// layers left it. (Boxed: a call's future keeps its start for as long
    /// as it lives, and a call through middleware allocates anyway.)
    Layers(Box<(Deadline, Option<Arc<Metadata>>)>),
}

impl Client {
    /// Makes a call, retrying it where that is safe, until its deadline,
    /// and makes its answer's payload a `T` with `decode`.
    ///
    /// One state machine from the first poll to the decoded answer: a busy
    /// client touches every byte of a call's future on every call, and
    /// each future nested in it would copy the request in and the answer
    /// out again. Only a watched call (its span and timing) and a call
    /// through middleware go another way, each boxed.
    ///
    /// Only waiting for a connection arms a timer of its own (and only if
    /// it has to wait); the wait for a place and for the answer is under
    /// the connection's deadline sweep. The request is borrowed only to
    /// encode it, never across a wait, so the call's future is `Send`
    /// whenever the request is.
    ///
    /// An `async` block rather than an `async fn`, which would keep a
    /// second copy of its arguments.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn unary<Q, T, D>(
        self,
        request: Q,
        start: Start,
        decode: D,
    ) -> impl Future<Output = Result<T, Error>>
    where
        Q: RequestMessage + 'static,
        D: FnOnce(&Client, &'static str, Payload) -> Result<T, Error>,
    {
        async move {
            let (deadline, metadata) = match start {
                Start::Layers(given) => *given,
                Start::Caller { timeout, watch } => {
                    let trace = match watch {
                        // Boxed, so that a span and a start time do not
                        // make every call's future larger, watched or not.
                        Watch::Undecided if observe::watching() => {
                            return Box::pin(self.call_watched(request, timeout, decode)).await;
                        }
                        // Nobody watching: the call as it is, with nothing
                        // to time or record.
                        Watch::Undecided => None,
                        Watch::Watched(trace) => trace,
                    };
                    let method = request.method();
                    let deadline = self.deadline(timeout)?;
                    let metadata = self.outgoing(method, trace.as_deref())?;
                    if let Some(stack) = self.stack() {
                        let call = ClientCall {
                            method,
                            descriptor: request.descriptor(),
                            args: encoded_args(&request)?,
                            idempotent: request.idempotent(),
                            metadata: metadata.map(Arc::unwrap_or_clone).unwrap_or_default(),
                            deadline: deadline.at,
                        };
                        drop(request);
                        // Boxed, as the start of such a call is: it would
                        // be the largest wait in every call's future.
                        let answered = Box::pin(stack.clone().oneshot(call)).await;
                        return decode(&self, method, Payload::Shared(answered.map_err(into_error)?));
                    }
                    (deadline, metadata)
                }
            };
            let idempotent = request.idempotent();
            let expired = || Error::DeadlineExceeded {
                timeout: deadline.budget,
            };
            let picker = &self.shared.picker;
            let balanced = picker.balanced();
            if let Some(budget) = &self.shared.budget {
                budget.deposit();
            }
            let mut retries = 0;
            let mut last: Option<Arc<Endpoint>> = None;
            // Whether the call has waited (for an endpoint, a connection, or an
            // attempt before this one) since its budget was
            // measured: if not, the budget is still whole, and the clock need
            // not be read again.
            let mut waited = false;
            loop {
                let Some(endpoint) = picker.pick(last.as_deref()) else {
                    waited = true;
                    // Boxed, as the wait for a connection is below.
                    Box::pin(self.await_endpoints(deadline)).await?;
                    continue;
                };
                let _pending = balanced.then(|| endpoint.begin());
                let connection = match endpoint.ready_now() {
                    Some(connection) => connection,
                    None => {
                        waited = true;
                        // Only a connection not up yet is waited for under a
                        // timer: a call that finds every place on its
                        // connection taken queues its request, under the
                        // connection's deadline sweep. Boxed: a call waits
                        // for a connection rarely, and its timer and the redial
                        // it joins would make every call's future (memory a
                        // busy client touches on every call) twice as large.
                        let connecting =
                            tokio::time::timeout_at(deadline.at, endpoint.connection(deadline.at));
                        match Box::pin(connecting).await {
                            Ok(Ok(connection)) => connection,
                            // Every server is waiting out its backoff: nothing
                            // was tried, so nothing counts as a failure.
                            Ok(Err(err @ Error::Unreachable { .. })) if balanced => return Err(err),
                            Ok(Err(err)) => {
                                endpoint.failed();
                                if !balanced {
                                    return Err(err);
                                }
                                picker.failed(&endpoint);
                                // Never sent: another server may take it.
                                if !self.may_retry(&mut retries, &endpoint) {
                                    return Err(err);
                                }
                                last = Some(endpoint.into_owned());
                                continue;
                            }
                            Err(_) => return Err(expired()),
                        }
                    }
                };
                // A balancer weighs every answer; one server's estimate is only
                // for its stats.
                let sent_at = (balanced || endpoint::sample_due()).then(Instant::now);
                let budget = match waited {
                    true => deadline.at.saturating_duration_since(Instant::now()),
                    false => deadline.budget,
                };
                waited = true;
                if budget.is_zero() {
                    return Err(expired());
                }
                // The answer wakes the task this poll is for: no wait comes
                // between taking its waker and the first poll of the trip.
                let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
                let sent = connection.send(&request, budget, metadata.as_deref(), deadline.at, waker)?;
                let (reply, queued) = match sent {
                    Ok(trip) => trip.await,
                    Err(refused) => (refused, false),
                };
                // A call whose request waited for a place is no sample of the
                // server's time: the wait was the client's.
                if let (Reply::Response(_) | Reply::Failed(_), Some(sent_at), false) =
                    (&reply, sent_at, queued)
                {
                    endpoint.sample(sent_at);
                }
                // A call the server's shutdown interrupted may have run: it is
                // as good as lost.
                let reply = match reply {
                    Reply::Failed(err) if err.code == ErrorCode::Interrupted as u8 => {
                        let err = self.wire_error(err, request.method(), request.descriptor(), deadline);
                        Reply::Lost(Box::new(err))
                    }
                    other => other,
                };
                match reply {
                    Reply::Expired => return Err(expired()),
                    Reply::Response(payload) => {
                        endpoint.answered();
                        return decode(&self, request.method(), payload);
                    }
                    // Refused for load before it ran: another server may have
                    // room.
                    Reply::Failed(err)
                        if balanced
                            && err.code == ErrorCode::Overloaded as u8
                            && self.may_retry(&mut retries, &endpoint) =>
                    {
                        endpoint.answered();
                    }
                    Reply::Failed(err) => {
                        endpoint.answered();
                        return Err(self.wire_error(err, request.method(), request.descriptor(), deadline));
                    }
                    // Never sent, or never started by the server: running it
                    // elsewhere is safe, whatever the method.
                    Reply::Unsent(_) | Reply::NotRun if self.may_retry(&mut retries, &endpoint) => {}
                    Reply::Unsent(err) => {
                        endpoint.failed();
                        return Err(*err);
                    }
                    Reply::NotRun => {
                        endpoint.failed();
                        return Err(Error::ShuttingDown);
                    }
                    // It may have run; only an idempotent call may run again.
                    Reply::Lost(_) if idempotent && self.may_retry(&mut retries, &endpoint) => {
                        endpoint.failed()
                    }
                    Reply::Lost(err) => {
                        endpoint.failed();
                        return Err(*err);
                    }
                }
                last = Some(endpoint.into_owned());
            }
        }
    }

    /// Whether a call whose attempt on `endpoint` failed, after `retries`
    /// retries, may go again (counting it if so): once, to the same
    /// server redialled, for a client of one server; for a balanced one,
    /// up to [`MAX_RETRIES`] times to other servers, each drawn from the
    /// retry budget.
    fn may_retry(&self, retries: &mut u32, endpoint: &Endpoint) -> bool {
        let may = match &self.shared.budget {
            None => *retries == 0 && endpoint.redials(),
            Some(budget) => *retries < MAX_RETRIES && budget.withdraw(),
        };
        *retries += u32::from(may);
        may
    }

    /// Waits, until `deadline`, for the client's discovery to list a
    /// server.
    pub(super) async fn await_endpoints(&self, deadline: Deadline) -> Result<(), Error> {
        let none = || Error::disconnected("no server to call: the client's discovery has listed none");
        let Some(changes) = self.shared.picker.changes() else {
            return Err(none());
        };
        let changed = changes.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !self.shared.picker.endpoints().is_empty() {
            return Ok(());
        }
        tokio::time::timeout_at(deadline.at, changed)
            .await
            .map_err(|_| none())
    }
}
