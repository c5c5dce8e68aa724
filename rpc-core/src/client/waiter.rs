//! Who waits for a call's answer ([`Waiter`]) in its place in the table
//! ([`Slot`]), what the wait ends with ([`Reply`] for a unary call,
//! [`Event`]s for a stream), and how the end reaches them ([`Ending`],
//! [`Wake`]).

use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::{Error, WireError};
use crate::permit::CallPermit;
use crate::streaming::SendCredit;

/// What a call's wait ends with.
#[derive(Debug)]
pub(super) enum Reply {
    /// The server's result.
    Response(Payload),
    /// The server's error.
    Failed(WireError),
    /// The connection ended after the request left; it may have run.
    /// (Boxed, as `Unsent`'s error is: a reply waits in its call's slot,
    /// and a small slot keeps a table entry within 64 bytes.)
    Lost(Box<Error>),
    /// The request never left this client (the connection had already
    /// ended): sending it elsewhere is safe.
    Unsent(Box<Error>),
    /// The server said goodbye without reading the call: it did not run.
    NotRun,
    /// The call's deadline passed before its answer came (if its request
    /// had left, the server has been told to stop it, unless it is
    /// `no_cancel`).
    Expired,
}

impl From<Result<Payload, WireError>> for Reply {
    fn from(answer: Result<Payload, WireError>) -> Reply {
        match answer {
            Ok(payload) => Reply::Response(payload),
            Err(err) => Reply::Failed(err),
        }
    }
}

/// A server's result as a call's slot keeps it: copied out of the frame
/// it came in when the reader lends it (a short answer behind another in
/// the read buffer: no share in that buffer to count up and down), else a
/// slice of the frame.
#[derive(Debug)]
pub(super) enum Payload {
    Short(Short),
    Shared(Bytes),
}

/// The longest result kept as [`Payload::Short`]: room for a few numbers,
/// while a table entry (id and slot) stays within its 64 bytes.
pub(super) const SHORT_LEN: usize = 22;

/// The bytes of a short result.
#[derive(Debug, Clone, Copy)]
pub(super) struct Short {
    bytes: [u8; SHORT_LEN],
    len: u8,
}

impl Short {
    /// `bytes`, if they are at most [`SHORT_LEN`] long.
    pub(super) fn copy(bytes: &[u8]) -> Option<Short> {
        let mut short = Short {
            bytes: [0; SHORT_LEN],
            len: u8::try_from(bytes.len()).ok()?,
        };
        short.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(short)
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl Payload {
    /// The result as bytes of its own (a short one copied: a stream's or a
    /// middleware's rare way).
    pub(super) fn into_bytes(self) -> Bytes {
        match self {
            Payload::Short(short) => Bytes::copy_from_slice(short.as_slice()),
            Payload::Shared(bytes) => bytes,
        }
    }
}

/// What a streaming call's consumer receives, in order.
#[derive(Debug)]
pub(super) enum Event {
    /// One item of the server's stream.
    Item(Bytes),
    /// The server's stream ended normally.
    End,
    /// The single answer of a method that takes a stream.
    Response(Bytes),
    /// The server failed the call.
    Failed(WireError),
    /// The connection ended; the call may or may not have run.
    Lost(Error),
    /// The server said goodbye without reading the call.
    NotRun,
    /// The call's deadline passed while its request waited for a place on
    /// the connection: it never left.
    Expired,
}

/// Who waits for a call's answer.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A one-answer call: its caller's task (its waker, given when the
    /// call is sent), and when it stops waiting. The answer goes in the table
    /// ([`CallTable::poll_reply`](crate::client::calls::CallTable::poll_reply)): a call costs no channel.
    Unary {
        waker: Option<Waker>,
        deadline: Instant,
        /// `#[rpc(no_cancel)]`: the server runs it to its end whatever the
        /// caller does.
        to_completion: bool,
    },
    /// A streaming call: events in order, and the credit of the stream the
    /// client sends, if it sends one.
    Stream {
        events: mpsc::Sender<Event>,
        credit: Option<Arc<SendCredit>>,
    },
}

impl Waiter {
    /// The call's request has left: the stream the client sends, if it
    /// sends one, may start.
    pub(super) fn left(&self) {
        if let Waiter::Stream {
            credit: Some(credit), ..
        } = self
        {
            credit.open();
        }
    }

