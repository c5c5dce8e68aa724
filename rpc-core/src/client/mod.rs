//! The client: any number of concurrent calls, with deadlines,
//! cancellation, a cap on calls in flight, and reconnection.
//!
//! A call picks an endpoint and its connection (redialling it first if it
//! was lost), registers a waiter under a fresh request id, and queues its
//! frame for the connection's writer task, or, when every place under the
//! connection's cap on calls in flight is taken, queues its request for
//! the call that frees one to send; then it waits. The reader task hands
//! each answer to the waiter with its id, in whatever order answers come.
//! When the connection ends, every waiter is failed at once.
//!
//! # Layout
//!
//! - [`Client`] (this file): the call API, deadlines and retries.
//! - `picker`: which endpoint a call goes to.
//! - `balance`: the picker over a set of servers.
//! - `balanced`: a client over a set, and the handle its discovery changes
//!   the set with.
//! - `unary`: a call returning one value, with its retries.
//! - `endpoint`: one server: its connection, redials with [`Backoff`],
//!   latency and failures ([`EndpointStats`]).
//! - `connection`: one live connection: its tasks, its places for calls,
//!   and the unary round trip.
//! - `calls`: a connection's calls, from request id to answer, and their
//!   places.
//! - `queue`: requests waiting for a place, sent by whoever frees one.
//! - `waiter`: who waits for an answer, and what the wait ends with.
//! - `sweep`: the deadline sweep.
//! - `stream`: streaming calls.

mod backoff;
mod balance;
mod balanced;
mod calls;
mod connection;
mod endpoint;
mod extras;
mod later;
mod picker;
mod queue;
mod stream;
mod sweep;
mod unary;
mod waiter;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

pub use backoff::Backoff;
pub use balance::Policy;
pub use balanced::Balanced;
pub use endpoint::{EndpointState, EndpointStats};

use connection::Connection;
use endpoint::{Endpoint, dial_with};
use extras::Extras;
use picker::{Pick, Single};
use stream::{ClientStream, StreamCall};
use tower::retry::budget::TpsBudget;
use unary::Start;
use waiter::{Event, Payload, Reply};

use crate::codec::{self, DecodeLimits};
use crate::context::Context;
use crate::descriptor::MethodDescriptor;
use crate::error::{Error, WireError, explain_decode};
use crate::frame::{DEFAULT_MAX_FRAME_LEN, MAX_WIRE_BUDGET};
use crate::observe::{self, CallOutcome};
use crate::service::RequestMessage;
use crate::streaming::{ItemStream, Streaming};
use crate::trace::TraceContext;
use crate::transport::{Established, FrameRead, FrameWrite};

/// How long a call may take when neither the client nor the call sets a
/// timeout: long enough for any ordinary call, short enough that a lost
/// server never hangs a caller for good.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls one client may have in flight on each server's connection before
/// further calls wait for a place, their requests queued in order: plenty
/// for a busy service, and a bound on what a server is sent at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of calls that set none. Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Largest response payload accepted, in bytes; announced to the server
    /// so it can refuse a larger response with a clear error instead of
    /// sending it. Default: [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Calls in flight at once on each server's connection (a client of
    /// several servers may have this many on each), and never more than
    /// the server runs and queues, less one (511 for a server's default cap
    /// of 256); the requests of more wait in order for a place, each within
    /// its caller's deadline, and leave with the time their callers have
    /// left then. Default: [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Delays between reconnect attempts, for clients that can redial.
    pub backoff: Backoff,
    /// What decoding the server's answers may cost.
    pub decode: DecodeLimits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: DEFAULT_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            backoff: Backoff::default(),
            decode: DecodeLimits::DEFAULT,
        }
    }
}

/// An untyped client: what generated `FooClient`s wrap, and what
/// `rpc::ClientBuilder` connects.
///
/// Cloning is cheap (an `Arc`) and every clone shares the connections. They
/// close when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Metadata and middleware, if the client has any (most have none:
    /// then a clone is one reference count).
    extras: Option<Arc<Extras>>,
}

struct Shared {
    config: ClientConfig,
    picker: Box<dyn Pick>,
    /// What retries may cost, for a balanced client (boxed: a client of
    /// one server, the common case, has none).
    budget: Option<Box<TpsBudget>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.shared.config)
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

impl Client {
    /// A client over an established connection, which does not reconnect
    /// once that connection ends.
    ///
    /// Spawns the connection's tasks, so it must be called inside a tokio
    /// runtime.
    #[doc(hidden)]
    pub fn new<R: FrameRead, W: FrameWrite>(conn: Established<R, W>, config: ClientConfig) -> Client {
        let target: Arc<str> = conn.peer.to_string().into();
        let connection = Connection::start(conn, config.max_in_flight, config.decode);
        let endpoint = Endpoint::new(target, Some(connection), None, config.backoff);
        Client::over(endpoint, config)
    }

