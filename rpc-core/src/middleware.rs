//! Middleware: tower `Layer`s around calls.
//!
//! On the server a layer wraps a [`CallService`]: a tower service from a
//! [`ServerCall`] (the method's descriptor, the caller's metadata, peer
//! and deadline, and the arguments, decodable for those who need them) to
//! the call's encoded [`Answer`]. A layer can refuse a call (return
//! `rpc::Error::Unauthenticated` or `PermissionDenied`, or any error),
//! observe its outcome and duration, or change nothing and pass it on.
//! tower's own middleware (concurrency limit, rate limit, timeout, load
//! shedding) works as it is: errors it makes are turned into
//! `rpc::Error`s by [`into_error`].
//!
//! On the client a layer wraps a [`CallService`]-like service from a
//! [`ClientCall`] (the method, its encoded arguments, the metadata it will
//! send, its deadline) to the encoded answer; it can add metadata to every
//! call, refuse calls, or observe them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::codec::Codec;
use crate::context::Context;
use crate::descriptor::MethodDescriptor;
use crate::error::Error;
use crate::metadata::{Metadata, MetadataValue};
use crate::peer::Peer;
use crate::service::{Answer, Args};

/// The error type of middleware stacks: anything a layer may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server call on its way through middleware to its handler.
pub struct ServerCall {
    pub(crate) ctx: Context,
    pub(crate) method: &'static MethodDescriptor,
    pub(crate) args: Args,
    pub(crate) codec: Codec,
}

impl fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCall")
            .field("method", &self.method.full_name)
            .field("peer", self.ctx.peer())
            .field("metadata", self.ctx.metadata())
            .finish_non_exhaustive()
    }
}

impl ServerCall {
    /// The call's context (what the handler sees as `Context::current()`).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The method called: its names, arguments, result and markers.
    pub fn method(&self) -> &'static MethodDescriptor {
        self.method
    }

    /// What the caller sent beside the arguments.
    pub fn metadata(&self) -> &Metadata {
        self.ctx.metadata()
    }

    /// Who called (with their verified certificate, over TLS with client
    /// certificates).
    pub fn peer(&self) -> &Peer {
        self.ctx.peer()
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.ctx.deadline()
    }

    /// The arguments, still encoded: `args().decode::<(i64, i64)>()` reads
    /// them as the tuple of the method's argument types.
    pub fn args(&self) -> &Args {
        &self.args
    }

    /// Whether the call came as JSON (from the HTTP door) or bincode.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

/// What server middleware wraps: the rest of the way to the handler.
pub type CallService = BoxCloneSyncService<ServerCall, Answer, BoxError>;

/// A client call on its way through middleware to the network.
#[derive(Debug, Clone)]
pub struct ClientCall {
    pub(crate) method: &'static str,
    pub(crate) descriptor: Option<&'static MethodDescriptor>,
    pub(crate) args: Bytes,
    pub(crate) idempotent: bool,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Instant,
}

impl ClientCall {
    /// The method's wire name, `Service.method`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The method's descriptor, when the request knows it (a generated
    /// client's always does).
    pub fn descriptor(&self) -> Option<&'static MethodDescriptor> {
        self.descriptor
    }

    /// The arguments, encoded.
    pub fn args(&self) -> &Bytes {
        &self.args
    }

    /// What the call will send beside its arguments.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Sets `key: value` in what the call sends (an auth token every call
    /// should carry, say). A bad key fails the call, saying why.
    pub fn insert_metadata(&mut self, key: &str, value: impl Into<MetadataValue>) -> Result<(), Error> {
        self.metadata.insert(key, value).map_err(|err| Error::BadRequest {
            method: self.method.to_owned(),
            reason: err.to_string(),
        })
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time left until the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// What client middleware wraps: the rest of the way to the server.
pub type ClientService = BoxCloneSyncService<ClientCall, Bytes, BoxError>;

/// A stack of layers, as a function from what it wraps to the wrapped.
pub type Wrap<S> = Arc<dyn Fn(S) -> S + Send + Sync>;

/// A tower [`Layer`] that can wrap a middleware stack of calls `R`
/// answered with `T`: any layer whose service is `Clone + Send + Sync`,
/// with a `Send` future and an error that boxes (tower's own layers are).
/// [`ServerLayer`] and [`ClientLayer`] name the two stacks.
pub trait Middleware<R, T>: Send + Sync + 'static {
    /// The layer as a function from the service it wraps to the wrapped
    /// one, boxed, with its errors boxed too.
    fn into_wrap(self) -> Wrap<BoxCloneSyncService<R, T, BoxError>>;
}

