//! [`Bytes`]: binary data that crosses the network without a copy on
//! either side.
//!
//! Through serde, `bytes::Bytes` and `Vec<u8>` are decoded by copying their
//! bytes out of the frame they arrived in. This type is decoded as a slice
//! of that frame instead: the decoder lends it the frame (a reference
//! count, in a thread-local that lives only for the decode), and the
//! borrowed bytes bincode hands over are turned into a slice of it. On the
//! way out, a large one in a request or a result is spliced into the
//! encoded message as a part of its own (`codec::splice`).

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::codec::splice;
pub use crate::codec::splice::SPLICE_FROM;

/// Cheap-to-clone binary data, sent and received without a copy.
///
/// Use it for blobs in service methods (arguments, results, stream items).
/// In the arguments of a call or in a result, in the binary protocol, one
/// of [`SPLICE_FROM`] bytes or more is written to the connection from
/// where it lies, not copied into the message (which holds a reference to
/// it until it is written). Anywhere else (a shorter one, a stream item,
/// a streaming call's arguments, the arguments of a client with
/// middleware, which sees them encoded in one piece) it is copied with a
/// single `memcpy`. A `Vec<u8>` argument or result is copied once too (a
/// server's `Vec<u8>` result of that length is sent from where it lies,
/// as this is, unless its allocation has more than a quarter of its length
/// to spare), and one inside a struct of your own goes through serde byte
/// by byte.
///
/// The receiver gets a slice of the frame the data came in, without
/// copying it (in messages of [`LEND_FROM`](crate::codec::LEND_FROM) bytes
/// or more; a shorter one's few bytes are copied, which costs less). It
/// dereferences to [`bytes::Bytes`], so `len`, `slice`, `to_vec` and the
/// rest are there.
///
/// A received value keeps the memory of the frame it came in alive for as
/// long as it lives. To keep a small part of a large message for long,
/// copy it out ([`Bytes::copy_from_slice`] or `to_vec`).
///
/// ```
/// use rpc_core::blob::Bytes;
///
/// let data = Bytes::from(vec![1u8, 2, 3]);
/// assert_eq!(data.len(), 3);
/// assert_eq!(&data[..], &[1, 2, 3]);
/// let tail: Bytes = data.slice(1..).into();
/// assert_eq!(tail, Bytes::from_static(&[2, 3]));
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(bytes::Bytes);

impl Bytes {
    /// Empty bytes.
    pub const fn new() -> Bytes {
        Bytes(bytes::Bytes::new())
    }

    /// Bytes that point at static data, without copying it.
    pub const fn from_static(data: &'static [u8]) -> Bytes {
        Bytes(bytes::Bytes::from_static(data))
    }

    /// A copy of `data`, owning its own memory.
    pub fn copy_from_slice(data: &[u8]) -> Bytes {
        Bytes(bytes::Bytes::copy_from_slice(data))
    }

    /// The underlying [`bytes::Bytes`].
    pub fn into_inner(self) -> bytes::Bytes {
        self.0
    }
}

impl Deref for Bytes {
    type Target = bytes::Bytes;

    fn deref(&self) -> &bytes::Bytes {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<bytes::Bytes> for Bytes {
    fn from(data: bytes::Bytes) -> Bytes {
        Bytes(data)
    }
}

impl From<bytes::BytesMut> for Bytes {
    fn from(data: bytes::BytesMut) -> Bytes {
        Bytes(data.freeze())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(data: Vec<u8>) -> Bytes {
        Bytes(data.into())
    }
}

impl From<String> for Bytes {
    fn from(data: String) -> Bytes {
        Bytes(data.into())
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(data: &'static [u8]) -> Bytes {
        Bytes::from_static(data)
    }
}

impl From<&'static str> for Bytes {
    fn from(data: &'static str) -> Bytes {
        Bytes::from_static(data.as_bytes())
    }
}

impl From<Bytes> for bytes::Bytes {
    fn from(data: Bytes) -> bytes::Bytes {
        data.0
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(data: Bytes) -> Vec<u8> {
        data.0.into()
    }
}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for Bytes {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.0 == other
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A large blob going into a request or a result is sent from here.
        if self.0.len() >= splice::SPLICE_FROM {
            return splice::offering(&self.0, || serializer.serialize_bytes(&self.0));
        }
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, data: &'de [u8]) -> Result<Bytes, E> {
        Ok(Bytes(
            slice_of_source(data).unwrap_or_else(|| bytes::Bytes::copy_from_slice(data)),
        ))
    }

    fn visit_bytes<E: de::Error>(self, data: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(data))
    }

    fn visit_byte_buf<E: de::Error>(self, data: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(data))
    }

    fn visit_str<E: de::Error>(self, data: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // Formats without a byte type (JSON, say) send a sequence of numbers.
        let mut data = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            data.push(byte);
        }
        Ok(Bytes::from(data))
    }
}

thread_local! {
    /// The frame being decoded on this thread, if any.
    static SOURCE: RefCell<Option<bytes::Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `source` lent to the [`Bytes`] values it decodes.
pub(crate) fn lending<R>(source: &bytes::Bytes, decode: impl FnOnce() -> R) -> R {
    /// Puts back what was lent before, however `decode` ends.
    struct Restore(Option<bytes::Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|source| *source.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|lent| lent.replace(Some(source.clone())));
    let _restore = Restore(previous);
    decode()
}

/// `data` as a slice of the lent frame, if it lies inside it.
fn slice_of_source(data: &[u8]) -> Option<bytes::Bytes> {
    SOURCE.with(|source| {
        let source = source.borrow();
        let source = source.as_ref()?;
        let start = source.as_ptr() as usize;
        let at = data.as_ptr() as usize;
        let inside = at >= start && at.checked_add(data.len())? <= start + source.len();
        // `slice_ref` panics on a slice from elsewhere; checked just above.
        inside.then(|| source.slice_ref(data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self as payload, DecodeLimits};

    #[test]
    fn decoding_a_frame_lent_to_it_copies_nothing() {
        let value = (7u32, Bytes::from(vec![9u8; 4096]), String::from("tail"));
        let mut encoded = bytes::BytesMut::new();
        payload::encode_into(&value, &mut encoded).unwrap();
        let frame = encoded.freeze();
        let (n, data, tail): (u32, Bytes, String) =
            payload::decode_shared(&frame, DecodeLimits::DEFAULT).unwrap();
        assert_eq!((n, tail.as_str()), (7, "tail"));
        assert_eq!(data, vec![9u8; 4096]);
        let inside = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(inside.contains(&(data.as_ptr() as usize)), "a slice of the frame");

        // Without the frame lent, the same bytes are copied.
        let copied: (u32, Bytes, String) = payload::decode(&frame, DecodeLimits::DEFAULT).unwrap();
        assert!(!inside.contains(&(copied.1.as_ptr() as usize)));
        assert_eq!(copied.1, data);
    }

    #[test]
    fn the_lent_frame_is_returned_even_when_decoding_panics() {
        let frame = bytes::Bytes::from_static(b"frame");
        let result = std::panic::catch_unwind(|| lending(&frame, || panic!("decoder bug")));
        assert!(result.is_err());
        SOURCE.with(|source| assert!(source.borrow().is_none()));
    }

    #[test]
    fn bytes_from_elsewhere_are_copied_not_sliced() {
        let frame = bytes::Bytes::from_static(b"frame");
        let other = [1u8, 2, 3];
        lending(&frame, || assert!(slice_of_source(&other).is_none()));
    }
}
