//! [`Endpoint`]: one logical connection to one server: the live
//! connection, redialling it with backoff when it is lost, and what the
//! calls through it have seen (latency, failures).

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::Shared;
use tokio::time::Instant;

use crate::client::connection::Connection;
use crate::client::{Backoff, ClientConfig};
use crate::error::Error;
use crate::service::BoxFuture;
use crate::transport::{Established, FrameRead, FrameWrite};

/// Opens a fresh connection, for endpoints that redial.
pub(crate) type Dial = Arc<dyn Fn() -> BoxFuture<Result<Connection, Error>> + Send + Sync>;

/// A redial under way, which every caller that needs a connection waits on.
type Dialing = Shared<BoxFuture<Result<Arc<Connection>, Error>>>;

/// What a caller that needs a connection does next.
enum Next {
    /// Wait for the redial under way.
    Join(Dialing),
    /// Wait until the next attempt is due, then look again.
    Wait(Instant),
}

/// One server, as a client sees it.
pub(crate) struct Endpoint {
    /// What it dials, in words: `127.0.0.1:7000`, `unix:/run/app.sock`.
    target: Arc<str>,
    dial: Option<Dial>,
    backoff: Backoff,
    state: Mutex<State>,
    /// Whether `State::failures` is nonzero, readable without the lock:
    /// every answered call checks it, and it is almost always false.
    failing: AtomicBool,
    /// Calls that failed for a reason of the network or the server.
    failures: AtomicU64,
    /// Recent round-trip time, as a peak-EWMA (Finagle's): a sample above
    /// the estimate replaces it at once, lower ones pull it down with a
    /// decay of [`DECAY`]. In nanoseconds, 0 until the first sample; of
    /// one call in [`SAMPLE_ONE_IN`]: timing every call would cost each two
    /// clock reads, and every caller writing the same line on every answer
    /// would cost a busy client more than the estimate is worth.
    latency_ns: AtomicU64,
    /// When `latency_ns` was last set, in nanoseconds since [`epoch`].
    latency_at: AtomicU64,
    /// Calls a balancer has sent here that have not ended.
    pending: AtomicUsize,
    /// When the next connection attempt is due after failed ones, in
    /// nanoseconds since [`epoch`]; 0 when none failed. A balancer skips
    /// the endpoint until then.
    retry_at: AtomicU64,
    /// Removed from its client's set: it takes no new calls, and its
    /// connection closes once the calls on it have ended.
    removed: AtomicBool,
    /// A connection attempt is under way. A balancer sends no more calls
    /// to wait on it while other endpoints take them: the one call that
    /// started it probes the server.
    dialing: AtomicBool,
}

#[derive(Default)]
struct State {
    connection: Option<Arc<Connection>>,
    /// Calls sent on the connections before the current one.
    sent_before: u64,
    /// Connection attempts that failed (or connections that died before
    /// serving a call) since a connection last served one.
    failures: u32,
    /// When the last failed attempt ended, why, and when the next is due.
    last_failure: Option<(Instant, Error)>,
    retry_at: Option<Instant>,
    dialing: Option<Dialing>,
    /// Whether the current connection came from a redial.
    redialed: bool,
}

/// What a client's calls have seen of one server, from
/// [`Client::endpoints`](crate::Client::endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// What the endpoint dials, in words (`127.0.0.1:7000`).
    pub target: String,
    /// Whether its connection is up and taking calls.
    pub connected: bool,
    /// Calls in flight on it now.
    pub in_flight: usize,
    /// Calls whose requests wait on the client for a place under its
    /// connection's cap on calls in flight
    /// ([`ClientConfig::max_in_flight`](crate::client::ClientConfig::max_in_flight),
    /// or one fewer than the server runs and queues, if smaller).
    pub queued: usize,
    /// Calls sent through it, in all.
    pub calls: u64,
    /// Calls that failed for a reason of the network or the server: lost,
    /// never sent, refused.
    pub failures: u64,
    /// Recent round-trip time of its calls, once it has answered one: a
    /// peak-EWMA (a slower answer raises it at once; it falls with faster
    /// ones and with time, over 10 s), as a balancer sees it now.
    pub latency: Option<Duration>,
    /// Whether it takes calls, and if not, why.
    pub state: EndpointState,
}

