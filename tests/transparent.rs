//! Location transparency: with `#[rpc::service(transparent)]` the generated
//! client implements the service trait, so code generic over the trait runs
//! unchanged against a local value or a remote server.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    DivisionByZero,
    /// The network failed; the text says how.
    Unavailable(String),
}

/// Network failures fold into the application's own error.
impl From<rpc::Error> for MathError {
    fn from(err: rpc::Error) -> Self {
        MathError::Unavailable(err.to_string())
    }
}

#[rpc::service(transparent)]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

struct Local;

impl Calculator for Local {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        Ok(a + b)
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            Err(MathError::DivisionByZero)
        } else {
            Ok(a / b)
        }
    }
}

/// Application code that knows nothing of the network.
async fn average(calc: &impl Calculator, numbers: &[i64]) -> Result<i64, MathError> {
    let mut sum = 0;
    for n in numbers {
        sum = calc.add(sum, *n).await?;
    }
    calc.div(sum, numbers.len() as i64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_generic_function_runs_against_a_local_value_and_a_remote_server() {
    let server = rpc::Server::new()
        .serve(CalculatorServer::new(Local))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let remote = CalculatorClient::connect(server.local_addr()).await.unwrap();

    for numbers in [&[1, 2, 3, 4][..], &[10, -10, 7], &[]] {
        let here = average(&Local, numbers).await;
        let there = average(&remote, numbers).await;
        assert_eq!(here, there, "{numbers:?}");
    }
    assert_eq!(average(&remote, &[]).await, Err(MathError::DivisionByZero));

    // A network failure arrives as the application's own error, not as a
    // nested `Result`.
    server.stop().await;
    let quick = remote.with_timeout(Duration::from_secs(2));
    match average(&quick, &[1]).await {
        Err(MathError::Unavailable(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
