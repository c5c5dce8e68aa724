//! Large blobs sent from where they lie: a [`Bytes`](crate::blob::Bytes)
//! of [`SPLICE_FROM`] bytes or more, encoded into a [`Message`], is not
//! copied into it but left out and spliced back in as a part of its own.
//!
//! Serde gives a serializer no way to hand over owned bytes, so the blob
//! and the writer meet in thread-locals: the blob *offers* itself before
//! it writes its bytes ([`offering`]), and the writer *claims* a write
//! that is exactly those bytes ([`claim`]), recording where it goes
//! instead of copying it.
//!
//! Only the crate's own encodings claim ([`encode_into`]: a call's
//! arguments, a result), and only into the buffer [`encode`] is filling.
//! A `Serialize` or a hand-written `RequestMessage` that encodes into a
//! buffer of its own copies as ever. One that reworks the buffer it was
//! given after the fact is refused if its claims no longer fit the buffer
//! (a check at best: one that only appends is always right). A claimed
//! write is, byte for byte, what the copy would have been.

use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::{EncodeError, Message};

/// The shortest [`Bytes`](crate::blob::Bytes) blob a request or a result
/// sends from where it lies, not copied into the message: the connection
/// copies a shorter part of a message next to its frame's header anyway.
pub const SPLICE_FROM: usize = 4 * 1024;

const _: () = assert!(SPLICE_FROM >= crate::transport::COPY_BELOW);

/// Where claims go, read by every encoding: a plain value, so that reading
/// it costs no more than a load, even while the thread is torn down.
#[derive(Clone, Copy)]
struct State {
    /// The buffer [`encode`] is filling; null outside it.
    scope: *const BytesMut,
    /// One of the crate's own encodings is writing into it.
    armed: bool,
    /// Blobs claimed for it so far: the last this many of `CLAIMED`.
    claims: usize,
}

const OUTSIDE: State = State {
    scope: std::ptr::null(),
    armed: false,
    claims: 0,
};

thread_local! {
    static STATE: Cell<State> = const { Cell::new(OUTSIDE) };
    /// Where each claimed blob goes, in order; those of an encoding inside
    /// another's `Serialize` after the outer one's.
    static CLAIMED: RefCell<Vec<(usize, Bytes)>> = const { RefCell::new(Vec::new()) };
    /// The blob being written, if it offered itself.
    static OFFER: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// What `encode` appends to a buffer, as a [`Message`] whose blobs of
/// [`SPLICE_FROM`] bytes or more, written by [`encode_into`], are parts
/// of their own; `reworked`'s error if `encode` changed the buffer after
/// a blob was left out of it. Short messages are encoded in the thread's
/// block (see `scratch`).
pub(crate) fn encode<E>(
    encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    reworked: impl FnOnce() -> E,
) -> Result<Message, E> {
    let mut claimed = Vec::new();
    let encoded = crate::scratch::encode(|out| {
        let scope = Scope::enter(out);
        let encoded = encode(out);
        claimed = scope.leave();
        encoded
    })?;
    Message::spliced(encoded, claimed).ok_or_else(reworked)
}

/// Why [`encode`] refused a message whose buffer was reworked.
pub(crate) const REWORKED: &str = "the buffer was changed after a large `rpc::Bytes` was left out of it; \
     a hand-written `RequestMessage::encode_args` must only append to its buffer";

/// Encodes `value` at the end of `out` as [`codec::encode_into`] does,
/// claiming its blobs if `out` is the buffer [`encode`] is filling.
///
/// [`codec::encode_into`]: super::encode_into
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), EncodeError> {
    let state = STATE.get();
    if !std::ptr::eq(state.scope, out) {
        return super::encode_into(value, out);
    }
    /// Puts the armed flag back however the encoding ends.
    struct Disarm(bool);
    impl Drop for Disarm {
        fn drop(&mut self) {
            STATE.set(State {
                armed: self.0,
                ..STATE.get()
            });
        }
    }
    STATE.set(State { armed: true, ..state });
    let _disarm = Disarm(state.armed);
    super::encode_into(value, out)
}

/// [`encode`]'s buffer, set for as long as this lives; the state of an
/// encoding this one runs inside comes back when it goes, panics
/// included.
struct Scope {
    outer: State,
}

impl Scope {
    fn enter(out: &BytesMut) -> Scope {
        let outer = STATE.replace(State {
            scope: out,
            armed: false,
            claims: 0,
        });
        Scope { outer }
    }

