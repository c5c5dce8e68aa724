//! The traits generated code implements: [`Service`], a typed service the
//! server can run, and [`RequestMessage`], a call the client can send.
//!
//! A server runs every call the same way, whatever brought it: the
//! service decodes the arguments into its request type ([`Args`]), runs
//! its method, and encodes the result as an [`Answer`] in the codec the
//! call came in with.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Claims, Codec, DecodeLimits, Message};
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::error::{Error, explain_decode};
use crate::streaming::{Incoming, ItemStream, Streaming, encode_stream};

/// A boxed, sendable future, for code that needs to name one.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A service the server can run: generated `FooServer` types.
///
/// The server routes each call by its wire name to the service and the
/// [`MethodDescriptor`] it names, then, in the call's own task: decodes
/// the arguments with [`decode`](Service::decode), runs
/// [`call`](Service::call) under the call's deadline, and encodes the
/// result with [`encode`](Service::encode). A panic anywhere in those
/// answers the call with an error; the server goes on.
pub trait Service: Send + Sync + 'static {
    /// One call's arguments: the generated `FooRequest`.
    type Request: Send + 'static;
    /// One call's result: the generated `FooResponse`.
    type Response: Send + 'static;

    /// What the service offers.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Decodes the arguments of a call of `method` (one of this service's
    /// descriptor's methods).
    fn decode(&self, method: &'static MethodDescriptor, args: Args) -> Result<Self::Request, Error>;

    /// Runs the method the request names.
    fn call(&self, request: Self::Request) -> impl Future<Output = Self::Response> + Send;

    /// Encodes a result in `codec`, the codec the call came in with.
    fn encode(&self, response: Self::Response, codec: Codec) -> Result<Answer, Error>;
}

/// A call the client can put on the wire: generated `FooRequest` enums.
pub trait RequestMessage {
    /// The method's wire name, e.g. `Calculator.add`.
    fn method(&self) -> &'static str;

    /// Appends the encoding of the arguments to `out` (stream arguments
    /// excluded: they travel as item frames).
    fn encode_args(&self, out: &mut BytesMut) -> Result<(), Error>;

    /// [`encode_args`](Self::encode_args), leaving large `rpc::Bytes` out
    /// of `out`, in `claims` if there are (which say where in `out` each
    /// goes), to be sent from where they lie. Generated code does, only
    /// appending to `out`; by default, the arguments are encoded whole.
    #[doc(hidden)]
    fn encode_args_spliced(&self, out: &mut BytesMut, claims: Option<&mut Claims>) -> Result<(), Error> {
        let _ = claims;
        self.encode_args(out)
    }

    /// The method's descriptor, if the request knows it (generated requests
    /// do): its fingerprint travels with the call, and its form explains a
    /// server's refusal of it.
    fn descriptor(&self) -> Option<&'static MethodDescriptor> {
        None
    }

    /// Whether [`descriptor`](Self::descriptor), when there is one, is
    /// always that of the method [`method`](Self::method) names, as in
    /// generated requests: the client then takes the wire name from the
    /// descriptor, with its fingerprint, and makes the request head's
    /// fixed part once per method. Return `true` only if that holds: the
    /// wire name would otherwise silently be the descriptor's. By default
    /// the two names are compared on each call.
    #[doc(hidden)]
    fn descriptor_names_method(&self) -> bool {
        false
    }

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

/// The arguments of one call, as they arrived: what
/// [`Service::decode`] turns into a request.
pub struct Args {
    method: &'static MethodDescriptor,
    codec: Codec,
    limits: DecodeLimits,
    payload: Bytes,
    /// Boxed: most methods take no stream, and every call's arguments are
    /// moved through several layers and held by its future.
    input: Option<Box<Incoming>>,
}

impl Args {
    /// The encoded arguments' length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.payload.len()
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("method", &self.method.full_name)
            .field("codec", &self.codec)
            .field("len", &self.payload.len())
            .field("input", &self.input.is_some())
            .finish()
    }
}

impl Args {
    /// Arguments of a call of `method`, encoded in `codec`, with the
    /// client's stream for methods that take one.
    pub(crate) fn new(
        method: &'static MethodDescriptor,
        codec: Codec,
        limits: DecodeLimits,
        payload: Bytes,
        input: Option<Incoming>,
    ) -> Args {
        Args {
            method,
            codec,
            limits,
            payload,
            input: input.map(Box::new),
        }
    }

    /// Decodes the arguments that travel in the request, as a tuple in the
    /// trait's order (a stream argument left out).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let decoded = match self.codec {
            Codec::Binary => codec::decode_shared(&self.payload, self.limits),
            Codec::Json => {
                let names: Vec<&str> = self.method.plain_args().map(|arg| arg.name).collect();
                codec::json::decode_args(&self.payload, &names, self.limits)
            }
        };
        decoded.map_err(|err| Error::BadRequest {
            method: self.method.full_name.to_owned(),
            reason: explain_decode(&err, "server"),
        })
    }

    /// The client's stream, for a method that takes one; an empty stream
    /// for one that did not arrive.
    pub fn input<T: DeserializeOwned + Send + 'static>(&mut self) -> Streaming<T> {
        match self.input.take() {
            Some(input) => (*input).decode(self.method.full_name),
            None => Streaming::empty(),
        }
    }
}

/// What a call produces: one value, or a stream of them, encoded.
pub enum Answer {
    /// The encoded result of a method that returns one value.
    Value(Message),
    /// The encoded items of a method that returns a stream.
    Stream(ItemStream),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Value(bytes) => f.debug_tuple("Value").field(&bytes.len()).finish(),
            Answer::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Answer {
    /// The answer of `method` returning `value`, encoded in `codec`.
    ///
    /// A short answer's bytes share a block of memory with other messages
    /// the thread encoded, which is reused once they are all gone: a
    /// middleware that keeps answers for long (a cache) should keep a copy
    /// (`Bytes::copy_from_slice(&message.to_bytes())`), or each one it
    /// keeps holds its block. In the binary codec, a large
    /// [`Bytes`](crate::blob::Bytes) blob in the value (or a large
    /// `Vec<u8>` result with little room to spare, which the generated
    /// code hands over as one) is not copied: the answer holds it, as a
    /// part of its own.
    pub fn value<T: Serialize + ?Sized>(method: &str, value: &T, codec: Codec) -> Result<Answer, Error> {
        // In the thread's block: a short answer costs no allocation, and
        // a large blob in it is sent from where it lies.
        let encoded = match codec {
            Codec::Binary => codec::splice::encode(
                |out, claims| codec::splice::encode_into(value, out, claims),
                || codec::EncodeError(codec::splice::REWORKED.to_owned()),
            ),
            Codec::Json => {
                crate::scratch::encode(|out| codec::json::encode_into(value, out)).map(Message::from)
            }
        };
        let encoded = encoded.map_err(|err| Error::Encode {
            what: format!("the result of `{method}`"),
            reason: err.to_string(),
        })?;
        Ok(Answer::Value(encoded))
    }

    /// The answer of `method` returning `stream`, each item encoded in
    /// `codec` as it is sent.
    pub fn stream<T: Serialize + Send + 'static>(
        method: &'static str,
        stream: Streaming<T>,
        codec: Codec,
    ) -> Answer {
        Answer::Stream(encode_stream(method, stream, codec))
    }
}
