//! The values of the wire protocol: the connection preface, the frame
//! header and the request head, with the checks that run before anything
//! is allocated for them.
//!
//! `docs/PROTOCOL.md` describes the same bytes for readers who are not
//! reading Rust. Everything here is pure: bytes in, values or a
//! [`ProtocolError`] out.

mod head;
mod violation;

use bytes::{BufMut, Bytes};

pub(crate) use head::HeadView;
pub use head::{MAX_METHOD_NAME_LEN, MAX_WIRE_BUDGET, RequestHead};
pub use violation::ProtocolError;

/// The eight bytes that open every connection, in both directions.
///
/// The first byte is not ASCII and the rest include CR, LF and Ctrl-Z, as in
/// PNG's signature, so a text protocol (HTTP, SMTP, a stray `telnet`) can
/// never be mistaken for us.
pub const MAGIC: [u8; 8] = *b"\x89RPC\r\n\x1a\n";

/// The protocol version this build speaks.
pub const VERSION: u16 = 3;

/// The oldest protocol version this build still speaks. Version 1 is
/// version 2 without request metadata.
pub const MIN_VERSION: u16 = 1;

/// Length of the connection preface in bytes.
pub const PREFACE_LEN: usize = 16;

/// Length of every frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// The largest payload length the header can express.
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// The default limit on a frame's payload length: 16 MiB.
///
/// Large enough for any sane single message, small enough that a peer can't
/// make us reserve more than that for one frame.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The request id of frames that concern the whole connection rather than
/// one call (a connection-level error, a goodbye).
pub const CONNECTION_ID: u64 = 0;

/// What a frame is for. The numbers are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A call: request head and arguments. Client to server.
    Request = 1,
    /// The successful result of a call. Server to client.
    Response = 2,
    /// A call failed, or (with request id 0) the connection is being closed
    /// because of a protocol violation. Either direction.
    Error = 3,
    /// The caller is no longer interested in a call. Client to server.
    Cancel = 4,
    /// The server is closing the connection: it started no request after
    /// the id in the payload and will close once those it started are
    /// answered. Server to client, request id 0.
    Goodbye = 5,
    /// One item of a call's stream. Either direction.
    Item = 6,
    /// The sender's stream of a call has ended normally. Either direction.
    End = 7,
    /// The receiver of a stream grants its sender more items (`u32` LE).
    /// Either direction.
    Credit = 8,
}

impl Kind {
    /// Wire values 9 to 15 are reserved for later versions; a peer that
    /// sends one is newer than us.
    const RESERVED: std::ops::RangeInclusive<u8> = 9..=15;

    /// Decodes the kind byte of a header.
    pub fn from_wire(byte: u8) -> Result<Kind, ProtocolError> {
        match byte {
            1 => Ok(Kind::Request),
            2 => Ok(Kind::Response),
            3 => Ok(Kind::Error),
            4 => Ok(Kind::Cancel),
            5 => Ok(Kind::Goodbye),
            6 => Ok(Kind::Item),
            7 => Ok(Kind::End),
            8 => Ok(Kind::Credit),
            b if Kind::RESERVED.contains(&b) => Err(ProtocolError::ReservedKind(b)),
            b => Err(ProtocolError::UnknownKind(b)),
        }
    }
}

/// The parsed preface: who the peer is, how large a frame it accepts, and
/// (from a server) how many calls it runs at once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preface {
    /// Protocol version the sender speaks.
    pub version: u16,
    /// Calls the sender runs at once on one connection; 0 for no stated
    /// limit (clients always send 0). A server queues as many again, and
    /// a client keeps fewer than twice this in flight.
    pub max_calls: u16,
    /// The largest frame payload, in bytes, that the sender accepts.
    pub max_frame_len: u32,
}

impl Preface {
    /// The preface this build sends, announcing `max_frame_len`.
    pub fn ours(max_frame_len: usize) -> Preface {
        Preface {
            version: VERSION,
            max_calls: 0,
            max_frame_len: u32::try_from(max_frame_len).unwrap_or(u32::MAX),
        }
    }

