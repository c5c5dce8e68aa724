//! The traits that generated code implements: a request the client can
//! send, and a service the server can dispatch to.

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;

use crate::error::Error;
use crate::server::{Launch, Launched};
use crate::streaming::ItemStream;

/// A boxed, sendable future, for code that needs to name one.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A call the client can put on the wire: generated `FooRequest` enums.
pub trait RequestMessage {
    /// The method's wire name, e.g. `Calculator.add`.
    fn method(&self) -> &'static str;

    /// Appends the bincode encoding of the arguments to `out` (stream
    /// arguments excluded: they travel as item frames).
    fn encode_args(&self, out: &mut BytesMut) -> Result<(), Error>;

    /// Takes the call's stream argument out of the request, encoded, for
    /// methods that have one.
    fn take_input(&mut self) -> Option<ItemStream> {
        None
    }

    /// Whether running the call twice is harmless (`#[rpc(idempotent)]`): if
    /// the connection is lost mid-call, the client retries it once on a
    /// fresh connection.
    fn idempotent(&self) -> bool {
        false
    }
}

/// Something the server can route calls to: generated `FooServer` types.
///
/// `launch` gives the server the future that decodes a call's arguments,
/// runs the method and encodes its result. The server runs that future in a
/// task of its own, stops it at the request's deadline or on a cancel
/// (through the [`Launched`] receipt), and turns a panic into an error
/// response.
pub trait Service: Send + Sync + 'static {
    /// The service's wire name, e.g. `Calculator`.
    fn name(&self) -> &'static str;

    /// Runs one call of this service: hands [`Launch::spawn`] a handler
    /// that decodes the arguments of the named method and runs it.
    ///
    /// Generated code implements it; the handler's future is spawned as it
    /// is, not boxed, and the server runs it under the call's deadline,
    /// turning a panic (decoding included) into an error answer.
    fn launch(&self, launch: Launch) -> Launched;

    /// Which directions of `method` (without the service prefix) stream;
    /// `None` if the service has no such method.
    fn shape(&self, method: &str) -> Option<Shape> {
        let _ = method;
        Some(Shape::UNARY)
    }

    /// Whether `method` (without the service prefix) must run to completion
    /// once started: `#[rpc(no_cancel)]` methods. The server then ignores the
    /// caller's cancel and deadline for it and lets it finish even if the
    /// connection closes.
    fn runs_to_completion(&self, method: &str) -> bool {
        let _ = method;
        false
    }
}

/// Which directions of a method carry a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The client sends a stream (an argument of type `Streaming<T>`).
    pub input: bool,
    /// The server sends a stream (the method returns `Streaming<T>`).
    pub output: bool,
}

impl Shape {
    /// One request, one response.
    pub const UNARY: Shape = Shape {
        input: false,
        output: false,
    };
}