impl<L, R, T> Middleware<R, T> for L
where
    R: 'static,
    T: 'static,
    L: Layer<BoxCloneSyncService<R, T, BoxError>> + Send + Sync + 'static,
    L::Service: Service<R, Response = T> + Clone + Send + Sync + 'static,
    <L::Service as Service<R>>::Error: Into<BoxError>,
    <L::Service as Service<R>>::Future: Send + 'static,
{
    fn into_wrap(self) -> Wrap<BoxCloneSyncService<R, T, BoxError>> {
        Arc::new(move |inner| BoxCloneSyncService::new(self.layer(inner).map_err(Into::into)))
    }
}

/// Middleware around server calls: what `Server::layer` takes.
pub trait ServerLayer: Middleware<ServerCall, Answer> {}
impl<L: Middleware<ServerCall, Answer>> ServerLayer for L {}

/// Middleware around client calls: what `ClientBuilder::layer` takes.
pub trait ClientLayer: Middleware<ClientCall, Bytes> {}
impl<L: Middleware<ClientCall, Bytes>> ClientLayer for L {}

/// What a middleware error means for the caller: an `rpc::Error` is kept
/// as it is; tower's timeout is a deadline, its load shedding an
/// overload; anything else fails the call with its message.
pub fn into_error(err: BoxError) -> Error {
    let err = match err.downcast::<Error>() {
        Ok(err) => return *err,
        Err(err) => err,
    };
    if err.is::<tower::timeout::error::Elapsed>() {
        return Error::failed(format!(
            "a middleware timeout elapsed before the call finished ({err})"
        ));
    }
    Error::failed(err.to_string())
}

/// A layer made from an async function of the call and the rest of the
/// stack: see [`from_fn`].
#[derive(Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

/// Middleware written as an async function: it gets the call and
/// [`Next`], the rest of the way, and answers, refuses, or passes the
/// call on with `next.run(call).await`.
///
/// ```
/// use rpc_core::middleware::{ServerCall, ServerNext, from_fn};
///
/// let require_token = from_fn(|call: ServerCall, next: ServerNext| async move {
///     match call.metadata().get_str("authorization") {
///         Some("Bearer let-me-in") => next.run(call).await,
///         _ => Err(rpc_core::Error::unauthenticated("send `authorization: Bearer <token>`")),
///     }
/// });
/// # let _ = require_token;
/// ```
pub fn from_fn<F>(f: F) -> FromFnLayer<F> {
    FromFnLayer { f }
}

impl<F: Clone, R, T> Layer<BoxCloneSyncService<R, T, BoxError>> for FromFnLayer<F> {
    type Service = FromFn<F, R, T>;

    fn layer(&self, inner: BoxCloneSyncService<R, T, BoxError>) -> Self::Service {
        FromFn {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service a [`FromFnLayer`] makes.
pub struct FromFn<F, R, T> {
    f: F,
    inner: BoxCloneSyncService<R, T, BoxError>,
}

impl<F: Clone, R, T> Clone for FromFn<F, R, T> {
    fn clone(&self) -> Self {
        FromFn {
            f: self.f.clone(),
            inner: self.inner.clone(),
        }
    }
}

/// The rest of the middleware stack, for a [`from_fn`] function to pass the
/// call on to.
pub struct Next<R, T> {
    inner: BoxCloneSyncService<R, T, BoxError>,
}

impl<R, T> fmt::Debug for Next<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Next")
    }
}

impl<R: Send + 'static, T: Send + 'static> Next<R, T> {
    /// Passes `call` on, and gives back how it ended.
    pub async fn run(self, call: R) -> Result<T, Error> {
        self.inner.oneshot(call).await.map_err(into_error)
    }
}

/// [`Next`] on the server: on to the handler.
pub type ServerNext = Next<ServerCall, Answer>;
/// [`Next`] on the client: on to the network.
pub type ClientNext = Next<ClientCall, Bytes>;

impl<F, Fut, R, T> Service<R> for FromFn<F, R, T>
where
    F: Fn(R, Next<R, T>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: R) -> Self::Future {
        let next = Next {
            inner: self.inner.clone(),
        };
        let answer = (self.f)(call, next);
        Box::pin(async move { answer.await.map_err(BoxError::from) })
    }
}