    /// This preface, speaking `version` (what a server answers a client of
    /// an older version with).
    pub fn with_version(self, version: u16) -> Preface {
        Preface { version, ..self }
    }

    /// This preface, announcing at most `max_calls` calls at once (a limit
    /// over 65 535 is announced as none).
    pub fn with_max_calls(self, max_calls: usize) -> Preface {
        Preface {
            max_calls: u16::try_from(max_calls).unwrap_or(0),
            ..self
        }
    }

    /// Encodes the preface.
    pub fn to_bytes(self) -> [u8; PREFACE_LEN] {
        let mut out = [0u8; PREFACE_LEN];
        let mut buf = &mut out[..];
        buf.put_slice(&MAGIC);
        buf.put_u16_le(self.version);
        buf.put_u16_le(self.max_calls);
        buf.put_u32_le(self.max_frame_len);
        out
    }

    /// Parses and checks a peer's preface.
    ///
    /// Refuses a wrong magic (naming HTTP when it looks like HTTP), a version
    /// other than ours and a frame limit too small to carry any frame.
    pub fn parse(bytes: &[u8; PREFACE_LEN]) -> Result<Preface, ProtocolError> {
        let (magic, rest) = bytes.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(if looks_like_http(bytes) {
                ProtocolError::HttpPeer
            } else if looks_like_tls(bytes) {
                ProtocolError::TlsPeer
            } else {
                ProtocolError::BadMagic(*bytes)
            });
        }
        let mut rest = rest;
        let version = bytes::Buf::get_u16_le(&mut rest);
        let max_calls = bytes::Buf::get_u16_le(&mut rest);
        let max_frame_len = bytes::Buf::get_u32_le(&mut rest);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(ProtocolError::UnsupportedVersion { theirs: version });
        }
        if max_frame_len < MIN_FRAME_LEN {
            return Err(ProtocolError::FrameLimitTooSmall(max_frame_len));
        }
        Ok(Preface {
            version,
            max_calls,
            max_frame_len,
        })
    }
}

/// Longest message an error frame carries, in bytes; longer ones are cut.
pub const MAX_ERROR_MESSAGE_LEN: usize = 512;

/// Longest message of an "incompatible method" error (code 14), which
/// carries the server's form of the method after its sentence.
pub const MAX_REFUSAL_LEN: usize = 8192;

/// The smallest frame limit a peer may announce: enough for a request head
/// with a long method name and a useful error message.
pub const MIN_FRAME_LEN: u32 = 1024;

/// Whether the first bytes a peer sent look like an HTTP/1 request line.
pub fn looks_like_http(bytes: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"PATCH ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PRI * ",
    ];
    METHODS
        .iter()
        .any(|m| bytes.starts_with(m) || (bytes.len() >= 4 && m.starts_with(bytes)))
}

/// Whether the first bytes a peer sent look like a TLS record: a handshake
/// (a client's hello) or an alert (a TLS server refusing a plaintext
/// client), in any TLS version's record layer (`0x03 0x00..=0x04`).
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, version, ..] if *version <= 0x04)
}

/// A checked frame header.
///
/// Only constructible through [`Header::parse`] (which validates every field)
/// or [`Header::new`], so a `Header` in hand is always one we may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    len: u32,
    kind: Kind,
    id: u64,
}

impl Header {
    /// A header for a payload of `len` bytes.
    ///
    /// Fails if `len` does not fit the 32-bit length field.
    pub fn new(kind: Kind, id: u64, len: usize) -> Result<Header, ProtocolError> {
        let len = u32::try_from(len).map_err(|_| ProtocolError::FrameTooLarge {
            len,
            limit: MAX_PAYLOAD_LEN,
        })?;
        Ok(Header { len, kind, id })
    }

    /// Payload length in bytes (the header's own 16 bytes not included).
    pub fn payload_len(&self) -> usize {
        self.len as usize
    }

