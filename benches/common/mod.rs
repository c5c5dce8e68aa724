//! What the small benches share: the service they call, the runtime,
//! server processes of the bench's own binary, and the measurements.
#![allow(unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use rpc::Bytes;

/// What every bench server serves.
#[rpc::service]
pub trait Bench {
    /// Adds two numbers.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// `add` whose calls carry no fingerprint and are not checked.
    #[rpc(unchecked)]
    async fn add_unchecked(&self, a: u64, b: u64) -> u64;
    /// Sends the blob back.
    async fn echo(&self, blob: Bytes) -> Bytes;
}

/// The handlers: as cheap as handlers get, so the framework is measured.
pub struct Server;

impl Bench for Server {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn add_unchecked(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn echo(&self, blob: Bytes) -> Bytes {
        blob
    }
}

/// Tokio's multi-thread runtime with 2 workers, as on the bench machine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Waits until the parent process closes this one's stdin: how a server
/// process knows to end.
pub async fn until_stdin_closes() {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await
    .unwrap();
}

/// A server process (this binary, run with `serve` and `args`), killed
/// when dropped; it prints one address a line.
pub struct ServerProcess {
    child: Child,
    /// The addresses it printed.
    pub addrs: Vec<SocketAddr>,
}

impl ServerProcess {
    /// Starts it and reads `count` addresses.
    pub fn start(args: &[&str], count: usize) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("a server process");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let addrs = (0..count)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).unwrap();
                line.trim().parse().expect("a server's address")
            })
            .collect();
        ServerProcess { child, addrs }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Its stdin closed, it ends by itself (so a profiler running it
        // writes its profile); killed if it has not within 10 s.
        drop(self.child.stdin.take());
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

/// Small calls from `callers` tasks until `total` are answered: calls/s.
pub async fn small(client: &BenchClient, callers: u64, total: u64) -> f64 {
    small_of(client, callers, total, true).await
}

/// [`small`], of `add` if `checked`, else of `add_unchecked`.
pub async fn small_of(client: &BenchClient, callers: u64, total: u64, checked: bool) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..total / callers {
                    let sum = match checked {
                        true => client.add(1, 2).await,
                        false => client.add_unchecked(1, 2).await,
                    };
                    assert_eq!(sum.unwrap(), 3);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (total / callers * callers) as f64 / started.elapsed().as_secs_f64()
}

/// The command line's arguments, without the `--bench` cargo adds.
pub fn args() -> Vec<String> {
    std::env::args().skip(1).filter(|arg| arg != "--bench").collect()
}

/// Rounds and calls as `args` set them from the defaults: nothing,
/// `--quick` (one round of 10 000), or `--rounds N`; `None` for anything
/// else.
#[allow(dead_code)] // tls_bench counts two kinds of calls, and parses its own.
pub fn rounds_and_calls(args: &[&str], rounds: usize, calls: u64) -> Option<(usize, u64)> {
    match args {
        [] => Some((rounds, calls)),
        ["--quick"] => Some((1, 10_000)),
        ["--rounds", n] => n.parse().ok().filter(|n| *n > 0).map(|n| (n, calls)),
        _ => None,
    }
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
