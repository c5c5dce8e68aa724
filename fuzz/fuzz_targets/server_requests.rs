//! A live server, over an in-memory pipe, fed arbitrary bytes after a valid
//! preface: every request the fuzzer forms is decoded and dispatched for
//! real, to methods whose arguments cover the shapes bincode decodes
//! (strings, byte vectors, nested structs, enums, options, maps) and to
//! streaming methods of each shape (items, ends and credit frames reach live
//! streams). Any panic, hang or allocation over the limit is a crash.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub blob: Vec<u8>,
    pub nested: Option<Box<Record>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Shape {
    Empty,
    Point(i32, i32),
    Named { label: String, size: u128 },
}

#[rpc::service]
pub trait Target {
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn text(&self, s: String) -> usize;
    async fn bytes(&self, b: Vec<u8>) -> usize;
    async fn record(&self, r: Record) -> u64;
    async fn shapes(&self, s: Vec<Shape>, m: BTreeMap<String, Option<f64>>) -> usize;
    async fn nothing(&self);
    async fn down(&self, n: u8) -> rpc::Streaming<u8>;
    async fn up(&self, items: rpc::Streaming<Record>) -> u64;
    async fn both(&self, items: rpc::Streaming<String>) -> rpc::Streaming<String>;
}

struct T;

impl Target for T {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    async fn text(&self, s: String) -> usize {
        s.len()
    }
    async fn bytes(&self, b: Vec<u8>) -> usize {
        b.len()
    }
    async fn record(&self, r: Record) -> u64 {
        r.id
    }
    async fn shapes(&self, s: Vec<Shape>, m: BTreeMap<String, Option<f64>>) -> usize {
        s.len() + m.len()
    }
    async fn nothing(&self) {}
    async fn down(&self, n: u8) -> rpc::Streaming<u8> {
        rpc::Streaming::iter(0..n)
    }
    async fn up(&self, items: rpc::Streaming<Record>) -> u64 {
        use futures_util::StreamExt;
        items
            .values()
            .fold(0u64, |acc, r| async move { acc.wrapping_add(r.id) })
            .await
    }
    async fn both(&self, items: rpc::Streaming<String>) -> rpc::Streaming<String> {
        items
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

const PREFACE: &[u8; 16] = b"\x89RPC\r\n\x1a\n\x01\x00\x00\x00\x00\x00\x01\x00";

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let server = rpc::Server::new()
            .serve(TargetServer::new(T))
            .max_frame_len(64 * 1024)
            .frame_timeout(Duration::from_millis(200));
        let (mut ours, theirs) = tokio::io::duplex(256 * 1024);
        let serving = tokio::spawn(async move { server.serve_io(theirs).await });
        // Most inputs start with a valid preface so the fuzzer spends its
        // time on frames; an input starting with 0xff tests the preface.
        if data.first() != Some(&0xff) {
            let _ = ours.write_all(PREFACE).await;
        }
        let _ = ours.write_all(data).await;
        let _ = ours.shutdown().await;
        let mut sink = Vec::new();
        let drained = tokio::time::timeout(Duration::from_secs(5), ours.read_to_end(&mut sink)).await;
        assert!(
            drained.is_ok(),
            "the server neither answered nor closed within 5 s"
        );
        let _ = serving.await;
    });
});
