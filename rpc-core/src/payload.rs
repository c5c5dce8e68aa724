//! Payload encoding: bincode 2 (serde, standard configuration) for arguments
//! and results, and the fixed-layout head that opens every request.

use std::time::Duration;

use bincode::config::{self, Config};
use bincode::enc::write::{SizeWriter, Writer};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::ProtocolError;

/// Appends the bincode encoding of `value` to `out`.
///
/// A first pass only counts the bytes, so `out` grows once, to the exact
/// size, and a large value (a 1 MiB payload) is copied into it once rather
/// than again at every doubling of the buffer.
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut BytesMut,
) -> Result<(), bincode::error::EncodeError> {
    let mut size = SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config::standard())?;
    out.reserve(size.bytes_written);
    bincode::serde::encode_into_writer(value, BufWriter(out), config::standard())
}

/// Lets bincode write straight into a `BytesMut`.
struct BufWriter<'a>(&'a mut BytesMut);

impl Writer for BufWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// bincode refused the bytes.
    #[error("{0}")]
    Invalid(String),
    /// The value decoded but bytes were left over.
    #[error("{extra} unexpected bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
}

/// Decodes exactly one `T` from `bytes`.
///
/// bincode allocates a string's or byte buffer's announced length before it
/// reads it, so a hostile 5-byte payload could ask for gigabytes. Decoding
/// runs under a bincode byte limit chosen from a few buckets: the smallest
/// bucket that holds the whole payload. No honest value claims more bytes
/// than its payload has, and a liar can claim at most 16 times the payload
/// (at least 256 KiB), never more than the frame it came in could justify.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    let len = bytes.len();
    if len <= 256 * KIB {
        decode_with(bytes, config::standard().with_limit::<{ 256 * KIB }>())
    } else if len <= 4 * MIB {
        decode_with(bytes, config::standard().with_limit::<{ 4 * MIB }>())
    } else if len <= 64 * MIB {
        decode_with(bytes, config::standard().with_limit::<{ 64 * MIB }>())
    } else {
        decode_with(bytes, config::standard().with_limit::<{ u32::MAX as usize }>())
    }
}

/// Decodes a payload held in a shared buffer, lending the buffer to the
/// [`Bytes`](crate::blob::Bytes) values in it, which become slices of it
/// instead of copies. Otherwise the same as [`decode`].
pub fn decode_shared<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, DecodeError> {
    crate::blob::lending(bytes, || decode(bytes))
}

fn decode_with<T: DeserializeOwned, C: Config>(bytes: &[u8], config: C) -> Result<T, DecodeError> {
    // Borrowed decoding: byte strings arrive as slices of `bytes` (which
    // lent buffers turn into shared slices), never as claimed allocations.
    let (value, read) = bincode::serde::borrow_decode_from_slice(bytes, config)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    match bytes.len().saturating_sub(read) {
        0 => Ok(value),
        extra => Err(DecodeError::TrailingBytes { extra }),
    }
}

/// The fixed part that opens every request payload.
///
/// Layout: `u64` LE time budget in microseconds, `u8` name length, the
/// method's wire name (UTF-8, `Service.method`), then the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Time the caller gives the call, relative (clocks differ).
    pub budget: Duration,
    /// The method's wire name, e.g. `Calculator.add`: a slice of the
    /// request frame (no copy), checked to be UTF-8.
    method: Bytes,
}

/// The longest time budget a request may carry: one year. Anything longer
/// is not a deadline but a mistake, and is refused as malformed; clients
/// clamp to it.
pub const MAX_WIRE_BUDGET: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Longest wire name of a method, in bytes.
pub const MAX_METHOD_NAME_LEN: usize = u8::MAX as usize;

