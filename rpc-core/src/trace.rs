//! [`TraceContext`]: a call's place in a distributed trace, carried in the
//! `traceparent` and `tracestate` metadata as W3C Trace Context says
//! (<https://www.w3.org/TR/trace-context/>), so a server's span is the child
//! of its caller's and a chain of calls is one trace.
//!
//! A trace starts only where someone looks: a client call starts one when
//! a subscriber listens to `rpc` spans, and a server continues whatever
//! `traceparent` arrives. Without either, nothing is generated or sent.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use crate::metadata::Metadata;

/// The metadata key of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// The metadata key of the W3C trace state (vendor data, passed through).
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on; a longer one is dropped.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A call's place in a trace: the trace, this call's span, and the span
/// that called it.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    parent_id: Option<u64>,
    flags: u8,
    state: Option<Arc<str>>,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

impl TraceContext {
    /// A new trace, with this call as its root span (sampled).
    pub fn root() -> TraceContext {
        TraceContext {
            trace_id: (u128::from(random()) << 64) | u128::from(random()),
            span_id: random(),
            parent_id: None,
            flags: 1,
            state: None,
        }
    }

    /// A span of this trace whose parent is this one: what a call made
    /// under this one carries.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random(),
            parent_id: Some(self.span_id),
            flags: self.flags,
            state: self.state.clone(),
        }
    }

    /// The trace a caller's metadata says this call belongs to: a child of
    /// its `traceparent`, if that is valid.
    pub fn from_metadata(metadata: &Metadata) -> Option<TraceContext> {
        let (trace_id, parent, flags) = parse(metadata.get_str(TRACEPARENT)?)?;
        Some(TraceContext {
            trace_id,
            span_id: random(),
            parent_id: Some(parent),
            flags,
            // Passed on to every call the handler makes, so bounded: the
            // specification lets a receiver drop what is over 512 bytes.
            state: metadata
                .get_str(TRACESTATE)
                .filter(|state| state.len() <= MAX_TRACESTATE_LEN)
                .map(Arc::from),
        })
    }

    /// A trace context from its parts, as another tracing system numbers
    /// them: the trace, this span, the flags (`1`: sampled).
    pub fn from_parts(trace_id: u128, span_id: u64, flags: u8) -> TraceContext {
        TraceContext {
            trace_id,
            span_id,
            parent_id: None,
            flags,
            state: None,
        }
    }

    /// The trace id, as a number.
    pub fn trace_raw(&self) -> u128 {
        self.trace_id
    }

    /// This span's id, as a number.
    pub fn span_raw(&self) -> u64 {
        self.span_id
    }

    /// The calling span's id, as a number, if the trace came from a caller.
    pub fn parent_raw(&self) -> Option<u64> {
        self.parent_id
    }

    /// The trace flags (`1`: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The trace id, as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// This span's id, as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The calling span's id, if the trace came from a caller.
    pub fn parent_id(&self) -> Option<String> {
        self.parent_id.map(|id| format!("{id:016x}"))
    }

    /// The `traceparent` value naming this span:
    /// `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// `metadata`, with this span as the trace parent of the call it goes
    /// with (unless the caller set its own).
    pub fn inject(&self, metadata: &mut Metadata) {
        if metadata.get(TRACEPARENT).is_none() {
            let _ = metadata.insert(TRACEPARENT, self.traceparent());
            if let Some(state) = &self.state {
                let _ = metadata.insert(TRACESTATE, &**state);
            }
        }
    }
}

/// Reads `00-<32 hex>-<16 hex>-<2 hex>` (later versions' extra fields are
/// ignored, as the specification asks); all-zero ids are invalid.
fn parse(value: &str) -> Option<(u128, u64, u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
    let span = u64::from_str_radix(span, 16).ok().filter(|id| *id != 0)?;
    Some((trace, span, u8::from_str_radix(flags, 16).ok()?))
}

/// A random id: not for secrets, only unlikely to repeat. Each thread
/// hashes a counter with its own randomly keyed hasher.
fn random() -> u64 {
    thread_local! {
        static STATE: (RandomState, Cell<u64>) = (RandomState::new(), Cell::new(0));
    }
    STATE.with(|(keys, counter)| {
        let n = counter.get().wrapping_add(1);
        counter.set(n);
        let mut hasher = keys.build_hasher();
        hasher.write_u64(n);
        // Zero is an invalid id.
        hasher.finish().max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_ignored() {
        let root = TraceContext::root();
        let mut metadata = Metadata::new();
        root.inject(&mut metadata);
        let child = TraceContext::from_metadata(&metadata).unwrap();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_eq!(child.parent_id(), Some(root.span_id()));
        assert_ne!(child.span_id(), root.span_id());
        assert_eq!(root.traceparent().len(), 55);

        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse(example),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1))
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }
}
