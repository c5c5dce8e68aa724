//! Routing a call's wire name (`Service.method`) to the service that has it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Error;
use tokio::task::AbortHandle;

use crate::server::Launch;
use crate::service::{Service, Shape};
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

    /// Whether `method` (a full wire name) must run to completion.
    pub fn runs_to_completion(&self, method: &str) -> bool {
        method
            .rsplit_once('.')
            .and_then(|(service, name)| Some(self.services.get(service)?.runs_to_completion(name)))
            .unwrap_or(false)
    }

    /// Which directions of `method` (a full wire name) stream; `None` for a
    /// method no service has.
    pub fn shape(&self, method: &str) -> Option<Shape> {
        let (service, name) = method.rsplit_once('.')?;
        self.services.get(service)?.shape(name)
    }

    /// Runs one call: hands it to the service its wire name names, or
    /// answers that there is no such service.
    pub fn launch(&self, launch: Launch) -> Option<AbortHandle> {
        let method = launch.full_method();
        let found = method
            .rsplit_once('.')
            .and_then(|(service, _)| self.services.get(service))
            .cloned();
        if let Some(service) = found {
            return service.launch(launch);
        }
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
