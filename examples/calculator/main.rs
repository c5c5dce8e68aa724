//! The calculator from the README, end to end.
//!
//! ```text
//! cargo run --example calculator                       # server and client in one process
//! cargo run --example calculator -- server 127.0.0.1:7000
//! cargo run --example calculator -- client 127.0.0.1:7000
//! cargo run --example calculator -- descriptor > tests/descriptors/Calculator.json
//! node examples/js/calculator.mjs http://127.0.0.1:7000/rpc   # a JavaScript caller
//! ```
//!
//! The same port answers JSON-RPC 2.0, so any language can call it:
//!
//! ```text
//! curl -d '{"jsonrpc":"2.0","id":1,"method":"add","params":[5,3]}' http://127.0.0.1:7000/rpc
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod service;

use service::{Calc, CalculatorClient, CalculatorServer};

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

/// The line that calls the server from a shell.
fn curl_line(addr: SocketAddr) -> String {
    format!(r#"curl -d '{{"jsonrpc":"2.0","id":1,"method":"add","params":[5,3]}}' http://{addr}/rpc"#)
}

/// Calls `add` as JSON-RPC over a bare HTTP/1.1 request, as curl would,
/// and returns the response's body.
async fn call_as_json(addr: SocketAddr) -> std::io::Result<String> {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"div","params":{"a":7,"b":0}}"#;
    let mut http = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST /rpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    http.read_to_string(&mut response).await?;
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    Ok(body.to_owned())
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
            println!();
            println!("The same port speaks JSON-RPC 2.0 over HTTP and WebSocket:");
            println!(
                "POST /rpc div(a: 7, b: 0)  -> {}",
                call_as_json(handle.local_addr()).await?
            );
            println!(
                "try it from a shell while `calculator server ADDR` runs: {}",
                curl_line(handle.local_addr())
            );
            handle.stop().await;
            println!("done");
        }
        ["server", addr] => {
            let handle = server().bind(*addr).await?;
            println!(
                "serving Calculator on {} (Ctrl-C or SIGTERM to stop)",
                handle.local_addr()
            );
            println!("call it from any language: {}", curl_line(handle.local_addr()));
            // A stop signal sends clients a goodbye and lets calls in flight
            // finish: a rolling restart fails no call.
            handle
                .serve_until(rpc::shutdown_signal(), rpc::DEFAULT_GRACE)
                .await;
            println!("stopped");
        }
        ["client", addr] => {
            let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
            run_client(addr).await?;
        }
        // The descriptor CI compares each build with (tests/compat.rs).
        ["descriptor"] => print!("{}", CalculatorServer::<Calc>::descriptor_json()),
        _ => {
            eprintln!("usage: calculator [server ADDR | client ADDR | descriptor]");
            std::process::exit(2);
        }
    }
    Ok(())
}
