//! [`ProtocolError`]: every way a peer can break the wire protocol, each
//! with the sentence the other side reads.

use super::{Kind, MIN_FRAME_LEN, MIN_VERSION, PREFACE_LEN, VERSION};

/// A violation of the wire protocol. The connection it happened on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first bytes were an HTTP request.
    #[error(
        "the peer sent an HTTP request to an rpc port; point an rpc client at this address, or an HTTP client at an HTTP server"
    )]
    HttpPeer,
    /// The first bytes were a TLS record: the peer speaks TLS, this side
    /// does not.
    #[error(
        "the peer speaks TLS and this side does not; use TLS on both sides (`Server::tls` and `ClientBuilder::tls`) or on neither"
    )]
    TlsPeer,
    /// The first bytes were not our magic.
    #[error(
        "the peer is not speaking the rpc protocol (its first bytes were {0:02x?}); check the address and port"
    )]
    BadMagic([u8; PREFACE_LEN]),
    /// The peer speaks another version.
    #[error(
        "the peer speaks rpc protocol version {theirs}, this build speaks versions {MIN_VERSION} to {VERSION}; upgrade the older side"
    )]
    UnsupportedVersion {
        /// The version the peer announced.
        theirs: u16,
    },
    /// The peer announced a frame limit too small to be usable.
    #[error("the peer announced a frame limit of {0} bytes, below the minimum of {MIN_FRAME_LEN}")]
    FrameLimitTooSmall(u32),
    /// A frame's length is over the receiver's limit.
    #[error(
        "a frame of {len} bytes exceeds the limit of {limit} bytes; raise `max_frame_len` on the receiving side if such messages are expected"
    )]
    FrameTooLarge {
        /// The length the frame announced.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// A kind byte this version reserves for a later feature.
    #[error("the peer sent a frame of reserved kind {0}, which protocol version {VERSION} does not support")]
    ReservedKind(u8),
    /// A kind byte that means nothing.
    #[error("the peer sent a frame of unknown kind {0}")]
    UnknownKind(u8),
    /// Bits that must be zero were not.
    #[error("the peer set reserved bits in the {field} (value {value:#x}); they must be zero")]
    ReservedBits {
        /// Which field held them.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// A per-call frame used the connection id 0.
    #[error("the peer sent a {0:?} frame with request id 0, which is reserved for the connection")]
    ZeroId(Kind),
    /// A connection-level frame carried a request id.
    #[error(
        "the peer sent a {0:?} frame with request id {1}; that kind concerns the whole connection and must use id 0"
    )]
    NonZeroId(Kind, u64),
    /// A frame started arriving and did not finish within the frame timeout.
    #[error(
        "the peer took longer than {timeout:?} to send one frame ({got} bytes arrived); raise the frame timeout if links are really that slow"
    )]
    FrameTimeout {
        /// The frame timeout.
        timeout: std::time::Duration,
        /// Bytes of the frame that had arrived.
        got: usize,
    },
    /// A cancel named a request id the peer has not used yet.
    #[error("the peer cancelled request id {0}, which it never sent")]
    CancelForUnknownId(u64),
    /// A credit frame's payload was not a nonzero 4-byte count.
    #[error("the peer sent a credit frame whose payload ({0} bytes) is not a nonzero 4-byte count")]
    BadCredit(usize),
    /// A stream frame named a call that has no stream in that direction.
    #[error("the peer sent a {kind:?} frame for request id {id}, whose call has no stream from the peer")]
    NoSuchStream {
        /// The kind received.
        kind: Kind,
        /// The request id it named.
        id: u64,
    },
    /// A frame answered, or streamed for, a request this side has not sent.
    #[error("the peer sent a {kind:?} frame for request id {id}, which this side has not sent")]
    NotSent {
        /// The kind received.
        kind: Kind,
        /// The request id it named.
        id: u64,
    },
    /// A stream item arrived without credit for it.
    #[error(
        "the peer sent more items on the stream of request id {id} than the {window} it was granted; it must wait for credit"
    )]
    CreditExceeded {
        /// The request id of the stream.
        id: u64,
        /// The credit outstanding when the item came.
        window: u32,
    },
    /// Credit granted beyond what a stream may have outstanding.
    #[error(
        "the peer granted request id {id} credit for {total} items, more than the {max} a stream may have"
    )]
    CreditOverflow {
        /// The request id of the stream.
        id: u64,
        /// The total the grant would bring the stream to.
        total: u64,
        /// The most a stream may have.
        max: u32,
    },
    /// A stream item or end arrived after that stream's end.
    #[error("the peer sent a {kind:?} frame on the stream of request id {id} after ending it")]
    AfterEnd {
        /// The kind received.
        kind: Kind,
        /// The request id of the stream.
        id: u64,
    },
    /// A cancel frame carried a payload.
    #[error("the peer sent a cancel frame with a {0}-byte payload; cancel frames are empty")]
    CancelWithPayload(usize),
    /// A goodbye frame's payload was not an 8-byte request id.
    #[error("the peer sent a goodbye frame whose payload is {0} bytes instead of 8")]
    BadGoodbye(usize),
    /// A frame that this side of the connection must never receive.
    #[error("the peer sent a {kind:?} frame, which only a {sender} may send")]
    WrongDirection {
        /// The kind received.
        kind: Kind,
        /// Who may send it.
        sender: &'static str,
    },
    /// The connection ended partway through a frame or the preface.
    #[error("the connection closed in the middle of a frame ({got} of {expected} bytes received)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// An error frame without even its code byte.
    #[error("the peer sent an error frame with no error code")]
    EmptyError,
    /// A request's head (budget, method name) was malformed.
    #[error("malformed request head: {0}")]
    BadRequestHead(&'static str),
    /// A request id was not above the previous one on this connection
    /// (reused while in flight, or out of order).
    #[error(
        "the peer sent request id {id} after request id {last}; request ids must increase on a connection (was an id reused?)"
    )]
    IdNotIncreasing {
        /// The id received.
        id: u64,
        /// The previous request id.
        last: u64,
    },
}
