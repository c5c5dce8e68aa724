//! DNS discovery against a real DNS server on loopback: SRV records with
//! a 1 s TTL point at three replicas; changing the records adds and
//! removes replicas, and the client follows without failing a call.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use rpc::discover::Dns;
use tokio::net::UdpSocket;

mod common;
use common::until;

#[rpc::service]
pub trait Named {
    /// Which replica answered, and `x + 1`.
    async fn next(&self, x: u64) -> (u8, u64);
}

struct Replica {
    id: u8,
    calls: Arc<AtomicU64>,
}

impl Named for Replica {
    async fn next(&self, x: u64) -> (u8, u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        (self.id, x + 1)
    }
}

/// The records the test's DNS server answers with, changed as it runs.
#[derive(Default)]
struct Zone {
    ttl: u32,
    addrs: HashMap<Name, Vec<IpAddr>>,
    srvs: HashMap<Name, Vec<SRV>>,
}

impl Zone {
    fn answer(&self, request: &Message) -> Message {
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.add_queries(request.queries.iter().cloned());
        if let Some(theirs) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(theirs.max_payload().max(512));
            response.set_edns(edns);
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response;
        };
        let name = query.name().clone();
        let exists = self.addrs.contains_key(&name) || self.srvs.contains_key(&name);
        response.metadata.response_code = if exists {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        let ip_record =
            |name: &Name, ip: &IpAddr| Record::from_rdata(name.clone(), self.ttl, RData::from(*ip));
        match query.query_type() {
            RecordType::A => {
                let ips = self
                    .addrs
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .filter(|ip| ip.is_ipv4());
                response.add_answers(ips.map(|ip| ip_record(&name, ip)).collect::<Vec<_>>());
            }
            RecordType::SRV => {
                for srv in self.srvs.get(&name).into_iter().flatten() {
                    response.add_answer(Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::SRV(srv.clone()),
                    ));
                    for ip in self.addrs.get(&srv.target).into_iter().flatten() {
                        response.add_additional(ip_record(&srv.target, ip));
                    }
                }
            }
            _ => {}
        }
        response
    }
}

/// A DNS server on a loopback UDP port, answering from `zone`; counts the
/// queries it answers.
async fn dns_server(zone: Arc<Mutex<Zone>>, queries: Arc<AtomicU64>) -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
            let Ok(request) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            if request.metadata.message_type != MessageType::Query
                || request.metadata.op_code != OpCode::Query
            {
                continue;
            }
            queries.fetch_add(1, Ordering::Relaxed);
            let response = zone.lock().unwrap().answer(&request);
            let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

