//! What every call tells the outside world: one `tracing` span per call on
//! each side, named and fielded after OpenTelemetry's RPC semantic
//! conventions, and metrics through the `metrics` facade.
//!
//! Both cost next to nothing until someone listens: a span is built only
//! when a subscriber enables the `rpc` target at INFO, and metrics are
//! recorded once [`enable_metrics`] has been called (the `prometheus`
//! feature's installer calls it; call it after installing any other
//! `metrics` recorder). The `metrics` facade cannot tell whether a
//! recorder is installed, and building and timing every call's metrics
//! for nobody cost a tenth of small-call throughput.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `rpc.server.call.duration` | histogram, seconds | `rpc.service`, `rpc.method`, `rpc.outcome` |
//! | `rpc.client.call.duration` | histogram, seconds | `rpc.service`, `rpc.method`, `rpc.outcome` |
//! | `rpc.server.calls_in_progress` | gauge | |
//! | `rpc.server.connections` | gauge | |
//! | `rpc.server.request.bytes`, `rpc.server.response.bytes` | counters | |
//! | `rpc.server.refused` | counter | `reason` |

#[cfg(feature = "opentelemetry")]
mod otel;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tracing::Span;
use tracing::field::Empty;

use crate::context::Context;
use crate::error::ErrorCode;
use crate::metadata::Metadata;
use crate::trace::TraceContext;

/// The target of every span and event this module emits.
pub const TARGET: &str = "rpc";

/// Whether calls record metrics.
static METRICS: AtomicBool = AtomicBool::new(false);

/// Turns on the call metrics, for the `metrics` recorder the application
/// installed (global or local). Until then nothing is measured for them.
pub fn enable_metrics() {
    METRICS.store(true, Ordering::Relaxed);
}

/// Whether [`enable_metrics`] was called.
pub fn metrics_enabled() -> bool {
    METRICS.load(Ordering::Relaxed)
}

/// Whether a call of this task should be observed at all: metrics are on,
/// a subscriber listens to `rpc` spans, or the task serves a traced call
/// (whose trace must travel on).
pub(crate) fn watching() -> bool {
    metrics_enabled() || tracing::enabled!(target: TARGET, tracing::Level::INFO) || Context::in_traced_call()
}

/// How a call ended, as the `rpc.outcome` label and span field say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The call returned a value (`Ok` for a method returning `Result`).
    Ok,
    /// The method returned its own `Err(e)`.
    ApplicationError,
    /// The framework or the handler failed it (`rpc::Error`).
    Failed,
    /// The handler panicked.
    Panicked,
    /// Its deadline passed.
    DeadlineExceeded,
    /// Its caller gave up, or the server's shutdown stopped it.
    Cancelled,
}