    /// The blobs claimed in this scope.
    fn leave(self) -> Vec<(usize, Bytes)> {
        let state = STATE.get();
        if state.claims == 0 {
            return Vec::new();
        }
        STATE.set(State { claims: 0, ..state });
        CLAIMED.with_borrow_mut(|claimed| claimed.split_off(claimed.len() - state.claims))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Claims not taken (a panic) go with the scope.
        let claims = STATE.replace(self.outer).claims;
        if claims > 0 {
            CLAIMED.with_borrow_mut(|claimed| claimed.truncate(claimed.len() - claims));
        }
    }
}

/// Whether the writer of `out` claims: one of the crate's encodings is
/// writing into [`encode`]'s buffer. How many blobs were claimed so far,
/// to go back to if the encoding is undone.
#[inline]
pub(super) fn splicing(out: &BytesMut) -> Option<usize> {
    let state = STATE.get();
    (state.armed && std::ptr::eq(state.scope, out)).then_some(state.claims)
}

/// Forgets the blobs claimed after the first `kept`: the bytes they were
/// claimed for were taken back out of the buffer.
pub(super) fn unclaim(kept: usize) {
    let state = STATE.get();
    let dropped = state.claims - kept;
    if dropped > 0 {
        CLAIMED.with_borrow_mut(|claimed| claimed.truncate(claimed.len() - dropped));
        STATE.set(State {
            claims: kept,
            ..state
        });
    }
}

/// Runs `write`, which writes `blob`'s bytes, with `blob` offered to the
/// writer, if one could claim it.
pub(crate) fn offering<R>(blob: &Bytes, write: impl FnOnce() -> R) -> R {
    /// Withdraws the offer however `write` ends.
    struct Withdraw;
    impl Drop for Withdraw {
        fn drop(&mut self) {
            OFFER.with_borrow_mut(Option::take);
        }
    }
    if !STATE.get().armed {
        return write();
    }
    OFFER.with_borrow_mut(|offer| *offer = Some(blob.clone()));
    let _withdraw = Withdraw;
    write()
}

/// The offered blob, if `bytes` are its bytes (the same memory, not only
/// equal): taken, so that it is claimed once.
pub(super) fn claim(bytes: &[u8]) -> Option<Bytes> {
    OFFER.with_borrow_mut(|offer| {
        let matches = offer
            .as_ref()
            .is_some_and(|blob| blob.as_ptr() == bytes.as_ptr() && blob.len() == bytes.len());
        if matches { offer.take() } else { None }
    })
}

