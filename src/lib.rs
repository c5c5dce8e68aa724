//! Remote procedure calls for Rust: annotate a trait, get a typed client and
//! a server, and call functions on another machine as if they were local.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! /// Errors the service itself reports; they travel as values.
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! pub enum MathError {
//!     DivisionByZero,
//! }
//!
//! /// Arithmetic, served over the network.
//! #[rpc::service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     /// Divides, failing on zero.
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
//! }
//!
//! // The server implements the trait with ordinary `async fn`s.
//! struct Calc;
//!
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
//!         if b == 0 { Err(MathError::DivisionByZero) } else { Ok(a / b) }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), rpc::Error> {
//!     // Serve it (port 0: the system picks a free port).
//!     let server = rpc::Server::new()
//!         .serve(CalculatorServer::new(Calc))
//!         .bind("127.0.0.1:0")
//!         .await?;
//!
//!     // Call it. Client methods keep the trait's arguments and return
//!     // `Result<T, rpc::Error>`, because the network can fail.
//!     let calc = CalculatorClient::connect(server.local_addr()).await?;
//!     assert_eq!(calc.add(5, 3).await?, 8);
//!     assert_eq!(calc.div(7, 0).await?, Err(MathError::DivisionByZero));
//!
//!     // A deadline for one call; the budget travels to the server.
//!     use std::time::Duration;
//!     assert_eq!(calc.with_timeout(Duration::from_millis(500)).div(7, 2).await?, Ok(3));
//!
//!     server.stop().await;
//!     Ok(())
//! }
//! ```
//!
//! # What `#[rpc::service]` emits
//!
//! For a trait `Calculator`:
//!
//! - the trait itself, with each `async fn` rewritten to return
//!   `impl Future<Output = T> + Send` (implement it with plain `async fn`);
//! - `CalculatorRequest`, one variant per method holding its arguments, with
//!   `CalculatorRequest::descriptor()`, the service as data;
//! - `CalculatorResponse`, one variant per method holding its result;
//! - `CalculatorClient`: cheap to clone, one method per trait method
//!   returning a future that owns what it needs (store it, spawn it, race
//!   it), with `connect`, `from_client` and `with_timeout`;
//! - `CalculatorServer<S>`: an [`rpc::Service`](Service) that decodes a
//!   request, runs `S`'s method and encodes the result, to pass to
//!   [`Server::serve`].
//!
//! Method arguments and results must be serde-serializable and owned.
//! Doc comments and `#[cfg]`s on methods carry over to every generated item.
//! If you rename this crate in `Cargo.toml`, say where it is:
//! `#[my_rpc::service(crate = ::my_rpc)]`.
//!
//! # Deadlines, cancellation and context
//!
//! Every call has a deadline (30 s unless the client or the call says
//! otherwise), and the remaining budget travels with the request. A handler
//! reads its call's [`Context`] without an extra parameter, and calls it makes
//! inherit what remains of its budget. Dropping a call's future cancels the
//! handler on the server; mark a method `#[rpc(no_cancel)]` if it must finish
//! once started, and `#[rpc(idempotent)]` if running it twice is harmless, so
//! the client may retry it once after a lost connection.
//!
//! ```
//! use std::time::Duration;
//!
//! #[rpc::service]
//! pub trait Jobs {
//!     /// How long the caller still waits, as the handler sees it.
//!     async fn budget_left_ms(&self) -> u64;
//!     /// Runs to the end even if the caller goes away.
//!     #[rpc(no_cancel)]
//!     async fn commit(&self, id: u64) -> bool;
//!     /// Safe to run twice.
//!     #[rpc(idempotent)]
//!     async fn status(&self, id: u64) -> String;
//! }
//!
//! struct J;
//! impl Jobs for J {
//!     async fn budget_left_ms(&self) -> u64 {
//!         let ctx = rpc::Context::current().expect("handlers run inside their call's context");
//!         ctx.remaining().as_millis() as u64
//!     }
//!     async fn commit(&self, _id: u64) -> bool { true }
//!     async fn status(&self, id: u64) -> String { format!("job {id}: done") }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
//! let server = rpc::Server::new().serve(JobsServer::new(J)).bind("127.0.0.1:0").await?;
//! let jobs = JobsClient::connect(server.local_addr()).await?;
//! let left = jobs.with_timeout(Duration::from_secs(2)).budget_left_ms().await?;
//! assert!(left > 0 && left <= 2000);
//! assert!(jobs.commit(7).await?);
//! assert_eq!(jobs.status(7).await?, "job 7: done");
//! server.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! # Streams
//!
//! A method may take a stream, return one, or both, declared with
//! [`Streaming<T>`] in the same trait. The generated client returns a
//! `Streaming<T>` (a `Stream` of `Result<T, rpc::Error>`) for methods that
//! return a stream, and takes any `Stream<Item = T>` for a stream argument.
//! Streams have credit-based flow control: a slow consumer holds its
//! producer back, and other calls on the connection are never stalled.
//! Dropping a stream cancels its call; a deadline covers the whole stream;
//! a handler ends a stream early with an error through
//! [`Error::failed`], which the client sees as the last item.
//!
//! ```
//! use rpc::Streaming;
//!
//! #[rpc::service]
//! pub trait Numbers {
//!     /// Server streaming: 0, 1, ... n-1.
//!     async fn count(&self, n: u32) -> Streaming<u32>;
//!     /// Client streaming: adds what it is sent.
//!     async fn sum(&self, numbers: Streaming<u32>) -> u64;
//!     /// Both: doubles each number as it arrives.
//!     async fn double(&self, numbers: Streaming<u32>) -> Streaming<u32>;
//! }
//!
//! struct N;
//! impl Numbers for N {
//!     async fn count(&self, n: u32) -> Streaming<u32> {
//!         Streaming::iter(0..n)
//!     }
//!     async fn sum(&self, mut numbers: Streaming<u32>) -> u64 {
//!         let mut total = 0;
//!         while let Some(Ok(n)) = numbers.next().await {
//!             total += u64::from(n);
//!         }
//!         total
//!     }
//!     async fn double(&self, mut numbers: Streaming<u32>) -> Streaming<u32> {
//!         let mut doubled = Vec::new();
//!         while let Some(Ok(n)) = numbers.next().await {
//!             doubled.push(n * 2);
//!         }
//!         Streaming::iter(doubled)
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
//! let server = rpc::Server::new().serve(NumbersServer::new(N)).bind("127.0.0.1:0").await?;
//! let numbers = NumbersClient::connect(server.local_addr()).await?;
//!
//! // Read a stream with `next`, or all of it with `try_collect`.
//! let mut counted = Vec::new();
//! let mut stream = numbers.count(5);
//! while let Some(n) = stream.next().await {
//!     counted.push(n?);
//! }
//! assert_eq!(counted, [0, 1, 2, 3, 4]);
//!
//! // Send any `Stream` of values; `Streaming::iter(..).values()` is one.
//! assert_eq!(numbers.sum(Streaming::iter([1, 2, 3]).values()).await?, 6);
//!
//! let doubled = numbers.double(Streaming::iter([5, 6]).values()).try_collect().await?;
//! assert_eq!(doubled, [10, 12]);
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Location transparency
//!
//! With `#[rpc::service(transparent)]` the generated client implements the
//! service trait itself, so code written against `impl Calculator` runs
//! unchanged against a local value or a remote server. Every method must
//! then return `Result<T, E>` (or your alias of it) with
//! `E: From<rpc::Error>`: network failures fold into your own error type
//! instead of a nested `Result`. (The client's inherent methods, which
//! return `Result<T, rpc::Error>`, stay available as before.)
//!
//! ```
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! pub enum MathError {
//!     DivisionByZero,
//!     Unavailable(String),
//! }
//!
//! impl From<rpc::Error> for MathError {
//!     fn from(err: rpc::Error) -> Self {
//!         MathError::Unavailable(err.to_string())
//!     }
//! }
//!
//! #[rpc::service(transparent)]
//! pub trait Calculator {
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
//! }
//!
//! struct Local;
//! impl Calculator for Local {
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
//!         if b == 0 { Err(MathError::DivisionByZero) } else { Ok(a / b) }
//!     }
//! }
//!
//! /// Knows nothing about networks.
//! async fn half(calc: &impl Calculator, n: i64) -> Result<i64, MathError> {
//!     calc.div(n, 2).await
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
//! let server = rpc::Server::new().serve(CalculatorServer::new(Local)).bind("127.0.0.1:0").await?;
//! let remote = CalculatorClient::connect(server.local_addr()).await?;
//! assert_eq!(half(&Local, 10).await, Ok(5));
//! assert_eq!(half(&remote, 10).await, Ok(5));
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! # What a service trait may contain
//!
//! Only `async fn` methods taking `&self` and owned, serde-serializable
//! arguments (plain names, no patterns), returning an owned serializable
//! type. Not allowed, each with a compile error that points at the spot and
//! says what to write instead: other receivers, borrowed, `impl Trait`,
//! `dyn` or `Self` types anywhere in an argument or result, generic traits
//! or methods, default bodies, associated types or consts, `unsafe`, `const`
//! or `extern` methods, supertraits other than `Send`, `Sync` and `'static`,
//! method names the client uses itself (`connect`, `from_client`,
//! `with_timeout`, `rpc_client`, `clone`), and names longer than 255 bytes
//! on the wire. Every mistake in a trait is reported in one go.
//!
//! Methods may carry markers: `#[rpc(no_cancel)]`, `#[rpc(idempotent)]` and
//! `#[rpc(timeout = "..")]`, the method's default deadline as a whole
//! number and a unit: `"250ms"`, `"5s"`, `"2m"` or `"1h"` (`with_timeout`
//! still overrides it). Markers combine: `#[rpc(idempotent, timeout = "2s")]`.
//!
//! # Transports, callers and descriptors
//!
//! A server listens on TCP ([`Server::bind`]), a Unix domain socket
//! ([`Server::bind_unix`]), or any [`transport::Listener`]
//! ([`Server::start`]); a client dials TCP ([`ClientBuilder::connect`]), a
//! Unix socket ([`ClientBuilder::connect_unix`]) or any
//! [`transport::Connector`] ([`ClientBuilder::connect_with`]), and redials
//! through it after losing its connection. A handler learns who called from
//! [`Context::peer`]: a TCP address, or a Unix socket's process
//! credentials. Every service describes itself as data: see [`descriptor`].
//!
//! # Many calls, one connection
//!
//! A client (and all its clones) multiplexes every call over one TCP
//! connection. Each call carries a request id; the server answers a call
//! that is done on its first poll at once, runs each call that waits in a
//! task of its own, and answers in completion order, so a slow call never
//! holds up a fast one. Frames queued while the connection is busy go out together
//! in one write. A client caps its calls in flight, a server its calls in
//! progress per connection; past the cap requests queue on the server, up to
//! as many again, and past that the server stops reading and TCP holds the
//! client back. See [`Server`] for every limit and its default.
//!
//! # Errors
//!
//! Application errors (`MathError` above) are values inside `Ok`. [`Error`]
//! covers what the network and the framework do to a call: the connection
//! lost, the deadline passed, a method the server does not have, a handler
//! that panicked (the server answers with an error and keeps serving), a
//! message over the frame limit, a peer breaking the protocol. Each says
//! what happened and what to do about it.
//!
//! # Layout
//!
//! This crate is the facade: [`Server`], [`ClientBuilder`] and re-exports.
//! The runtime lives in `rpc-core` (frames, codecs, client, server, context,
//! errors), byte transports in `rpc-transport` (frame reader and writer,
//! TCP, Unix sockets, in-memory), the macro in `rpc-macros`.
//! `docs/ARCHITECTURE.md` follows a call through them, file by file; the
//! wire format is specified byte for byte in `docs/PROTOCOL.md`.

mod client;
pub mod discover;
#[cfg(feature = "json")]
mod door;
mod server;

pub use client::{ClientBuilder, DEFAULT_CONNECT_TIMEOUT};
pub use rpc_core::blob::Bytes;
pub use rpc_core::client::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT};
pub use rpc_core::codec::{DEFAULT_MAX_NESTING, Message};
pub use rpc_core::error::ErrorCode;
pub use rpc_core::frame::{DEFAULT_MAX_FRAME_LEN, ProtocolError};
pub use rpc_core::macro_support::FromRpcError;
pub use rpc_core::metadata::{Metadata, MetadataError, MetadataValue};
pub use rpc_core::server::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BUDGET, DEFAULT_MAX_CALLS_PER_CONNECTION};
pub use rpc_core::streaming::{STREAM_WINDOW, Streaming};
pub use rpc_core::{
    AltName, Answer, Args, Backoff, Client, Codec, Context, EndpointStats, Error, Peer, PeerAddr,
    PeerCertificate, RequestMessage, ServerStats, Service,
};
pub use rpc_macros::service;
#[cfg(feature = "json")]
pub use rpc_transport::http::Cors;
pub use rpc_transport::reader::DEFAULT_FRAME_TIMEOUT;
pub use server::{
    DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS, DEFAULT_PREFACE_TIMEOUT, Server, ServerHandle, shutdown_signal,
};

