//! The binary payload codec: bincode 2 through serde, standard
//! configuration. Every use of the `bincode` crate is in this file, so the
//! crate could be replaced (it is no longer developed; the format it
//! defines is frozen) without touching anything else.

use std::marker::PhantomData;

use ::bincode::config::{self, Config};
use ::bincode::enc::write::Writer;
use ::bincode::error::DecodeError as BincodeError;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::depth::{self, Limited};
use super::{DecodeError, DecodeLimits, EncodeError, splice};

/// Appends the encoding of `value` to `out`.
///
/// A value that fits in the room `out` has left (a short one in the
/// thread's block) is written straight in, in one pass. Any other is
/// encoded in two: a first pass only counts the bytes, so `out` grows
/// once, to the exact size, and a large value (a 1 MiB payload) is copied
/// into it once rather than again at every doubling of the buffer.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), EncodeError> {
    encode_with(value, out, None)
}

/// [`encode_into`], leaving large [`Bytes`](crate::blob::Bytes) blobs out
/// of `out`, in `claims`, if there are claims (see `splice`).
#[inline]
pub(super) fn encode_with<T: Serialize + ?Sized>(
    value: &T,
    out: &mut BytesMut,
    mut claims: Option<&mut Claimed>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let kept = claims.as_ref().map_or(0, |claims| claims.len());
    // Takes back what a pass wrote, blobs claimed included.
    let undo = |out: &mut BytesMut, claims: &mut Option<&mut Claimed>| {
        out.truncate(start);
        if let Some(claims) = claims {
            claims.truncate(kept);
        }
    };
    let room = out.capacity() - start;
    if room > 0 {
        let mut within = Within {
            out: &mut *out,
            room,
            overflowed: false,
            claims: claims.as_deref_mut(),
        };
        let written = ::bincode::serde::encode_into_writer(value, &mut within, config::standard());
        // Whatever the value's `Serialize` made of the writer's error (it
        // may wrap it, or carry on past it), a value that did not fit is
        // encoded again below, this time sized.
        if !within.overflowed {
            if written.is_err() {
                undo(out, &mut claims);
            }
            return written.map_err(EncodeError::from);
        }
        undo(out, &mut claims);
    }
    let mut size = Sizer {
        bytes: 0,
        splicing: claims.is_some(),
    };
    ::bincode::serde::encode_into_writer(value, &mut size, config::standard()).map_err(EncodeError::from)?;
    // A fresh buffer gets exactly the room it needs: frozen full, it
    // becomes `Bytes` without a second allocation.
    if out.capacity() == 0 {
        *out = BytesMut::with_capacity(size.bytes);
    } else {
        out.reserve(size.bytes);
    }
    let mut writer = BufWriter {
        out: &mut *out,
        claims: claims.as_deref_mut(),
    };
    let written = ::bincode::serde::encode_into_writer(value, &mut writer, config::standard());
    // A `Serialize` that fails only the second time leaves nothing behind.
    if written.is_err() {
        undo(out, &mut claims);
    }
    written.map_err(EncodeError::from)
}

/// Where each blob left out of a buffer goes in it, and its bytes.
type Claimed = Vec<(usize, Bytes)>;

impl From<::bincode::error::EncodeError> for EncodeError {
    fn from(err: ::bincode::error::EncodeError) -> EncodeError {
        EncodeError(err.to_string())
    }
}

/// The blob offered for leaving out, if `bytes` are its: claimed, not
/// copied. The length is checked first: most writes are of a few bytes,
/// known when the write is compiled.
#[inline(always)]
fn offered(bytes: &[u8]) -> Option<Bytes> {
    if bytes.len() < splice::SPLICE_FROM {
        return None;
    }
    splice::claim(bytes)
}

/// Whether a write at the end of `out` is of a blob offered for leaving
/// out, claimed into `claims` if there are claims.
#[inline(always)]
fn spliced(claims: &mut Option<&mut Claimed>, out: &BytesMut, bytes: &[u8]) -> bool {
    let Some(claims) = claims else {
        return false;
    };
    let Some(blob) = offered(bytes) else {
        return false;
    };
    claims.push((out.len(), blob));
    true
}

