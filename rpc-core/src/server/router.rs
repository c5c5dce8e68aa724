//! Routing a call's wire name (`Service.method`) to the service that has it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Error;

use crate::server::{Launch, Launched};
use crate::service::Service;
use crate::streaming::{Answer, Incoming};

/// The services a server offers, by wire name.
///
/// Several services share one listener: `Calculator.add` goes to the service
/// named `Calculator`, which dispatches `add`.
#[derive(Clone, Default)]
pub struct Router {
    services: HashMap<&'static str, Arc<dyn Service>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.services.keys().collect();
        names.sort();
        f.debug_struct("Router").field("services", &names).finish()
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
    pub fn add(&mut self, service: impl Service) {
        let name = service.name();
        let previous = self.services.insert(name, Arc::new(service));
        assert!(
            previous.is_none(),
            "the service `{name}` is registered twice on one server; serve each service once"
        );
    }

    /// The names of the registered services, sorted.
    pub fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.services.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The service that `method` (a full wire name) names, and the
    /// method's name within it. Looked up once per call.
    pub fn find<'m>(&self, method: &'m str) -> Option<(&Arc<dyn Service>, &'m str)> {
        let (service, name) = method.rsplit_once('.')?;
        Some((self.services.get(service)?, name))
    }

    /// Answers a call whose service no router has (see [`Router::find`]).
    pub fn launch_unknown(launch: Launch) -> Launched {
        let method = launch.full_method();
        let err = match method.rsplit_once('.') {
            Some((service, _)) => Error::UnknownService {
                service: service.to_owned(),
            },
            None => Error::UnknownMethod {
                method: method.to_owned(),
            },
        };
        launch.spawn(move |_: &str, _: Bytes, _: Option<Incoming>| async move { Err::<Answer, Error>(err) })
    }
}