/// Whether an endpoint takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointState {
    /// Connected and taking calls.
    Ready,
    /// Not connected yet, or its connection was closed by a goodbye or
    /// lost: the next call to it connects.
    Idle,
    /// Connecting failed: calls go elsewhere until the next attempt is
    /// due, `retry_in` from now.
    Ejected {
        /// Time until the next connection attempt.
        retry_in: Duration,
    },
    /// Connecting now.
    Connecting,
}

/// The time constant of the latency estimate's decay, Finagle's default.
pub(crate) const DECAY: Duration = Duration::from_secs(10);

/// The instant every endpoint's timestamps count from, so they fit in an
/// atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at` (at least 1: 0 means unset).
fn since_epoch(at: Instant) -> u64 {
    nanos(at.saturating_duration_since(epoch())).max(1)
}

/// A duration in whole nanoseconds, saturating.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.target)
            .field("redials", &self.dial.is_some())
            .finish()
    }
}

/// One call in this many (on each thread) is timed for the latency
/// estimate of a client of one server (a balancer times every call). At
/// one in 8, the two clock readings and the estimate's update cost a busy
/// client 47 instructions a call on average under callgrind (1.1 %); one
/// in 32 still times the first call on each thread, and a busy client
/// thousands of calls a second.
const SAMPLE_ONE_IN: u32 = 32;

thread_local! {
    /// Calls made on this thread, for choosing which to time.
    static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether the call about to be made should be timed. A call from a
/// thread that makes few is timed at least every [`SAMPLE_ONE_IN`] calls.
pub(crate) fn sample_due() -> bool {
    CALLS.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % SAMPLE_ONE_IN == 1
    })
}

impl Endpoint {
    /// An endpoint over `first` (if connected already) that redials with
    /// `dial` (if it can) after waiting `backoff` between failed attempts.
    pub(crate) fn new(
        target: Arc<str>,
        first: Option<Connection>,
        dial: Option<Dial>,
        backoff: Backoff,
    ) -> Endpoint {
        Endpoint {
            target,
            dial,
            backoff,
            state: Mutex::new(State {
                connection: first.map(Arc::new),
                ..State::default()
            }),
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            latency_ns: AtomicU64::new(0),
            latency_at: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            retry_at: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            dialing: AtomicBool::new(false),
        }
    }

