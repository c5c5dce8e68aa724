//! Large blobs sent from where they lie: a [`Bytes`](crate::blob::Bytes)
//! of [`SPLICE_FROM`] bytes or more, encoded into a [`Message`], is not
//! copied into it but left out and spliced back in as a part of its own.
//!
//! Serde gives a serializer no way to hand over owned bytes, so the blob
//! and the writer meet in thread-locals: the blob *offers* itself before
//! it writes its bytes ([`offering`]), and the writer of a message being
//! spliced *claims* a write that is exactly those bytes ([`claim`]),
//! recording where it goes instead of copying it. Only the writer of the
//! buffer [`encode`] set up claims: a `Serialize` that encodes into a
//! buffer of its own (a nested encoding) copies as ever.
//!
//! A claimed write is, byte for byte, what the copy would have been, so
//! whatever matches an offer, the message's bytes are the same.

use std::cell::{Cell, RefCell};

use bytes::{Bytes, BytesMut};

use super::Message;

/// The shortest [`Bytes`](crate::blob::Bytes) blob a request or a result
/// sends from where it lies, not copied into the message: the connection
/// copies any shorter part of a message next to its frame's header anyway.
pub const SPLICE_FROM: usize = crate::transport::COPY_BELOW;

thread_local! {
    /// The buffer whose writer splices: the one [`encode`] is filling.
    static TARGET: Cell<*const BytesMut> = const { Cell::new(std::ptr::null()) };
    /// Where each blob claimed for it goes, in order.
    static CLAIMED: RefCell<Vec<(usize, Bytes)>> = const { RefCell::new(Vec::new()) };
    /// The blob being written, if it offered itself.
    static OFFER: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// What `encode` appends to a buffer, as a [`Message`] whose blobs of
/// [`SPLICE_FROM`] bytes or more are parts of their own. Short messages
/// are encoded in the thread's block (see `scratch`).
pub(crate) fn encode<E>(encode: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<Message, E> {
    let mut claimed = Vec::new();
    let encoded = crate::scratch::encode(|out| {
        let target = Target::set(out);
        let encoded = encode(out);
        claimed = target.claimed();
        encoded
    })?;
    Ok(Message::spliced(encoded, claimed))
}

/// The buffer being spliced into, set for as long as this lives; what was
/// set before (an encoding in a `Serialize` of the outer one's) comes back
/// when it goes, panics included.
struct Target {
    previous: *const BytesMut,
    claimed: Vec<(usize, Bytes)>,
}

impl Target {
    fn set(out: &BytesMut) -> Target {
        let previous = TARGET.replace(out);
        let claimed = CLAIMED.take();
        Target { previous, claimed }
    }

    /// The blobs claimed while it was set.
    fn claimed(&self) -> Vec<(usize, Bytes)> {
        CLAIMED.take()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        TARGET.set(self.previous);
        CLAIMED.set(std::mem::take(&mut self.claimed));
    }
}

/// Whether the writer of `out` splices: `out` is the buffer a message is
/// being spliced into. How many blobs were claimed so far, to go back to
/// if the encoding is undone.
pub(super) fn splicing(out: &BytesMut) -> Option<usize> {
    let target = TARGET.get();
    if !std::ptr::eq(target, out) {
        return None;
    }
    Some(CLAIMED.with_borrow(Vec::len))
}

/// Forgets the blobs claimed after the first `kept`: the bytes they were
/// claimed for were taken back out of the buffer.
pub(super) fn unclaim(kept: usize) {
    CLAIMED.with_borrow_mut(|claimed| claimed.truncate(kept));
}

/// Runs `write`, which writes `blob`'s bytes, with `blob` offered to a
/// splicing writer.
pub(crate) fn offering<R>(blob: &Bytes, write: impl FnOnce() -> R) -> R {
    /// Withdraws the offer however `write` ends.
    struct Withdraw;
    impl Drop for Withdraw {
        fn drop(&mut self) {
            OFFER.with_borrow_mut(Option::take);
        }
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
    true
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::blob::Bytes as Blob;
    use crate::codec::encode_into;

    /// What `encode_into` makes of `value`, copied whole.
    fn copied<T: Serialize + ?Sized>(value: &T) -> Bytes {
        let mut out = BytesMut::new();
        encode_into(value, &mut out).unwrap();
        out.freeze()
    }

    fn spliced<T: Serialize + ?Sized>(value: &T) -> Message {
        encode(|out| encode_into(value, out)).unwrap()
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
        assert!(TARGET.get().is_null());
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
        let message = encode(|out| {
            assert!(encode_into(&failing, out).is_err());
            encode_into(&kept, out)
        })
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
}
