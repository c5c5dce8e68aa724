//! `tls_bench`: TLS against plaintext, in one run, round by round, each
//! server in its own process, both with default settings.
//!
//! ```text
//! cargo bench --bench tls_bench                 # 5 rounds
//! cargo bench --bench tls_bench -- --rounds 9
//! cargo bench --bench tls_bench -- --quick      # a smoke run
//! ```
//!
//! Two scenarios, each for both servers in alternating order every round:
//! 64 callers making small calls (`add(1, 2)`) on one client, calls per
//! second; and 8 callers echoing 1 MiB `rpc::Bytes`, MB per second each
//! way. The TLS client verifies the server's certificate (made by rcgen at
//! start-up) as any user's would. The report gives the median of the
//! per-round ratios (TLS / plaintext), since absolute rates drift.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use common::{BenchClient, BenchServer, Server, ServerProcess, median, runtime, small};
use rpc::Bytes;
use rpc::tls::{ClientAuth, ClientTls, Identity, Roots, ServerTls};

struct Options {
    rounds: usize,
    small_calls: u64,
    big_calls: u64,
}

fn main() -> ExitCode {
    let args = common::args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut options = Options {
        rounds: 5,
        small_calls: 200_000,
        big_calls: 1_600,
    };
    match args.as_slice() {
        ["serve", "plain"] => runtime().block_on(serve(None)),
        ["serve", "tls", cert, key] => runtime().block_on(serve(Some((Path::new(cert), Path::new(key))))),
        [] => {}
        ["--quick"] => {
            options.rounds = 1;
            options.small_calls = 10_000;
            options.big_calls = 80;
        }
        ["--rounds", n] => match n.parse() {
            Ok(n) if n > 0 => options.rounds = n,
            _ => return usage(),
        },
        _ => return usage(),
    }
    if args.first() == Some(&"serve") {
        return ExitCode::SUCCESS;
    }
    runtime().block_on(compare(options));
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: tls_bench [--quick | --rounds N]");
    ExitCode::FAILURE
}

async fn serve(tls: Option<(&Path, &Path)>) {
    let mut server = rpc::Server::new();
    if let Some((cert, key)) = tls {
        server = server
            .tls(ServerTls::new(Identity::from_pem_files(cert, key).unwrap(), ClientAuth::Off).unwrap());
    }
    let handle = server
        .serve(BenchServer::new(Server))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    println!("{}", handle.local_addr());
    common::until_stdin_closes().await;
}

/// A CA and a server certificate for 127.0.0.1 and localhost, in a
/// temporary directory: the certificate and key files, and the CA's PEM.
fn certificates() -> (PathBuf, PathBuf, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = std::env::temp_dir().join(format!("rpc-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::File::create(&cert_file)
        .and_then(|mut file| file.write_all(cert.pem().as_bytes()))
        .unwrap();
    std::fs::File::create(&key_file)
        .and_then(|mut file| file.write_all(key.serialize_pem().as_bytes()))
        .unwrap();
    (cert_file, key_file, ca.pem())
}

/// 1 MiB echoes from `callers` tasks until `total` are answered: MB/s each
/// way.
async fn big(client: &BenchClient, callers: u64, total: u64) -> f64 {
    let blob = Bytes::from(vec![7u8; 1 << 20]);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, blob) = (client.clone(), blob.clone());
            tokio::spawn(async move {
                for _ in 0..total / callers {
                    assert_eq!(client.echo(blob.clone()).await.unwrap().len(), 1 << 20);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (total / callers * callers) as f64 * (1 << 20) as f64 / 1e6 / started.elapsed().as_secs_f64()
}

async fn compare(options: Options) {
    let (cert_file, key_file, ca) = certificates();
    let plain_server = ServerProcess::start(&["plain"], 1);
    let tls_server = ServerProcess::start(
        &["tls", cert_file.to_str().unwrap(), key_file.to_str().unwrap()],
        1,
    );
    let plain = BenchClient::from_client(
        rpc::ClientBuilder::new()
            .connect(plain_server.addrs[0])
            .await
            .unwrap(),
    );
    let tls = ClientTls::new(Roots::from_pem(&ca).unwrap()).unwrap();
    let secure = BenchClient::from_client(
        rpc::ClientBuilder::new()
            .tls(tls)
            .connect(tls_server.addrs[0])
            .await
            .unwrap(),
    );
    println!(
        "tls_bench: {} small calls over 64 callers, {} 1 MiB echoes over 8 callers, {} rounds",
        options.small_calls, options.big_calls, options.rounds
    );
    println!("| round | plaintext calls/s | TLS calls/s | ratio | plaintext MB/s | TLS MB/s | ratio |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let (mut small_ratios, mut big_ratios) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order = if round % 2 == 1 {
            [&plain, &secure]
        } else {
            [&secure, &plain]
        };
        let mut small_rates = [0.0; 2];
        let mut big_rates = [0.0; 2];
        for client in order {
            let slot = usize::from(std::ptr::eq(client, &secure));
            small_rates[slot] = small(client, 64, options.small_calls).await;
            big_rates[slot] = big(client, 8, options.big_calls).await;
        }
        let (small_ratio, big_ratio) = (small_rates[1] / small_rates[0], big_rates[1] / big_rates[0]);
        small_ratios.push(small_ratio);
        big_ratios.push(big_ratio);
        println!(
            "| {round} | {:.0} | {:.0} | {small_ratio:.2} | {:.0} | {:.0} | {big_ratio:.2} |",
            small_rates[0], small_rates[1], big_rates[0], big_rates[1]
        );
    }
    println!(
        "median ratio TLS / plaintext: small calls {:.2}, 1 MiB echo {:.2}",
        median(small_ratios),
        median(big_ratios)
    );
    drop((plain_server, tls_server));
    let _ = std::fs::remove_dir_all(cert_file.parent().unwrap());
}
