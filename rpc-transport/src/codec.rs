//! The frame codec: bytes to [`Frame`]s and back, pure and synchronous.
//!
//! The decoder checks each header (length against the limit, kind, flags,
//! reserved bits) before it reserves room for the payload, so a lying length
//! prefix costs nothing, and it splits the payload off the read buffer
//! without copying it.

use bytes::{Buf, BytesMut};
use rpc_core::Error;
use rpc_core::frame::{DEFAULT_MAX_FRAME_LEN, Frame, HEADER_LEN, Header, ProtocolError};
use tokio_util::codec::{Decoder, Encoder};

/// The most the decoder reserves ahead of bytes actually received.
const RESERVE_STEP: usize = 64 * 1024;

/// How many times the bytes already arrived the decoder may reserve ahead
/// of them.
const GROWTH: usize = 16;

/// Room below which the decoder grows the buffer for a frame still arriving.
const MIN_ROOM: usize = 8 * 1024;

/// Splits a byte stream into frames and writes frames as bytes.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use rpc_core::frame::{Frame, Kind};
/// use rpc_transport::codec::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new(1024);
/// let mut wire = BytesMut::new();
/// let frame = Frame::new(Kind::Response, 7, Bytes::from_static(b"\x10")).unwrap();
/// codec.encode(frame, &mut wire).unwrap();
/// assert_eq!(wire.len(), 17);
///
/// let decoded = codec.decode(&mut wire).unwrap().unwrap();
/// assert_eq!(decoded.header().id(), 7);
/// assert_eq!(&decoded.payload()[..], b"\x10");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec that refuses frames whose payload exceeds `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> FrameCodec {
        FrameCodec { max_frame_len }
    }

    /// The payload limit this codec enforces.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The header of the frame `src` holds the start of, if it has arrived
    /// and is good, with the frame's length, header included.
    #[inline]
    fn head(&self, src: &BytesMut) -> Option<(Header, usize)> {
        let head = src.first_chunk::<HEADER_LEN>()?;
        let header = Header::parse(head, self.max_frame_len).ok()?;
        Some((header, HEADER_LEN + header.payload_len()))
    }

    /// The frame at the start of `src` if all of it has arrived, taken out
    /// of `src`; `None`, reserving nothing, if it has not.
    /// [`decode`](Decoder::decode) reserves room for the rest too.
    pub fn decode_whole(&self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // Parsed here, not through `head`, which drops the header's error
        // (made to keep it, as an `Option` of a `Result`, it cost every
        // frame 6 instructions more under callgrind).
        let Some(head) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(head, self.max_frame_len)?;
        let frame_len = HEADER_LEN + header.payload_len();
        if src.len() < frame_len {
            return Ok(None);
        }
        let mut bytes = src.split_to(frame_len);
        bytes.advance(HEADER_LEN);
        let payload_len = bytes.len();
        Frame::from_parts(header, bytes.freeze())
            .map(Some)
            .ok_or(CodecError::Protocol(ProtocolError::Truncated {
                got: payload_len,
                expected: header.payload_len(),
            }))
    }

    /// The header and length (header included) of the frame at the start
    /// of `src`, if all of it has arrived and its header is good.
    pub(crate) fn whole(&self, src: &BytesMut) -> Option<(Header, usize)> {
        self.head(src).filter(|(_, frame_len)| src.len() >= *frame_len)
    }

    /// The length, header included, of the frame `src` holds the start
    /// of, if its header has arrived and is good.
    pub fn frame_len(&self, src: &BytesMut) -> Option<usize> {
        self.head(src).map(|(_, frame_len)| frame_len)
    }
}

