//! The traits that generated code implements: a request the client can
//! send, and a service the server can dispatch to.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};

use crate::error::Error;

/// A boxed, sendable future: what a service's dispatch returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A call the client can put on the wire: generated `FooRequest` enums.
pub trait RequestMessage {
    /// The method's wire name, e.g. `Calculator.add`.
    fn method(&self) -> &'static str;

    /// Appends the bincode encoding of the arguments to `out`.
    fn encode_args(&self, out: &mut BytesMut) -> Result<(), Error>;
}

/// Something the server can route calls to: generated `FooServer` types.
///
/// `dispatch` decodes the arguments and returns the future that runs the
/// method and encodes its result. The server runs that future in its own task,
/// under the request's deadline, and turns a panic into an error response.
pub trait Service: Send + Sync + 'static {
    /// The service's wire name, e.g. `Calculator`.
    fn name(&self) -> &'static str;

    /// Starts the call of `method` (without the service prefix) on `args`.
    ///
    /// Fails with [`Error::UnknownMethod`] or [`Error::BadRequest`] before
    /// anything runs.
    fn dispatch(&self, method: &str, args: Bytes) -> Result<BoxFuture<Result<Bytes, Error>>, Error>;
}