/// Lets bincode write straight into a `BytesMut`.
struct BufWriter<'a> {
    out: &'a mut BytesMut,
    claims: Option<&'a mut Claimed>,
}

impl Writer for BufWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ::bincode::error::EncodeError> {
        if !spliced(&mut self.claims, self.out, bytes) {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

/// Counts the bytes bincode would write, blobs that would be claimed left
/// out.
struct Sizer {
    bytes: usize,
    splicing: bool,
}

impl Writer for Sizer {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ::bincode::error::EncodeError> {
        if !(self.splicing && offered(bytes).is_some()) {
            self.bytes += bytes.len();
        }
        Ok(())
    }
}

/// Lets bincode write into the `room` bytes `out` has left, and no more:
/// a write that needs more fails, and every write after it.
struct Within<'a> {
    out: &'a mut BytesMut,
    room: usize,
    overflowed: bool,
    claims: Option<&'a mut Claimed>,
}

impl Writer for Within<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), ::bincode::error::EncodeError> {
        if !self.overflowed && spliced(&mut self.claims, self.out, bytes) {
            return Ok(());
        }
        match self.room.checked_sub(bytes.len()) {
            Some(left) if !self.overflowed => {
                self.room = left;
                self.out.extend_from_slice(bytes);
                Ok(())
            }
            _ => {
                self.overflowed = true;
                Err(::bincode::error::EncodeError::UnexpectedEnd)
            }
        }
    }
}

/// Decodes exactly one `T` from `bytes`, under `limits`.
///
/// bincode allocates a string's or byte buffer's announced length before it
/// reads it, so a hostile 5-byte payload could ask for gigabytes. Decoding
/// runs under a bincode byte limit chosen from a few buckets: the smallest
/// bucket that holds the whole payload. No honest value claims more bytes
/// than its payload has, and a liar can claim at most 16 times the payload
/// (at least 256 KiB), never more than the frame it came in could justify.
/// Nesting is bounded by `limits.max_nesting` (see [`DecodeLimits`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limits: DecodeLimits) -> Result<T, DecodeError> {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    let len = bytes.len();
    if len <= 256 * KIB {
        decode_with(bytes, limits, config::standard().with_limit::<{ 256 * KIB }>())
    } else if len <= 4 * MIB {
        decode_with(bytes, limits, config::standard().with_limit::<{ 4 * MIB }>())
    } else if len <= 64 * MIB {
        decode_with(bytes, limits, config::standard().with_limit::<{ 64 * MIB }>())
    } else {
        decode_with(
            bytes,
            limits,
            config::standard().with_limit::<{ u32::MAX as usize }>(),
        )
    }
}

/// Decodes a payload held in a shared buffer, lending the buffer to the
/// [`Bytes`](crate::blob::Bytes) values in it, which become slices of it
/// instead of copies (in payloads of at least [`LEND_FROM`] bytes: the
/// blobs of a shorter one are copied). Otherwise the same as [`decode`].
pub fn decode_shared<T: DeserializeOwned>(bytes: &Bytes, limits: DecodeLimits) -> Result<T, DecodeError> {
    if bytes.len() < LEND_FROM {
        return decode(bytes, limits);
    }
    crate::blob::lending(bytes, || decode(bytes, limits))
}

/// The shortest payload [`decode_shared`] lends: copying the few bytes a
/// shorter one's blobs can hold costs less than lending the buffer, which
/// every decode would pay for, blobs or not.
pub const LEND_FROM: usize = 256;

