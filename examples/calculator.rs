//! The calculator from the README, end to end.
//!
//! ```text
//! cargo run --example calculator                       # server and client in one process
//! cargo run --example calculator -- server 127.0.0.1:7000
//! cargo run --example calculator -- client 127.0.0.1:7000
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What can go wrong in arithmetic. Travels to the caller as a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivisionByZero,
    /// The result does not fit an `i64`.
    Overflow,
}

/// Summary statistics of a list of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// How many numbers.
    pub count: usize,
    /// Their sum.
    pub sum: i64,
    /// The smallest, if any.
    pub min: Option<i64>,
    /// The largest, if any.
    pub max: Option<i64>,
}

/// A calculator served over the network.
#[rpc::service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides `a` by `b`, refusing to divide by zero.
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Summarises a list of numbers.
    async fn stats(&self, numbers: Vec<i64>) -> Stats;
    /// Greets someone by name.
    async fn greet(&self, name: String) -> String;
    /// Waits, then answers: shows that slow calls do not hold up others.
    async fn slow_echo(&self, millis: u64, value: String) -> String;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivisionByZero);
        }
        a.checked_div(b).ok_or(MathError::Overflow)
    }

    async fn stats(&self, numbers: Vec<i64>) -> Stats {
        Stats {
            count: numbers.len(),
            sum: numbers.iter().fold(0i64, |acc, n| acc.wrapping_add(*n)),
            min: numbers.iter().copied().min(),
            max: numbers.iter().copied().max(),
        }
    }

    async fn greet(&self, name: String) -> String {
        format!("Hello, {name}!")
    }

    async fn slow_echo(&self, millis: u64, value: String) -> String {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        value
    }
}

fn server() -> rpc::Server {
    rpc::Server::new().serve(CalculatorServer::new(Calc))
}

async fn run_client(addr: SocketAddr) -> Result<(), rpc::Error> {
    let calc = CalculatorClient::connect(addr).await?;
    println!("connected to {addr}");

    println!("add(5, 3)          = {}", calc.add(5, 3).await?);
    println!("div(7, 2)          = {:?}", calc.div(7, 2).await?);
    println!(
        "div(7, 0)          = {:?}   (an application error, as a value)",
        calc.div(7, 0).await?
    );
    println!("stats([3, 1, 4])   = {:?}", calc.stats(vec![3, 1, 4]).await?);
    println!("greet(\"Ada\")       = {:?}", calc.greet("Ada".to_owned()).await?);

    // A concurrent batch over the one connection: 1 000 calls from clones.
    let batch: Vec<_> = (0..1_000i64)
        .map(|i| {
            let calc = calc.clone();
            tokio::spawn(async move { calc.add(i, i).await.map(|sum| (i, sum)) })
        })
        .collect();
    let mut correct = 0;
    for call in batch {
        let (i, sum) = call
            .await
            .map_err(|e| rpc::Error::disconnected(e.to_string()))??;
        if sum == 2 * i {
            correct += 1;
        }
    }
    println!("1000 concurrent add calls on one connection: {correct} correct");

    // A slow call started first does not delay a fast one started after it.
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.slow_echo(300, "slow".to_owned()).await }
    });
    let fast = calc.slow_echo(0, "fast".to_owned()).await?;
    println!("fast call answered while the slow one still runs: {fast:?}");
    println!(
        "slow call answered after:                          {:?}",
        slow.await
            .map_err(|e| rpc::Error::disconnected(e.to_string()))??
    );

    // A deadline shorter than the handler: the caller gets a clear error.
    match calc
        .with_timeout(Duration::from_millis(50))
        .slow_echo(1_000, "late".to_owned())
        .await
    {
        Err(err) => println!("slow_echo with a 50 ms deadline: error: {err}"),
        Ok(value) => println!("slow_echo with a 50 ms deadline unexpectedly answered {value:?}"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {
            let handle = server().bind("127.0.0.1:0").await?;
            println!("server listening on {}", handle.local_addr());
            run_client(handle.local_addr()).await?;
            handle.stop().await;
            println!("done");
        }
        ["server", addr] => {
            println!("serving Calculator on {addr} (Ctrl-C to stop)");
            server().listen(*addr).await?;
        }
        ["client", addr] => {
            let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
            run_client(addr).await?;
        }
        _ => {
            eprintln!("usage: calculator [server ADDR | client ADDR]");
            std::process::exit(2);
        }
    }
    Ok(())
}