/// Descriptors: what `#[rpc::service]` knows about a service, as data.
///
/// Every generated request type has a `descriptor()`: the service's wire
/// name, and for each method its name, arguments and result (with the
/// types as written in the trait), stream shape and markers. The server
/// routes calls by it; your own tools (documentation, compatibility
/// checks) can read it too.
///
/// ```
/// #[rpc::service]
/// pub trait Calculator {
///     /// Adds two numbers.
///     async fn add(&self, a: i64, b: i64) -> i64;
///     #[rpc(idempotent, timeout = "250ms")]
///     async fn total(&self) -> Result<u64, String>;
/// }
///
/// let calculator = CalculatorRequest::descriptor();
/// assert_eq!(calculator.name, "Calculator");
/// let add = calculator.method("add").unwrap();
/// assert_eq!(add.full_name, "Calculator.add");
/// assert_eq!(add.docs, "Adds two numbers.");
/// let args: Vec<_> = add.args.iter().map(|arg| (arg.name, arg.ty)).collect();
/// assert_eq!(args, [("a", "i64"), ("b", "i64")]);
/// let total = calculator.method("total").unwrap();
/// assert_eq!(total.result, "Result<u64, String>");
/// assert!(total.idempotent);
/// assert_eq!(total.timeout, Some(std::time::Duration::from_millis(250)));
/// ```
pub mod descriptor {
    pub use rpc_core::descriptor::{ArgDescriptor, MethodDescriptor, ServiceDescriptor, Shape};
}