    /// Connects with `connect`, and connects again with it on the next call
    /// after the connection is lost or the server says goodbye (waiting
    /// [`ClientConfig::backoff`] after each failed attempt). `target` says
    /// in words what it connects to, for stats and errors.
    #[doc(hidden)]
    pub async fn connect_with<F, Fut, R, W>(
        target: impl Into<Arc<str>>,
        connect: F,
        config: ClientConfig,
    ) -> Result<Client, Error>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Established<R, W>, Error>> + Send + 'static,
        R: FrameRead,
        W: FrameWrite,
    {
        let dial = dial_with(connect, &config);
        let first = dial().await?;
        let endpoint = Endpoint::new(target.into(), Some(first), Some(dial), config.backoff);
        Ok(Client::over(endpoint, config))
    }

    fn over(endpoint: Endpoint, config: ClientConfig) -> Client {
        Client {
            shared: Arc::new(Shared {
                config,
                picker: Box::new(Single(Arc::new(endpoint))),
                budget: None,
            }),
            extras: None,
        }
    }

    /// The deadline of calls that do not set their own.
    pub fn default_timeout(&self) -> Duration {
        self.shared.config.timeout
    }

    /// Whether a connection is up and taking calls.
    pub fn is_connected(&self) -> bool {
        self.shared.picker.endpoints().iter().any(|e| e.is_connected())
    }

    /// Whether every connection has ended. A client that reconnects
    /// redials on its next call; one that does not fails every call.
    pub fn is_closed(&self) -> bool {
        self.shared.picker.endpoints().iter().all(|e| e.is_closed())
    }

