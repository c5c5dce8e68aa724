//! Many servers: one client over a set of replicas.
//!
//! A client built with [`ClientBuilder::connect_many`] (a fixed list),
//! [`ClientBuilder::connect_dns`] (every address a DNS name has, looked up
//! again as the records' TTL says) or [`ClientBuilder::discover`] (a
//! stream of [`Change`]s from a registry of your own) spreads its calls
//! over the set:
//!
//! - **Balancing**: by default, power of two choices over a peak-EWMA
//!   latency estimate weighted by calls in flight ([`Policy::PeakEwma`]);
//!   round robin on request.
//! - **Ejection**: a server that cannot be reached gets no calls while it
//!   waits out its reconnect backoff; then one call tries it again while
//!   the others go elsewhere.
//! - **Failover**: a call that was never sent (the connection refused or
//!   lost before the request left, a server's goodbye before it started
//!   the call, or an `Overloaded` refusal) goes to another server within
//!   its deadline; an
//!   `#[rpc(idempotent)]` call lost in flight does too. Retries draw from
//!   a budget (20% of calls, plus 10 per second), so a failing cluster is
//!   not stormed.
//! - **Changes**: a server added gets calls from the next one; a server
//!   removed takes no new calls, and its connection closes once its calls
//!   have ended.
//!
//! Streams stay on the server they opened on, and opening one is not
//! retried elsewhere. [`Client::endpoints`] shows
//! each server's calls, failures, latency estimate and state.
//!
//! `docs/SCALING.md` tells how to run behind a Kubernetes headless service
//! or Consul's DNS.

#[cfg(feature = "dns")]
mod dns;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rpc_core::{Balanced, Client, Error};
use rpc_transport::stream::Connector;
use rpc_transport::tcp::TcpConnector;
use tokio::time::Instant;

use crate::client::ClientBuilder;

#[cfg(feature = "dns")]
pub use dns::{Dns, MAX_REFRESH, MIN_REFRESH};

pub use rpc_core::{EndpointState, EndpointStats, Policy};

/// A change to a client's set of servers, from a registry of your own
/// (etcd, Consul's API, a config file): see
/// [`ClientBuilder::discover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A server to call.
    Insert(SocketAddr),
    /// A server to stop calling: calls on it finish, new calls go
    /// elsewhere.
    Remove(SocketAddr),
}

/// Where a balanced client's set comes from.
enum Source {
    Fixed(Vec<SocketAddr>),
    #[cfg(feature = "dns")]
    Dns(Dns),
}