    /// What the frame is for.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The call this frame belongs to; [`CONNECTION_ID`] for the connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Parses a header and checks it against `max_frame_len`.
    ///
    /// Cheap and allocation-free: this runs before the reader reserves room
    /// for the payload, so a lying length costs nothing.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_frame_len: usize) -> Result<Header, ProtocolError> {
        let mut buf = &bytes[..];
        let len = bytes::Buf::get_u32_le(&mut buf);
        let kind = bytes::Buf::get_u8(&mut buf);
        let flags = bytes::Buf::get_u8(&mut buf);
        let reserved = bytes::Buf::get_u16_le(&mut buf);
        let id = bytes::Buf::get_u64_le(&mut buf);

        if len as usize > max_frame_len {
            return Err(ProtocolError::FrameTooLarge {
                len: len as usize,
                limit: max_frame_len,
            });
        }
        let kind = Kind::from_wire(kind)?;
        if flags != 0 {
            return Err(ProtocolError::ReservedBits {
                field: "flags",
                value: u64::from(flags),
            });
        }
        if reserved != 0 {
            return Err(ProtocolError::ReservedBits {
                field: "header",
                value: u64::from(reserved),
            });
        }
        match kind {
            Kind::Request | Kind::Response | Kind::Cancel | Kind::Item | Kind::End | Kind::Credit
                if id == CONNECTION_ID =>
            {
                return Err(ProtocolError::ZeroId(kind));
            }
            Kind::Goodbye if id != CONNECTION_ID => return Err(ProtocolError::NonZeroId(kind, id)),
            _ => {}
        }
        Ok(Header { len, kind, id })
    }

    /// Appends the 16 header bytes to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_slice(&self.to_bytes());
    }

    /// The 16 header bytes: put together here and appended in one go,
    /// since each append checks for room on its own.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [l0, l1, l2, l3] = self.len.to_le_bytes();
        let [i0, i1, i2, i3, i4, i5, i6, i7] = self.id.to_le_bytes();
        // Then flags and the reserved u16, zero.
        [
            l0,
            l1,
            l2,
            l3,
            self.kind as u8,
            0,
            0,
            0,
            i0,
            i1,
            i2,
            i3,
            i4,
            i5,
            i6,
            i7,
        ]
    }
}

/// The payload of a goodbye frame: the last request id the server started
/// (every request after it was never run).
pub fn goodbye_payload(last_request_id: u64) -> Bytes {
    Bytes::copy_from_slice(&last_request_id.to_le_bytes())
}

/// Reads a goodbye frame's payload.
pub fn parse_goodbye(payload: &[u8]) -> Result<u64, ProtocolError> {
    payload
        .try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| ProtocolError::BadGoodbye(payload.len()))
}

/// The payload of a credit frame: how many more items the sender may send.
pub fn credit_payload(items: u32) -> Bytes {
    Bytes::copy_from_slice(&items.to_le_bytes())
}

/// Reads a credit frame's payload: a nonzero `u32`.
pub fn parse_credit(payload: &[u8]) -> Result<u32, ProtocolError> {
    match payload.try_into().map(u32::from_le_bytes) {
        Ok(0) | Err(_) => Err(ProtocolError::BadCredit(payload.len())),
        Ok(items) => Ok(items),
    }
}

/// A whole frame: a checked header and its payload.
///
/// The payload is a [`Bytes`] so a frame read off the socket shares the read
/// buffer rather than copying out of it.
#[derive(Debug, Clone)]
pub struct Frame {
    header: Header,
    payload: Bytes,
}

impl Frame {
    /// Builds a frame around `payload`.
    pub fn new(kind: Kind, id: u64, payload: Bytes) -> Result<Frame, ProtocolError> {
        let header = Header::new(kind, id, payload.len())?;
        Ok(Frame { header, payload })
    }

    /// An error frame: the code byte, then the message as UTF-8.
    ///
    /// Messages longer than [`MAX_ERROR_MESSAGE_LEN`] are cut at a character
    /// boundary, which keeps the frame small enough for any peer's limit;
    /// an incompatible-method refusal may run to [`MAX_REFUSAL_LEN`], and
    /// its maker fits it to the peer's limit.
    pub fn error(id: u64, code: u8, message: &str) -> Frame {
        let limit = match code == crate::error::ErrorCode::IncompatibleMethod as u8 {
            true => MAX_REFUSAL_LEN,
            false => MAX_ERROR_MESSAGE_LEN,
        };
        let mut end = message.len().min(limit);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = message.get(..end).unwrap_or_default();
        let mut payload = bytes::BytesMut::with_capacity(1 + message.len());
        payload.put_u8(code);
        payload.put_slice(message.as_bytes());
        Frame {
            // At most 1 + MAX_REFUSAL_LEN bytes, so this never truncates.
            header: Header {
                len: payload.len() as u32,
                kind: Kind::Error,
                id,
            },
            payload: payload.freeze(),
        }
    }