/// Compatible by construction: each method's shape on the wire travels as a
/// fingerprint, a server refuses a call whose shape differs from its own
/// ([`Error::IncompatibleMethod`], naming the difference), and a service's
/// descriptor can be kept as JSON and checked for breaking changes in CI.
/// `docs/COMPATIBILITY.md` says which changes are compatible.
///
/// ```
/// #[rpc::service]
/// pub trait Calculator {
///     async fn add(&self, a: i64, b: i64) -> i64;
/// }
///
/// // What `CalculatorServer::<YourImpl>::descriptor_json()` writes.
/// let json = CalculatorRequest::descriptor().contract().to_json();
/// let checked_in = rpc::compat::Contract::from_json(&json).unwrap();
/// assert_eq!(checked_in.methods[0].signature, "add(a: i64, b: i64) -> i64");
///
/// // A later build of the trait compared with the checked-in descriptor.
/// mod later {
///     #[rpc::service]
///     pub trait Calculator {
///         async fn add(&self, a: u64, b: i64) -> i64;
///     }
/// }
/// let built = later::CalculatorRequest::descriptor().contract();
/// let breaking = rpc::compat::breaking_changes(&checked_in, &built);
/// assert_eq!(
///     breaking[0].to_string(),
///     "`Calculator.add`: argument `a`: the old version has i64, the new version has u64"
/// );
/// ```
pub mod compat {
    pub use rpc_core::compat::*;
}