impl ClientBuilder {
    /// Connects to every server in `addrs` and spreads calls over them
    /// (see [the module](crate::discover) for how). Succeeds once one
    /// server connects; the others are tried again in the background.
    ///
    /// ```
    /// # #[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }
    /// # struct Calc;
    /// # impl Calculator for Calc { async fn add(&self, a: i64, b: i64) -> i64 { a + b } }
    /// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
    /// let mut servers = Vec::new();
    /// for _ in 0..3 {
    ///     servers.push(rpc::Server::new().serve(CalculatorServer::new(Calc)).bind("127.0.0.1:0").await?);
    /// }
    /// let addrs: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();
    ///
    /// let client = rpc::ClientBuilder::new().connect_many(addrs).await?;
    /// let calc = CalculatorClient::from_client(client.clone());
    /// for i in 0..30 {
    ///     assert_eq!(calc.add(i, 1).await?, i + 1);
    /// }
    /// assert_eq!(client.endpoints().len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn connect_many(self, addrs: impl IntoIterator<Item = SocketAddr>) -> Result<Client, Error> {
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        if addrs.is_empty() {
            return Err(Error::disconnected("connect_many was given no address"));
        }
        self.balanced(Source::Fixed(addrs)).await
    }

    /// A client whose servers come from `changes`: each
    /// [`Change::Insert`] adds one, each [`Change::Remove`] drains one.
    /// Returns at once; calls made before the first server is known wait
    /// for one within their deadlines. When the stream ends the set stays
    /// as it was. Must be called inside a tokio runtime.
    pub fn discover(self, changes: impl Stream<Item = Change> + Send + 'static) -> Client {
        let changes = changes.boxed();
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls_config().cloned() {
            let connector = move |addr: SocketAddr| {
                rpc_transport::tls::TlsConnector::new(TcpConnector::new([addr]), tls.clone())
            };
            let (client, servers) = self.servers(connector, true);
            tokio::spawn(servers.follow(changes));
            return client;
        }
        let (client, servers) = self.servers(|addr: SocketAddr| TcpConnector::new([addr]), false);
        tokio::spawn(servers.follow(changes));
        client
    }

    /// Connects to every address `dns` resolves to and follows its
    /// changes: looked up again when the records' TTL runs out (within
    /// [`MIN_REFRESH`] and [`MAX_REFRESH`]) and sooner when connecting to
    /// a server fails. Fails if the first lookup does, or finds no address, or no
    /// server answers.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), rpc::Error> {
    /// use rpc::discover::Dns;
    ///
    /// // A Kubernetes headless service: one A record per ready pod.
    /// let client = rpc::ClientBuilder::new()
    ///     .connect_dns(Dns::name("users.default.svc.cluster.local:7000")?)
    ///     .await?;
    /// // Consul: SRV records carry each instance's port.
    /// let client = rpc::ClientBuilder::new().connect_dns(Dns::srv("users.service.consul")).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "dns")]
    pub async fn connect_dns(self, dns: Dns) -> Result<Client, Error> {
        self.balanced(Source::Dns(dns)).await
    }

    async fn balanced(self, source: Source) -> Result<Client, Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls_config().cloned() {
            let connector = move |addr: SocketAddr| {
                rpc_transport::tls::TlsConnector::new(TcpConnector::new([addr]), tls.clone())
            };
            return self.start(source, connector, true).await;
        }
        self.start(source, |addr: SocketAddr| TcpConnector::new([addr]), false)
            .await
    }

    /// A balanced client, and its set as discovery changes it.
    fn servers<C, M>(self, connector: M, over_tls: bool) -> (Client, Servers<M>)
    where
        C: Connector,
        M: Fn(SocketAddr) -> C + Send + Sync + 'static,
    {
        let (client, handle) = Client::balanced(self.policy(), self.config().clone());
        let client = self.finish(client);
        let servers = Servers {
            handle,
            builder: self,
            connector,
            over_tls,
        };
        (client, servers)
    }

    async fn start<C, M>(self, source: Source, connector: M, over_tls: bool) -> Result<Client, Error>
    where
        C: Connector,
        M: Fn(SocketAddr) -> C + Send + Sync + 'static,
    {
        let (client, servers) = self.servers(connector, over_tls);
        match source {
            Source::Fixed(addrs) => {
                servers.set(&addrs);
                servers.connect_all().await?;
            }
            #[cfg(feature = "dns")]
            Source::Dns(dns) => {
                let resolver = dns.resolver()?;
                let found = resolver.lookup().await?;
                servers.set(&found.addrs);
                servers.connect_all().await?;
                tokio::spawn(resolver.follow(found.ttl, servers));
            }
        }
        Ok(client)
    }
}

/// A balanced client's set, as its discovery changes it.
pub(crate) struct Servers<M> {
    handle: Balanced,
    builder: ClientBuilder,
    connector: M,
    over_tls: bool,
}

impl<C: Connector, M: Fn(SocketAddr) -> C + Send + Sync + 'static> Servers<M> {
    /// Makes the set exactly `addrs`; whether the client is still there.
    pub(crate) fn set(&self, addrs: &[SocketAddr]) -> bool {
        let targets = addrs.iter().map(|&addr| {
            let dialer = Arc::new(self.builder.dialer((self.connector)(addr), self.over_tls));
            let connect = move || Arc::clone(&dialer).dial();
            (Arc::<str>::from(addr.to_string()), connect)
        });
        self.handle.set(targets)
    }

    async fn connect_all(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.builder.connect_timeout_setting();
        self.handle.connect_all(deadline).await
    }

    /// Resolves when a server fails: time to look again.
    #[cfg(feature = "dns")]
    pub(crate) async fn failed(&self) {
        self.handle.failed().await;
    }

    /// Resolves once the client is dropped.
    pub(crate) async fn gone(&self) {
        self.handle.gone().await;
    }

    /// Applies `changes` until they end or the client is dropped.
    async fn follow(self, mut changes: futures::stream::BoxStream<'static, Change>) {
        let mut addrs = BTreeSet::new();
        loop {
            let change = tokio::select! {
                change = changes.next() => change,
                () = self.gone() => return,
            };
            match change {
                Some(Change::Insert(addr)) => addrs.insert(addr),
                Some(Change::Remove(addr)) => addrs.remove(&addr),
                None => return,
            };
            let addrs: Vec<SocketAddr> = addrs.iter().copied().collect();
            if !self.set(&addrs) {
                return;
            }
        }
    }
}
