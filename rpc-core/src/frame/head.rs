//! [`RequestHead`]: the fixed-layout part that opens every request payload.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtocolError;
use crate::compat::Fingerprint;

/// The fixed part that opens every request payload.
///
/// Layout: `u64` LE time budget in microseconds, `u8` name length, the
/// method's wire name (UTF-8, `Service.method`); from protocol version 3,
/// the method's `u64` LE fingerprint (0: none); from version 2, a `u16` LE
/// metadata length and the metadata block
/// ([`Metadata`](crate::metadata::Metadata)); then the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Time the caller gives the call, relative (clocks differ). Zero means
    /// the caller's time ran out before the request left; the server
    /// answers such a call with "deadline exceeded" without running it.
    pub budget: Duration,
    /// The method's wire name, e.g. `Calculator.add`: a slice of the
    /// request frame (no copy), checked to be UTF-8.
    method: Bytes,
    /// The metadata block (version 2), unread: a slice of the frame,
    /// empty when the request carries none.
    pub metadata: Bytes,
    /// The fingerprint of the method's shape on the client (version 3):
    /// `None` from older clients and for unchecked methods.
    pub fingerprint: Option<Fingerprint>,
}

/// The longest time budget a client puts on the wire: one year. A server
/// caps every budget at its own maximum anyway (five minutes by default),
/// so a longer one, `u64::MAX` included, simply gets that maximum.
pub const MAX_WIRE_BUDGET: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Longest wire name of a method, in bytes.
pub const MAX_METHOD_NAME_LEN: usize = u8::MAX as usize;

/// `budget` in whole microseconds, rounded up, within 1 µs ..=
/// [`MAX_WIRE_BUDGET`] (in 64-bit arithmetic: 128-bit division is slow,
/// and every request does this).
fn wire_micros(budget: Duration) -> u64 {
    const MAX: u64 = MAX_WIRE_BUDGET.as_secs() * 1_000_000;
    budget
        .as_secs()
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(u64::from(budget.subsec_nanos().div_ceil(1000))))
        .map_or(MAX, |micros| micros.clamp(1, MAX))
}

impl RequestHead {
    /// The head's first field, `budget` as the wire carries it: a request
    /// that waited to be sent is stamped again with it as it leaves.
    pub(crate) fn budget_field(budget: Duration) -> [u8; 8] {
        wire_micros(budget).to_le_bytes()
    }

    /// Appends the head for `method` with `budget` to `out`.
    ///
    /// The budget is rounded up to whole microseconds and clamped to
    /// 1 µs ..= [`MAX_WIRE_BUDGET`]. `method` must be at most
    /// [`MAX_METHOD_NAME_LEN`] bytes; the macro guarantees it for generated
    /// clients and longer names are cut at a character boundary.
    pub fn encode(method: &str, budget: Duration, out: &mut BytesMut) {
        Self::encode_name(method, budget, out);
    }

    /// Appends the head of protocol version 2: the version 1 head, then
    /// `metadata`. Fails, appending nothing of it, if the metadata breaks
    /// its bounds.
    pub fn encode_v2(
        method: &str,
        budget: Duration,
        metadata: &crate::metadata::Metadata,
        out: &mut BytesMut,
    ) -> Result<(), crate::metadata::MetadataError> {
        Self::encode_name(method, budget, out);
        Self::encode_metadata(metadata, out)
    }

    /// Appends the head of protocol version 3: the version 1 head, the
    /// method's `fingerprint`, then `metadata`. Fails, appending nothing of
    /// the metadata, if it breaks its bounds.
    pub fn encode_v3(
        method: &str,
        budget: Duration,
        fingerprint: Option<Fingerprint>,
        metadata: &crate::metadata::Metadata,
        out: &mut BytesMut,
    ) -> Result<(), crate::metadata::MetadataError> {
        Self::encode_name(method, budget, out);
        let fingerprint = fingerprint.map_or(0, Fingerprint::get).to_le_bytes();
        if metadata.is_empty() {
            // The fingerprint and an empty metadata block, in one piece.
            let mut rest = [0u8; 10];
            rest[..8].copy_from_slice(&fingerprint);
            out.extend_from_slice(&rest);
            return Ok(());
        }
        out.extend_from_slice(&fingerprint);
        Self::encode_metadata(metadata, out)
    }