impl CallOutcome {
    /// The label: `ok`, `error`, `failed`, `panic`, `deadline_exceeded`,
    /// `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ApplicationError => "error",
            CallOutcome::Failed => "failed",
            CallOutcome::Panicked => "panic",
            CallOutcome::DeadlineExceeded => "deadline_exceeded",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// `Service.method` as `(Service, method)`.
fn split(full_name: &'static str) -> (&'static str, &'static str) {
    full_name.split_once('.').unwrap_or(("", full_name))
}

/// The trace a server call belongs to: the caller's, if its metadata
/// names one, or a new one if someone is listening.
pub(crate) fn server_trace(metadata: &Metadata) -> Option<TraceContext> {
    if !metadata.is_empty()
        && let Some(trace) = TraceContext::from_metadata(metadata)
    {
        return Some(trace);
    }
    tracing::enabled!(target: TARGET, tracing::Level::INFO).then(TraceContext::root)
}

/// Whether a server call is watched: metrics are on, or a subscriber
/// listens to `rpc` spans.
pub(crate) fn server_watched() -> bool {
    metrics_enabled() || tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The span of a server call.
pub(crate) fn server_span(ctx: &Context) -> Span {
    let full_name = ctx.descriptor().map_or("", |method| method.full_name);
    let (service, method) = split(full_name);
    // A root span, whichever task runs the call's first poll: its parent
    // is the remote caller's, set below.
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "rpc.server",
        otel.name = full_name,
        otel.kind = "server",
        rpc.system = "rpc",
        rpc.service = service,
        rpc.method = method,
        rpc.request_id = ctx.request_id(),
        net.peer = %ctx.peer(),
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
        rpc.outcome = Empty,
    );
    if let (false, Some(trace)) = (span.is_disabled(), ctx.trace()) {
        record_trace(&span, trace);
        #[cfg(feature = "opentelemetry")]
        otel::set_remote_parent(&span, trace);
    }
    span
}

/// The span of a client call, and the trace its request carries: a child
/// of the call this task is serving, if any, or a new trace if someone is
/// listening.
pub(crate) fn client_span(full_name: &'static str) -> (Span, Option<Box<TraceContext>>) {
    let (service, method) = split(full_name);
    let span = tracing::info_span!(
        target: TARGET,
        "rpc.client",
        otel.name = full_name,
        otel.kind = "client",
        rpc.system = "rpc",
        rpc.service = service,
        rpc.method = method,
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
        rpc.outcome = Empty,
    );
    // With an OpenTelemetry layer listening, its span's ids travel, so
    // its backend links the server's span to this one.
    #[cfg(feature = "opentelemetry")]
    let exported = if span.is_disabled() {
        None
    } else {
        otel::client_trace(&span).map(Box::new)
    };
    #[cfg(not(feature = "opentelemetry"))]
    let exported = None;
    let trace = match exported.or_else(Context::current_trace_child) {
        Some(trace) => Some(trace),
        None if !span.is_disabled() => Some(Box::new(TraceContext::root())),
        None => None,
    };
    if let (false, Some(trace)) = (span.is_disabled(), &trace) {
        record_trace(&span, trace);
    }
    (span, trace)
}

fn record_trace(span: &Span, trace: &TraceContext) {
    // Displayed as hex where they are formatted, not turned into strings
    // first.
    span.record("trace_id", tracing::field::display(Hex32(trace.trace_raw())));
    span.record("span_id", tracing::field::display(Hex16(trace.span_raw())));
    if let Some(parent) = trace.parent_raw() {
        span.record("parent_span_id", tracing::field::display(Hex16(parent)));
    }
}

/// A trace id as 32 lowercase hex digits.
struct Hex32(u128);

impl std::fmt::Display for Hex32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A span id as 16 lowercase hex digits.
struct Hex16(u64);

impl std::fmt::Display for Hex16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Records how a server call of `full_name` ended, after `elapsed`.
pub(crate) fn server_call(span: &Span, full_name: &'static str, outcome: CallOutcome, elapsed: Duration) {
    if !span.is_disabled() {
        span.record("rpc.outcome", outcome.as_str());
    }
    duration("rpc.server.call.duration", full_name, outcome, elapsed);
}

/// Records how a client call of `full_name` ended, after `elapsed`.
pub(crate) fn client_call(span: &Span, full_name: &'static str, outcome: CallOutcome, elapsed: Duration) {
    if !span.is_disabled() {
        span.record("rpc.outcome", outcome.as_str());
    }
    duration("rpc.client.call.duration", full_name, outcome, elapsed);
}

/// `future`, run inside `span` when someone listens; as it is otherwise,
/// so a call pays nothing for a span nobody sees.
pub(crate) fn in_span<F: std::future::Future>(
    span: Span,
    future: F,
) -> futures::future::Either<F, tracing::instrument::Instrumented<F>> {
    use tracing::Instrument;
    if span.is_disabled() {
        futures::future::Either::Left(future)
    } else {
        futures::future::Either::Right(future.instrument(span))
    }
}

/// Where the metrics come from, for recorders that filter.
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(TARGET, metrics::Level::INFO, Some(module_path!()));

/// Records a call's duration under `name`, labelled with its service,
/// method and outcome.
fn duration(name: &'static str, full_name: &'static str, outcome: CallOutcome, elapsed: Duration) {
    if !metrics_enabled() {
        return;
    }
    let key = key(name, full_name, outcome);
    metrics::with_recorder(|recorder| {
        recorder
            .register_histogram(key, &METADATA)
            .record(elapsed.as_secs_f64());
    });
}

/// The metric key of `name` for a call of `full_name` that ended with
/// `outcome`: made once per metric, method and outcome for the whole
/// process (a key and three labels, leaked: a few hundred bytes per
/// method), then found in a per-thread table. `metrics`' own macros would
/// build the labels and hash the key on every call, recorder or not.
fn key(name: &'static str, full_name: &'static str, outcome: CallOutcome) -> &'static metrics::Key {
    // Names are `'static` strings (of the descriptors, and of this
    // module): their addresses tell them apart.
    type Table = FxHashMap<(usize, usize, CallOutcome), &'static metrics::Key>;
    static SHARED: OnceLock<Mutex<Table>> = OnceLock::new();
    thread_local! {
        static LOCAL: RefCell<Table> = RefCell::new(FxHashMap::default());
    }
    let id = (name.as_ptr() as usize, full_name.as_ptr() as usize, outcome);
    if let Some(key) = LOCAL.with(|local| local.borrow().get(&id).copied()) {
        return key;
    }
    let shared = SHARED.get_or_init(Mutex::default);
    let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
    let key = *shared.entry(id).or_insert_with(|| {
        let (service, method) = split(full_name);
        let labels: &'static [metrics::Label] = Box::leak(Box::new([
            metrics::Label::from_static_parts("rpc.service", service),
            metrics::Label::from_static_parts("rpc.method", method),
            metrics::Label::from_static_parts("rpc.outcome", outcome.as_str()),
        ]));
        Box::leak(Box::new(metrics::Key::from_static_parts(name, labels)))
    });
    drop(shared);
    LOCAL.with(|local| local.borrow_mut().insert(id, key));
    key
}

