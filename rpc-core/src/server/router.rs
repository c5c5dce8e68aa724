//! Routing a call's wire name (`Service.method`) to the service and the
//! method it names: one lookup per call, in a table built from the
//! services' descriptors when they are added.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::error::Error;
use crate::server::dispatch::{Dispatch, Handler};
use crate::service::Service;

/// The services a server offers, by wire name.
///
/// Several services share one listener: `Calculator.add` goes to the service
/// named `Calculator`, method `add`.
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<&'static str, Arc<dyn Dispatch>>,
    /// Every method of every service, by full wire name. The keys are the
    /// services' own names, fixed when they are added, so an unkeyed hash
    /// is safe: a client choosing what to look up cannot add collisions.
    routes: FxHashMap<&'static str, Route>,
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
        let service: Arc<dyn Dispatch> = Arc::new(Handler(Arc::new(service)));
        let previous = self.services.insert(name, Arc::clone(&service));
        assert!(
            previous.is_none(),
            "the service `{name}` is registered twice on one server; serve each service once"
        );
        for method in &descriptor.methods {
            let route = Route {
                service: Arc::clone(&service),
                method,
            };
            self.routes.insert(method.full_name, route);
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
            .map(|service| service.descriptor())
            .collect();
        services.sort_unstable_by_key(|service| service.name);
        services
    }

    /// Every route: each method of each service.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Where the method called `name` (a full wire name) goes, or why
    /// nothing here serves it.
    pub(crate) fn route(&self, name: &str) -> Result<&Route, Error> {
        if let Some(route) = self.routes.get(name) {
            return Ok(route);
        }
        // A name without a dot names no service; one whose service is here
        // names a method that service lacks (an older server, usually).
        Err(match name.rsplit_once('.') {
            Some((service, _)) if !self.services.contains_key(service) => Error::UnknownService {
                service: service.to_owned(),
            },
            _ => Error::UnknownMethod {
                method: name.to_owned(),
            },
        })
    }
}