/// JSON-RPC 2.0: how callers in other languages reach a server.
///
/// Every server answers JSON-RPC 2.0 over HTTP/1.1 (`POST /rpc`) and over
/// WebSocket (`GET /rpc` with an upgrade) on the same port as the binary
/// protocol, and describes itself with an OpenRPC document at
/// `GET /rpc/openrpc.json` (and the `rpc.discover` method). See
/// [`Server::json`] to switch it off, [`Server::json_path`],
/// [`Server::cors`] and [`Server::max_batch`] to shape it, and
/// `docs/JSON.md` for the mapping of types, errors and codes.
#[cfg(feature = "json")]
pub mod json {
    pub use rpc_core::server::json::DEFAULT_MAX_BATCH;
    pub use rpc_core::server::json::codes;
    pub use rpc_transport::http::TIMEOUT_HEADER;
}

/// Prometheus for the call metrics (feature `prometheus`): a recorder for
/// the `metrics` facade whose text [`Server::metrics`] serves at
/// `GET /metrics`.
#[cfg(feature = "prometheus")]
pub mod prometheus {
    pub use metrics_exporter_prometheus::PrometheusHandle;

    /// Installs a Prometheus recorder as the process's `metrics` recorder,
    /// with histogram buckets suited to call durations (100 µs to 10 s),
    /// turns the call metrics on ([`crate::observe::enable_metrics`]), and
    /// returns the handle that renders it. Fails if a recorder is
    /// installed already.
    pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
        const BUCKETS: [f64; 12] = [
            0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
        ];
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&BUCKETS)?
            .install_recorder()?;
        rpc_core::observe::enable_metrics();
        Ok(handle)
    }
}

