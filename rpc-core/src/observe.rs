//! What every call tells the outside world: one `tracing` span per call on
//! each side, named and fielded after OpenTelemetry's RPC semantic
//! conventions, and metrics through the `metrics` facade.
//!
//! Both cost next to nothing until someone listens: a span is built only
//! when a subscriber enables the `rpc` target at INFO, and metrics are
//! no-ops until the application installs a recorder.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `rpc.server.call.duration` | histogram, seconds | `rpc.service`, `rpc.method`, `rpc.outcome` |
//! | `rpc.client.call.duration` | histogram, seconds | `rpc.service`, `rpc.method`, `rpc.outcome` |
//! | `rpc.server.calls_in_progress` | gauge | |
//! | `rpc.server.connections` | gauge | |
//! | `rpc.server.request.bytes`, `rpc.server.response.bytes` | counters | |
//! | `rpc.server.refused` | counter | `reason` |

use std::time::Duration;

use tracing::Span;
use tracing::field::Empty;

use crate::context::Context;
use crate::error::ErrorCode;
use crate::metadata::Metadata;
use crate::trace::TraceContext;

/// The target of every span and event this module emits.
pub const TARGET: &str = "rpc";

/// How a call ended, as the `rpc.outcome` label and span field say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    if !metadata.is_empty() {
        if let Some(trace) = TraceContext::from_metadata(metadata) {
            return Some(trace);
        }
    }
    tracing::enabled!(target: TARGET, tracing::Level::INFO).then(TraceContext::root)
}

/// The span of a server call.
pub(crate) fn server_span(ctx: &Context, full_name: &'static str) -> Span {
    let (service, method) = split(full_name);
    let span = tracing::info_span!(
        target: TARGET,
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
    }
    span
}

/// The span of a client call, and the trace its request carries: a child
/// of the call this task is serving, if any, or a new trace if someone is
/// listening.
pub(crate) fn client_span(full_name: &'static str) -> (Span, Option<TraceContext>) {
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
    let inherited = Context::current().and_then(|ctx| ctx.trace().map(TraceContext::child));
    let trace = match inherited {
        Some(trace) => Some(trace),
        None if !span.is_disabled() => Some(TraceContext::root()),
        None => None,
    };
    if let (false, Some(trace)) = (span.is_disabled(), &trace) {
        record_trace(&span, trace);
    }
    (span, trace)
}

fn record_trace(span: &Span, trace: &TraceContext) {
    span.record("trace_id", trace.trace_id());
    span.record("span_id", trace.span_id());
    if let Some(parent) = trace.parent_id() {
        span.record("parent_span_id", parent);
    }
}

/// Records how a server call of `full_name` ended, after `elapsed`.
pub(crate) fn server_call(span: &Span, full_name: &'static str, outcome: CallOutcome, elapsed: Duration) {
    span.record("rpc.outcome", outcome.as_str());
    let (service, method) = split(full_name);
    metrics::histogram!(
        "rpc.server.call.duration",
        "rpc.service" => service,
        "rpc.method" => method,
        "rpc.outcome" => outcome.as_str()
    )
    .record(elapsed.as_secs_f64());
}

/// Records how a client call of `full_name` ended, after `elapsed`.
pub(crate) fn client_call(span: &Span, full_name: &'static str, outcome: CallOutcome, elapsed: Duration) {
    span.record("rpc.outcome", outcome.as_str());
    let (service, method) = split(full_name);
    metrics::histogram!(
        "rpc.client.call.duration",
        "rpc.service" => service,
        "rpc.method" => method,
        "rpc.outcome" => outcome.as_str()
    )
    .record(elapsed.as_secs_f64());
}

/// A call refused before it ran, by the code of its answer.
pub(crate) fn refused(code: u8) {
    let reason = match ErrorCode::from_wire(code) {
        Some(ErrorCode::UnknownService | ErrorCode::UnknownMethod) => "unknown_method",
        Some(ErrorCode::BadRequest) => "bad_request",
        Some(ErrorCode::DeadlineExceeded) => "deadline_exceeded",
        Some(ErrorCode::Overloaded) => "overloaded",
        Some(ErrorCode::Interrupted) => "shutting_down",
        _ => "other",
    };
    metrics::counter!("rpc.server.refused", "reason" => reason).increment(1);
}

/// A connection opened (`+1`) or closed (`-1`).
pub(crate) fn connections(change: f64) {
    metrics::gauge!("rpc.server.connections").increment(change);
}

/// A call started (`+1`) or ended (`-1`).
pub(crate) fn calls_in_progress(change: f64) {
    metrics::gauge!("rpc.server.calls_in_progress").increment(change);
}

/// Payload bytes a server received in a request, or sent in an answer.
pub(crate) fn bytes(request: bool, len: usize) {
    let name = if request {
        "rpc.server.request.bytes"
    } else {
        "rpc.server.response.bytes"
    };
    metrics::counter!(name).increment(len as u64);
}