impl RequestHead {
    /// Appends the head for `method` with `budget` to `out`.
    ///
    /// The budget is rounded up to whole microseconds and clamped to
    /// 1 µs ..= [`MAX_WIRE_BUDGET`]. `method` must be at most
    /// [`MAX_METHOD_NAME_LEN`] bytes; the macro guarantees it for generated
    /// clients and longer names are cut at a character boundary.
    pub fn encode(method: &str, budget: Duration, out: &mut BytesMut) {
        let micros = budget
            .as_nanos()
            .div_ceil(1000)
            .clamp(1, MAX_WIRE_BUDGET.as_micros());
        out.put_u64_le(u64::try_from(micros).unwrap_or(u64::MAX));
        let mut end = method.len().min(MAX_METHOD_NAME_LEN);
        while !method.is_char_boundary(end) {
            end -= 1;
        }
        let name = method.get(..end).unwrap_or_default();
        out.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.put_slice(name.as_bytes());
    }

    /// The method's wire name.
    pub fn method(&self) -> &str {
        // Checked when the head was decoded.
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// The method's wire name, as the bytes of the frame it came in.
    pub fn into_method(self) -> Bytes {
        self.method
    }

    /// Splits a request payload into its head and its argument bytes.
    ///
    /// The arguments share `payload`'s memory.
    pub fn decode(mut payload: Bytes) -> Result<(RequestHead, Bytes), ProtocolError> {
        if payload.len() < 9 {
            return Err(ProtocolError::BadRequestHead(
                "shorter than the 9-byte budget and name length",
            ));
        }
        let micros = payload.get_u64_le();
        if micros == 0 {
            return Err(ProtocolError::BadRequestHead("the time budget is zero"));
        }
        if u128::from(micros) > MAX_WIRE_BUDGET.as_micros() {
            return Err(ProtocolError::BadRequestHead(
                "the time budget is over a year, which is no deadline",
            ));
        }
        let name_len = usize::from(payload.get_u8());
        if name_len == 0 {
            return Err(ProtocolError::BadRequestHead("the method name is empty"));
        }
        if payload.len() < name_len {
            return Err(ProtocolError::BadRequestHead(
                "the method name runs past the end of the frame",
            ));
        }
        let method = payload.split_to(name_len);
        std::str::from_utf8(&method)
            .map_err(|_| ProtocolError::BadRequestHead("the method name is not UTF-8"))?;
        Ok((
            RequestHead {
                budget: Duration::from_micros(micros),
                method,
            },
            payload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut buf = BytesMut::new();
        encode_into(&(5i64, 3i64), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0x0a, 0x06]);
        assert_eq!(decode::<(i64, i64)>(&buf).unwrap(), (5, 3));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert_eq!(
            decode::<u8>(&[1, 2]),
            Err(DecodeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn a_lying_string_length_is_refused_without_allocating_it() {
        // A varint announcing a 2^40-byte string, then nothing.
        let mut buf = BytesMut::new();
        buf.put_u8(253);
        buf.put_u64_le(1 << 40);
        assert!(matches!(decode::<String>(&buf), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn request_head_round_trips_and_shares_the_arguments() {
        let mut buf = BytesMut::new();
        RequestHead::encode("Calculator.add", Duration::from_millis(1500), &mut buf);
        buf.put_slice(&[0x0a, 0x06]);
        let payload = buf.freeze();
        let (head, args) = RequestHead::decode(payload.clone()).unwrap();
        assert_eq!(head.method(), "Calculator.add");
        assert_eq!(head.budget, Duration::from_millis(1500));
        assert_eq!(&args[..], &[0x0a, 0x06]);
        assert_eq!(args.as_ptr(), payload[payload.len() - 2..].as_ptr());
    }

    #[test]
    fn budgets_are_clamped_on_the_way_out_and_checked_on_the_way_in() {
        let mut buf = BytesMut::new();
        RequestHead::encode("S.m", Duration::MAX, &mut buf);
        let (head, _) = RequestHead::decode(buf.freeze()).unwrap();
        assert_eq!(head.budget, MAX_WIRE_BUDGET);

        let mut absurd = BytesMut::new();
        absurd.put_u64_le(u64::MAX);
        absurd.put_u8(3);
        absurd.put_slice(b"S.m");
        assert!(RequestHead::decode(absurd.freeze()).is_err());
    }

    #[test]
    fn request_head_refuses_bad_shapes() {
        for bad in [
            &[0u8; 3][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, b'a'][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 5, b'a'][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff][..],
        ] {
            assert!(RequestHead::decode(Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
