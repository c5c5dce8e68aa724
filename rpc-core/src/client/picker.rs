//! [`Pick`]: which endpoint a call goes to. A client sends every call
//! through its picker: one fixed endpoint ([`Single`]), or a balancer over
//! a discovered set ([`Balance`](crate::client::balance::Balance)).

use std::borrow::Cow;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::client::endpoint::Endpoint;

/// Chooses the endpoint for each call.
pub(crate) trait Pick: Send + Sync + 'static {
    /// The endpoint for the next call, or the next attempt of a call
    /// (which goes elsewhere than `avoid`, where it can); `None` while the
    /// set is empty.
    fn pick(&self, avoid: Option<&Endpoint>) -> Option<Cow<'_, Arc<Endpoint>>>;

    /// Every endpoint, for stats.
    fn endpoints(&self) -> Vec<Arc<Endpoint>>;

    /// Whether calls are spread over a set: they then count what is in
    /// flight on each endpoint, and retry on another within a budget.
    fn balanced(&self) -> bool {
        false
    }

    /// Connecting to an endpoint failed: its address may have changed.
    fn failed(&self, _endpoint: &Endpoint) {}

    /// Told when the set changes, for a set that can.
    fn changes(&self) -> Option<&Notify> {
        None
    }
}

/// Every call to one endpoint.
pub(crate) struct Single(pub(crate) Arc<Endpoint>);

impl Pick for Single {
    fn pick(&self, _avoid: Option<&Endpoint>) -> Option<Cow<'_, Arc<Endpoint>>> {
        // Borrowed: a client of one server pays no reference count per call.
        Some(Cow::Borrowed(&self.0))
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        vec![Arc::clone(&self.0)]
    }
}
