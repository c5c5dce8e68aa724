//! Large blobs sent from where they lie: a [`Bytes`](crate::blob::Bytes)
//! of [`SPLICE_FROM`] bytes or more, encoded into a [`Message`], is not
//! copied into it but left out and spliced back in as a part of its own.
//!
//! Serde gives a serializer no way to hand over owned bytes, so the blob
//! and the writer meet in a thread-local: the blob *offers* itself while
//! it writes its bytes ([`offering`]), and a writer that was handed
//! [`Claims`] *claims* a write that is exactly those bytes ([`claim`]),
//! recording where it goes instead of copying it. Only the crate's own
//! encodings hand their writers claims (a call's arguments, through the
//! generated `RequestMessage::encode_args_spliced`, and a result), and a
//! blob offers itself only while one of them runs; every other encoding
//! copies as ever. A claimed write is, byte for byte, what the copy would
//! have been.

use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::{EncodeError, Message};
use crate::scratch::Block;

/// The shortest [`Bytes`](crate::blob::Bytes) blob a request or a result
/// sends from where it lies, not copied into the message: the connection
/// copies a shorter part of a message next to its frame's header anyway.
pub const SPLICE_FROM: usize = 4 * 1024;

const _: () = assert!(SPLICE_FROM >= crate::transport::COPY_BELOW);

/// The blobs left out of a message being encoded: where each goes in its
/// buffer, and its bytes. Made by the encoding of a request or a result,
/// and handed down to the writer of its buffer.
#[doc(hidden)]
#[derive(Debug)]
pub struct Claims(pub(super) Vec<(usize, Bytes)>);

impl Claims {
    pub(crate) fn new() -> Claims {
        Claims(Vec::new())
    }
}

thread_local! {
    /// Encodings with claims running on this thread: a blob offers itself
    /// only while there is one (a plain value, read at no cost).
    static CLAIMING: Cell<usize> = const { Cell::new(0) };
    /// The blob being written, while it offers itself.
    static OFFER: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// What `encode` appends to a buffer, with the claims it hands its
/// writers, as a [`Message`] whose claimed blobs are parts of their own;
/// `reworked`'s error if the claims do not fit the buffer (`encode`
/// changed it after a blob was left out). Short messages are encoded in
/// the thread's block (see `scratch`).
#[inline(always)]
pub(crate) fn encode<E>(
    encode: impl FnOnce(&mut BytesMut, &mut Claims) -> Result<(), E>,
    reworked: impl FnOnce() -> E,
) -> Result<Message, E> {
    let mut block = Block::lend();
    let mut claims = Claims::new();
    encode(block.buf(), &mut claims)?;
    let encoded = claims.splice(&mut block).ok_or_else(reworked)?;
    Ok(encoded.into_message())
}

impl Claims {
    /// The message encoded in `block`, with the blobs claimed from it put
    /// back in their places; `None` if they do not fit it (its encoding
    /// changed the buffer after a blob was left out).
    #[inline]
    pub(crate) fn splice(self, block: &mut Block) -> Option<Encoding<'_>> {
        if self.0.is_empty() {
            return Some(Encoding::InPlace(block));
        }
        Message::spliced(block.split(), self.0).map(Encoding::Owned)
    }
}

/// A message just encoded in a thread's block, as [`Claims::splice`]
/// makes it.
pub(crate) enum Encoding<'a> {
    /// Whole, and all of the block: to be copied where it lies (the next
    /// message is encoded over it), or split off to be kept.
    InPlace(&'a mut Block),
    /// Bytes of its own (in parts, if blobs were left out of it).
    Owned(Message),
}

impl Encoding<'_> {
    /// The message's length in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Encoding::InPlace(block) => block.bytes().len(),
            Encoding::Owned(message) => message.len(),
        }
    }

    /// The message, as bytes of its own.
    pub(crate) fn into_message(self) -> Message {
        match self {
            Encoding::InPlace(block) => Message::from(block.split()),
            Encoding::Owned(message) => message,
        }
    }
}

