//! The client: any number of concurrent calls over one connection, with
//! deadlines, cancellation, a cap on calls in flight, and reconnection.
//!
//! A call takes a place under the in-flight cap, finds (or redials) the
//! live connection, registers a waiter under a fresh request id, queues its
//! frame for the connection's writer task and waits. The reader task hands
//! each answer to the waiter with its id, in whatever order answers come.
//! When the connection ends, every waiter is failed at once.

mod backoff;
mod link;
mod stream;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::Shared;
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

pub use backoff::Backoff;
use link::{Event, Link, OpenCall, Reply};
use stream::ClientStream;

use crate::context::Context;
use crate::error::Error;
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use crate::payload::{self, MAX_WIRE_BUDGET};
use crate::service::{BoxFuture, RequestMessage};
use crate::streaming::Streaming;
use crate::transport::{Connection, FrameRead, FrameWrite};

/// How long a call may take when neither the client nor the call sets a
/// timeout: long enough for any ordinary call, short enough that a lost
/// server never hangs a caller for good.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls one client may have in flight before further callers wait for a
/// place: plenty for a busy service, and a bound on what a client queues.
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
    /// Calls in flight at once; more callers wait (within their deadline).
    /// Default: [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Delays between reconnect attempts, for clients that can redial.
    pub backoff: Backoff,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: DEFAULT_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            backoff: Backoff::default(),
        }
    }
}

/// Opens a fresh connection, for clients that reconnect.
type Dial = Arc<dyn Fn() -> BoxFuture<Result<Link, Error>> + Send + Sync>;

/// A reconnect attempt under way, which every caller that needs a
/// connection waits on.
type Dialing = Shared<BoxFuture<Result<Arc<Link>, Error>>>;

/// An untyped client: what generated `FooClient`s wrap.
///
/// Cloning is cheap (an `Arc`) and every clone shares the connection. The
/// connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    state: Mutex<LinkState>,
    dial: Option<Dial>,
    /// Whether `LinkState::failures` is nonzero, readable without the lock:
    /// every answered call checks it, and it is almost always false.
    failing: AtomicBool,
}

#[derive(Default)]
struct LinkState {
    link: Option<Arc<Link>>,
    /// Connection attempts that failed (or connections that died before
    /// serving a call) since a connection last served one.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<Error>,
    dialing: Option<Dialing>,
    /// Whether the current link came from a redial (not the first connect).
    redialed: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.shared.config)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.shared.dial.is_some())
            .finish()
    }
}

impl Client {
    /// A client over an established connection, which does not reconnect
    /// once that connection ends.
    ///
    /// Spawns the connection's reader and writer tasks, so it must be called
    /// inside a tokio runtime.
    pub fn new<R: FrameRead, W: FrameWrite>(conn: Connection<R, W>, config: ClientConfig) -> Client {
        let link = Link::start(conn, config.max_in_flight);
        Client::build(Some(link), None, config)
    }

    /// Connects with `connect`, and connects again with it on the next call
    /// after the connection is lost or the server says goodbye (waiting
    /// [`ClientConfig::backoff`] after each failed attempt).
    pub async fn connect_with<F, Fut, R, W>(connect: F, config: ClientConfig) -> Result<Client, Error>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Connection<R, W>, Error>> + Send + 'static,
        R: FrameRead,
        W: FrameWrite,
    {
        let max_in_flight = config.max_in_flight;
        let dial: Dial = Arc::new(move || {
            let connecting = connect();
            Box::pin(async move { connecting.await.map(|conn| Link::start(conn, max_in_flight)) })
        });
        let first = dial().await?;
        Ok(Client::build(Some(first), Some(dial), config))
    }

    fn build(link: Option<Link>, dial: Option<Dial>, config: ClientConfig) -> Client {
        Client {
            shared: Arc::new(Inner {
                config,
                state: Mutex::new(LinkState {
                    link: link.map(Arc::new),
                    ..LinkState::default()
                }),
                dial,
                failing: AtomicBool::new(false),
            }),
        }
    }

    /// The deadline of calls that do not set their own.
    pub fn default_timeout(&self) -> Duration {
        self.shared.config.timeout
    }

    /// Whether the current connection is up and taking calls.
    pub fn is_connected(&self) -> bool {
        self.shared
            .state()
            .link
            .as_ref()
            .is_some_and(|link| link.is_usable())
    }

    /// Whether the current connection has ended. A client that reconnects
    /// redials on its next call; one that does not fails every call.
    pub fn is_closed(&self) -> bool {
        self.shared
            .state()
            .link
            .as_ref()
            .is_none_or(|link| link.is_closed())
    }

