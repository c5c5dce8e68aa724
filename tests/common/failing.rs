//! A tracing subscriber that fails on purpose: a panic in a call that is
//! not its handler's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where [`Fails`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailsAt {
    /// As a server call's span is made.
    ServerSpan,
    /// The second time a server call's span is entered: in the call's
    /// second poll, in the task it got for waiting.
    SecondEntry,
    /// At the event a server call's end makes.
    CallEnd,
}

/// A subscriber that panics where [`FailsAt`] says, and counts the times.
#[derive(Debug, Clone)]
pub struct Fails {
    at: FailsAt,
    /// The times it failed.
    pub failed: Arc<AtomicUsize>,
    /// The times a server call's span was entered.
    entered: Arc<AtomicUsize>,
}

/// The id this subscriber gives server calls' spans.
const SERVER_SPAN: u64 = 1;

impl Fails {
    pub fn at(at: FailsAt) -> Fails {
        Fails {
            at,
            failed: Arc::default(),
            entered: Arc::default(),
        }
    }

    fn fail(&self, now: FailsAt) {
        if now == self.at {
            self.failed.fetch_add(1, Ordering::SeqCst);
            panic!("the subscriber failed");
        }
    }
}

impl tracing::Subscriber for Fails {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        if span.metadata().name() != "rpc.server" {
            return tracing::span::Id::from_u64(SERVER_SPAN + 1);
        }
        self.fail(FailsAt::ServerSpan);
        tracing::span::Id::from_u64(SERVER_SPAN)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        if metadata.target() == "rpc_core::server::call" && *metadata.level() == tracing::Level::DEBUG {
            self.fail(FailsAt::CallEnd);
        }
    }

    fn enter(&self, span: &tracing::span::Id) {
        if span.into_u64() == SERVER_SPAN && self.entered.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
            self.fail(FailsAt::SecondEntry);
        }
    }

    fn exit(&self, _: &tracing::span::Id) {}
}