    /// What it dials, in words.
    pub(crate) fn target(&self) -> &Arc<str> {
        &self.target
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Updates under this lock are single assignments: poison is harmless.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this endpoint can redial after losing its connection.
    pub(crate) fn redials(&self) -> bool {
        self.dial.is_some()
    }

    /// Whether the current connection is up and taking calls.
    pub(crate) fn is_connected(&self) -> bool {
        self.state()
            .connection
            .as_ref()
            .is_some_and(|connection| connection.is_usable())
    }

    /// Whether the current connection has ended (or there is none).
    pub(crate) fn is_closed(&self) -> bool {
        self.state()
            .connection
            .as_ref()
            .is_none_or(|connection| connection.is_closed())
    }

    /// The current connection, if it takes calls: the common case, which
    /// needs no timer.
    pub(crate) fn ready_now(&self) -> Option<Arc<Connection>> {
        self.state()
            .connection
            .as_ref()
            .filter(|connection| connection.is_usable())
            .map(Arc::clone)
    }

    /// The connection to use: the current one while it takes calls, else a
    /// fresh one if this endpoint can redial.
    ///
    /// While the endpoint waits between failed attempts, a caller whose
    /// `deadline` leaves room waits for the next attempt; one whose
    /// deadline comes first fails at once, with an error that says when
    /// the last attempt failed and when the next is due. Each caller gets
    /// at most that one attempt: its failure is the caller's error.
    ///
    /// The redial runs in a task of its own that every caller waits on, so
    /// a caller whose deadline is shorter than a connect cannot cancel it:
    /// the attempt completes, and counts, whoever is still waiting.
    pub(crate) async fn connection(self: &Arc<Self>, deadline: Instant) -> Result<Arc<Connection>, Error> {
        loop {
            let next = {
                let mut state = self.state();
                if let Some(connection) = state.connection.as_ref().filter(|c| c.is_usable()) {
                    return Ok(Arc::clone(connection));
                }
                let Some(dial) = &self.dial else {
                    return Err(state.connection.as_ref().map_or_else(
                        || Error::disconnected("the client has no connection"),
                        |connection| connection.unusable_error(),
                    ));
                };
                match &state.dialing {
                    Some(dialing) => Next::Join(dialing.clone()),
                    // Discovery dropped it: dial it no more (its address
                    // may belong to another service by now). Never sent,
                    // so a balanced call goes elsewhere.
                    None if self.is_removed() => {
                        return Err(Error::disconnected(format!(
                            "{} was removed from the client's servers",
                            self.target
                        )));
                    }
                    None => {
                        let now = Instant::now();
                        self.note_lost(&mut state, now);
                        match state.retry_at.filter(|at| now < *at) {
                            Some(retry_at) if retry_at > deadline => {
                                return Err(self.unreachable(&state, now, retry_at));
                            }
                            Some(retry_at) => Next::Wait(retry_at),
                            None => {
                                let dialing = self.redial(Arc::clone(dial));
                                state.dialing = Some(dialing.clone());
                                self.dialing.store(true, Ordering::Relaxed);
                                Next::Join(dialing)
                            }
                        }
                    }
                }
            };
            match next {
                Next::Join(dialing) => return dialing.await,
                Next::Wait(retry_at) => tokio::time::sleep_until(retry_at).await,
            }
        }
    }

    /// A redialled connection that died before answering anything (a server
    /// that accepts and hangs up) is a failed attempt; the first redial
    /// after a loss is not delayed.
    fn note_lost(&self, state: &mut State, now: Instant) {
        if let Some(dead) = state.connection.take() {
            state.sent_before += dead.sent();
            if state.redialed && !dead.served() {
                state.failures = state.failures.saturating_add(1);
                self.failing.store(true, Ordering::Relaxed);
                let retry_at = now + self.backoff.delay(state.failures);
                self.backing_off(state, retry_at);
                state.last_failure = Some((now, dead.unusable_error()));
            }
        }
    }

    /// The error for a caller that cannot wait for the next attempt.
    fn unreachable(&self, state: &State, now: Instant, retry_at: Instant) -> Error {
        let (failed_at, last_error) = match &state.last_failure {
            Some((at, err)) => (*at, err.clone()),
            None => (now, Error::disconnected("the connection was lost")),
        };
        Error::Unreachable {
            last_error: Arc::new(last_error),
            failed_ago: now.saturating_duration_since(failed_at),
            retry_in: retry_at.saturating_duration_since(now),
        }
    }

    /// Starts a redial in a task of its own and records its outcome.
    fn redial(self: &Arc<Self>, dial: Dial) -> Dialing {
        let attempt = dial();
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = attempt.await.map(Arc::new);
            this.dialled(&result);
            result
        });
        let this = Arc::clone(self);
        async move {
            task.await.unwrap_or_else(|panicked| {
                // The dial itself panicked (a connector's bug): record the
                // failure, or no caller would ever dial again.
                let result = Err(Error::disconnected(format!("reconnecting failed: {panicked}")));
                this.dialled(&result);
                result
            })
        }
        .boxed()
        .shared()
    }

    /// No attempt before `at`.
    fn backing_off(&self, state: &mut State, at: Instant) {
        state.retry_at = Some(at);
        self.retry_at.store(since_epoch(at), Ordering::Relaxed);
    }

    /// Records the outcome of a redial.
    fn dialled(&self, result: &Result<Arc<Connection>, Error>) {
        let mut state = self.state();
        state.dialing = None;
        self.dialing.store(false, Ordering::Relaxed);
        match result {
            Ok(connection) => {
                state.connection = Some(Arc::clone(connection));
                state.redialed = true;
                state.retry_at = None;
                self.retry_at.store(0, Ordering::Relaxed);
                state.last_failure = None;
            }
            Err(err) => {
                let now = Instant::now();
                state.failures = state.failures.saturating_add(1);
                self.failing.store(true, Ordering::Relaxed);
                let retry_at = now + self.backoff.delay(state.failures);
                self.backing_off(&mut state, retry_at);
                state.last_failure = Some((now, err.clone()));
            }
        }
    }

    /// A call was answered: the connection works, so the backoff starts
    /// over. Cheap when there is nothing to reset: a read.
    pub(crate) fn answered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            self.state().failures = 0;
        }
    }

    /// A latency sample: a call sent at `sent_at` was just answered.
    pub(crate) fn sample(&self, sent_at: Instant) {
        let now = Instant::now();
        let sample = nanos(now.saturating_duration_since(sent_at)).max(1);
        let old = self.latency_ns.load(Ordering::Relaxed);
        // A racy update loses a sample now and then; an estimate does not
        // need more.
        let new = if sample >= old {
            sample
        } else {
            let decay = self.decay(now);
            (old as f64 * decay + sample as f64 * (1.0 - decay)) as u64
        };
        self.latency_ns.store(new.max(1), Ordering::Relaxed);
        self.latency_at.store(since_epoch(now), Ordering::Relaxed);
    }

    /// How much of the estimate is left at `now`: `e^(-elapsed / DECAY)`
    /// since it was last set.
    fn decay(&self, now: Instant) -> f64 {
        let at = self.latency_at.load(Ordering::Relaxed);
        let elapsed = since_epoch(now).saturating_sub(at) as f64;
        (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    /// The latency estimate at `now`, decayed since its last sample, in
    /// nanoseconds (0 without one): a balancer's view, in which an
    /// endpoint not called for a while looks faster until tried again.
    pub(crate) fn latency_now(&self, now: Instant) -> f64 {
        let estimate = self.latency_ns.load(Ordering::Relaxed);
        if estimate == 0 {
            return 0.0;
        }
        estimate as f64 * self.decay(now)
    }

    /// Calls a balancer sent here that have not ended.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts a call a balancer sent here until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::Relaxed);
        Pending(Arc::clone(self))
    }

    /// Whether a balancer should send calls here at `now`: not removed,
    /// not connecting (a call is probing it), and not waiting out a
    /// backoff after failed connection attempts.
    pub(crate) fn available(&self, now: Instant) -> bool {
        if self.removed.load(Ordering::Relaxed) || self.dialing.load(Ordering::Relaxed) {
            return false;
        }
        let retry_at = self.retry_at.load(Ordering::Relaxed);
        retry_at == 0 || since_epoch(now) >= retry_at
    }

    /// When its next connection attempt is due, as a number that orders
    /// endpoints (0: none pending).
    pub(crate) fn retry_due(&self) -> u64 {
        self.retry_at.load(Ordering::Relaxed)
    }

    /// Takes it out of its client's set.
    pub(crate) fn remove(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    /// Whether it was taken out of its client's set.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// A call failed for a reason of the network or the server.
    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// What the calls through this endpoint have seen.
    pub(crate) fn stats(&self) -> EndpointStats {
        let (connection, sent_before, retry_at) = {
            let state = self.state();
            (state.connection.clone(), state.sent_before, state.retry_at)
        };
        let now = Instant::now();
        let latency = self.latency_now(now) as u64;
        let connected = connection.as_ref().is_some_and(|c| c.is_usable());
        let state = match retry_at.filter(|at| *at > now) {
            _ if connected => EndpointState::Ready,
            Some(at) => EndpointState::Ejected { retry_in: at - now },
            None if self.dialing.load(Ordering::Relaxed) => EndpointState::Connecting,
            None => EndpointState::Idle,
        };
        EndpointStats {
            target: self.target.to_string(),
            connected,
            state,
            in_flight: connection.as_ref().map_or(0, |c| c.in_flight()),
            queued: connection.as_ref().map_or(0, |c| c.queued()),
            calls: sent_before + connection.as_ref().map_or(0, |c| c.sent()),
            failures: self.failures.load(Ordering::Relaxed),
            latency: (latency > 0).then(|| Duration::from_nanos(latency)),
        }
    }
}

/// A call in progress on an endpoint, for its balancer's count.
pub(crate) struct Pending(Arc<Endpoint>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an endpoint opens connections with `connect`, started with
/// `config`'s limits.
pub(crate) fn dial_with<F, Fut, R, W>(connect: F, config: &ClientConfig) -> Dial
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Established<R, W>, Error>> + Send + 'static,
    R: FrameRead,
    W: FrameWrite,
{
    let (max_in_flight, decode) = (config.max_in_flight, config.decode);
    Arc::new(move || {
        let connecting = connect();
        Box::pin(async move {
            connecting
                .await
                .map(|conn| Connection::start(conn, max_in_flight, decode))
        })
    })
}
