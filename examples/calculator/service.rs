//! The calculator service: its trait, its types and its implementation.
//! `main.rs` serves it; the tests serve it too, for the JavaScript example
//! to call.

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

/// The implementation.
pub struct Calc;

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
