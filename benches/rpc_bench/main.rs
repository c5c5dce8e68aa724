//! `rpc_bench`: the framework against a hand-written tokio baseline, in one
//! run, interleaved round by round, servers in their own processes.
//!
//! ```text
//! cargo bench --bench rpc_bench                      # 5 rounds, every scenario
//! cargo bench --bench rpc_bench -- --rounds 3 --json bench.json
//! cargo bench --bench rpc_bench -- --quick           # small counts, a smoke run
//! cargo bench --bench rpc_bench -- --runtime ct      # tokio's current-thread runtime (default: mt, 2 workers)
//! cargo bench --bench rpc_bench -- --baseline spawn  # a baseline that spawns a task per request (default: inline)
//! cargo bench --bench rpc_bench -- --alone rpc       # one system only, no ratios: for a profiler
//! RPC_BENCH_OBSERVE=1 cargo bench --bench rpc_bench --features prometheus   # with a subscriber and metrics
//! ```
//!
//! Both systems run with default settings, as users get them; `big` echoes
//! 1 MiB `rpc::Bytes`, `bigvec` 1 MiB `Vec<u8>` (the baseline moves the same
//! bytes either way), and `conns` makes 8 calls at a time on each of 1 000
//! connections.
//!
//! Absolute times drift on shared machines, so what counts is the ratio of
//! each system to the baseline within a round; the report gives the median
//! of the per-round ratios.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod baseline;
mod ours;

use std::alloc::System;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};

use std::time::{Duration, Instant};

use rpc::Bytes;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Baseline,
    Rpc,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Baseline => "baseline",
            Contender::Rpc => "rpc",
        }
    }
}

/// Which tokio runtime every process of a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    /// `current_thread`.
    Ct,
    /// `multi_thread` with two workers, one per core of the bench machine.
    Mt,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Ct => "ct",
            Runtime::Mt => "mt",
        }
    }

    fn parse(name: &str) -> Result<Runtime, String> {
        match name {
            "ct" => Ok(Runtime::Ct),
            "mt" => Ok(Runtime::Mt),
            other => Err(format!("unknown runtime {other}; the runtimes are ct and mt")),
        }
    }

    fn build(self) -> tokio::runtime::Runtime {
        match self {
            Runtime::Ct => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            Runtime::Mt => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .expect("a tokio runtime")
    }
}

fn observe_if_asked() {
    if std::env::var_os("RPC_BENCH_OBSERVE").is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter("rpc=info")
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::sink)
        .init();
    #[cfg(feature = "prometheus")]
    {
        let handle = rpc::prometheus::install().unwrap();
        std::mem::forget(handle);
    }
    #[cfg(not(feature = "prometheus"))]
    {
        metrics::set_global_recorder(metrics_util::debugging::DebuggingRecorder::new()).unwrap();
        rpc::observe::enable_metrics();
    }
}

fn main() -> ExitCode {
    observe_if_asked();
    // 1 000 connections on each side of `conns`, and a few more.
    let _ = rlimit::increase_nofile_limit(8192);
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    if args.first().map(String::as_str) == Some("serve") {
        let system = match args.get(1).map(String::as_str) {
            Some("baseline") => Contender::Baseline,
            Some("rpc") => Contender::Rpc,
            other => {
                eprintln!("serve what? {other:?}");
                return ExitCode::FAILURE;
            }
        };
        let runtime = args.get(2).map_or(Ok(Runtime::Mt), |name| Runtime::parse(name));
        let inline = args.get(3).map(String::as_str) != Some("spawn");
        match runtime {
            Ok(runtime) => serve(system, runtime, inline),
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    match Options::parse(&args) {
        Ok(options) => {
            options.runtime.build().block_on(orchestrate(options));
            ExitCode::SUCCESS
        }
        Err(usage) => {
            eprintln!("{usage}");
            ExitCode::FAILURE
        }
    }
}

/// A server process: binds, says where, then answers `allocs` on stdin with
/// its allocation count until stdin closes.
fn serve(system: Contender, runtime: Runtime, inline: bool) {
    let runtime = runtime.build();
    let addr = runtime.block_on(async {
        match system {
            Contender::Baseline => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                tokio::spawn(baseline::serve(listener, inline));
                addr
            }
            Contender::Rpc => {
                let handle = ours::serve("127.0.0.1:0").await;
                let addr = handle.local_addr();
                std::mem::forget(handle);
                addr
            }
        }
    });
    println!("LISTENING {addr}");
    std::io::stdout().flush().unwrap();
    // The runtime must keep running while this thread reads stdin: a
    // current-thread runtime runs only inside `block_on`.
    runtime.block_on(async {
        tokio::task::spawn_blocking(|| {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line.as_deref() {
                    Ok("allocs") => {
                        println!("{}", INSTRUMENTED_SYSTEM.stats().allocations);
                        std::io::stdout().flush().unwrap();
                    }
                    _ => break,
                }
            }
        })
        .await
        .unwrap();
    });
    drop(runtime);
}

struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn(system: Contender, options: &Options) -> ServerProcess {
        let inline = if options.spawning_baseline {
            "spawn"
        } else {
            "inline"
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "serve",
                system.name(),
                options.server_runtime.unwrap_or(options.runtime).name(),
                inline,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a server process");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("LISTENING ").unwrap().parse().unwrap();
        ServerProcess {
            child,
            stdin,
            stdout,
            addr,
        }
    }

    fn allocations(&mut self) -> u64 {
        writeln!(self.stdin, "allocs").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Asked to end (any line but `allocs`), so that a profiler running
        // it (callgrind with --trace-children) writes its profile; killed
        // if it does not end within 10 s.
        let _ = writeln!(self.stdin, "end");
        let _ = self.stdin.flush();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
enum AnyClient {
    Baseline(baseline::Client),
    Rpc(ours::BenchClient),
}

impl AnyClient {
    async fn add(&self, a: u64, b: u64) -> u64 {
        match self {
            AnyClient::Baseline(client) => client.add(a, b).await,
            AnyClient::Rpc(client) => client.add(a, b).await.expect("rpc add"),
        }
    }

    async fn echo(&self, data: Bytes) -> Bytes {
        match self {
            AnyClient::Baseline(client) => client.echo(data.into()).await.into(),
            AnyClient::Rpc(client) => client.echo(data).await.expect("rpc echo"),
        }
    }

    /// The echo as users write it: a `Vec<u8>` in, a `Vec<u8>` out.
    async fn echo_vec(&self, data: Vec<u8>) -> Vec<u8> {
        match self {
            AnyClient::Baseline(client) => client.echo(data.into()).await.into(),
            AnyClient::Rpc(client) => client.echo_vec(data).await.expect("rpc echo_vec"),
        }
    }

    async fn connect(system: Contender, addr: SocketAddr) -> AnyClient {
        match system {
            Contender::Baseline => AnyClient::Baseline(baseline::Client::connect(addr).await),
            Contender::Rpc => AnyClient::Rpc(ours::connect(addr).await),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Lat,
    Tput64,
    Tput1k,
    Big,
    BigVec,
    Conns,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Lat,
        Scenario::Tput64,
        Scenario::Tput1k,
        Scenario::Big,
        Scenario::BigVec,
        Scenario::Conns,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Lat => "lat",
            Scenario::Tput64 => "tput64",
            Scenario::Tput1k => "tput1k",
            Scenario::Big => "big",
            Scenario::BigVec => "bigvec",
            Scenario::Conns => "conns",
        }
    }
}

struct Options {
    rounds: usize,
    quick: bool,
    json: Option<String>,
    scenarios: Vec<Scenario>,
    runtime: Runtime,
    /// The baseline spawns a task per request instead of answering inline.
    spawning_baseline: bool,
    /// Run this system alone (to profile it), measuring no ratio.
    alone: Option<Contender>,
    /// The servers' runtime, when it is not the client's.
    server_runtime: Option<Runtime>,
    /// Where `lat` appends every call's latency, to study its tail.
    latencies: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            rounds: 5,
            quick: false,
            json: None,
            scenarios: Scenario::ALL.to_vec(),
            runtime: Runtime::Mt,
            spawning_baseline: false,
            alone: None,
            server_runtime: None,
            latencies: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--rounds" => {
                    options.rounds = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--rounds takes a positive number")?;
                }
                "--quick" => options.quick = true,
                "--runtime" => {
                    options.runtime = Runtime::parse(args.next().ok_or("--runtime takes ct or mt")?)?
                }
                "--baseline" => {
                    options.spawning_baseline = match args.next().map(String::as_str) {
                        Some("inline") => false,
                        Some("spawn") => true,
                        _ => return Err("--baseline takes inline or spawn".to_owned()),
                    }
                }
                "--alone" => {
                    options.alone = match args.next().map(String::as_str) {
                        Some("rpc") => Some(Contender::Rpc),
                        Some("baseline") => Some(Contender::Baseline),
                        _ => return Err("--alone takes rpc or baseline".to_owned()),
                    }
                }
                "--json" => options.json = Some(args.next().ok_or("--json takes a path")?.clone()),
                "--server-runtime" => {
                    let name = args.next().ok_or("--server-runtime takes ct or mt")?;
                    options.server_runtime = Some(Runtime::parse(name)?);
                }
                "--latencies" => {
                    options.latencies = Some(args.next().ok_or("--latencies takes a path")?.clone())
                }
                "--scenarios" => {
                    let names = args.next().ok_or("--scenarios takes a list such as lat,big")?;
                    options.scenarios = names
                        .split(',')
                        .map(|name| {
                            Scenario::ALL
                                .into_iter()
                                .find(|s| s.name() == name)
                                .ok_or(format!(
                                    "unknown scenario {name}; the scenarios are lat, tput64, tput1k, big, bigvec, conns"
                                ))
                        })
                        .collect::<Result<_, _>>()?;
                }
                other => {
                    return Err(format!(
                        "unknown argument {other}\nusage: rpc_bench [--rounds N] [--quick] [--json PATH] [--runtime ct|mt] [--baseline inline|spawn] [--alone rpc|baseline] [--scenarios lat,tput64,tput1k,big,bigvec,conns] [--server-runtime ct|mt] [--latencies PATH]"
                    ));
                }
            }
        }
        Ok(options)
    }

    fn scale(&self, full: usize) -> usize {
        if self.quick { (full / 20).max(1) } else { full }
    }
}

