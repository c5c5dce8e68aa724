//! The seam between a connection and a service: [`Dispatch`], a typed
//! [`Service`] with its types erased, so one router holds them all.
//!
//! The typed call path is written once, here: decode the arguments into
//! the service's request type, run its method, encode its response in the
//! codec the call came in with. The connection only starts calls; the
//! service's types never reach it.

use std::sync::Arc;

use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::server::call::{Call, CallHandle};
use crate::service::Service;

/// A service the router can start calls on.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// What the service offers.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts `call` of `method`: in a task of its own, or (for a caller
    /// that runs it itself) as a future handed back.
    fn start(&self, method: &'static MethodDescriptor, call: Call) -> CallHandle;
}

/// A typed service, as the router holds it.
pub(crate) struct Handler<S>(pub(crate) Arc<S>);

impl<S: Service> Dispatch for Handler<S> {
    fn descriptor(&self) -> &'static ServiceDescriptor {
        self.0.descriptor()
    }

    fn start(&self, method: &'static MethodDescriptor, call: Call) -> CallHandle {
        let service = Arc::clone(&self.0);
        call.spawn(move |args, codec| async move {
            let request = service.decode(method, args)?;
            let response = service.call(request).await;
            service.encode(response, codec)
        })
    }
}