/// How much room to reserve in `src`, which holds the start of a frame of
/// `frame_len` bytes, before reading more of it: `None` while the room
/// left is enough, or the frame is whole. [`Decoder::decode`] reserves it
/// itself; the reader finds the memory where it can (`spare`).
///
/// Grows toward the frame as its bytes arrive: a header's claim alone
/// reserves at most one step, and after that room grows by up to `GROWTH`
/// times what has really arrived. Each growth copies what arrived so far,
/// so a large factor means a 1 MiB frame is copied once, 64 KiB's worth,
/// not five times. It grows only once the room left is too small for a
/// worthwhile read, so it grows a couple of times per frame however the
/// frame's bytes are cut up on the way.
pub(crate) fn room_toward(src: &BytesMut, frame_len: usize) -> Option<usize> {
    let missing = frame_len.checked_sub(src.len()).filter(|missing| *missing > 0)?;
    if src.capacity() - src.len() >= missing.min(MIN_ROOM) {
        return None;
    }
    let step = src.len().saturating_mul(GROWTH).max(RESERVE_STEP);
    Some(missing.min(step))
}

/// Why decoding failed: the stream broke, or its bytes broke the protocol.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Reading from or writing to the transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl From<CodecError> for Error {
    fn from(err: CodecError) -> Error {
        match err {
            CodecError::Io(err) => Error::io("reading from the connection failed", &err),
            CodecError::Protocol(err) => Error::Protocol(err),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let frame = self.decode_whole(src)?;
        if frame.is_none()
            && let Some(room) = self.frame_len(src).and_then(|len| room_toward(src, len))
        {
            src.reserve(room);
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let expected = match src.first_chunk::<HEADER_LEN>() {
                    Some(head) => Header::parse(head, self.max_frame_len)
                        .map_or(HEADER_LEN, |h| HEADER_LEN + h.payload_len()),
                    None => HEADER_LEN,
                };
                Err(ProtocolError::Truncated {
                    got: src.len(),
                    expected,
                }
                .into())
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let (header, payload) = frame.into_parts();
        dst.reserve(HEADER_LEN + payload.len());
        header.encode(dst);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes};
    use rpc_core::frame::Kind;

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new(1 << 20);
        let mut out = BytesMut::new();
        for frame in frames {
            codec.encode(frame.clone(), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn frames_survive_every_split_point() {
        let frames = [
            Frame::new(Kind::Request, 1, Bytes::from_static(b"hello")).unwrap(),
            Frame::new(Kind::Response, 2, Bytes::new()).unwrap(),
            Frame::new(Kind::Cancel, 3, Bytes::from(vec![7; 300])).unwrap(),
        ];
        let wire = encoded(&frames);
        for split in 0..=wire.len() {
            let mut codec = FrameCodec::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    got.push(frame);
                }
            }
            assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            assert_eq!(got.len(), 3, "split at {split}");
            for (a, b) in got.iter().zip(&frames) {
                assert_eq!(a.header(), b.header());
                assert_eq!(a.payload(), b.payload());
            }
        }
    }

    #[test]
    fn a_truncated_frame_at_eof_is_an_error() {
        let wire = encoded(&[Frame::new(Kind::Request, 1, Bytes::from_static(b"hello")).unwrap()]);
        for cut in 1..wire.len() {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert!(
                matches!(
                    codec.decode_eof(&mut buf),
                    Err(CodecError::Protocol(ProtocolError::Truncated { got, .. })) if got == cut
                ),
                "cut at {cut}"
            );
        }
    }

    /// Feeds a 1 MiB frame the way the reader does (reading into whatever
    /// room the buffer has, 8 KiB at a time at most) and checks both sides
    /// of the growth rule: room never runs further ahead of the bytes that
    /// arrived than the rule allows, and the buffer grows (which may copy
    /// what arrived) only a couple of times.
    #[test]
    fn a_large_frame_grows_the_buffer_few_times_and_never_far_ahead_of_its_bytes() {
        let payload = vec![7u8; 1024 * 1024];
        let wire = encoded(&[Frame::new(Kind::Request, 1, Bytes::from(payload.clone())).unwrap()]);
        let mut codec = FrameCodec::new(2 * 1024 * 1024);
        let mut buf = BytesMut::new();
        let mut sent = 0;
        let mut growths = 0;
        let frame = loop {
            if buf.capacity() - buf.len() < HEADER_LEN {
                buf.reserve(8 * 1024);
            }
            let take = (buf.capacity() - buf.len()).min(8 * 1024).min(wire.len() - sent);
            let before = buf.as_ptr();
            buf.extend_from_slice(&wire[sent..sent + take]);
            assert_eq!(buf.as_ptr(), before, "reading never grows the buffer itself");
            sent += take;
            let capacity = buf.capacity();
            let decoded = codec.decode(&mut buf).unwrap();
            if let Some(frame) = decoded {
                break frame;
            }
            if buf.capacity() > capacity {
                growths += 1;
            }
            // The rule's step, at most doubled by the buffer's own policy of
            // growing to twice its old capacity.
            let allowed = 2 * (buf.len() + (buf.len() * GROWTH).max(RESERVE_STEP));
            assert!(
                buf.capacity() <= allowed,
                "{} bytes of room for {} received",
                buf.capacity(),
                buf.len()
            );
        };
        assert_eq!(frame.payload().as_ref(), payload.as_slice());
        assert!(growths <= 2, "the buffer grew {growths} times");
    }

    #[test]
    fn a_huge_length_prefix_reserves_nothing() {
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        buf.put_u32_le(u32::MAX);
        buf.put_u8(1);
        buf.put_u8(0);
        buf.put_u16_le(0);
        buf.put_u64_le(1);
        let before = buf.capacity();
        let mut codec = FrameCodec::new(1024);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Protocol(ProtocolError::FrameTooLarge { len, limit: 1024 })) if len == u32::MAX as usize
        ));
        assert_eq!(buf.capacity(), before);
    }

    #[test]
    fn the_payload_is_not_copied_out_of_the_read_buffer() {
        let mut buf = encoded(&[Frame::new(Kind::Response, 9, Bytes::from(vec![1; 64])).unwrap()]);
        let start = buf.as_ptr() as usize;
        let frame = FrameCodec::new(1024).decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.payload().as_ptr() as usize, start + HEADER_LEN);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rpc_core::frame::Kind;

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Request),
            Just(Kind::Response),
            Just(Kind::Cancel),
            Just(Kind::Error)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks_never_panic_the_decoder(
            stream in proptest::collection::vec(any::<u8>(), 0..2048),
            chunk in 1usize..64,
        ) {
            let mut codec = FrameCodec::new(1024);
            let mut buf = BytesMut::new();
            'feed: for part in stream.chunks(chunk) {
                buf.extend_from_slice(part);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => prop_assert!(frame.payload().len() <= 1024),
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
                prop_assert!(buf.capacity() <= 1024 + HEADER_LEN + 64 * 1024);
            }
            let _ = codec.decode_eof(&mut buf);
        }

        #[test]
        fn valid_frames_survive_any_split(
            frames in proptest::collection::vec(
                (kind(), 1u64..u64::MAX, proptest::collection::vec(any::<u8>(), 0..300)),
                1..8,
            ),
            chunk in 1usize..97,
        ) {
            let mut codec = FrameCodec::new(1024);
            let mut wire = BytesMut::new();
            let sent: Vec<Frame> = frames
                .into_iter()
                .map(|(kind, id, payload)| Frame::new(kind, id, Bytes::from(payload)).unwrap())
                .collect();
            for frame in &sent {
                codec.encode(frame.clone(), &mut wire).unwrap();
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                buf.extend_from_slice(part);
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    got.push(frame);
                }
            }
            prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            prop_assert_eq!(got.len(), sent.len());
            for (a, b) in got.iter().zip(&sent) {
                prop_assert_eq!(a.header(), b.header());
                prop_assert_eq!(a.payload(), b.payload());
            }
        }
    }
}