    /// What the client's calls have seen of each server it talks to.
    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.shared.picker.endpoints().iter().map(|e| e.stats()).collect()
    }

    /// Makes a call and decodes its result as `T`.
    ///
    /// The deadline is `timeout` (or the client's default) from the first
    /// poll, and never later than the deadline of the call the polling
    /// task is serving, if any: a handler's outgoing calls inherit what
    /// remains of its budget. The budget travels with the request, so the
    /// server stops working on the call when the caller stops waiting.
    ///
    /// The future owns everything it needs: it can be stored, moved to
    /// another task, or raced in a `select!` (dropping it cancels the call
    /// on the server).
    pub fn call<Q, T>(
        &self,
        request: Q,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<T, Error>> + 'static
    where
        Q: RequestMessage + 'static,
        T: DeserializeOwned + 'static,
    {
        let start = Start::Caller {
            timeout,
            watch: Watch::Undecided,
        };
        self.clone().unary(request, start, decoded)
    }

    /// A call returning one value, in a span of its own, timed and recorded.
    async fn call_watched<Q, T, D>(self, request: Q, timeout: Option<Duration>, decode: D) -> Result<T, Error>
    where
        Q: RequestMessage + 'static,
        D: FnOnce(&Client, &'static str, Payload) -> Result<T, Error>,
    {
        let method = request.method();
        let (span, trace) = observe::client_span(method);
        let started = Instant::now();
        let start = Start::Caller {
            timeout,
            watch: Watch::Watched(trace),
        };
        let call = self.unary(request, start, decode);
        let result = observe::in_span(span.clone(), call).await;
        observe::client_call(&span, method, outcome(&result), started.elapsed());
        result
    }

    /// Makes a call whose answer is a stream (and which may send one too:
    /// the request's stream argument, taken out of it here).
    ///
    /// The call starts when the stream is first polled; errors, from
    /// connecting to the deadline passing, arrive as its last item.
    /// Streaming calls are never retried: their input is consumed as it is
    /// sent.
    pub fn call_stream<Q, T>(&self, mut request: Q, timeout: Option<Duration>) -> Streaming<T>
    where
        Q: RequestMessage + Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let deadline = match self.deadline(timeout) {
            Ok(deadline) => deadline,
            Err(err) => return Streaming::failed(err),
        };
        let input = request.take_input();
        let callee = Callee::of(&request);
        let method = callee.name;
        let args = match encoded_args(&request) {
            Ok(args) => args,
            Err(err) => return Streaming::failed(err),
        };
        let client = self.clone();
        let (span, trace) = observe::client_span(method);
        let opening = async move {
            client
                .open(callee, args, deadline.at, input, trace.as_deref())
                .await
        };
        let opening = observe::in_span(span, opening).boxed();
        let max_frame_len = self.shared.config.max_frame_len;
        Streaming::from_results(ClientStream::new(
            opening,
            deadline.at,
            deadline.budget,
            callee,
            max_frame_len,
        ))
    }

    /// Makes a call that sends a stream (the request's stream argument) and
    /// gets one value back.
    pub fn call_with_input<Q, T>(
        &self,
        mut request: Q,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'static
    where
        Q: RequestMessage + Send + 'static,
        T: DeserializeOwned,
    {
        let client = self.clone();
        let input = request.take_input();
        let callee = Callee::of(&request);
        let method = callee.name;
        let args = encoded_args(&request);
        drop(request);
        let (span, trace) = observe::client_span(method);
        let recorded = span.clone();
        let call = async move {
            let deadline = client.deadline(timeout)?;
            let args = args?;
            let max_frame_len = client.shared.config.max_frame_len;
            let answer = async {
                let mut call = client
                    .open(callee, args, deadline.at, input, trace.as_deref())
                    .await?;
                match call.next_event().await {
                    Event::Response(payload) => Ok(payload),
                    Event::Failed(err) => {
                        Err(err.into_error(method, callee.descriptor, deadline.budget, max_frame_len))
                    }
                    Event::Lost(err) => Err(err),
                    Event::NotRun => Err(Error::ShuttingDown),
                    Event::Expired => Err(Error::DeadlineExceeded {
                        timeout: deadline.budget,
                    }),
                    Event::Item(_) | Event::End => Err(Error::BadResponse {
                        method: method.to_owned(),
                        reason: "the server answered with a stream where one value was expected".to_owned(),
                    }),
                }
            };
            let payload = tokio::time::timeout_at(deadline.at, answer).await.unwrap_or(Err(
                Error::DeadlineExceeded {
                    timeout: deadline.budget,
                },
            ))?;
            client.decode(method, &Payload::Shared(payload))
        };
        observe::in_span(span, async move {
            let started = Instant::now();
            let result = call.await;
            observe::client_call(&recorded, method, outcome(&result), started.elapsed());
            result
        })
    }

    /// The deadline of a call that asked for `timeout`.
    fn deadline(&self, timeout: Option<Duration>) -> Result<Deadline, Error> {
        let now = Instant::now();
        let timeout = timeout.unwrap_or(self.shared.config.timeout).min(MAX_WIRE_BUDGET);
        let (at, budget) = match Context::current_deadline() {
            Some(inherited) if inherited < now + timeout => {
                (inherited, inherited.saturating_duration_since(now))
            }
            _ => (now + timeout, timeout),
        };
        if budget.is_zero() {
            return Err(Error::DeadlineExceeded { timeout: budget });
        }
        Ok(Deadline { at, budget })
    }

    /// Decodes an answer of `method`.
    fn decode<T: DeserializeOwned>(&self, method: &str, payload: &Payload) -> Result<T, Error> {
        let limits = self.shared.config.decode;
        let decoded = match payload {
            // Too short to hold a blob worth lending the buffer for.
            Payload::Short(short) => codec::decode(short.as_slice(), limits),
            Payload::Shared(bytes) => codec::decode_shared(bytes, limits),
        };
        decoded.map_err(|err| Error::BadResponse {
            method: method.to_owned(),
            reason: explain_decode(&err, "client"),
        })
    }

    /// Opens a streaming call on the current (or a fresh) connection.
    async fn open(
        &self,
        callee: Callee,
        args: Bytes,
        deadline: Instant,
        input: Option<ItemStream>,
        trace: Option<&TraceContext>,
    ) -> Result<StreamCall, Error> {
        let endpoint = loop {
            match self.shared.picker.pick(None) {
                Some(endpoint) => break endpoint,
                None => {
                    let budget = deadline.saturating_duration_since(Instant::now());
                    self.await_endpoints(Deadline { at: deadline, budget }).await?;
                }
            }
        };
        let balanced = self.shared.picker.balanced();
        let connection = endpoint.connection(deadline).await.inspect_err(|err| {
            if balanced && !matches!(err, Error::Unreachable { .. }) {
                endpoint.failed();
                self.shared.picker.failed(&endpoint);
            }
        })?;
        let metadata = self.outgoing(callee.name, trace)?;
        match connection.open(callee, &args, metadata.as_deref(), deadline, input)? {
            Ok(call) => Ok(call),
            Err(Reply::NotRun) => Err(Error::ShuttingDown),
            Err(Reply::Unsent(err) | Reply::Lost(err)) => Err(*err),
            Err(Reply::Response(_) | Reply::Failed(_) | Reply::Expired) => {
                Err(Error::disconnected("the connection closed"))
            }
        }
    }

    /// The error a server's error frame means for the caller of `method`
    /// (whose `descriptor` explains a refusal for another shape).
    fn wire_error(
        &self,
        err: WireError,
        method: &str,
        descriptor: Option<&MethodDescriptor>,
        deadline: Deadline,
    ) -> Error {
        err.into_error(
            method,
            descriptor,
            deadline.budget,
            self.shared.config.max_frame_len,
        )
    }
}

/// Decodes `payload`, the answer to `client`'s call of `method`, as a
/// `T`: how a caller's call ends.
fn decoded<T: DeserializeOwned>(client: &Client, method: &'static str, payload: Payload) -> Result<T, Error> {
    client.decode(method, &payload)
}

/// How a client call ended, for its span and metrics. (A method's own
/// `Err(e)` arrives inside `Ok`, so it counts as `ok` here; the server's
/// metrics tell it apart.)
fn outcome<T>(result: &Result<T, Error>) -> CallOutcome {
    match result {
        Ok(_) => CallOutcome::Ok,
        Err(Error::DeadlineExceeded { .. }) => CallOutcome::DeadlineExceeded,
        Err(Error::HandlerPanicked { .. }) => CallOutcome::Panicked,
        Err(_) => CallOutcome::Failed,
    }
}

/// The method a call is for: its wire name, and its descriptor when the
/// request knows it (for its fingerprint and the fixed part of its head,
/// and to explain a refusal).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Callee {
    pub(crate) name: &'static str,
    pub(crate) descriptor: Option<&'static MethodDescriptor>,
}