    /// What follows the budget in a version 3 head for `method` with
    /// `fingerprint` and no metadata: the same for every call of a method,
    /// so made once ([`MethodDescriptor`](crate::MethodDescriptor) keeps
    /// it) and copied in by [`encode_v3_tail`](Self::encode_v3_tail).
    pub(crate) fn tail_v3(method: &str, fingerprint: Option<Fingerprint>) -> Box<[u8]> {
        let mut out = BytesMut::new();
        Self::encode_name(method, Duration::ZERO, &mut out);
        out.put_u64_le(fingerprint.map_or(0, Fingerprint::get));
        out.put_u16_le(0);
        out.get(8..).unwrap_or_default().into()
    }

    /// Appends the head of protocol version 3 for `budget`, from `tail`
    /// ([`tail_v3`](Self::tail_v3)'s), with `metadata` in place of its
    /// empty block: the bytes [`encode_v3`](Self::encode_v3) appends,
    /// copied in two pieces. Fails, appending nothing of the metadata, if
    /// it breaks its bounds.
    pub(crate) fn encode_v3_tail(
        budget: Duration,
        tail: &[u8],
        metadata: &crate::metadata::Metadata,
        out: &mut BytesMut,
    ) -> Result<(), crate::metadata::MetadataError> {
        out.reserve(8 + tail.len());
        out.extend_from_slice(&Self::budget_field(budget));
        if metadata.is_empty() {
            out.extend_from_slice(tail);
            return Ok(());
        }
        let (named, _empty_block) = tail.split_at(tail.len().saturating_sub(2));
        out.extend_from_slice(named);
        metadata.encode(out)
    }

    fn encode_metadata(
        metadata: &crate::metadata::Metadata,
        out: &mut BytesMut,
    ) -> Result<(), crate::metadata::MetadataError> {
        if metadata.is_empty() {
            out.put_u16_le(0);
            return Ok(());
        }
        metadata.encode(out)
    }

    fn encode_name(method: &str, budget: Duration, out: &mut BytesMut) {
        let mut end = method.len().min(MAX_METHOD_NAME_LEN);
        while !method.is_char_boundary(end) {
            end -= 1;
        }
        let name = method.get(..end).unwrap_or_default();
        // Room for the whole head of any version at once.
        out.reserve(9 + name.len() + 8 + 2);
        let mut start = [0u8; 9];
        start[..8].copy_from_slice(&Self::budget_field(budget));
        start[8] = u8::try_from(name.len()).unwrap_or(u8::MAX);
        out.extend_from_slice(&start);
        out.extend_from_slice(name.as_bytes());
    }

    /// The method's wire name, as bytes (checked to be UTF-8).
    pub fn method_bytes(&self) -> &[u8] {
        &self.method
    }

    /// The method's wire name.
    pub fn method(&self) -> &str {
        // Checked when the head was decoded.
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// Splits a request payload into its head and its argument bytes.
    ///
    /// The arguments share `payload`'s memory. A head whose layout is
    /// broken (too short, an empty name, a name past the end of the frame
    /// or not UTF-8) is a protocol violation: the peer's encoder is broken,
    /// and the connection closes. Any budget is accepted; the server caps it.
    pub fn decode(payload: Bytes) -> Result<(RequestHead, Bytes), ProtocolError> {
        Self::decode_version(payload, 1)
    }

    /// Splits a request payload of protocol `version` (1 to 3) into its
    /// head and its argument bytes. The metadata block's layout inside is
    /// left for the call to check: a bad one fails that call, not the
    /// connection.
    pub fn decode_version(payload: Bytes, version: u16) -> Result<(RequestHead, Bytes), ProtocolError> {
        let view = HeadView::read(&payload, version)?;
        let method = view.method_range();
        let HeadView {
            budget,
            fingerprint,
            metadata,
            args_at,
            ..
        } = view;
        let head = RequestHead {
            budget,
            method: payload.slice(method),
            metadata: payload.slice(metadata),
            fingerprint,
        };
        Ok((head, HeadView::args(payload, args_at)))
    }
}

/// A request head read where it lies, in the payload it opens: what
/// [`RequestHead::decode_version`] finds, with no slice of the payload
/// made (each is a count up and a count down on its memory). The server
/// reads every request so, and slices off only what a call keeps.
#[derive(Debug)]
pub(crate) struct HeadView<'a> {
    pub(crate) budget: Duration,
    /// The method's wire name, checked to be UTF-8.
    pub(crate) method: &'a [u8],
    pub(crate) fingerprint: Option<Fingerprint>,
    /// Where the metadata block lies in the payload (empty if none).
    pub(crate) metadata: std::ops::Range<usize>,
    /// Where the arguments begin in the payload.
    pub(crate) args_at: usize,
}

