//! The transport-agnostic runtime of the `rpc` framework.
//!
//! Users depend on the `rpc` facade, which re-exports what they need; this
//! crate is the machinery underneath. `docs/ARCHITECTURE.md` follows a call
//! through it, file by file.
//!
//! # Layout
//!
//! From the wire up:
//!
//! - [`frame`]: the wire values (preface, header, request head, frame
//!   kinds) and their checks; [`ProtocolError`](frame::ProtocolError).
//! - [`codec`]: payload codecs (bincode 2 for the binary protocol) and the
//!   limits every decode runs under.
//! - [`blob`]: [`Bytes`](blob::Bytes), binary data received without a copy.
//! - [`error`]: [`Error`], the one error type, and the wire error codes.
//! - [`peer`]: [`Peer`], who is at the other end of a connection.
//! - [`descriptor`]: what a service offers, as data; [`types`]: the serde
//!   form of its types, traced; [`compat`]: each method's shape and
//!   fingerprint, and the checks made with them.
//! - [`context`]: what a handler knows about its call; deadline inheritance.
//! - [`streaming`]: [`Streaming`] and the credit-based flow control of
//!   streams.
//! - [`service`]: the traits generated code implements.
//! - [`transport`]: the seam a byte transport plugs into.
//! - `permit` and `writer`: the cap on calls in flight and the writer task,
//!   which both sides share.
//! - [`client`]: endpoints, connections, calls in flight, streams.
//! - [`server`]: routing, the connection loop, calls in flight, the call
//!   task.

pub mod blob;
pub mod client;
pub mod codec;
pub mod compat;
pub mod context;
pub mod descriptor;
pub mod error;
pub mod frame;
mod give_way;
#[doc(hidden)]
pub mod macro_support;
pub mod metadata;
pub mod middleware;
pub mod observe;
mod outbox;
pub mod peer;
mod permit;

/// The request head and payload encoding, under their old name.
#[deprecated(
    since = "0.2.0",
    note = "the request head is in `rpc_core::frame`, payload encoding in `rpc_core::codec`"
)]
pub mod payload {
    pub use crate::codec::{DecodeError, encode_into};
    pub use crate::frame::{MAX_METHOD_NAME_LEN, MAX_WIRE_BUDGET, RequestHead};
}
mod scratch;
pub mod server;
pub mod service;
mod signal;
pub mod streaming;
pub mod trace;
pub mod transport;
pub mod types;
mod writer;

pub use writer::DEFAULT_WRITE_TIMEOUT;

pub use client::{Backoff, Balanced, Client, ClientConfig, EndpointState, EndpointStats, Policy};
pub use codec::{Codec, DecodeLimits};
pub use context::Context;
pub use descriptor::{ArgDescriptor, MethodDescriptor, ServiceDescriptor, Shape};
pub use error::Error;
pub use peer::{AltName, Peer, PeerAddr, PeerCertificate};
pub use server::{Router, ServerConfig, ServerState, ServerStats};
pub use service::{Answer, Args, BoxFuture, RequestMessage, Service};
pub use streaming::Streaming;