/// What one run of one scenario measured.
#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    /// calls/s, or MB/s for `big`.
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn summarise(mut latencies: Vec<Duration>, rate: f64) -> Measure {
    latencies.sort_unstable();
    Measure {
        rate,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
    }
}

/// One caller's calls, one after another; with `keep`, every latency is
/// appended to a file, in nanoseconds, after a line naming the system.
async fn latency(client: &AnyClient, calls: usize, keep: Option<(&str, Contender)>) -> Measure {
    for i in 0..calls / 10 {
        client.add(i as u64, 1).await;
    }
    let mut latencies = Vec::with_capacity(calls);
    let started = Instant::now();
    for i in 0..calls {
        let call = Instant::now();
        let sum = client.add(i as u64, 1).await;
        latencies.push(call.elapsed());
        assert_eq!(sum, i as u64 + 1);
    }
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    if let Some((path, system)) = keep {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the latencies file");
        let mut text = format!("# {}\n", system.name());
        for latency in &latencies {
            let _ = writeln!(text, "{}", latency.as_nanos());
        }
        file.write_all(text.as_bytes()).expect("write the latencies");
    }
    summarise(latencies, rate)
}

async fn throughput(client: &AnyClient, callers: usize, calls: usize) -> Measure {
    throughput_over(std::slice::from_ref(client), callers, calls).await
}

