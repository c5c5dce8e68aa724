//! The seam between a connection and a service: [`Dispatch`], a typed
//! [`Service`] with its types erased, so one router holds them all.
//!
//! The typed call path is written once, here: decode the arguments into
//! the service's request type, run its method, encode its response in the
//! codec the call came in with. The connection only starts calls; the
//! service's types never reach it.

use std::sync::Arc;

use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::context::Context;
use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::error::Error;
use crate::middleware::{BoxError, CallService, ServerCall, into_error};
use crate::server::call::{Call, CallHandle};
use crate::service::Service;

/// A service the router can start calls on.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// What the service offers.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts `call` of `method`: in a task of its own, or (for a caller
    /// that runs it itself) as a future handed back.
    fn start(&self, method: &'static MethodDescriptor, call: Call<'_>) -> CallHandle;
}

/// A typed service, as the router holds it.
pub(crate) struct Handler<S>(pub(crate) Arc<S>);

impl<S: Service> Dispatch for Handler<S> {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        self.0.descriptor()
    }

    fn start(&self, method: &'static MethodDescriptor, call: Call<'_>) -> CallHandle {
        let service = Arc::clone(&self.0);
        call.spawn(move |args, codec| async move {
            let request = service.decode(method, args)?;
            let response = service.call(request).await;
            service.encode(response, codec)
        })
    }
}

/// A service behind middleware: each call goes through its stack of
/// layers, which ends in the typed call path.
pub(crate) struct Layered {
    pub(crate) descriptor: &'static ServiceDescriptor,
    pub(crate) stack: CallService,
}

impl Dispatch for Layered {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        self.descriptor
    }

    fn start(&self, method: &'static MethodDescriptor, call: Call<'_>) -> CallHandle {
        let stack = self.stack.clone();
        call.spawn(move |args, codec| async move {
            // The call's task runs the handler in its context.
            let ctx = Context::current().ok_or_else(|| Error::failed("a call ran outside its context"))?;
            let call = ServerCall {
                ctx,
                method,
                args,
                codec,
            };
            stack.oneshot(call).await.map_err(into_error)
        })
    }
}

/// The typed call path of `service` as a tower service: what the first
/// layer around it wraps.
pub(crate) fn base<S: Service>(service: Arc<S>) -> CallService {
    BoxCloneSyncService::new(tower::service_fn(move |call: ServerCall| {
        let service = Arc::clone(&service);
        async move {
            let request = service.decode(call.method, call.args)?;
            let response = service.call(request).await;
            service.encode(response, call.codec).map_err(BoxError::from)
        }
    }))
}
