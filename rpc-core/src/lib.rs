//! The transport-agnostic runtime of the `rpc` framework.
//!
//! Users depend on the `rpc` facade, which re-exports what they need; this
//! crate is the machinery underneath.
//!
//! # Layout
//!
//! - [`frame`]: the wire values (preface, header, frame kinds) and their checks.
//! - [`blob`]: [`Bytes`](blob::Bytes), binary data received without a copy.
//! - [`payload`]: bincode encoding of arguments and results; the request head.
//! - [`error`]: [`Error`], the one error type, and the wire error codes.
//! - [`service`]: the traits generated code implements.
//! - [`streaming`]: [`Streaming`] and the credit-based
//!   flow control of streams.
//! - [`context`]: what a handler knows about its call; deadline inheritance.
//! - [`transport`]: the seam a byte transport plugs into.
//! - [`client`]: the multiplexer behind every generated client.
//! - [`server`]: routing, limits, metrics and the per-connection dispatcher.

pub mod blob;
pub mod client;
pub mod context;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod generated;
pub mod payload;
pub mod server;
pub mod service;
pub mod streaming;
pub mod transport;
mod writer;

pub use writer::DEFAULT_WRITE_TIMEOUT;

pub use client::{Backoff, Client, ClientConfig};
pub use context::Context;
pub use error::Error;
pub use server::{Router, ServerConfig, ServerState, ServerStats};
pub use service::{BoxFuture, RequestMessage, Service, Shape};
pub use streaming::Streaming;