    /// Whether a cancel stops the call on the server, and so frees its
    /// place there: not for a unary `#[rpc(no_cancel)]` call, which keeps
    /// its place on the client until its answer comes, or the server
    /// would hold one call more than the client counts
    /// (`connection::places`).
    pub(super) fn cancellable(&self) -> bool {
        !matches!(
            self,
            Waiter::Unary {
                to_completion: true,
                ..
            }
        )
    }

    /// The deadline the connection's sweep enforces; streaming calls keep
    /// their own.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Waiter::Unary { deadline, .. } => Some(*deadline),
            Waiter::Stream { .. } => None,
        }
    }
}

/// A call's entry in its connection's table: waiting for its answer, with
/// its place once its request has left, or, for a unary call, answered
/// until its caller takes the answer (and its place with it, if no
/// request was waiting for the place when the answer came). One map
/// entry from request to answer: a call costs one insert and one removal.
#[derive(Debug)]
pub(super) enum Slot {
    Waiting {
        waiter: Waiter,
        place: Option<CallPermit>,
    },
    Answered {
        reply: Reply,
        place: Option<CallPermit>,
    },
}

impl Slot {
    /// The call's waiter, if it still waits.
    pub(super) fn waiter(&self) -> Option<&Waiter> {
        match self {
            Slot::Waiting { waiter, .. } => Some(waiter),
            Slot::Answered { .. } => None,
        }
    }
}

/// How a call's wait ends, whichever kind of call it is.
pub(super) enum Ending {
    /// The server's final answer.
    Answer(Result<Payload, WireError>),
    /// The connection ended after the request left.
    Lost(Error),
    /// The connection ended while the request waited for a place.
    Unsent(Error),
    /// The server said goodbye without reading the call.
    NotRun,
    /// The call's deadline passed: while it waited for its answer (unary
    /// calls only: a stream keeps its own deadline), or for a place.
    Expired,
}

impl Ending {
    pub(super) fn into_reply(self) -> Reply {
        match self {
            Ending::Answer(answer) => answer.into(),
            Ending::Lost(err) => Reply::Lost(Box::new(err)),
            Ending::Unsent(err) => Reply::Unsent(Box::new(err)),
            Ending::NotRun => Reply::NotRun,
            Ending::Expired => Reply::Expired,
        }
    }

    pub(super) fn into_event(self) -> Event {
        match self {
            Ending::Answer(Ok(payload)) => Event::Response(payload.into_bytes()),
            Ending::Answer(Err(err)) => Event::Failed(err),
            Ending::Lost(err) | Ending::Unsent(err) => Event::Lost(err),
            Ending::NotRun => Event::NotRun,
            Ending::Expired => Event::Expired,
        }
    }
}

/// Who learns that a wait ended, told after the table's lock is let go.
pub(super) enum Wake {
    /// A unary call's caller, whose answer is in the table.
    Caller(Waker),
    /// A stream's consumer, told by an event. Boxed: a stream ends rarely,
    /// and a small `Wake` is cheap to move for every unary call.
    Stream(Box<StreamEnd>),
}

/// The last event of a stream, and the credit of the stream the client
/// sends, to close.
pub(super) struct StreamEnd {
    pub(super) events: mpsc::Sender<Event>,
    pub(super) credit: Option<Arc<SendCredit>>,
    pub(super) event: Event,
}

impl Wake {
    pub(super) fn wake(self) {
        match self {
            Wake::Caller(waker) => waker.wake(),
            Wake::Stream(end) => {
                let StreamEnd {
                    events,
                    credit,
                    event,
                } = *end;
                let _ = events.try_send(event);
                if let Some(credit) = credit {
                    credit.close();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_result_is_kept_whole_and_a_longer_one_is_not() {
        for len in [0, 1, 9, SHORT_LEN] {
            let bytes: Vec<u8> = (0..len).map(|at| at as u8 + 1).collect();
            let short = Short::copy(&bytes).unwrap();
            assert_eq!(short.as_slice(), &bytes[..]);
            assert_eq!(Payload::Short(short).into_bytes(), bytes);
        }
        assert!(Short::copy(&[7; SHORT_LEN + 1]).is_none());
        assert!(Short::copy(&[7; 300]).is_none());
    }

    #[test]
    fn a_calls_entry_in_the_table_stays_small() {
        // Every call touches its slot three times, each time cold with
        // many connections (sent, answered, taken): an entry of the table,
        // key and slot, of 64 bytes at most, a cache line's size (hashbrown
        // does not align entries to lines, so one may straddle two). With
        // a reply's errors inline it was 96 bytes.
        let entry = size_of::<(u64, Slot)>();
        assert!(entry <= 64, "a call's entry in the table takes {entry} bytes");
    }
}
