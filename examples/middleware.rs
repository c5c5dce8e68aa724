//! Middleware around calls, on both sides, and what it lets you see:
//!
//! - a server layer that refuses calls without the right token
//!   (`Unauthenticated`), and one that logs each call's outcome and time;
//! - tower's own concurrency limit, unchanged;
//! - a client layer that adds the token to every call;
//! - a span per call on each side (printed by `tracing-subscriber`), one
//!   trace across the hop;
//! - the call metrics, scraped from `GET /metrics` at the end.
//!
//! ```text
//! cargo run --example middleware --features prometheus
//! ```

use std::time::Instant;

use rpc::middleware::{ClientCall, ClientNext, ServerCall, ServerNext, from_fn};

/// Accounts, by id.
#[rpc::service]
pub trait Accounts {
    /// The balance of an account, in cents.
    async fn balance(&self, id: u64) -> Result<i64, String>;
}

struct Ledger;

impl Accounts for Ledger {
    async fn balance(&self, id: u64) -> Result<i64, String> {
        match id {
            7 => Ok(12_345),
            _ => Err(format!("no account {id}")),
        }
    }
}

/// Lets through only calls that carry the token.
async fn require_token(call: ServerCall, next: ServerNext) -> Result<rpc::Answer, rpc::Error> {
    match call.metadata().get_str("authorization") {
        Some("Bearer s3cret") => next.run(call).await,
        _ => Err(rpc::Error::unauthenticated(
            "send `authorization: Bearer <token>`",
        )),
    }
}

/// Says how each call went and how long it took.
async fn log_calls(call: ServerCall, next: ServerNext) -> Result<rpc::Answer, rpc::Error> {
    let (method, peer, started) = (call.method().full_name, call.peer().clone(), Instant::now());
    let answer = next.run(call).await;
    let outcome = match &answer {
        Ok(_) => "ok".to_owned(),
        Err(err) => format!("refused: {err}"),
    };
    println!(
        "server: {method} from {peer}: {outcome} in {:?}",
        started.elapsed()
    );
    answer
}

/// Puts the token on every call the client makes.
async fn add_token(mut call: ClientCall, next: ClientNext) -> Result<bytes::Bytes, rpc::Error> {
    call.insert_metadata("authorization", "Bearer s3cret")?;
    next.run(call).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Spans and events at INFO from the `rpc` target, on stdout; each
    // call's span is printed when it closes, with its trace ids.
    tracing_subscriber::fmt()
        .with_env_filter("rpc=info")
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_target(false)
        .with_ansi(false)
        .init();
    let metrics = rpc::prometheus::install()?;

    let server = rpc::Server::new()
        .serve(AccountsServer::new(Ledger))
        // Innermost first: the token check, then the log around it, then
        // the limit around both.
        .layer(from_fn(require_token))
        .layer(from_fn(log_calls))
        .layer(tower::limit::ConcurrencyLimitLayer::new(64))
        .metrics(move || metrics.render())
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();

    // Without the token: refused.
    let anonymous = AccountsClient::connect(addr).await?;
    match anonymous.balance(7).await {
        Ok(balance) => println!("anonymous: {balance:?} (unexpected)"),
        Err(err) => println!("anonymous: {err}"),
    }

    // With the client layer: every call carries it.
    let client = rpc::ClientBuilder::new()
        .layer(from_fn(add_token))
        .connect(addr)
        .await?;
    let accounts = AccountsClient::from_client(client);
    println!("orders: balance(7) = {:?}", accounts.balance(7).await?);
    println!("orders: balance(8) = {:?}", accounts.balance(8).await?);

    // What a Prometheus server would scrape.
    let page = scrape(addr).await?;
    println!("--- GET /metrics (rpc_ lines)");
    for line in page
        .lines()
        .filter(|line| line.starts_with("rpc_") && !line.contains("_bucket"))
    {
        println!("{line}");
    }
    server.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}

/// `GET /metrics`, over a plain socket (any HTTP client would do).
async fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await?;
    let mut page = String::new();
    socket.read_to_string(&mut page).await?;
    Ok(page)
}