impl Callee {
    pub(crate) fn of<Q: RequestMessage + ?Sized>(request: &Q) -> Callee {
        let descriptor = request.descriptor();
        let name = match descriptor {
            Some(descriptor) if request.descriptor_names_method() => descriptor.full_name,
            _ => request.method(),
        };
        Callee { name, descriptor }
    }

    /// What its request carries to be checked against the server's shape.
    pub(crate) fn fingerprint(self) -> Option<crate::compat::Fingerprint> {
        self.descriptor.and_then(MethodDescriptor::wire_fingerprint)
    }

    /// Its descriptor, if it has one and names the method the request
    /// does (a request written by hand may say otherwise): the one whose
    /// request head is made once.
    #[inline]
    pub(crate) fn described(self) -> Option<&'static MethodDescriptor> {
        let descriptor = self.descriptor?;
        let (ours, theirs) = (descriptor.full_name, self.name);
        // Generated requests name the descriptor's own string (`of`).
        let same = std::ptr::eq(ours, theirs) || ours == theirs;
        same.then_some(descriptor)
    }
}

/// Whether a call is watched (in a span, timed, recorded), and the trace
/// it continues.
enum Watch {
    /// Decided on its first poll, in the task that polls it (which may
    /// serve a traced call).
    Undecided,
    /// Watched, continuing this trace if any.
    Watched(Option<Box<TraceContext>>),
}

/// When a call's caller stops waiting, and the budget that leaves.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    /// The call's whole budget, which errors report.
    budget: Duration,
}

/// A request's arguments, encoded ahead of time: streaming calls send them
/// later, from a future that must not hold a borrow of the request.
fn encoded_args<Q: RequestMessage + ?Sized>(request: &Q) -> Result<Bytes, Error> {
    let mut args = bytes::BytesMut::new();
    request.encode_args(&mut args)?;
    Ok(args.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of two numbers, as the macro would make it.
    struct Add(u64, u64);

    impl RequestMessage for Add {
        fn method(&self) -> &'static str {
            "add"
        }

        fn encode_args(&self, out: &mut bytes::BytesMut) -> Result<(), Error> {
            out.extend_from_slice(&self.0.to_le_bytes());
            out.extend_from_slice(&self.1.to_le_bytes());
            Ok(())
        }
    }

    #[test]
    fn a_calls_future_stays_small() {
        // A client with many connections touches each call's future cold,
        // line by line. At 760 bytes (the benchmark's request, a release
        // build; an `async fn` keeps a copy of its arguments, and the rare
        // waits were inline), a client with 1 000 connections missed the
        // cache on about 7 lines more a call than at 376 (callgrind's
        // model, 2 MiB last level).
        let endpoint = Endpoint::new("test".into(), None, None, Backoff::default());
        let client = Client::over(endpoint, ClientConfig::default());
        let call = client.call::<_, u64>(Add(1, 2), None);
        let size = std::mem::size_of_val(&call);
        println!("a call's future: {size} bytes");
        assert!(
            size <= 512,
            "a call's future takes {size} bytes, over 512 (296 in a debug build with rustc 1.95): \
             did an `async fn`, or a wait held inline, come back on the call path? \
             `-Zprint-type-sizes` on nightly shows the layout"
        );
    }
}