/// Metadata: the bounds of what one request may carry beside its
/// arguments (the types are [`Metadata`] and [`MetadataValue`]).
pub mod metadata {
    pub use rpc_core::metadata::{MAX_ENTRIES, MAX_KEY_LEN, MAX_METADATA_LEN};
}

/// Spans and metrics: what is recorded, and the switch for metrics (see
/// the module's table in `rpc_core::observe`).
pub mod observe {
    pub use rpc_core::observe::{CallOutcome, TARGET, enable_metrics, metrics_enabled};
}

/// Middleware: tower layers around calls, on the server
/// ([`Server::layer`]) and on the client ([`ClientBuilder::layer`]).
pub mod middleware {
    pub use rpc_core::middleware::{
        BoxError, CallService, ClientCall, ClientLayer, ClientNext, ClientService, FromFn, FromFnLayer,
        Middleware, Next, ServerCall, ServerLayer, ServerNext, from_fn, into_error,
    };
}

/// TLS on every door: TLS 1.3 (and 1.2) with rustls and its ring
/// provider, mutual TLS, certificate rotation, and the caller's verified
/// certificate in every handler.
///
/// A server proves an [`Identity`](tls::Identity) (certificate chain and
/// key) and may ask its clients for theirs ([`ClientAuth`](tls::ClientAuth));
/// a client trusts [`Roots`](tls::Roots) and may present its own identity.
/// Everything is checked when it is built, so a bad file fails at start-up,
/// naming the file.
///
/// ```no_run
/// # #[rpc::service] pub trait Users { async fn name(&self, id: u64) -> String; }
/// # struct U;
/// # impl Users for U { async fn name(&self, id: u64) -> String { String::new() } }
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use rpc::tls::{ClientAuth, ClientTls, Identity, Roots, ServerTls};
///
/// // The users service asks every caller for a certificate from its CA.
/// let server_tls = ServerTls::new(
///     Identity::from_pem_files("users.pem", "users.key")?,
///     ClientAuth::Required(Roots::from_pem_file("ca.pem")?),
/// )?;
/// let server = rpc::Server::new().tls(server_tls).serve(UsersServer::new(U)).bind("0.0.0.0:7443").await?;
///
/// // The order service calls it, proving who it is.
/// let client_tls = ClientTls::new(Roots::from_pem_file("ca.pem")?)?
///     .server_name("users.internal")?
///     .identity(Identity::from_pem_files("orders.pem", "orders.key")?)?;
/// let users = UsersClient::from_client(rpc::ClientBuilder::new().tls(client_tls).connect("users.internal:7443").await?);
///
/// // Later, with renewed files: new connections get the new certificate.
/// server.reload_tls(ServerTls::new(
///     Identity::from_pem_files("users.pem", "users.key")?,
///     ClientAuth::Required(Roots::from_pem_file("ca.pem")?),
/// )?)?;
/// # Ok(()) }
/// ```
///
/// `examples/tls` runs all of it with certificates it makes itself.
#[cfg(feature = "tls")]
pub mod tls {
    pub use rpc_transport::tls::{ClientAuth, ClientTls, Identity, Roots, ServerTls, TlsError};
}

