//! `json_http`: small JSON-RPC calls over HTTP/1.1, `rpc`'s JSON door
//! against jsonrpsee's HTTP server, in one run, round by round, each
//! server in its own process.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml --bin json_http             # 5 rounds
//! cargo run --release --manifest-path benches/peers/Cargo.toml --bin json_http -- --quick  # a smoke run
//! json_http serve rpc        # one server, printing its address (to run under a profiler)
//! json_http drive ADDR 50000 # the client alone, against it
//! ```
//!
//! Each round, for each system (the order alternates): 64 kept-alive HTTP
//! connections from hyper's client, each posting
//! `{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}` as soon as its
//! last answer is in, until 200 000 calls are answered. Both servers run
//! with their default settings on a two-worker tokio runtime, as does the
//! client. The figure is calls per second; the report gives the median of
//! the per-round ratios (rpc / jsonrpsee), since absolute rates drift.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The method both servers serve.
#[rpc::service]
pub trait Math {
    /// Adds two numbers.
    async fn add(&self, a: u64, b: u64) -> u64;
}

struct Adder;

impl Math for Adder {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}"#;
const CONNECTIONS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Rpc,
    Jsonrpsee,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Rpc => "rpc",
            System::Jsonrpsee => "jsonrpsee",
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", "rpc"] => runtime().block_on(serve(System::Rpc)),
        ["serve", "jsonrpsee"] => runtime().block_on(serve(System::Jsonrpsee)),
        // Drives a server started elsewhere (under a profiler, say).
        ["drive", addr, calls] => {
            let (Ok(addr), Ok(calls)) = (addr.parse(), calls.parse()) else {
                return usage();
            };
            let rate = runtime().block_on(run(addr, calls));
            println!("{rate:.0} calls/s");
        }
        options => {
            let mut rounds = 5;
            let mut calls = 200_000u64;
            let mut rest = options.iter();
            while let Some(option) = rest.next() {
                match *option {
                    "--quick" => {
                        rounds = 1;
                        calls = 10_000;
                    }
                    "--rounds" => match rest.next().and_then(|n| n.parse().ok()) {
                        Some(n) => rounds = n,
                        None => return usage(),
                    },
                    "--calls" => match rest.next().and_then(|n| n.parse().ok()) {
                        Some(n) => calls = n,
                        None => return usage(),
                    },
                    _ => return usage(),
                }
            }
            runtime().block_on(compare(rounds, calls));
        }
    }
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: json_http [--quick] [--rounds N] [--calls N] | serve rpc|jsonrpsee | drive ADDR CALLS");
    ExitCode::FAILURE
}

/// Serves `system` on a free port, says which on stdout, and runs until
/// stdin closes (the parent is gone).
async fn serve(system: System) {
    let addr: SocketAddr = match system {
        System::Rpc => {
            let server = rpc::Server::new()
                .serve(MathServer::new(Adder))
                .bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = server.local_addr();
            std::mem::forget(server);
            addr
        }
        System::Jsonrpsee => {
            let server = jsonrpsee::server::Server::builder()
                .build("127.0.0.1:0")
                .await
                .expect("bind");
            let mut module = jsonrpsee::RpcModule::new(());
            module
                .register_method("add", |params, _, _| {
                    let (a, b): (u64, u64) = params.parse()?;
                    Ok::<u64, jsonrpsee::types::ErrorObjectOwned>(a + b)
                })
                .expect("register");
            let addr = server.local_addr().expect("local address");
            std::mem::forget(server.start(module));
            addr
        }
    };
    println!("{addr}");
    std::io::stdout().flush().expect("stdout");
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await
    .expect("stdin");
}

/// A server process, killed when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(system: System) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .args(["serve", system.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("a server process");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's address");
        let addr = line.trim().parse().expect("an address");
        ServerProcess { child, addr }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers `calls` calls over `CONNECTIONS` connections; calls per second.
async fn run(addr: SocketAddr, calls: u64) -> f64 {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let drivers: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(drive(addr, Arc::clone(&issued), calls)))
        .collect();
    let mut answered = 0;
    for driver in drivers {
        answered += driver.await.expect("a connection's driver");
    }
    assert_eq!(answered, calls);
    calls as f64 / start.elapsed().as_secs_f64()
}

/// One kept-alive connection, posting until `calls` are issued in all.
async fn drive(addr: SocketAddr, issued: Arc<AtomicU64>, calls: u64) -> u64 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP connection");
    tokio::spawn(connection);
    let body = Bytes::from_static(BODY.as_bytes());
    let mut answered = 0;
    while issued.fetch_add(1, Ordering::Relaxed) < calls {
        let request = Request::post("/")
            .header("host", "bench")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .expect("a request");
        sender.ready().await.expect("ready");
        let response = sender.send_request(request).await.expect("a response");
        let answer = response.into_body().collect().await.expect("a body").to_bytes();
        assert!(
            answer.windows(10).any(|w| w == br#""result":3"#),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        answered += 1;
    }
    answered
}

async fn compare(rounds: usize, calls: u64) {
    let ours = ServerProcess::start(System::Rpc);
    let theirs = ServerProcess::start(System::Jsonrpsee);
    println!(
        "json_http: {calls} calls of add(1, 2) over {CONNECTIONS} kept-alive HTTP/1.1 connections, {rounds} rounds"
    );
    // Warm both up: connections, allocator, caches.
    run(ours.addr, calls / 10).await;
    run(theirs.addr, calls / 10).await;
    let mut ratios = Vec::new();
    println!("| round | rpc calls/s | jsonrpsee calls/s | ratio |");
    println!("| --- | --- | --- | --- |");
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = run(ours.addr, calls).await;
            (a, run(theirs.addr, calls).await)
        } else {
            let b = run(theirs.addr, calls).await;
            (run(ours.addr, calls).await, b)
        };
        ratios.push(a / b);
        println!("| {} | {a:.0} | {b:.0} | {:.2} |", round + 1, a / b);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("median ratio rpc / jsonrpsee: {median:.2} (higher is better for rpc)");
}