/// Small calls from `callers` tasks spread over `clients` (caller `i` on
/// client `i % clients.len()`), `calls` in all: calls/s and latencies.
async fn throughput_over(clients: &[AnyClient], callers: usize, calls: usize) -> Measure {
    let per_caller = (calls / callers).max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let client = clients[caller % clients.len()].clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for i in 0..per_caller {
                    let call = Instant::now();
                    let sum = client.add(caller as u64, i as u64).await;
                    latencies.push(call.elapsed());
                    debug_assert_eq!(sum, (caller + i) as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(callers * per_caller);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    summarise(latencies, (per_caller * callers) as f64 / elapsed)
}

async fn big(client: &AnyClient, callers: usize, calls: usize, size: usize, vec: bool) -> Measure {
    let payload = Bytes::from(vec![0xa5u8; size]);
    let per_caller = (calls / callers).max(1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for _ in 0..per_caller {
                    let call = Instant::now();
                    let back = match vec {
                        // The copy into a `Vec` is the caller's, as a user's
                        // would be, and the same for both systems.
                        true => client.echo_vec(payload.to_vec()).await.len(),
                        false => client.echo(payload.clone()).await.len(),
                    };
                    latencies.push(call.elapsed());
                    assert_eq!(back, payload.len());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let megabytes = (per_caller * callers * size) as f64 / 1e6;
    summarise(latencies, megabytes / elapsed)
}

/// Small calls, `in_flight` at a time on each of `connections` connections
/// of their own: calls/s. Connecting is not timed.
async fn conns(
    system: Contender,
    addr: SocketAddr,
    connections: usize,
    in_flight: usize,
    calls: usize,
) -> Measure {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(AnyClient::connect(system, addr).await);
    }
    throughput_over(&clients, connections * in_flight, calls).await
}

/// One system under test: its client, and where its server listens (for
/// scenarios that open connections of their own).
struct Contestant {
    system: Contender,
    addr: SocketAddr,
    client: AnyClient,
}

async fn run(scenario: Scenario, contestant: &Contestant, options: &Options) -> Measure {
    let client = &contestant.client;
    match scenario {
        Scenario::Lat => {
            let latencies = options.latencies.as_deref().map(|path| (path, contestant.system));
            latency(client, options.scale(20_000), latencies).await
        }
        Scenario::Tput64 => throughput(client, 64, options.scale(200_000)).await,
        Scenario::Tput1k => throughput(client, 1024, options.scale(200_000).max(1024)).await,
        Scenario::Big => big(client, 8, options.scale(512).max(8), 1024 * 1024, false).await,
        Scenario::BigVec => big(client, 8, options.scale(512).max(8), 1024 * 1024, true).await,
        Scenario::Conns => {
            let connections = if options.quick { 100 } else { 1000 };
            conns(
                contestant.system,
                contestant.addr,
                connections,
                8,
                options.scale(400_000),
            )
            .await
        }
    }
}

/// A figure of a measure: its label, how to read it, and whether higher is
/// better.
type Figure = (&'static str, fn(&Measure) -> f64, bool);

/// The figures of a measure that the scenario's ratio compares.
fn figures(scenario: Scenario) -> &'static [Figure] {
    // (label, figure, higher is better)
    match scenario {
        Scenario::Lat => &[
            ("p50 us", |m| m.p50_us, false),
            ("p99 us", |m| m.p99_us, false),
            ("p999 us", |m| m.p999_us, false),
        ],
        Scenario::Tput64 => &[("calls/s", |m| m.rate, true), ("p99 us", |m| m.p99_us, false)],
        Scenario::Tput1k | Scenario::Conns => &[("calls/s", |m| m.rate, true)],
        Scenario::Big | Scenario::BigVec => &[("MB/s", |m| m.rate, true)],
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

async fn orchestrate(options: Options) {
    // Each run's latencies start a file of their own; `lat` appends to it.
    if let Some(path) = &options.latencies {
        std::fs::File::create(path).expect("create the latencies file");
    }
    if let Some(system) = options.alone {
        return alone(system, &options).await;
    }
    let mut base_server = ServerProcess::spawn(Contender::Baseline, &options);
    let mut rpc_server = ServerProcess::spawn(Contender::Rpc, &options);
    let base = Contestant {
        system: Contender::Baseline,
        addr: base_server.addr,
        client: AnyClient::connect(Contender::Baseline, base_server.addr).await,
    };
    let rpc = Contestant {
        system: Contender::Rpc,
        addr: rpc_server.addr,
        client: AnyClient::connect(Contender::Rpc, rpc_server.addr).await,
    };
    println!(
        "rpc_bench: {} rounds, runtime {}{}, baseline {}, default settings, scenarios {:?}{}",
        options.rounds,
        options.runtime.name(),
        match options.server_runtime {
            Some(server) if server != options.runtime => format!(" (servers {})", server.name()),
            _ => String::new(),
        },
        if options.spawning_baseline {
            "spawning a task per request"
        } else {
            "answering inline"
        },
        options.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
        if options.quick { " (quick)" } else { "" }
    );

    // results[scenario][round] = (baseline, rpc)
    let mut results: Vec<Vec<(Measure, Measure)>> = vec![Vec::new(); options.scenarios.len()];
    for round in 0..options.rounds {
        for (s, scenario) in options.scenarios.iter().enumerate() {
            // Alternate who goes first, so warm caches favour neither.
            let (first, second) = if round % 2 == 0 {
                (&base, &rpc)
            } else {
                (&rpc, &base)
            };
            let a = run(*scenario, first, &options).await;
            let b = run(*scenario, second, &options).await;
            let (base_measure, rpc_measure) = if round % 2 == 0 { (a, b) } else { (b, a) };
            results[s].push((base_measure, rpc_measure));
            let (label, figure, _) = figures(*scenario)[0];
            println!(
                "round {} {:<7} baseline {:>12.1} {label:<8} rpc {:>12.1} {label:<8} ratio {:.3}",
                round + 1,
                scenario.name(),
                figure(&base_measure),
                figure(&rpc_measure),
                figure(&rpc_measure) / figure(&base_measure),
            );
        }
    }

    // Allocations per call for tput64, each side of each system.
    let calls = options.scale(200_000);
    let mut allocations = Vec::new();
    for (system, client, server) in [
        (Contender::Baseline, &base.client, &mut base_server),
        (Contender::Rpc, &rpc.client, &mut rpc_server),
    ] {
        let server_before = server.allocations();
        let region = Region::new(GLOBAL);
        throughput(client, 64, calls).await;
        let client_allocs = region.change().allocations as f64 / calls as f64;
        let server_allocs = (server.allocations() - server_before) as f64 / calls as f64;
        allocations.push((system, client_allocs, server_allocs));
    }

    println!("\nmedian over {} rounds (ratio = rpc / baseline)", options.rounds);
    println!(
        "{:<8} {:<9} {:>14} {:>14} {:>8}",
        "scenario", "figure", "baseline", "rpc", "ratio"
    );
    let mut json = Vec::new();
    for (s, scenario) in options.scenarios.iter().enumerate() {
        for (label, figure, _) in figures(*scenario) {
            let mut ratios: Vec<f64> = results[s].iter().map(|(b, r)| figure(r) / figure(b)).collect();
            let mut bases: Vec<f64> = results[s].iter().map(|(b, _)| figure(b)).collect();
            let mut ours: Vec<f64> = results[s].iter().map(|(_, r)| figure(r)).collect();
            let ratio = median(&mut ratios);
            let (base_median, rpc_median) = (median(&mut bases), median(&mut ours));
            println!(
                "{:<8} {:<9} {:>14.1} {:>14.1} {:>8.3}",
                scenario.name(),
                label,
                base_median,
                rpc_median,
                ratio
            );
            json.push(format!(
                "{{\"scenario\":\"{}\",\"figure\":\"{}\",\"baseline\":{:.3},\"rpc\":{:.3},\"ratio\":{:.4},\"rounds\":[{}]}}",
                scenario.name(),
                label,
                base_median,
                rpc_median,
                ratio,
                ratios.iter().map(|r| format!("{r:.4}")).collect::<Vec<_>>().join(",")
            ));
        }
    }
    println!("\nallocations per call, tput64 ({calls} calls)");
    for (system, client, server) in &allocations {
        println!("{:<9} client {client:>6.2}   server {server:>6.2}", system.name());
        json.push(format!(
            "{{\"allocations\":\"{}\",\"client_per_call\":{client:.3},\"server_per_call\":{server:.3}}}",
            system.name()
        ));
    }
    if let Some(path) = &options.json {
        std::fs::write(path, format!("[\n{}\n]\n", json.join(",\n"))).expect("write the JSON report");
        println!("\nwrote {path}");
    }
}

/// Runs the scenarios on one system only: what a profiler of that system's
/// client (this process) and server (its child) should see.
async fn alone(system: Contender, options: &Options) {
    let server = ServerProcess::spawn(system, options);
    let contestant = Contestant {
        system,
        addr: server.addr,
        client: AnyClient::connect(system, server.addr).await,
    };
    for round in 0..options.rounds {
        for scenario in &options.scenarios {
            let measure = run(*scenario, &contestant, options).await;
            let (label, figure, _) = figures(*scenario)[0];
            println!(
                "round {} {:<7} {} {:>12.1} {label}",
                round + 1,
                scenario.name(),
                system.name(),
                figure(&measure),
            );
        }
    }
}