    /// Makes a call and decodes its result as `T`.
    ///
    /// The deadline is `timeout` (or the client's default) from now, and
    /// never later than the deadline of the call this task is serving, if
    /// any: a handler's outgoing calls inherit what remains of its budget.
    /// The budget travels with the request, so the server stops working on
    /// the call when the caller stops waiting.
    pub async fn call<Q, T>(&self, request: &Q, timeout: Option<Duration>) -> Result<T, Error>
    where
        Q: RequestMessage + ?Sized,
        T: DeserializeOwned,
    {
        let (deadline, budget) = self.deadline(timeout)?;
        let method = request.method();
        let payload = self.call_until(request, deadline, budget).await?;
        payload::decode_shared(&payload).map_err(|err| Error::BadResponse {
            method: method.to_owned(),
            reason: err.to_string(),
        })
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
        let (deadline, budget) = match self.deadline(timeout) {
            Ok(deadline) => deadline,
            Err(err) => return Streaming::failed(err),
        };
        let input = request.take_input();
        let method = request.method();
        let args = match encoded_args(&request) {
            Ok(args) => args,
            Err(err) => return Streaming::failed(err),
        };
        let client = self.clone();
        let opening = async move { client.open(method, args, deadline, input).await }.boxed();
        let max_frame_len = self.shared.config.max_frame_len;
        Streaming::from_results(ClientStream::new(
            opening,
            deadline,
            budget,
            method,
            max_frame_len,
        ))
    }

    /// Makes a call that sends a stream (the request's stream argument) and
    /// gets one value back.
    pub async fn call_with_input<Q, T>(&self, mut request: Q, timeout: Option<Duration>) -> Result<T, Error>
    where
        Q: RequestMessage + Send + 'static,
        T: DeserializeOwned,
    {
        let (deadline, budget) = self.deadline(timeout)?;
        let input = request.take_input();
        let method = request.method();
        let args = encoded_args(&request)?;
        drop(request);
        let answer = async {
            let mut call = self.open(method, args, deadline, input).await?;
            match call.next_event().await {
                Event::Response(payload) => Ok(payload),
                Event::Failed(err) => Err(err.into_error(method, budget, self.shared.config.max_frame_len)),
                Event::Lost(err) => Err(err),
                Event::NotRun => Err(Error::ShuttingDown),
                Event::Item(_) | Event::End => Err(Error::BadResponse {
                    method: method.to_owned(),
                    reason: "the server answered with a stream where one value was expected".to_owned(),
                }),
            }
        };
        let payload = tokio::time::timeout_at(deadline, answer)
            .await
            .unwrap_or(Err(Error::DeadlineExceeded { timeout: budget }))?;
        payload::decode_shared(&payload).map_err(|err| Error::BadResponse {
            method: method.to_owned(),
            reason: err.to_string(),
        })
    }

    /// The deadline of a call that asked for `timeout`, and its budget.
    fn deadline(&self, timeout: Option<Duration>) -> Result<(Instant, Duration), Error> {
        let now = Instant::now();
        let timeout = timeout.unwrap_or(self.shared.config.timeout).min(MAX_WIRE_BUDGET);
        let mut deadline = now + timeout;
        if let Some(inherited) = Context::current_deadline() {
            deadline = deadline.min(inherited);
        }
        let budget = deadline.saturating_duration_since(now);
        if budget.is_zero() {
            return Err(Error::DeadlineExceeded { timeout: budget });
        }
        Ok((deadline, budget))
    }

    /// Opens a streaming call on the current (or a fresh) connection.
    async fn open(
        &self,
        method: &'static str,
        args: Bytes,
        deadline: Instant,
        input: Option<crate::streaming::ItemStream>,
    ) -> Result<OpenCall, Error> {
        let link = self.link().await?;
        let place = link.place().await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        match link.open(method, &args, remaining, place, input)? {
            Ok(call) => Ok(call),
            Err(Reply::NotRun) => Err(Error::ShuttingDown),
            Err(Reply::Unsent(err) | Reply::Lost(err)) => Err(err),
            Err(Reply::Response(_) | Reply::Failed(_) | Reply::Expired) => {
                Err(Error::disconnected("the connection closed"))
            }
        }
    }