/// Why [`encode`] refused a message whose buffer was reworked.
pub(crate) const REWORKED: &str = "the buffer was changed after a large `rpc::Bytes` was left out of it";

/// Appends the encoding of `value` to `out` as
/// [`codec::encode_into`](super::encode_into) does, leaving its blobs of
/// [`SPLICE_FROM`] bytes or more out, in `claims`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut BytesMut,
    claims: &mut Claims,
) -> Result<(), EncodeError> {
    /// Counts the encoding out however it ends.
    struct Claiming;
    impl Drop for Claiming {
        fn drop(&mut self) {
            CLAIMING.set(CLAIMING.get() - 1);
        }
    }
    CLAIMING.set(CLAIMING.get() + 1);
    let _claiming = Claiming;
    super::binary::encode_with(value, out, Some(&mut claims.0))
}

/// Runs `write`, which writes `blob`'s bytes, with `blob` offered to the
/// writer.
pub(crate) fn offering<R>(blob: &Bytes, write: impl FnOnce() -> R) -> R {
    /// Withdraws the offer however `write` ends.
    struct Withdraw;
    impl Drop for Withdraw {
        fn drop(&mut self) {
            let _ = OFFER.try_with(|offer| offer.borrow_mut().take());
        }
    }
    if CLAIMING.get() == 0 {
        return write();
    }
    // A thread being torn down writes its blobs as they are.
    let offered = OFFER.try_with(|offer| *offer.borrow_mut() = Some(blob.clone()));
    let _withdraw = offered.is_ok().then_some(Withdraw);
    write()
}

/// The offered blob, if `bytes` are its bytes (the same memory, not only
/// equal): taken, so that it is claimed once.
pub(super) fn claim(bytes: &[u8]) -> Option<Bytes> {
    let claim = |offer: &RefCell<Option<Bytes>>| {
        let mut offer = offer.borrow_mut();
        let matches = offer
            .as_ref()
            .is_some_and(|blob| blob.as_ptr() == bytes.as_ptr() && blob.len() == bytes.len());
        if matches { offer.take() } else { None }
    };
    OFFER.try_with(claim).ok().flatten()
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

    fn reworked() -> EncodeError {
        EncodeError(REWORKED.into())
    }

    fn spliced<T: Serialize + ?Sized>(value: &T) -> Message {
        encode(|out, claims| encode_into(value, out, claims), reworked).unwrap()
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
            |out, claims| {
                assert!(encode_into(&failing, out, claims).is_err());
                encode_into(&kept, out, claims)
            },
            reworked,
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
    fn an_encoding_without_claims_copies() {
        let blob = Blob::from(vec![8u8; SPLICE_FROM]);
        // Straight into the buffer, as a hand-written encoding would.
        let message = encode(|out, _| codec::encode_into(&blob, out), reworked).unwrap();
        assert_eq!(message.parts().len(), 1);
        assert_eq!(message.to_bytes(), copied(&blob));
        assert!(OFFER.with_borrow(Option::is_none));
    }

    #[test]
    fn a_buffer_reworked_after_a_blob_was_left_out_is_refused() {
        let blob = Blob::from(vec![8u8; SPLICE_FROM]);
        let refused = encode(
            |out, claims| {
                encode_into(&(1u8, blob.clone()), out, claims)?;
                out.truncate(1);
                Ok(())
            },
            reworked,
        );
        assert_eq!(refused, Err(reworked()));
    }

    #[test]
    fn a_panic_in_the_middle_leaves_nothing_offered() {
        let blob = Blob::from(vec![8u8; SPLICE_FROM]);
        let panicked = std::panic::catch_unwind(|| {
            let _ = encode(
                |out, claims| {
                    encode_into(&blob, out, claims)?;
                    panic!("after a claim");
                },
                reworked,
            );
        });
        assert!(panicked.is_err());
        assert!(OFFER.with_borrow(Option::is_none));
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
