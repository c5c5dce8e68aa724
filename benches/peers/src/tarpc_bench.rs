//! `tarpc_bench`: `rpc` against tarpc 0.38 over TCP with bincode, as users
//! of each write them, in one run, round by round, each server in its own
//! process.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml --bin tarpc_bench                  # 3 rounds, multi-thread
//! cargo run --release --manifest-path benches/peers/Cargo.toml --bin tarpc_bench -- --runtime ct   # current-thread
//! cargo run --release --manifest-path benches/peers/Cargo.toml --bin tarpc_bench -- --quick        # a smoke run
//! ```
//!
//! Both systems run with their default settings (tarpc: `BaseChannel::
//! with_defaults`, a task per request, `client::Config::default()`; rpc:
//! `Server::new()`, `connect`) on the runtime asked for, in every process.
//! Scenarios: `lat` (one caller: p50 and p99), `tput64` and `tput1k` (small
//! calls from 64 and 1 024 callers on one connection: calls/s), `bigvec`
//! (8 callers echoing a 1 MiB `Vec<u8>`: MB/s). The report gives the median
//! of the per-round ratios, rpc / tarpc (for latency, lower is better).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;

/// The calls, as rpc users write them.
#[rpc::service]
pub trait Bench {
    /// A small call.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// A blob there and back.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

struct Rpc;

impl Bench for Rpc {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// The same calls, as tarpc users write them.
#[tarpc::service]
pub trait TarpcBench {
    /// A small call.
    async fn add(a: u64, b: u64) -> u64;
    /// A blob there and back.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct Tarpc;

impl TarpcBench for Tarpc {
    async fn add(self, _: tarpc::context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(self, _: tarpc::context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Rpc,
    Tarpc,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Rpc => "rpc",
            System::Tarpc => "tarpc",
        }
    }
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    match name {
        "ct" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .expect("a tokio runtime")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["serve", system, rt] = args.as_slice() {
        let system = if *system == "rpc" { System::Rpc } else { System::Tarpc };
        let runtime = runtime(rt);
        runtime.block_on(serve(system));
        return ExitCode::SUCCESS;
    }
    let (mut rounds, mut scale, mut rt) = (3usize, 1usize, "mt".to_owned());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (*arg, rest.clone().next()) {
            ("--quick", _) => (rounds, scale) = (1, 20),
            ("--rounds", Some(n)) => {
                rounds = n.parse().unwrap_or(3);
                rest.next();
            }
            ("--runtime", Some(name)) => {
                rt = (*name).to_owned();
                rest.next();
            }
            _ => {
                eprintln!("usage: tarpc_bench [--quick] [--rounds N] [--runtime ct|mt]");
                return ExitCode::FAILURE;
            }
        }
    }
    runtime(&rt).block_on(compare(rounds, scale, &rt));
    ExitCode::SUCCESS
}

/// A server; its address on stdout; until stdin closes.
async fn serve(system: System) {
    let addr = match system {
        System::Rpc => {
            let handle = rpc::Server::new()
                .serve(BenchServer::new(Rpc))
                .bind("127.0.0.1:0")
                .await
                .expect("bind rpc");
            let addr = handle.local_addr();
            std::mem::forget(handle);
            addr
        }
        System::Tarpc => {
            let listener = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default)
                .await
                .expect("bind tarpc");
            let addr = listener.local_addr();
            tokio::spawn(async move {
                listener
                    .filter_map(|transport| async { transport.ok() })
                    .map(BaseChannel::with_defaults)
                    .for_each(|channel| async {
                        tokio::spawn(channel.execute(Tarpc.serve()).for_each(|response| async {
                            tokio::spawn(response);
                        }));
                    })
                    .await;
            });
            addr
        }
    };
    println!("LISTENING {addr}");
    std::io::stdout().flush().expect("stdout");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
    })
    .await
    .expect("stdin");
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl Server {
    fn start(system: System, rt: &str) -> Server {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["serve", system.name(), rt])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("a server process");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("the server's address");
        let addr = line.trim().trim_start_matches("LISTENING ").parse().expect("an address");
        Server { child, stdin, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
enum Client {
    Rpc(BenchClient),
    Tarpc(TarpcBenchClient),
}

impl Client {
    async fn connect(system: System, addr: SocketAddr) -> Client {
        match system {
            System::Rpc => Client::Rpc(BenchClient::connect(addr).await.expect("connect rpc")),
            System::Tarpc => {
                let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
                    .await
                    .expect("connect tarpc");
                Client::Tarpc(TarpcBenchClient::new(tarpc::client::Config::default(), transport).spawn())
            }
        }
    }

    async fn add(&self, a: u64, b: u64) -> u64 {
        match self {
            Client::Rpc(client) => client.add(a, b).await.expect("rpc add"),
            Client::Tarpc(client) => client
                .add(tarpc::context::current(), a, b)
                .await
                .expect("tarpc add"),
        }
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        match self {
            Client::Rpc(client) => client.echo(data).await.expect("rpc echo"),
            Client::Tarpc(client) => client
                .echo(tarpc::context::current(), data)
                .await
                .expect("tarpc echo"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Lat,
    Tput64,
    Tput1k,
    BigVec,
}

impl Scenario {
    const ALL: [Scenario; 4] = [Scenario::Lat, Scenario::Tput64, Scenario::Tput1k, Scenario::BigVec];

    fn name(self) -> &'static str {
        match self {
            Scenario::Lat => "lat",
            Scenario::Tput64 => "tput64",
            Scenario::Tput1k => "tput1k",
            Scenario::BigVec => "bigvec",
        }
    }
}

/// One measure: (figure, p99 in µs for `lat`).
async fn run(scenario: Scenario, client: &Client, scale: usize) -> (f64, f64) {
    match scenario {
        Scenario::Lat => {
            let calls = 20_000 / scale;
            let mut latencies = Vec::with_capacity(calls);
            for i in 0..calls {
                let started = Instant::now();
                assert_eq!(client.add(i as u64, 1).await, i as u64 + 1);
                latencies.push(started.elapsed());
            }
            latencies.sort_unstable();
            let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
            (at(0.5), at(0.99))
        }
        Scenario::Tput64 => (small(client, 64, 200_000 / scale).await, 0.0),
        Scenario::Tput1k => (small(client, 1024, (200_000 / scale).max(1024)).await, 0.0),
        Scenario::BigVec => {
            let (callers, per_caller, size) = (8, (64 / scale).max(1), 1024 * 1024);
            let started = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_caller {
                            assert_eq!(client.echo(vec![0xa5; size]).await.len(), size);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("a caller");
            }
            let megabytes = (callers * per_caller * size) as f64 / 1e6;
            (megabytes / started.elapsed().as_secs_f64(), 0.0)
        }
    }
}

async fn small(client: &Client, callers: usize, calls: usize) -> f64 {
    let per_caller = (calls / callers).max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..per_caller {
                    assert_eq!(client.add(caller as u64, i as u64).await, (caller + i) as u64);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a caller");
    }
    (per_caller * callers) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() % 2 {
        1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    }
}

async fn compare(rounds: usize, scale: usize, rt: &str) {
    let servers = [Server::start(System::Rpc, rt), Server::start(System::Tarpc, rt)];
    let rpc = Client::connect(System::Rpc, servers[0].addr).await;
    let tarpc = Client::connect(System::Tarpc, servers[1].addr).await;
    println!("tarpc_bench: {rounds} rounds, runtime {rt}, default settings on both sides");
    // ratios[scenario] = per-round rpc / tarpc (p50 and p99 for lat).
    let mut ratios: Vec<Vec<(f64, f64)>> = vec![Vec::new(); Scenario::ALL.len()];
    for round in 1..=rounds {
        for (s, scenario) in Scenario::ALL.into_iter().enumerate() {
            // Alternate who goes first.
            let (ours, theirs) = if round % 2 == 1 {
                let ours = run(scenario, &rpc, scale).await;
                (ours, run(scenario, &tarpc, scale).await)
            } else {
                let theirs = run(scenario, &tarpc, scale).await;
                (run(scenario, &rpc, scale).await, theirs)
            };
            let ratio = (ours.0 / theirs.0, ours.1 / theirs.1);
            ratios[s].push(ratio);
            match scenario {
                Scenario::Lat => println!(
                    "round {round} lat     rpc p50 {:.1} p99 {:.1} us   tarpc p50 {:.1} p99 {:.1} us   ratio {:.3} / {:.3}",
                    ours.0, ours.1, theirs.0, theirs.1, ratio.0, ratio.1
                ),
                _ => println!(
                    "round {round} {:<7} rpc {:>10.1}   tarpc {:>10.1}   ratio {:.3}",
                    scenario.name(),
                    ours.0,
                    theirs.0,
                    ratio.0
                ),
            }
        }
    }
    println!("\nmedian over {rounds} rounds, rpc / tarpc");
    for (s, scenario) in Scenario::ALL.into_iter().enumerate() {
        let first = median(ratios[s].iter().map(|r| r.0).collect());
        match scenario {
            Scenario::Lat => {
                let p99 = median(ratios[s].iter().map(|r| r.1).collect());
                println!("lat p50 {first:.3}   p99 {p99:.3}   (lower is better)");
            }
            Scenario::BigVec => println!("bigvec MB/s {first:.3}"),
            _ => println!("{} calls/s {first:.3}", scenario.name()),
        }
    }
}
