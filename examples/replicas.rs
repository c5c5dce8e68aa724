//! One client over three replicas: balanced by load, a slow replica
//! avoided, a rolling restart with no failed call.
//!
//! ```text
//! cargo run --example replicas
//! ```
//!
//! In production the set comes from DNS (`ClientBuilder::connect_dns`,
//! see docs/SCALING.md); here three servers on loopback stand in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rpc::discover::EndpointStats;

/// A user service, run as three replicas.
#[rpc::service]
pub trait Users {
    /// The user's name, and which replica looked it up.
    async fn name(&self, id: u64) -> (String, u32);
}

struct Replica {
    id: u32,
    /// How long a lookup takes here: replica 2 is on a sick machine.
    delay: Duration,
}

impl Users for Replica {
    async fn name(&self, id: u64) -> (String, u32) {
        tokio::time::sleep(self.delay).await;
        (format!("user-{id}"), self.id)
    }
}

async fn start(id: u32, addr: &str, delay: Duration) -> Result<rpc::ServerHandle, rpc::Error> {
    rpc::Server::new()
        .serve(UsersServer::new(Replica { id, delay }))
        .bind(addr)
        .await
}

/// `callers` tasks making `calls` calls each; how many failed.
async fn load(users: &UsersClient, callers: u64, calls: u64) -> u64 {
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let (users, failed) = (users.clone(), Arc::clone(&failed));
        tasks.spawn(async move {
            for i in 0..calls {
                let id = caller * calls + i;
                match users.name(id).await {
                    Ok((name, _)) => assert_eq!(name, format!("user-{id}")),
                    Err(err) => {
                        eprintln!("call failed: {err}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    failed.load(Ordering::Relaxed)
}

fn show(title: &str, stats: &[EndpointStats], before: &[u64]) {
    println!("{title}");
    for (stat, before) in stats.iter().zip(before) {
        println!(
            "  {:<17} {:>6} calls  latency {:>9}  {:?}",
            stat.target,
            stat.calls - before,
            stat.latency.map_or("-".to_owned(), |l| format!("{l:.1?}")),
            stat.state
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fast = Duration::from_millis(1);
    let mut servers = vec![
        start(0, "127.0.0.1:0", fast).await?,
        start(1, "127.0.0.1:0", fast).await?,
        start(2, "127.0.0.1:0", fast * 20).await?,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.local_addr()).collect();
    let client = rpc::ClientBuilder::new().connect_many(addrs.clone()).await?;
    let users = UsersClient::from_client(client.clone());

    let failed = load(&users, 64, 50).await;
    let stats = client.endpoints();
    show(
        "3 200 calls from 64 callers; replica 2 is 20x slower:",
        &stats,
        &[0, 0, 0],
    );
    println!("  failed: {failed}\n");

    // A rolling restart under load: each replica in turn says goodbye,
    // finishes its calls, and comes back on the same port.
    let before: Vec<u64> = client.endpoints().iter().map(|s| s.calls).collect();
    let calling = tokio::spawn({
        let users = users.clone();
        async move { load(&users, 64, 200).await }
    });
    for (i, addr) in addrs.iter().enumerate() {
        let server = servers.remove(0);
        server.shutdown(Duration::from_secs(5)).await;
        let delay = if i == 2 { fast * 20 } else { fast };
        servers.push(start(i as u32, &addr.to_string(), delay).await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = calling.await?;
    show(
        "12 800 more calls through a rolling restart of all three:",
        &client.endpoints(),
        &before,
    );
    println!("  failed: {failed}");

    for server in servers {
        server.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}
