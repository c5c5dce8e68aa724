//! [`Dns`]: a client's servers are every address a DNS name has, looked up
//! again as the records' TTL says, and sooner when connecting to a server
//! fails. Lookups go through hickory's resolver (the system's configuration, or
//! a nameserver given here), whose own cache is cleared before each: this
//! module decides when to look again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use rpc_core::Error;
use rpc_transport::stream::Connector;
use tokio::time::Instant;

use super::Servers;

/// The soonest a client looks a name up again, however short the records'
/// TTL (and however often servers fail).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest a client goes without looking a name up again, however
/// long the records' TTL.
pub const MAX_REFRESH: Duration = Duration::from_secs(300);

/// A DNS name whose addresses are a client's servers: see
/// [`ClientBuilder::connect_dns`](crate::ClientBuilder::connect_dns).
#[derive(Debug, Clone)]
pub struct Dns {
    query: Query,
    /// Ask these instead of the system's nameservers.
    nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
enum Query {
    /// A and AAAA records of `host`, each address on `port`.
    Host { host: String, port: u16 },
    /// SRV records of `name`: each a target host and its port.
    Srv { name: String },
}

impl Dns {
    /// Every A and AAAA record of `host:port`'s host, on that port: a
    /// Kubernetes headless service (`users.default.svc.cluster.local:7000`)
    /// or any name with one record per replica.
    pub fn name(host_and_port: &str) -> Result<Dns, Error> {
        let bad = |why: &str| Error::Connect {
            addr: host_and_port.to_owned(),
            source: Arc::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{why}: write the name as `host:port`, e.g. `users.default.svc.cluster.local:7000`"),
            )),
        };
        let (host, port) = host_and_port.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = port
            .parse()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        if host.is_empty() {
            return Err(bad("no host name"));
        }
        Ok(Dns {
            query: Query::Host {
                host: host.to_owned(),
                port,
            },
            nameservers: Vec::new(),
        })
    }

    /// Every SRV record of `name`, each a host and its port: Consul's DNS
    /// interface (`users.service.consul`, or `_users._tcp.service.consul`)
    /// or any registry that gives replicas ports of their own. The
    /// records' priority and weight are not used: the client balances by
    /// load.
    pub fn srv(name: &str) -> Dns {
        Dns {
            query: Query::Srv {
                name: name.to_owned(),
            },
            nameservers: Vec::new(),
        }
    }

    /// Asks the nameserver at `addr` (UDP, with TCP for long answers)
    /// instead of the system's (`/etc/resolv.conf`). Call again to add
    /// more.
    pub fn nameserver(mut self, addr: SocketAddr) -> Dns {
        self.nameservers.push(addr);
        self
    }

    /// What is looked up, in words.
    fn describe(&self) -> String {
        match &self.query {
            Query::Host { host, port } => format!("{host}:{port}"),
            Query::Srv { name } => format!("SRV {name}"),
        }
    }

    /// The resolver that looks it up.
    pub(super) fn resolver(self) -> Result<Lookup, Error> {
        let resolver = if self.nameservers.is_empty() {
            TokioResolver::builder_tokio().and_then(|builder| builder.build())
        } else {
            let servers = self
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut options = ResolverOpts::default();
            options.use_hosts_file = ResolveHosts::Never;
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
            .with_options(options)
            .build()
        };
        let resolver = resolver.map_err(|err| Error::Connect {
            addr: self.describe(),
            source: Arc::new(std::io::Error::other(format!("cannot set up DNS lookups: {err}"))),
        })?;
        Ok(Lookup { resolver, dns: self })
    }
}

/// Addresses found, and how long the records said they hold.
pub(super) struct Found {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) ttl: Duration,
}

/// A name and the resolver that looks it up.
pub(super) struct Lookup {
    resolver: TokioResolver,
    dns: Dns,
}

