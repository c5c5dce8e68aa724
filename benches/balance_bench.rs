//! `balance_bench`: what balancing costs. Small calls from 64 callers
//! through a client balanced over 3 replicas, against a plain client to
//! one of them, in one run, round by round, both with default settings.
//!
//! ```text
//! cargo bench --bench balance_bench                 # 5 rounds
//! cargo bench --bench balance_bench -- --rounds 9
//! cargo bench --bench balance_bench -- --quick      # a smoke run
//! ```
//!
//! A third client, balanced over a set of one, isolates the balancer's
//! own cost from the parallelism that three connections bring.
//!
//! The three replicas run in one server process (of the bench's own
//! binary) on both tokio runtimes' default, multi-thread with 2 workers;
//! the clients share the bench's process. The report gives the median of
//! the per-round ratios (balanced / plain), since absolute rates drift.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::process::ExitCode;

use common::{BenchClient, BenchServer, Server, ServerProcess, median, runtime, small};

fn main() -> ExitCode {
    let args = common::args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (rounds, calls) = match args.as_slice() {
        ["serve"] => {
            runtime().block_on(serve());
            return ExitCode::SUCCESS;
        }
        other => match common::rounds_and_calls(other, 5, 200_000) {
            Some(counts) => counts,
            None => return usage(),
        },
    };
    runtime().block_on(compare(rounds, calls));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: balance_bench [--quick | --rounds N]");
    ExitCode::FAILURE
}

/// Three replicas; their addresses on one line each; until stdin closes.
async fn serve() {
    let mut handles = Vec::new();
    for _ in 0..3 {
        let handle = rpc::Server::new()
            .serve(BenchServer::new(Server))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        println!("{}", handle.local_addr());
        handles.push(handle);
    }
    common::until_stdin_closes().await;
}

async fn compare(rounds: usize, calls: u64) {
    let replicas = ServerProcess::start(&[], 3);
    let plain = BenchClient::from_client(
        rpc::ClientBuilder::new()
            .connect(replicas.addrs[0])
            .await
            .unwrap(),
    );
    let balanced = BenchClient::from_client(
        rpc::ClientBuilder::new()
            .connect_many(replicas.addrs.clone())
            .await
            .unwrap(),
    );
    // The same client code over a set of one: the balancer's own cost,
    // apart from the parallelism three connections bring.
    let balanced_one = BenchClient::from_client(
        rpc::ClientBuilder::new()
            .connect_many([replicas.addrs[0]])
            .await
            .unwrap(),
    );
    println!("balance_bench: {calls} small calls over 64 callers, {rounds} rounds");
    println!("| round | one server, calls/s | balanced over 3 | ratio | balanced over 1 | ratio |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let (mut over_three, mut over_one) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Rotate which goes first, so none always runs on a warmer machine.
        let mut order = [(0, &plain), (1, &balanced), (2, &balanced_one)];
        order.rotate_left(round % 3);
        let mut rates = [0.0; 3];
        for (slot, client) in order {
            rates[slot] = small(client, 64, calls).await;
        }
        over_three.push(rates[1] / rates[0]);
        over_one.push(rates[2] / rates[0]);
        println!(
            "| {round} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} |",
            rates[0],
            rates[1],
            rates[1] / rates[0],
            rates[2],
            rates[2] / rates[0]
        );
    }
    println!(
        "median ratios: balanced over 3 / one server {:.3}; balanced over 1 / one server {:.3}",
        median(over_three),
        median(over_one)
    );
    let stats = balanced.rpc_client().endpoints();
    let shares: Vec<u64> = stats.iter().map(|s| s.calls).collect();
    println!("calls per replica through the balanced client: {shares:?}");
}
