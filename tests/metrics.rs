//! Metrics over real sockets: what a known set of calls (ok, an
//! application error, a panic, a deadline, an unknown method) leaves in a
//! recorder.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use common::hop::{HopClient, start};

#[test]
fn a_known_set_of_calls_leaves_the_metrics_it_should() {
    rpc::observe::enable_metrics();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let server = start().await;
                let hop = HopClient::connect(server.local_addr()).await.unwrap();
                for _ in 0..3 {
                    assert_eq!(hop.ok().await.unwrap(), 1);
                }
                assert_eq!(hop.refuse().await.unwrap(), Err("no".to_owned()));
                assert!(hop.panic().await.is_err());
                let slow = hop.with_timeout(Duration::from_millis(50)).slow().await;
                assert!(
                    matches!(slow, Err(rpc::Error::DeadlineExceeded { .. })),
                    "{slow:?}"
                );
                // A method no one serves is refused before it runs.
                let unknown = rpc::ClientBuilder::new()
                    .connect(server.local_addr())
                    .await
                    .unwrap();
                let missing: Result<u32, _> = unknown.call(Missing, None).await;
                assert!(missing.is_err());
                server.shutdown(Duration::from_secs(1)).await;
            });
    });
    let mut histograms: HashMap<(String, String, String), usize> = HashMap::new();
    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut gauges: HashMap<String, f64> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|label| label.key() == name)
                .map_or(String::new(), |label| label.value().to_owned())
        };
        match value {
            DebugValue::Histogram(values) => {
                let id = (key.name().to_owned(), label("rpc.method"), label("rpc.outcome"));
                *histograms.entry(id).or_default() += values.len();
            }
            DebugValue::Counter(n) => {
                *counters
                    .entry(format!("{}{}", key.name(), label("reason")))
                    .or_default() += n;
            }
            DebugValue::Gauge(n) => {
                gauges.insert(key.name().to_owned(), n.into_inner());
            }
        }
    }
    let server = |method: &str, outcome: &str| {
        histograms
            .get(&(
                "rpc.server.call.duration".to_owned(),
                method.to_owned(),
                outcome.to_owned(),
            ))
            .copied()
            .unwrap_or(0)
    };
    let client = |method: &str, outcome: &str| {
        histograms
            .get(&(
                "rpc.client.call.duration".to_owned(),
                method.to_owned(),
                outcome.to_owned(),
            ))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(server("ok", "ok"), 3, "{histograms:?}");
    assert_eq!(server("refuse", "error"), 1, "{histograms:?}");
    assert_eq!(server("panic", "panic"), 1, "{histograms:?}");
    assert_eq!(client("ok", "ok"), 3, "{histograms:?}");
    assert_eq!(client("panic", "panic"), 1, "{histograms:?}");
    assert_eq!(client("slow", "deadline_exceeded"), 1, "{histograms:?}");
    assert_eq!(
        counters.get("rpc.server.refusedunknown_method"),
        Some(&1),
        "{counters:?}"
    );
    assert!(
        counters.get("rpc.server.request.bytes").copied().unwrap_or(0) > 0,
        "{counters:?}"
    );
    assert!(
        counters.get("rpc.server.response.bytes").copied().unwrap_or(0) > 0,
        "{counters:?}"
    );
    // Everything opened was closed, every call that started ended.
    assert_eq!(gauges.get("rpc.server.connections"), Some(&0.0), "{gauges:?}");
    assert_eq!(
        gauges.get("rpc.server.calls_in_progress"),
        Some(&0.0),
        "{gauges:?}"
    );
}

/// A request for a method the server does not have.
struct Missing;

impl rpc::RequestMessage for Missing {
    fn method(&self) -> &'static str {
        "Hop.missing"
    }
    fn encode_args(&self, out: &mut bytes::BytesMut) -> Result<(), rpc::Error> {
        out.extend_from_slice(&[]);
        Ok(())
    }
}