    /// Makes a call, retrying it where that is safe, until `deadline`.
    /// `budget` is the call's whole budget, which errors report.
    ///
    /// Only waiting for a connection or a place arms a timer of its own
    /// (and only if it has to wait); the wait for the answer is under the
    /// connection's deadline sweep.
    async fn call_until<Q>(&self, request: &Q, deadline: Instant, budget: Duration) -> Result<Bytes, Error>
    where
        Q: RequestMessage + ?Sized,
    {
        let expired = || Error::DeadlineExceeded { timeout: budget };
        let mut retried = false;
        loop {
            let (link, place) = match self.ready_now() {
                Some(ready) => ready,
                None => {
                    let ready = async {
                        let link = self.link().await?;
                        let place = link.place().await?;
                        Ok::<_, Error>((link, place))
                    };
                    tokio::time::timeout_at(deadline, ready)
                        .await
                        .map_err(|_| expired())??
                }
            };
            let may_retry = !retried && self.shared.dial.is_some();
            match link.round_trip(request, deadline, &place).await? {
                Reply::Expired => return Err(expired()),
                Reply::Response(payload) => {
                    self.shared.served();
                    return Ok(payload);
                }
                Reply::Failed(err) => {
                    self.shared.served();
                    let max_frame_len = self.shared.config.max_frame_len;
                    return Err(err.into_error(request.method(), budget, max_frame_len));
                }
                // Never sent, or never read by the server: running it
                // elsewhere is safe, whatever the method.
                Reply::Unsent(_) | Reply::NotRun if may_retry => retried = true,
                Reply::Unsent(err) => return Err(err),
                Reply::NotRun => return Err(Error::ShuttingDown),
                // It may have run; only an idempotent call may run again.
                Reply::Lost(_) if may_retry && request.idempotent() => retried = true,
                Reply::Lost(err) => return Err(err),
            }
        }
    }

    /// The current connection and a place on it, if both are there without
    /// waiting: the common case, which needs no timer.
    fn ready_now(&self) -> Option<(Arc<Link>, Arc<OwnedSemaphorePermit>)> {
        let link = Arc::clone(
            self.shared
                .state()
                .link
                .as_ref()
                .filter(|link| link.is_usable())?,
        );
        let place = link.try_place()?;
        Some((link, place))
    }

    /// The connection to use: the current one while it takes calls, else a
    /// fresh one if this client can redial.
    ///
    /// The redial runs in a task of its own that every caller waits on, so
    /// a caller whose deadline is shorter than a connect cannot cancel it:
    /// the attempt completes, and counts, whoever is still waiting.
    async fn link(&self) -> Result<Arc<Link>, Error> {
        let dialing = {
            let mut state = self.shared.state();
            if let Some(link) = state.link.as_ref().filter(|link| link.is_usable()) {
                return Ok(Arc::clone(link));
            }
            let Some(dial) = &self.shared.dial else {
                return Err(state.link.as_ref().map_or_else(
                    || Error::disconnected("the client has no connection"),
                    |link| link.unusable_error(),
                ));
            };
            match &state.dialing {
                Some(dialing) => dialing.clone(),
                None => {
                    let now = Instant::now();
                    // A redialled connection that died before answering
                    // anything (a server that accepts and hangs up) is a
                    // failed attempt; the first redial after a loss is not
                    // delayed.
                    if let Some(dead) = state.link.take() {
                        if state.redialed && !dead.served() {
                            let backoff = self.shared.config.backoff;
                            state.failures = state.failures.saturating_add(1);
                            self.shared.failing.store(true, Ordering::Relaxed);
                            state.retry_at = Some(now + backoff.delay(state.failures));
                            state.last_error = Some(dead.unusable_error());
                        }
                    }
                    if let (Some(retry_at), Some(err)) = (state.retry_at, &state.last_error) {
                        if now < retry_at {
                            return Err(err.clone());
                        }
                    }
                    let attempt = dial();
                    let inner = Arc::clone(&self.shared);
                    let task = tokio::spawn(async move {
                        let result = attempt.await.map(Arc::new);
                        inner.dialed(&result);
                        result
                    });
                    let dialing: Dialing = async move {
                        task.await.unwrap_or_else(|err| {
                            Err(Error::disconnected(format!("reconnecting failed: {err}")))
                        })
                    }
                    .boxed()
                    .shared();
                    state.dialing = Some(dialing.clone());
                    dialing
                }
            }
        };
        dialing.await
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        // Updates under this lock are single assignments: poison is harmless.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the outcome of a redial.
    fn dialed(&self, result: &Result<Arc<Link>, Error>) {
        let mut state = self.state();
        state.dialing = None;
        match result {
            Ok(link) => {
                state.link = Some(Arc::clone(link));
                state.redialed = true;
                state.retry_at = None;
                state.last_error = None;
            }
            Err(err) => {
                state.failures = state.failures.saturating_add(1);
                self.failing.store(true, Ordering::Relaxed);
                state.retry_at = Some(Instant::now() + self.config.backoff.delay(state.failures));
                state.last_error = Some(err.clone());
            }
        }
    }

    /// A call was answered: the connection works, so the backoff starts
    /// over. Cheap when there is nothing to reset.
    fn served(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            self.state().failures = 0;
        }
    }
}

/// A request's arguments, encoded ahead of time: streaming calls send them
/// later, from a future that must not hold a borrow of the request.
fn encoded_args<Q: RequestMessage + ?Sized>(request: &Q) -> Result<Bytes, Error> {
    let mut args = bytes::BytesMut::new();
    request.encode_args(&mut args)?;
    Ok(args.freeze())
}