/// Transports: where connections come from.
///
/// A server accepts from a [`Listener`](transport::Listener) (TCP, a Unix socket, an in-memory
/// listener, or your own); a client dials through a [`Connector`](transport::Connector) and
/// redials through it when its connection is lost. Implement both for a
/// transport of your own, and hand them to [`Server::start`] and
/// [`ClientBuilder::connect_with`].
pub mod transport {
    pub use rpc_transport::stream::{ByteStream, Connector, Io, Listener, ReadHalf};
    pub use rpc_transport::tcp::{TcpConnector, TcpListener};
    #[cfg(unix)]
    pub use rpc_transport::unix::{UnixConnector, UnixListener};

    /// In-memory connections: a server and its clients in one process.
    pub mod memory {
        pub use rpc_transport::memory::{MemoryConnector, MemoryListener, listener};
    }
}

/// What generated code names. Not a public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use core::clone::Clone;
    pub use core::fmt::{Debug, Formatter, Result as FmtResult};
    pub use core::future::Future;
    pub use core::marker::{Send, Sync};
    pub use core::option::Option::{self, None, Some};
    pub use core::result::Result::{self, Err, Ok};
    pub use std::boxed::Box;
    pub use std::string::String;
    pub use std::sync::{Arc, OnceLock};
    pub use std::time::Duration;
    pub use std::vec::Vec;

    pub use core::mem::replace;

    pub use bytes::BytesMut;
    pub use futures_core::Stream;
    pub use rpc_core::codec::Claims;
    pub use rpc_core::compat::{Fingerprint, Signature};
    pub use rpc_core::macro_support::{
        AsBytes, ByteVec, FromRpcError, OwnedBytes, encode_args, unknown_method,
    };
    pub use rpc_core::metadata::MetadataValue;
    pub use rpc_core::streaming::{ItemStream, Streaming, encode_stream};
    pub use rpc_core::types::{TraceFn, TypeTracer};
    pub use rpc_core::{
        Answer, ArgDescriptor, Args, Client, Codec, Error, MethodDescriptor, RequestMessage, Service,
        ServiceDescriptor, Shape,
    };
    pub use serde;
    pub use tokio::net::ToSocketAddrs;

    /// Connects over TCP with the default settings.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client, Error> {
        crate::ClientBuilder::new().connect(addr).await
    }
}