/// Claims `bytes`, written at `at` of the buffer being spliced into, if
/// they are the offered blob's: `true` if they are, and need no copy.
pub(super) fn claim_at(at: usize, bytes: &[u8]) -> bool {
    let Some(blob) = claim(bytes) else {
        return false;
    };
    CLAIMED.with_borrow_mut(|claimed| claimed.push((at, blob)));
    let state = STATE.get();
    STATE.set(State {
        claims: state.claims + 1,
        ..state
    });
    true
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::blob::Bytes as Blob;
    use crate::codec;

    /// What `encode_into` makes of `value`, copied whole.
    fn copied<T: Serialize + ?Sized>(value: &T) -> Bytes {
        let mut out = BytesMut::new();
        codec::encode_into(value, &mut out).unwrap();
        out.freeze()
    }

    fn spliced<T: Serialize + ?Sized>(value: &T) -> Message {
        encode(|out| encode_into(value, out), || EncodeError(REWORKED.into())).unwrap()
    }

    #[test]
    fn a_large_blob_is_a_part_of_its_own_and_the_bytes_are_the_same() {
        let blob = Blob::from(vec![7u8; SPLICE_FROM]);
        let short = Blob::from(vec![1u8; SPLICE_FROM - 1]);
        let value = (5u32, blob.clone(), short, String::from("tail"), blob.clone());
        let message = spliced(&value);
        assert_eq!(message.to_bytes(), copied(&value), "the same bytes on the wire");
        let parts = message.parts();
        // Head, blob, the short blob and the string, blob.
        assert_eq!(parts.len(), 4);
        for at in [1, 3] {
            assert_eq!(parts[at].as_ptr(), blob.as_ptr(), "sent from where it lies");
        }
        assert!(OFFER.with_borrow(Option::is_none), "no offer is left behind");
        assert!(STATE.get().scope.is_null());
    }

    #[test]
    fn a_value_too_long_for_the_room_left_is_spliced_too() {
        // Past the thread's block with blobs left out: sized, then written.
        let value = (vec![3u8; 16 * 1024], Blob::from(vec![9u8; 64 * 1024]));
        let message = spliced(&value);
        assert_eq!(message.to_bytes(), copied(&value));
        assert_eq!(message.parts().len(), 2);
        assert_eq!(message.parts()[1].as_ptr(), value.1.as_ptr());
    }

    /// Encodes its blob into a buffer of its own and sends that as bytes.
    struct Nested(Blob);

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let inner = copied(&self.0);
            serializer.serialize_bytes(&inner)
        }
    }

    #[test]
    fn an_encoding_into_a_buffer_of_its_own_copies_its_blobs() {
        let value = Nested(Blob::from(vec![4u8; SPLICE_FROM * 2]));
        let message = spliced(&value);
        assert_eq!(message.to_bytes(), copied(&value));
        assert!(
            message
                .parts()
                .iter()
                .all(|part| part.as_ptr() != value.0.as_ptr())
        );
    }

    /// Sends its blob, then fails.
    struct Fails(Blob);

    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let mut tuple = serializer.serialize_tuple(2)?;
            tuple.serialize_element(&self.0)?;
            Err(S::Error::custom("after the blob"))
        }
    }

    #[test]
    fn blobs_claimed_by_an_encoding_that_failed_are_let_go() {
        let failing = Fails(Blob::from(vec![5u8; SPLICE_FROM]));
        let kept = Blob::from(vec![6u8; SPLICE_FROM]);
        let message = encode(
            |out| {
                assert!(encode_into(&failing, out).is_err());
                encode_into(&kept, out)
            },
            || EncodeError(REWORKED.into()),
        )
        .unwrap();
        assert_eq!(message.to_bytes(), copied(&kept));
        assert_eq!(message.parts()[1].as_ptr(), kept.as_ptr());
        assert!(
            message
                .parts()
                .iter()
                .all(|part| part.as_ptr() != failing.0.as_ptr())
        );
    }

    #[test]
    fn a_blob_in_json_is_written_as_ever() {
        let blob = Blob::from(vec![2u8; SPLICE_FROM]);
        let json = serde_json::to_vec(&blob).unwrap();
        assert_eq!(json.len(), SPLICE_FROM * 2 + 1, "[2,2,...,2]");
        assert!(OFFER.with_borrow(Option::is_none));
    }

    #[test]
    fn only_the_crates_own_encodings_claim() {
        let blob = Blob::from(vec![8u8; SPLICE_FROM]);
        // Straight into the buffer, as a hand-written encoding would.
        let message = encode(
            |out| codec::encode_into(&blob, out),
            || EncodeError(REWORKED.into()),
        )
        .unwrap();
        assert_eq!(message.parts().len(), 1);
        assert_eq!(message.to_bytes(), copied(&blob));
    }

    #[test]
    fn a_buffer_reworked_after_a_blob_was_left_out_is_refused() {
        let blob = Blob::from(vec![8u8; SPLICE_FROM]);
        let reworked = encode(
            |out| {
                encode_into(&(1u8, blob.clone()), out)?;
                out.truncate(1);
                Ok(())
            },
            || EncodeError(REWORKED.into()),
        );
        assert_eq!(reworked, Err(EncodeError(REWORKED.into())));
        // Nothing is left claimed for the next message.
        assert_eq!(spliced(&5u32).parts().len(), 1);
        assert!(CLAIMED.with_borrow(Vec::is_empty));
    }

    #[test]
    fn a_panic_in_the_middle_leaves_nothing_claimed_or_offered() {
        let blob = Blob::from(vec![8u8; SPLICE_FROM]);
        let panicked = std::panic::catch_unwind(|| {
            let _ = encode(
                |out| {
                    encode_into(&blob, out)?;
                    panic!("after a claim");
                },
                || EncodeError(REWORKED.into()),
            );
        });
        assert!(panicked.is_err());
        assert!(CLAIMED.with_borrow(Vec::is_empty));
        assert!(OFFER.with_borrow(Option::is_none));
        assert!(STATE.get().scope.is_null());
        assert_eq!(spliced(&blob).parts().len(), 2, "and the next one splices");
    }

    /// Encodes an answer of its own in the middle of its `Serialize`, then
    /// sends its blob.
    struct AnswersInside(Blob);

    impl Serialize for AnswersInside {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let inner = crate::service::Answer::value("inner", &self.0, crate::Codec::Binary).unwrap();
            let crate::service::Answer::Value(inner) = inner else {
                unreachable!("a value")
            };
            assert_eq!(inner.parts().len(), 2, "the inner one splices too");
            let mut tuple = serializer.serialize_tuple(2)?;
            tuple.serialize_element(&inner.len())?;
            tuple.serialize_element(&self.0)?;
            tuple.end()
        }
    }

    #[test]
    fn an_encoding_inside_another_leaves_the_outer_one_splicing() {
        let value = AnswersInside(Blob::from(vec![3u8; SPLICE_FROM]));
        let message = spliced(&value);
        assert_eq!(message.to_bytes(), copied(&value));
        assert_eq!(message.parts().len(), 2);
        assert_eq!(
            message.parts()[1].as_ptr(),
            value.0.as_ptr(),
            "claimed after the inner one"
        );
    }
}