impl Lookup {
    /// Looks the name up now; fails if the lookup does or finds nothing.
    pub(super) async fn lookup(&self) -> Result<Found, Error> {
        // Hickory caches answers for their TTL; the refresh below is timed
        // by that TTL already, and must see a change as soon as it is due.
        self.resolver.clear_cache();
        let found = match &self.dns.query {
            Query::Host { host, port } => self.host(host, *port).await,
            Query::Srv { name } => self.srv(name).await,
        };
        let found = found.map_err(|err| self.failed(&err))?;
        if found.addrs.is_empty() {
            return Err(self.failed("no address records"));
        }
        Ok(found)
    }

    async fn host(&self, host: &str, port: u16) -> Result<Found, String> {
        let found = self.resolver.lookup_ip(host).await.map_err(words)?;
        let ttl = found
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        let mut addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        Ok(Found { addrs, ttl })
    }

    async fn srv(&self, name: &str) -> Result<Found, String> {
        let found = self.resolver.srv_lookup(name).await.map_err(words)?;
        let mut ttl = found
            .valid_until()
            .saturating_duration_since(std::time::Instant::now());
        let mut addrs = Vec::new();
        for record in found.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            // The target's addresses, from the answer's additional records
            // (Consul sends them), or looked up.
            let mut ips: Vec<IpAddr> = found
                .additionals()
                .iter()
                .filter(|extra| extra.name == srv.target)
                .filter_map(|extra| extra.data.ip_addr())
                .collect();
            if ips.is_empty() {
                // One target that does not resolve (a node leaving) must
                // not hold back the rest.
                match self.resolver.lookup_ip(srv.target.clone()).await {
                    Ok(target) => {
                        ttl = ttl.min(
                            target
                                .valid_until()
                                .saturating_duration_since(std::time::Instant::now()),
                        );
                        ips.extend(target.iter());
                    }
                    Err(err) => {
                        tracing::warn!(name, target = %srv.target, err = %words(err), "an SRV target has no address; leaving it out");
                    }
                }
            }
            addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, srv.port)));
        }
        addrs.sort_unstable();
        addrs.dedup();
        Ok(Found { addrs, ttl })
    }

    fn failed(&self, why: &str) -> Error {
        Error::Connect {
            addr: self.dns.describe(),
            source: Arc::new(std::io::Error::other(format!(
                "DNS lookup found no server: {why}"
            ))),
        }
    }

    /// Follows the name's changes into `servers` until the client is
    /// dropped: again when `ttl` runs out, and sooner when connecting to a
    /// server fails (after [`MIN_REFRESH`], doubling while failures go on,
    /// never later than the TTL would). A failed lookup, or one that finds
    /// nothing, keeps the servers as they were (a name briefly without
    /// records must not empty a working client) and tries again after
    /// [`MIN_REFRESH`].
    pub(super) async fn follow<C, M>(self, ttl: Duration, servers: Servers<M>)
    where
        C: Connector,
        M: Fn(SocketAddr) -> C + Send + Sync + 'static,
    {
        let mut due = Instant::now() + refresh(ttl);
        let mut gap = MIN_REFRESH;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => gap = MIN_REFRESH,
                () = servers.failed() => {
                    let soon = (Instant::now() + gap).min(due);
                    tokio::select! {
                        () = tokio::time::sleep_until(soon) => {}
                        () = servers.gone() => return,
                    }
                    gap = (gap * 2).min(MAX_REFRESH);
                }
                () = servers.gone() => return,
            }
            due = match self.lookup().await {
                Ok(found) => {
                    if !servers.set(&found.addrs) {
                        return;
                    }
                    Instant::now() + refresh(found.ttl)
                }
                Err(err) => {
                    tracing::warn!(name = %self.dns.describe(), %err, "keeping the servers found before");
                    Instant::now() + MIN_REFRESH
                }
            };
        }
    }
}

/// How long to wait before looking again, for records valid for `ttl`.
fn refresh(ttl: Duration) -> Duration {
    ttl.clamp(MIN_REFRESH, MAX_REFRESH)
}

/// A lookup's failure, in words.
fn words(err: NetError) -> String {
    if err.is_nx_domain() {
        "no such name (NXDOMAIN)".to_owned()
    } else if err.is_no_records_found() {
        "the name has no records of that kind".to_owned()
    } else {
        err.to_string()
    }
}