async fn replica(id: u8) -> (rpc::ServerHandle, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let server = rpc::Server::new()
        .serve(NamedServer::new(Replica {
            id,
            calls: Arc::clone(&calls),
        }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, calls)
}

fn srv(port: u16) -> SRV {
    SRV::new(10, 10, port, Name::from_ascii("node.test.").unwrap())
}

async fn targets_become(client: &rpc::Client, mut want: Vec<String>) {
    want.sort();
    let changed = until("the client's servers to change", || {
        let mut targets: Vec<String> = client.endpoints().into_iter().map(|s| s.target).collect();
        targets.sort();
        targets == want
    });
    changed.await.expect("waited too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_the_records() {
    let mut replicas = Vec::new();
    for id in 0..3 {
        replicas.push(replica(id).await);
    }
    let port = |i: usize| replicas[i].0.local_addr().port();
    let target = |i: usize| replicas[i].0.local_addr().to_string();
    let service = Name::from_ascii("_named._tcp.test.").unwrap();
    let zone = Arc::new(Mutex::new(Zone {
        ttl: 1,
        ..Zone::default()
    }));
    {
        let mut zone = zone.lock().unwrap();
        zone.addrs.insert(
            Name::from_ascii("node.test.").unwrap(),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        );
        zone.srvs
            .insert(service.clone(), vec![srv(port(0)), srv(port(1))]);
    }
    let queries = Arc::new(AtomicU64::new(0));
    let nameserver = dns_server(Arc::clone(&zone), Arc::clone(&queries)).await;

    let dns = Dns::srv("_named._tcp.test.").nameserver(nameserver);
    let client = rpc::ClientBuilder::new().connect_dns(dns).await.unwrap();
    let named = NamedClient::from_client(client.clone());
    let mut want = vec![target(0), target(1)];
    targets_become(&client, want.clone()).await;

    // Calls all along, none of which may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..8u64 {
        let (named, stop) = (named.clone(), Arc::clone(&stop));
        callers.spawn(async move {
            let mut x = caller << 32;
            while !stop.load(Ordering::Relaxed) {
                let (_, y) = named
                    .next(x)
                    .await
                    .unwrap_or_else(|err| panic!("call {x} failed: {err}"));
                assert_eq!(y, x + 1);
                x += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    // A third replica is added: the client finds it once the TTL runs out.
    zone.lock()
        .unwrap()
        .srvs
        .insert(service.clone(), vec![srv(port(0)), srv(port(1)), srv(port(2))]);
    want.push(target(2));
    targets_become(&client, want).await;
    let before = replicas[2].1.load(Ordering::Relaxed);
    until("calls on the new replica", || {
        replicas[2].1.load(Ordering::Relaxed) >= before + 50
    })
    .await
    .expect("waited too long");

    // The first is removed from the records: it is drained, and takes no
    // new calls (the server itself keeps running).
    zone.lock()
        .unwrap()
        .srvs
        .insert(service.clone(), vec![srv(port(1)), srv(port(2))]);
    targets_become(&client, vec![target(1), target(2)]).await;
    let removed = replicas[0].1.load(Ordering::Relaxed);
    let others = replicas[1].1.load(Ordering::Relaxed) + replicas[2].1.load(Ordering::Relaxed);
    until("calls on the others", || {
        replicas[1].1.load(Ordering::Relaxed) + replicas[2].1.load(Ordering::Relaxed) >= others + 100
    })
    .await
    .expect("waited too long");
    // A call that picked it just before the change may still land.
    assert!(replicas[0].1.load(Ordering::Relaxed) <= removed + 8);

    stop.store(true, Ordering::Relaxed);
    while let Some(done) = callers.join_next().await {
        done.unwrap();
    }
    assert!(
        queries.load(Ordering::Relaxed) >= 3,
        "looked up again as the TTL said"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_no_records_is_refused_in_words() {
    let zone = Arc::new(Mutex::new(Zone {
        ttl: 1,
        ..Zone::default()
    }));
    let nameserver = dns_server(zone, Arc::default()).await;
    let err = rpc::ClientBuilder::new()
        .connect_dns(Dns::name("missing.test.:7000").unwrap().nameserver(nameserver))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("missing.test.:7000") && text.contains("NXDOMAIN"),
        "{text}"
    );

    let err = Dns::name("no-port.test").unwrap_err();
    assert!(err.to_string().contains("host:port"), "{err}");
}

// The whole of 127.0.0.0/8 is loopback on Linux only.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_on_one_port() {
    // 127.0.0.2 and 127.0.0.3 are loopback too: two replicas on one port.
    let calls = Arc::new(AtomicU64::new(0));
    let first = rpc::Server::new()
        .serve(NamedServer::new(Replica {
            id: 2,
            calls: Arc::clone(&calls),
        }))
        .bind("127.0.0.2:0")
        .await
        .unwrap();
    let port = first.local_addr().port();
    let second = rpc::Server::new()
        .serve(NamedServer::new(Replica {
            id: 3,
            calls: Arc::clone(&calls),
        }))
        .bind(("127.0.0.3", port))
        .await
        .unwrap();
    let zone = Arc::new(Mutex::new(Zone {
        ttl: 30,
        ..Zone::default()
    }));
    zone.lock().unwrap().addrs.insert(
        Name::from_ascii("users.test.").unwrap(),
        vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
    );
    let nameserver = dns_server(zone, Arc::default()).await;
    let dns = Dns::name(&format!("users.test.:{port}"))
        .unwrap()
        .nameserver(nameserver);
    let client = rpc::ClientBuilder::new()
        .balance(rpc::discover::Policy::RoundRobin)
        .connect_dns(dns)
        .await
        .unwrap();
    let named = NamedClient::from_client(client);
    let mut seen = Vec::new();
    for x in 0..10 {
        seen.push(named.next(x).await.unwrap().0);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [2, 3]);
    drop((first, second));
}
