//! The bridge to OpenTelemetry (feature `opentelemetry`): with a
//! `tracing-opentelemetry` layer in the subscriber, the `rpc` spans are
//! exported, and this makes their ids the ones that travel, so a backend
//! shows a server span as the child of its remote caller's.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::TraceContext;

/// Makes `span`'s OpenTelemetry parent the remote span `trace` names as its
/// parent (the caller's span).
pub(super) fn set_remote_parent(span: &Span, trace: &TraceContext) {
    let Some(parent) = trace.parent_raw() else {
        return;
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(trace.trace_raw().to_be_bytes()),
        SpanId::from_bytes(parent.to_be_bytes()),
        TraceFlags::new(trace.flags()),
        true,
        TraceState::default(),
    );
    // Only fails for a span already started elsewhere; ours is new.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The trace a client call under `span` sends: the OpenTelemetry span's own
/// ids, if the subscriber has an OpenTelemetry layer.
pub(super) fn client_trace(span: &Span) -> Option<TraceContext> {
    let context = span.context();
    let otel = context.span();
    let ids = otel.span_context();
    if !ids.is_valid() {
        return None;
    }
    Some(TraceContext::from_parts(
        u128::from_be_bytes(ids.trace_id().to_bytes()),
        u64::from_be_bytes(ids.span_id().to_bytes()),
        ids.trace_flags().to_u8(),
    ))
}
