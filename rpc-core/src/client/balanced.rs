//! A client over a set of servers ([`Client::balanced`]) and [`Balanced`],
//! the handle its discovery changes the set with.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::client::balance::{Balance, Policy};
use crate::client::endpoint::{Endpoint, dial_with};
use crate::client::{Client, ClientConfig, Shared};
use crate::error::Error;
use crate::transport::{Established, FrameRead, FrameWrite};

impl Client {
    /// A client that spreads its calls over a set of servers by `policy`,
    /// and the handle that changes the set (discovery's end of it). Calls
    /// made while the set is empty wait, within their deadlines, for a
    /// server to be listed.
    #[doc(hidden)]
    pub fn balanced(policy: Policy, config: ClientConfig) -> (Client, Balanced) {
        let failed = Arc::new(tokio::sync::Notify::new());
        let balance = Arc::new(Balance::new(policy, Arc::clone(&failed)));
        let handle = Balanced {
            balance: Arc::downgrade(&balance),
            gone: balance.gone(),
            failed,
            config: config.clone(),
        };
        let client = Client {
            shared: Arc::new(Shared {
                config,
                picker: Box::new(balance),
                budget: Some(Box::default()),
            }),
            extras: None,
        };
        (client, handle)
    }
}

/// The set of servers a balanced client spreads its calls over, as its
/// discovery sees it: what [`Client::balanced`] returns beside the client.
/// It holds the client's set weakly: once every clone of the client is
/// dropped, [`set`](Balanced::set) does nothing and
/// [`gone`](Balanced::gone) resolves, and discovery can stop.
#[doc(hidden)]
pub struct Balanced {
    balance: std::sync::Weak<Balance>,
    gone: tokio_util::sync::CancellationToken,
    failed: Arc<tokio::sync::Notify>,
    config: ClientConfig,
}

impl Balanced {
    /// Makes the set exactly `targets`, each a name in words and how to
    /// connect to it. Servers already in the set keep their connection and
    /// estimates; new ones connect on their first call; removed ones take
    /// no new calls and close once their calls have ended. Returns whether
    /// the client is still there.
    pub fn set<F, Fut, R, W>(&self, targets: impl IntoIterator<Item = (Arc<str>, F)>) -> bool
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Established<R, W>, Error>> + Send + 'static,
        R: FrameRead,
        W: FrameWrite,
    {
        let Some(balance) = self.balance.upgrade() else {
            return false;
        };
        let endpoints = targets
            .into_iter()
            .map(|(target, connect)| {
                let dial = dial_with(connect, &self.config);
                Arc::new(Endpoint::new(target, None, Some(dial), self.config.backoff))
            })
            .collect();
        balance.update(endpoints);
        true
    }

    /// Connects to every server in the set at once; succeeds if one
    /// connects, else fails with the first error. (The others
    /// wait out their backoff, and calls go elsewhere meanwhile.)
    pub async fn connect_all(&self, deadline: Instant) -> Result<(), Error> {
        let Some(balance) = self.balance.upgrade() else {
            return Err(Error::disconnected("the client was dropped"));
        };
        let endpoints = balance.endpoints();
        drop(balance);
        if endpoints.is_empty() {
            return Err(Error::disconnected("no server to connect to: the set is empty"));
        }
        // The first to connect ends the wait; the others' dials go on in
        // their own tasks.
        let mut dials: futures::stream::FuturesUnordered<_> =
            endpoints.iter().map(|e| e.connection(deadline)).collect();
        let mut first_error = None;
        while let Some(result) = futures::StreamExt::next(&mut dials).await {
            match result {
                Ok(_) => return Ok(()),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::disconnected("no server connected")))
    }

    /// Resolves when a server in the set fails to connect, loses its
    /// connection or says goodbye: time to look the set up again.
    pub async fn failed(&self) {
        self.failed.notified().await;
    }

    /// Resolves once every clone of the client has been dropped.
    pub async fn gone(&self) {
        self.gone.cancelled().await;
    }
}
