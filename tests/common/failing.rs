//! Tracing subscribers that fail on purpose: a panic in a call that is
//! not its handler's.

/// A subscriber that fails as a server call's span is made.
pub struct FailsOnServerSpans;

impl tracing::Subscriber for FailsOnServerSpans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        assert_ne!(span.metadata().name(), "rpc.server", "the subscriber failed");
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
