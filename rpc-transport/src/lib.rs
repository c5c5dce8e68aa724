//! Byte transports for the `rpc` framework.
//!
//! The runtime in `rpc-core` speaks frames; this crate turns frames into
//! bytes and back over any byte stream, and provides the streams: TCP,
//! Unix sockets and in-memory pipes, each with a listener and a connector.
//!
//! # Layout
//!
//! - [`stream`]: the seam: [`ByteStream`](stream::ByteStream),
//!   [`Listener`](stream::Listener), [`Connector`](stream::Connector), and
//!   [`establish`](stream::establish), which turns a stream into a
//!   connection.
//! - [`codec`]: [`FrameCodec`](codec::FrameCodec), pure bytes <-> frames,
//!   checking each header before reserving room for its payload.
//! - [`handshake`]: the preface exchange that opens every connection.
//! - [`reader`] and [`writer`]: frames from and to a byte stream.
//! - [`limits`]: [`Limits`], what a peer may send over one connection.
//! - [`tcp`], [`unix`], [`memory`]: the transports.
//! - [`sniff`]: telling the binary protocol from HTTP on one port.
//! - [`admission`]: connections that have not spoken yet, which a server
//!   at its connection limit closes, oldest first, to make room.
//! - `http` (feature `json`, on by default): the HTTP and WebSocket door
//!   for JSON-RPC callers.

pub mod admission;
pub mod codec;
pub mod handshake;
#[cfg(feature = "json")]
pub mod http;
pub mod limits;
pub mod memory;
pub mod reader;
pub mod sniff;
mod spare;
pub mod stream;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(unix)]
pub mod unix;
pub mod writer;

pub use limits::Limits;

/// The frame reader and writer, under their old module name.
#[deprecated(
    since = "0.2.0",
    note = "the reader is in `rpc_transport::reader`, the writer in `rpc_transport::writer`"
)]
pub mod io {
    pub use crate::reader::{DEFAULT_FRAME_TIMEOUT, FrameReader};
    pub use crate::writer::FrameWriter;
}
