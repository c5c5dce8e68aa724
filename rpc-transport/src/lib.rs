//! Byte transports for the `rpc` framework.
//!
//! The runtime in `rpc-core` speaks frames; this crate turns frames into
//! bytes and back over anything that is `AsyncRead + AsyncWrite`.
//!
//! # Layout
//!
//! - [`codec`]: [`FrameCodec`](codec::FrameCodec), pure bytes <-> frames,
//!   checking each header before reserving room for its payload.
//! - [`handshake`]: the preface exchange that opens every connection.
//! - [`io`]: the frame reader and the batching frame writer.
//! - [`limits`]: [`Limits`], what a peer may send over one connection.
//! - [`tcp`]: TCP with `TCP_NODELAY`.
//! - [`memory`]: an in-memory pair for tests.

pub mod codec;
pub mod handshake;
pub mod io;
pub mod limits;
pub mod memory;
pub mod tcp;

pub use limits::Limits;
