//! [`Pick`]: which endpoint a call goes to. A client sends every call
//! through its picker; today that is one fixed endpoint, and a balancer
//! over a discovered set of endpoints plugs in here.

use std::sync::Arc;

use crate::client::endpoint::Endpoint;

/// Chooses the endpoint for each call.
pub(crate) trait Pick: Send + Sync + 'static {
    /// The endpoint for the next call (or the next attempt of a call).
    fn pick(&self) -> &Arc<Endpoint>;

    /// Every endpoint, for stats.
    fn endpoints(&self) -> Vec<Arc<Endpoint>>;
}

/// Every call to one endpoint.
pub(crate) struct Single(pub(crate) Arc<Endpoint>);

impl Pick for Single {
    fn pick(&self) -> &Arc<Endpoint> {
        &self.0
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        vec![Arc::clone(&self.0)]
    }
}
