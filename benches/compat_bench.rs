//! `compat_bench`: what the compatibility check costs. Small calls from 64
//! callers to a method whose calls carry a fingerprint the server checks
//! (`add`), against the same method marked `#[rpc(unchecked)]`, on one
//! connection, in one run, round by round, default settings.
//!
//! ```text
//! cargo bench --bench compat_bench                 # 7 rounds
//! cargo bench --bench compat_bench -- --rounds 11
//! cargo bench --bench compat_bench -- --quick      # a smoke run
//! cargo bench --bench compat_bench -- --only checked 20000   # one path, for a profiler
//! ```
//!
//! `--only` makes one kind of call and nothing else, so that instruction
//! counts of the two paths can be compared exactly:
//! `valgrind --tool=callgrind --trace-children=yes <bench binary> --only checked 20000`.
//!
//! The server runs in a process of its own (the bench's binary), on tokio's
//! multi-thread runtime with 2 workers; the client in the bench's process.
//! The report gives the median of the per-round ratios (checked /
//! unchecked), since absolute rates drift.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::process::ExitCode;

use common::{BenchClient, BenchServer, Server, ServerProcess, median, runtime, small, small_of};

fn main() -> ExitCode {
    let args = common::args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (rounds, calls) = match args.as_slice() {
        ["serve"] => {
            runtime().block_on(serve());
            return ExitCode::SUCCESS;
        }
        ["--only", which @ ("checked" | "unchecked"), n] => {
            let Ok(calls) = n.parse() else { return usage() };
            runtime().block_on(only(*which == "checked", calls));
            return ExitCode::SUCCESS;
        }
        other => match common::rounds_and_calls(other, 7, 200_000) {
            Some(counts) => counts,
            None => return usage(),
        },
    };
    runtime().block_on(compare(rounds, calls));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: compat_bench [--quick | --rounds N | --only checked|unchecked CALLS]");
    ExitCode::FAILURE
}

/// One server; its address on a line; until stdin closes.
async fn serve() {
    let handle = rpc::Server::new()
        .serve(BenchServer::new(Server))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    println!("{}", handle.local_addr());
    common::until_stdin_closes().await;
    drop(handle);
}

async fn compare(rounds: usize, calls: u64) {
    let server = ServerProcess::start(&[], 1);
    let client = BenchClient::connect(server.addrs[0]).await.unwrap();
    // Warm both paths (and trace the method's types) before measuring.
    small(&client, 64, calls / 10).await;
    small_of(&client, 64, calls / 10, false).await;
    println!("compat_bench: {calls} small calls over 64 callers, {rounds} rounds");
    println!("| round | unchecked, calls/s | checked, calls/s | ratio |");
    println!("| --- | --- | --- | --- |");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // Alternate which goes first, so neither always runs warmer.
        let (unchecked, checked) = if round % 2 == 0 {
            let unchecked = small_of(&client, 64, calls, false).await;
            (unchecked, small(&client, 64, calls).await)
        } else {
            let checked = small(&client, 64, calls).await;
            (small_of(&client, 64, calls, false).await, checked)
        };
        ratios.push(checked / unchecked);
        println!(
            "| {round} | {unchecked:.0} | {checked:.0} | {:.3} |",
            checked / unchecked
        );
    }
    println!("median ratio checked / unchecked: {:.3}", median(ratios));
}

/// `calls` calls of one kind, for a profiler.
async fn only(checked: bool, calls: u64) {
    let server = ServerProcess::start(&[], 1);
    let client = BenchClient::connect(server.addrs[0]).await.unwrap();
    let rate = small_of(&client, 64, calls, checked).await;
    println!(
        "{calls} {} calls: {rate:.0} calls/s",
        if checked { "checked" } else { "unchecked" }
    );
}