    /// Pairs a parsed header with the payload it announced.
    ///
    /// Returns `None` when the payload's length differs from the header's.
    pub fn from_parts(header: Header, payload: Bytes) -> Option<Frame> {
        (header.payload_len() == payload.len()).then_some(Frame { header, payload })
    }

    /// The frame's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The frame's payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Splits the frame into header and payload.
    pub fn into_parts(self) -> (Header, Bytes) {
        (self.header, self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(len: u32, kind: u8, flags: u8, reserved: u16, id: u64) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut buf = &mut out[..];
        buf.put_u32_le(len);
        buf.put_u8(kind);
        buf.put_u8(flags);
        buf.put_u16_le(reserved);
        buf.put_u64_le(id);
        out
    }

    #[test]
    fn header_round_trips() {
        let header = Header::new(Kind::Response, 42, 7).unwrap();
        let mut out = Vec::new();
        header.encode(&mut out);
        let bytes: [u8; HEADER_LEN] = out.try_into().unwrap();
        assert_eq!(Header::parse(&bytes, 100).unwrap(), header);
        assert_eq!(bytes, header_bytes(7, Kind::Response as u8, 0, 0, 42));
    }

    #[test]
    fn header_checks_every_field() {
        let max = 1000;
        assert_eq!(
            Header::parse(&header_bytes(1001, 1, 0, 0, 1), max),
            Err(ProtocolError::FrameTooLarge {
                len: 1001,
                limit: 1000
            })
        );
        assert_eq!(
            Header::parse(&header_bytes(0, 9, 0, 0, 1), max),
            Err(ProtocolError::ReservedKind(9))
        );
        assert_eq!(
            Header::parse(&header_bytes(0, 200, 0, 0, 1), max),
            Err(ProtocolError::UnknownKind(200))
        );
        assert!(matches!(
            Header::parse(&header_bytes(0, 1, 1, 0, 1), max),
            Err(ProtocolError::ReservedBits { field: "flags", .. })
        ));
        assert!(matches!(
            Header::parse(&header_bytes(0, 1, 0, 3, 1), max),
            Err(ProtocolError::ReservedBits { field: "header", .. })
        ));
        assert_eq!(
            Header::parse(&header_bytes(0, 1, 0, 0, 0), max),
            Err(ProtocolError::ZeroId(Kind::Request))
        );
        assert!(Header::parse(&header_bytes(0, 3, 0, 0, 0), max).is_ok());
        assert!(Header::parse(&header_bytes(8, 5, 0, 0, 0), max).is_ok());
        assert_eq!(
            Header::parse(&header_bytes(8, 5, 0, 0, 4), max),
            Err(ProtocolError::NonZeroId(Kind::Goodbye, 4))
        );
    }

    #[test]
    fn preface_round_trips_and_refuses_strangers() {
        let ours = Preface::ours(DEFAULT_MAX_FRAME_LEN);
        assert_eq!(Preface::parse(&ours.to_bytes()), Ok(ours));

        let mut http = [b' '; PREFACE_LEN];
        http[..14].copy_from_slice(b"GET / HTTP/1.1");
        assert_eq!(Preface::parse(&http), Err(ProtocolError::HttpPeer));

        let mut newer = ours.to_bytes();
        newer[8] = 4;
        assert_eq!(
            Preface::parse(&newer),
            Err(ProtocolError::UnsupportedVersion { theirs: 4 })
        );
        assert!(matches!(
            Preface::parse(&[0u8; PREFACE_LEN]),
            Err(ProtocolError::BadMagic(_))
        ));
    }
}