fn decode_with<T: DeserializeOwned, C: Config>(
    bytes: &[u8],
    limits: DecodeLimits,
    config: C,
) -> Result<T, DecodeError> {
    // Borrowed decoding: byte strings arrive as slices of `bytes` (which
    // lent buffers turn into shared slices), never as claimed allocations.
    let seed = Limited::new(PhantomData::<T>, limits.max_nesting);
    let (value, read) =
        ::bincode::serde::seed_decode_from_slice(seed, bytes, config).map_err(|err| match err {
            BincodeError::OtherString(message) if depth::is_too_deep(&message) => DecodeError::TooDeep {
                limit: limits.max_nesting,
            },
            other => DecodeError::Invalid(other.to_string()),
        })?;
    match bytes.len().saturating_sub(read) {
        0 => Ok(value),
        extra => Err(DecodeError::TrailingBytes { extra }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use serde::Deserialize;

    const LIMITS: DecodeLimits = DecodeLimits::DEFAULT;

    #[test]
    fn values_round_trip() {
        let mut buf = BytesMut::new();
        encode_into(&(5i64, 3i64), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0x0a, 0x06]);
        assert_eq!(decode::<(i64, i64)>(&buf, LIMITS).unwrap(), (5, 3));
    }

    #[test]
    fn values_are_encoded_alike_with_room_and_without() {
        // A byte, and a marker byte before 2, 4 and 8 bytes.
        let values: [(u64, &[u8]); 4] = [
            (5, &[5]),
            (300, &[251, 0x2c, 0x01]),
            (70_000, &[252, 0x70, 0x11, 0x01, 0x00]),
            (1 << 40, &[253, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (value, expected) in values {
            let mut roomy = BytesMut::with_capacity(64);
            roomy.put_u8(0xee);
            encode_into(&value, &mut roomy).unwrap();
            assert_eq!(&roomy[1..], expected, "{value} with room");
            let mut fresh = BytesMut::new();
            encode_into(&value, &mut fresh).unwrap();
            assert_eq!(&fresh[..], expected, "{value} in a fresh buffer");
        }
    }

    #[test]
    fn a_value_longer_than_the_room_left_is_encoded_whole_after_what_was_there() {
        let value = (300u64, vec![7u8; 100], "tail".to_owned());
        let mut alone = BytesMut::new();
        encode_into(&value, &mut alone).unwrap();
        let mut out = BytesMut::with_capacity(8);
        out.extend_from_slice(b"head");
        encode_into(&value, &mut out).unwrap();
        assert_eq!(&out[..4], b"head");
        assert_eq!(&out[4..], &alone[..]);
        assert_eq!(
            decode::<(u64, Vec<u8>, String)>(&out[4..], LIMITS).unwrap(),
            value
        );
    }

    /// A pair whose `Serialize` fails after writing its first element
    /// (`fails`), or ignores its elements' failures and goes on.
    struct Awkward {
        first: Vec<u8>,
        fails: bool,
    }

    impl Serialize for Awkward {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let mut tuple = serializer.serialize_tuple(2)?;
            if self.fails {
                tuple.serialize_element(&self.first)?;
                return Err(S::Error::custom("refused halfway"));
            }
            let _ = tuple.serialize_element(&self.first);
            let _ = tuple.serialize_element(&7u8);
            tuple.end()
        }
    }

    #[test]
    fn a_value_that_fails_to_encode_leaves_the_buffer_as_it_was() {
        // Failing within the room, past it, and with no room at all (the
        // two-pass path).
        for (first, capacity) in [(4, 64), (100, 64), (4, 4)] {
            let mut out = BytesMut::with_capacity(capacity);
            out.extend_from_slice(b"kept");
            let value = Awkward {
                first: vec![1; first],
                fails: true,
            };
            let err = encode_into(&value, &mut out).unwrap_err();
            assert!(err.to_string().contains("refused halfway"), "{err}");
            assert_eq!(&out[..], b"kept", "{first} bytes in a buffer of {capacity}");
        }
    }

    #[test]
    fn a_value_that_fails_only_when_written_leaves_the_buffer_as_it_was() {
        /// Sized fine, then fails halfway through being written.
        struct Fickle(std::cell::Cell<u32>);
        impl Serialize for Fickle {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{Error, SerializeTuple};
                self.0.set(self.0.get() + 1);
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(&[9u8; 8])?;
                if self.0.get() > 1 {
                    return Err(S::Error::custom("changed its mind"));
                }
                tuple.serialize_element(&1u8)?;
                tuple.end()
            }
        }
        let mut out = BytesMut::from(&b"kept"[..]);
        let err = encode_into(&Fickle(std::cell::Cell::new(0)), &mut out).unwrap_err();
        assert!(err.to_string().contains("changed its mind"), "{err}");
        assert_eq!(&out[..], b"kept");
    }

    #[test]
    fn a_value_that_carries_on_past_the_room_running_out_is_encoded_whole() {
        let value = Awkward {
            first: vec![1; 100],
            fails: false,
        };
        let mut alone = BytesMut::new();
        encode_into(&value, &mut alone).unwrap();
        assert_eq!(alone.len(), 1 + 100 + 1, "the whole value, sized");
        let mut out = BytesMut::with_capacity(64);
        encode_into(&value, &mut out).unwrap();
        assert_eq!(&out[..], &alone[..]);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert_eq!(
            decode::<u8>(&[1, 2], LIMITS),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn a_lying_string_length_is_refused_without_allocating_it() {
        // A varint announcing a 2^40-byte string, then nothing.
        let mut buf = BytesMut::new();
        buf.put_u8(253);
        buf.put_u64_le(1 << 40);
        assert!(matches!(
            decode::<String>(&buf, LIMITS),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum List {
        Nil,
        Cons(u32, Box<List>),
    }

    /// `Cons(1, Cons(1, ... Nil))`, `depth` levels, as bincode spells it:
    /// variant 1, the number, and the rest; then variant 0.
    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = [1u8, 1].repeat(depth);
        bytes.push(0);
        bytes
    }

    #[test]
    fn nesting_within_the_limit_decodes_and_past_it_is_refused_not_overflowed() {
        let limits = DecodeLimits { max_nesting: 64 };
        let mut list = decode::<List>(&nested(30), limits).unwrap();
        let mut levels = 0;
        while let List::Cons(1, rest) = list {
            list = *rest;
            levels += 1;
        }
        assert_eq!((levels, list), (30, List::Nil));

        // A hundred thousand levels: without the limit this overflows the
        // test thread's stack and aborts the test binary.
        assert_eq!(
            decode::<List>(&nested(100_000), limits),
            Err(DecodeError::TooDeep { limit: 64 })
        );
        // Nested sequences and options count too.
        let deep_vecs = [1u8].repeat(100_000);
        assert!(matches!(
            decode::<Vec<Vec<Vec<Vec<Vec<Vec<u8>>>>>>>(&deep_vecs, DecodeLimits { max_nesting: 3 }),
            Err(DecodeError::TooDeep { limit: 3 })
        ));
    }

    #[test]
    fn zero_copy_blobs_survive_the_depth_adapter() {
        let mut buf = BytesMut::new();
        let data = vec![5u8; LEND_FROM];
        encode_into(&(7u32, crate::blob::Bytes::from(data.clone())), &mut buf).unwrap();
        let frame = buf.freeze();
        let (n, blob): (u32, crate::blob::Bytes) = decode_shared(&frame, LIMITS).unwrap();
        assert_eq!((n, &blob[..]), (7, &data[..]));
        assert!(
            frame.as_ptr_range().contains(&blob.as_ptr()),
            "a slice of the frame, not a copy"
        );
    }

    #[test]
    fn the_blobs_of_a_short_payload_are_copied() {
        let mut buf = BytesMut::new();
        encode_into(&(7u32, crate::blob::Bytes::from_static(b"blob")), &mut buf).unwrap();
        let frame = buf.freeze();
        assert!(frame.len() < LEND_FROM);
        let (n, blob): (u32, crate::blob::Bytes) = decode_shared(&frame, LIMITS).unwrap();
        assert_eq!((n, &blob[..]), (7, &b"blob"[..]));
        assert!(!frame.as_ptr_range().contains(&blob.as_ptr()));
    }
}

#[cfg(test)]
mod wire_form {
    use super::*;

    /// `docs/PROTOCOL.md` says what a decoder makes of a varint written
    /// longer than it needs: pinned here.
    #[test]
    fn a_varint_longer_than_needed_is_accepted() {
        // 5 as `251` + u16: the shortest form is the single byte 5.
        assert_eq!(decode::<u32>(&[251, 5, 0], DecodeLimits::DEFAULT), Ok(5));
        // Lengths are varints too, counting bytes for strings.
        assert_eq!(
            decode::<String>(&[251, 2, 0, 0xc3, 0xa9], DecodeLimits::DEFAULT),
            Ok("é".to_owned())
        );
        let mut out = BytesMut::new();
        encode_into(&5u32, &mut out).unwrap();
        assert_eq!(&out[..], &[5]);
    }
}