impl<'a> HeadView<'a> {
    /// Reads the head of a request `payload` of protocol `version` (1 to
    /// 3); a broken layout is a protocol violation, as for
    /// [`RequestHead::decode_version`].
    pub(crate) fn read(payload: &'a [u8], version: u16) -> Result<HeadView<'a>, ProtocolError> {
        let mut rest = payload;
        if rest.len() < 9 {
            return Err(ProtocolError::BadRequestHead(
                "shorter than the 9-byte budget and name length",
            ));
        }
        let micros = rest.get_u64_le();
        let name_len = usize::from(rest.get_u8());
        if name_len == 0 {
            return Err(ProtocolError::BadRequestHead("the method name is empty"));
        }
        let Some((method, after)) = rest.split_at_checked(name_len) else {
            return Err(ProtocolError::BadRequestHead(
                "the method name runs past the end of the frame",
            ));
        };
        rest = after;
        // Wire names are ASCII in practice, which is quicker to check.
        if !method.is_ascii() && std::str::from_utf8(method).is_err() {
            return Err(ProtocolError::BadRequestHead("the method name is not UTF-8"));
        }
        let fingerprint = if version >= 3 {
            if rest.len() < 8 {
                return Err(ProtocolError::BadRequestHead(
                    "the fingerprint runs past the end of the frame",
                ));
            }
            Fingerprint::from_wire(rest.get_u64_le())
        } else {
            None
        };
        let metadata_len = if version >= 2 {
            if rest.len() < 2 {
                return Err(ProtocolError::BadRequestHead(
                    "the metadata length runs past the end of the frame",
                ));
            }
            let len = usize::from(rest.get_u16_le());
            if rest.len() < len {
                return Err(ProtocolError::BadRequestHead(
                    "the metadata runs past the end of the frame",
                ));
            }
            len
        } else {
            0
        };
        let metadata_at = payload.len() - rest.len();
        Ok(HeadView {
            budget: Duration::from_micros(micros),
            method,
            fingerprint,
            metadata: metadata_at..metadata_at + metadata_len,
            args_at: metadata_at + metadata_len,
        })
    }

    /// Where the method's name lies in the payload: after the budget and
    /// the name's length.
    fn method_range(&self) -> std::ops::Range<usize> {
        9..9 + self.method.len()
    }

    /// The arguments of `payload`, which begin at `args_at`: none, holding
    /// nothing of the payload's memory, if the head ends the payload.
    pub(crate) fn args(mut payload: Bytes, args_at: usize) -> Bytes {
        if args_at == payload.len() {
            return Bytes::new();
        }
        payload.advance(args_at);
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Metadata;

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
    fn a_call_without_arguments_holds_nothing_of_its_frame() {
        let mut buf = BytesMut::with_capacity(64);
        let mut frame = || {
            RequestHead::encode_v3("S.m", Duration::from_secs(1), None, &Metadata::new(), &mut buf).unwrap();
            buf.split().freeze()
        };
        let payload = frame();
        let len = payload.len();
        let args_at = HeadView::read(&payload, 3).unwrap().args_at;
        assert_eq!(args_at, len);
        let args = HeadView::args(payload, args_at);
        let (head, decoded) = RequestHead::decode_version(frame(), 3).unwrap();
        drop(head);
        assert!(args.is_empty() && decoded.is_empty());
        // Nothing else holds the memory the frames were read into.
        assert!(buf.try_reclaim(2 * len), "the arguments hold the frames' memory");
    }

    #[test]
    fn budgets_go_out_in_whole_microseconds_rounded_up() {
        let cases = [
            (Duration::ZERO, 1),
            (Duration::from_nanos(1), 1),
            (Duration::from_nanos(1000), 1),
            (Duration::from_nanos(1001), 2),
            (Duration::new(2, 999_999_999), 3_000_000),
            (
                MAX_WIRE_BUDGET + Duration::from_nanos(1),
                MAX_WIRE_BUDGET.as_secs() * 1_000_000,
            ),
            (Duration::MAX, MAX_WIRE_BUDGET.as_secs() * 1_000_000),
        ];
        for (budget, micros) in cases {
            let expected = budget
                .as_nanos()
                .div_ceil(1000)
                .clamp(1, MAX_WIRE_BUDGET.as_micros());
            assert_eq!(u128::from(micros), expected, "{budget:?}");
            assert_eq!(wire_micros(budget), micros, "{budget:?}");
        }
    }

    #[test]
    fn budgets_are_clamped_on_the_way_out_and_taken_as_sent_on_the_way_in() {
        let mut buf = BytesMut::new();
        RequestHead::encode("S.m", Duration::MAX, &mut buf);
        let (head, _) = RequestHead::decode(buf.freeze()).unwrap();
        assert_eq!(head.budget, MAX_WIRE_BUDGET);

        // "No timeout" spelled as u64::MAX, and zero, are for the server to
        // cap or answer; neither breaks the framing.
        for micros in [u64::MAX, 0] {
            let mut raw = BytesMut::new();
            raw.put_u64_le(micros);
            raw.put_u8(3);
            raw.put_slice(b"S.m");
            let (head, _) = RequestHead::decode(raw.freeze()).unwrap();
            assert_eq!(head.budget, Duration::from_micros(micros));
        }
    }

    #[test]
    fn a_version_3_head_carries_the_fingerprint_before_the_metadata() {
        let fingerprint = Fingerprint::from_wire(0x0102_0304_0506_0708);
        let mut metadata = crate::metadata::Metadata::new();
        metadata.insert("k", "v").unwrap();
        let mut buf = BytesMut::new();
        RequestHead::encode_v3("S.m", Duration::from_secs(1), fingerprint, &metadata, &mut buf).unwrap();
        buf.put_u8(0x0a);
        let payload = buf.freeze();
        assert_eq!(&payload[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        let (head, args) = RequestHead::decode_version(payload.clone(), 3).unwrap();
        assert_eq!(head.fingerprint, fingerprint);
        assert_eq!(
            crate::metadata::Metadata::decode(head.metadata).unwrap(),
            metadata
        );
        assert_eq!(&args[..], &[0x0a]);

        // Zero is "none"; a head cut inside the fingerprint is broken.
        let mut none = BytesMut::new();
        RequestHead::encode_v3("S.m", Duration::from_secs(1), None, &metadata, &mut none).unwrap();
        assert_eq!(
            RequestHead::decode_version(none.freeze(), 3)
                .unwrap()
                .0
                .fingerprint,
            None
        );
        assert!(RequestHead::decode_version(payload.slice(..15), 3).is_err());
    }

    #[test]
    fn a_head_from_its_tail_is_the_head_encoded_whole() {
        let long = "S.".to_owned() + &"é".repeat(200);
        let mut metadata = Metadata::new();
        metadata.insert("k", "v").unwrap();
        let fingerprint = Fingerprint::from_wire(0x0102_0304_0506_0708);
        for method in ["S.m", "Calculator.add", long.as_str()] {
            for fingerprint in [None, fingerprint] {
                for metadata in [&Metadata::new(), &metadata] {
                    let budget = Duration::from_millis(1500);
                    let mut whole = BytesMut::new();
                    RequestHead::encode_v3(method, budget, fingerprint, metadata, &mut whole).unwrap();
                    let tail = RequestHead::tail_v3(method, fingerprint);
                    let mut from_tail = BytesMut::from(&b"before"[..]);
                    RequestHead::encode_v3_tail(budget, &tail, metadata, &mut from_tail).unwrap();
                    assert_eq!(&from_tail[..6], b"before");
                    assert_eq!(
                        &from_tail[6..],
                        &whole[..],
                        "{method}, {fingerprint:?}, {metadata:?}"
                    );
                    let (head, _) = RequestHead::decode_version(from_tail.freeze().slice(6..), 3).unwrap();
                    assert!(method.starts_with(head.method()));
                    assert_eq!(head.fingerprint, fingerprint);
                }
            }
        }
        // Metadata past its bounds: refused alike, and neither appends any
        // of it.
        let mut crowded = Metadata::new();
        for at in 0..=crate::metadata::MAX_ENTRIES {
            crowded.insert(&format!("k{at}"), "v").unwrap();
        }
        let budget = Duration::from_secs(1);
        let mut whole = BytesMut::new();
        assert!(RequestHead::encode_v3("S.m", budget, fingerprint, &crowded, &mut whole).is_err());
        let mut from_tail = BytesMut::new();
        let tail = RequestHead::tail_v3("S.m", fingerprint);
        assert!(RequestHead::encode_v3_tail(budget, &tail, &crowded, &mut from_tail).is_err());
        assert_eq!(from_tail, whole);
        assert_eq!(
            whole.len(),
            8 + 1 + 3 + 8,
            "the head up to the metadata block, no more"
        );
    }

    #[test]
    fn request_head_refuses_broken_layouts() {
        for bad in [
            &[0u8; 3][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 5, b'a'][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff][..],
        ] {
            assert!(RequestHead::decode(Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
