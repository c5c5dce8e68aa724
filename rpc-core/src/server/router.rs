//! Routing a call's wire name (`Service.method`) to the service and the
//! method it names: one lookup per call, in a table built from the
//! services' descriptors when they are added.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::error::Error;

use crate::middleware::{CallService, ServerLayer, Wrap};
use crate::server::dispatch::{self, Dispatch, Handler, Layered};
use crate::service::Service;

/// The services a server offers, by wire name.
///
/// Several services share one listener: `Calculator.add` goes to the service
/// named `Calculator`, method `add`.
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<&'static str, Entry>,
    /// Every method of every service, by full wire name. The keys are the
    /// services' own names, fixed when they are added, so an unkeyed hash
    /// is safe: a client choosing what to look up cannot add collisions.
    /// By bytes: a request's name is looked up as it came, checked once.
    routes: FxHashMap<&'static [u8], Route>,
}

/// A service as the router keeps it.
#[derive(Clone)]
struct Entry {
    /// What calls go to: the service, or its middleware.
    dispatch: Arc<dyn Dispatch>,
    /// The typed call path as a tower service, for the first layer.
    base: Arc<dyn Fn() -> CallService + Send + Sync>,
    /// The stack of layers so far, if any.
    stack: Option<CallService>,
}

/// Where a call goes: its service and its method.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) service: Arc<dyn Dispatch>,
    pub(crate) method: &'static MethodDescriptor,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("services", &self.service_names())
            .finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a service.
    ///
    /// # Panics
    ///
    /// If a service of the same name is already registered: two
    /// implementations of one service on one server is a configuration
    /// mistake, caught at startup rather than by a surprised caller.
    pub fn add<S: Service>(&mut self, service: S) {
        let descriptor = service.descriptor();
        let name = descriptor.name;
        // Traced now rather than on a method's first call; a method whose
        // types cannot be traced runs unchecked, which its author should
        // know.
        for method in &descriptor.methods {
            if let Err(why) = method.form() {
                tracing::warn!(
                    target: "rpc",
                    method = method.full_name,
                    "calls of `{}` are not checked for compatibility: {why}",
                    method.full_name
                );
            }
        }
        let service = Arc::new(service);
        let dispatch: Arc<dyn Dispatch> = Arc::new(Handler(Arc::clone(&service)));
        let entry = Entry {
            dispatch,
            base: Arc::new(move || dispatch::base(Arc::clone(&service))),
            stack: None,
        };
        let previous = self.services.insert(name, entry);
        assert!(
            previous.is_none(),
            "the service `{name}` is registered twice on one server; serve each service once"
        );
        self.reroute(name);
    }

    /// Puts `layer` around every service added so far: each of their calls
    /// goes through it on its way to the handler. Layers added later wrap
    /// the ones added before.
    pub fn layer(&mut self, layer: impl ServerLayer) {
        assert!(
            !self.services.is_empty(),
            "`Server::layer` wraps the services served before it, and none is: call `serve` first, then `layer`"
        );
        self.wrap_all(&layer.into_wrap());
    }

    /// Puts `layer` around the service called `service` only.
    pub fn layer_service(&mut self, service: &str, layer: impl ServerLayer) {
        let Some((&name, _)) = self.services.get_key_value(service) else {
            panic!(
                "`Server::layer_service` names `{service}`, which this server does not serve (yet): serve it first; it serves {:?}",
                self.service_names()
            );
        };
        self.wrap(name, &layer.into_wrap());
    }

    /// Puts `wrap`'s layers around every service added so far.
    fn wrap_all(&mut self, wrap: &Wrap<CallService>) {
        let names: Vec<&'static str> = self.services.keys().copied().collect();
        for name in names {
            self.wrap(name, wrap);
        }
    }

    /// Puts `wrap`'s layers around the service called `name`.
    fn wrap(&mut self, name: &'static str, wrap: &Wrap<CallService>) {
        let Some(entry) = self.services.get_mut(name) else {
            return;
        };
        let inner = entry.stack.take().unwrap_or_else(|| (entry.base)());
        let stack = wrap(inner);
        entry.dispatch = Arc::new(Layered {
            descriptor: entry.dispatch.descriptor(),
            stack: stack.clone(),
        });
        entry.stack = Some(stack);
        self.reroute(name);
    }

    /// Points the routes of the service called `name` at what it dispatches
    /// to now.
    fn reroute(&mut self, name: &'static str) {
        let Some(entry) = self.services.get(name) else {
            return;
        };
        for method in &entry.dispatch.descriptor().methods {
            let route = Route {
                service: Arc::clone(&entry.dispatch),
                method,
            };
            self.routes.insert(method.full_name.as_bytes(), route);
        }
    }

    /// The names of the registered services, sorted.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.services.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The descriptors of the registered services, sorted by name.
    pub fn services(&self) -> Vec<&'static ServiceDescriptor> {
        let mut services: Vec<_> = self
            .services
            .values()
            .map(|entry| entry.dispatch.descriptor())
            .collect();
        services.sort_unstable_by_key(|service| service.name);
        services
    }

    /// Every route: each method of each service.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Where the method a request head names (a full wire name, as it
    /// came: the head checked it is UTF-8) goes, or why nothing here
    /// serves it.
    pub(crate) fn route_wire(&self, name: &[u8]) -> Result<&Route, Error> {
        self.routes
            .get(name)
            .ok_or_else(|| self.unknown(std::str::from_utf8(name).unwrap_or_default()))
    }

    /// Why nothing here serves `name`: a name without a dot names no
    /// service; one whose service is here names a method that service
    /// lacks (an older server, usually).
    fn unknown(&self, name: &str) -> Error {
        match name.rsplit_once('.') {
            Some((service, _)) if !self.services.contains_key(service) => Error::UnknownService {
                service: service.to_owned(),
            },
            _ => Error::UnknownMethod {
                method: name.to_owned(),
            },
        }
    }
}