/// Keys made at compile time: no work per call to build or hash them.
static CONNECTIONS: metrics::Key = metrics::Key::from_static_name("rpc.server.connections");
static CALLS_IN_PROGRESS: metrics::Key = metrics::Key::from_static_name("rpc.server.calls_in_progress");
static REQUEST_BYTES: metrics::Key = metrics::Key::from_static_name("rpc.server.request.bytes");
static RESPONSE_BYTES: metrics::Key = metrics::Key::from_static_name("rpc.server.response.bytes");

/// `rpc.server.refused`, by reason.
macro_rules! refused_key {
    ($reason:literal) => {{
        static LABELS: [metrics::Label; 1] = [metrics::Label::from_static_parts("reason", $reason)];
        static KEY: metrics::Key = metrics::Key::from_static_parts("rpc.server.refused", &LABELS);
        &KEY
    }};
}

/// A call refused before it ran, by the code of its answer.
pub(crate) fn refused(code: u8) {
    if !metrics_enabled() {
        return;
    }
    let key: &'static metrics::Key = match ErrorCode::from_wire(code) {
        Some(ErrorCode::UnknownService | ErrorCode::UnknownMethod) => refused_key!("unknown_method"),
        Some(ErrorCode::BadRequest) => refused_key!("bad_request"),
        Some(ErrorCode::DeadlineExceeded) => refused_key!("deadline_exceeded"),
        Some(ErrorCode::Overloaded) => refused_key!("overloaded"),
        Some(ErrorCode::Interrupted) => refused_key!("shutting_down"),
        _ => refused_key!("other"),
    };
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(1));
}

/// The connections open now. (Set, not incremented: a recorder installed
/// while connections are open must not count their closing only.)
pub(crate) fn connections(now: usize) {
    if !metrics_enabled() {
        return;
    }
    metrics::with_recorder(|recorder| recorder.register_gauge(&CONNECTIONS, &METADATA).set(now as f64));
}

/// The calls in progress now (set, as [`connections`]).
pub(crate) fn calls_in_progress(now: usize) {
    if !metrics_enabled() {
        return;
    }
    metrics::with_recorder(|recorder| {
        recorder
            .register_gauge(&CALLS_IN_PROGRESS, &METADATA)
            .set(now as f64)
    });
}

/// Payload bytes a server received in a request, or sent in an answer.
pub(crate) fn bytes(request: bool, len: usize) {
    if !metrics_enabled() {
        return;
    }
    let key = if request { &REQUEST_BYTES } else { &RESPONSE_BYTES };
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(len as u64));
}
