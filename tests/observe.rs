//! Tracing over real sockets: a span per call on each side, joined into
//! one trace across the network (and across three hops). (Metrics are in
//! `tests/metrics.rs`: a test without a subscriber, running beside these,
//! would make tracing cache the `rpc` spans as uninteresting.)
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};

use common::hop::{HopClient, start};

/// One span as a subscriber saw it: its name and fields.
#[derive(Debug, Clone, Default)]
struct SeenSpan {
    name: &'static str,
    fields: HashMap<String, String>,
}

impl SeenSpan {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Keeps every span it is shown. (Span ids are reused once a span
/// closes, so spans are kept in a list, and ids point into it.)
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

/// The spans seen, and where each live span id points among them.
type Captured = (Vec<SeenSpan>, HashMap<u64, usize>);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: LayerContext<'_, S>) {
        let mut seen = SeenSpan {
            name: attrs.metadata().name(),
            ..SeenSpan::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        let mut captured = self.0.lock().unwrap();
        let (spans, ids) = &mut *captured;
        ids.insert(id.into_u64(), spans.len());
        spans.push(seen);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        let mut captured = self.0.lock().unwrap();
        let (spans, ids) = &mut *captured;
        if let Some(seen) = ids.get(&id.into_u64()).and_then(|at| spans.get_mut(*at)) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
}

impl Capture {
    fn spans(&self, name: &str) -> Vec<SeenSpan> {
        self.0
            .lock()
            .unwrap()
            .0
            .iter()
            .filter(|span| span.name == name)
            .cloned()
            .collect()
    }
}

/// Runs `test` on one thread, with `capture` as the subscriber, so every
/// task (servers' too) reports to it.
fn traced<F: std::future::Future<Output = ()>>(capture: &Capture, test: F) {
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

#[test]
fn the_server_span_is_the_child_of_the_client_span_across_the_network() {
    let capture = Capture::default();
    traced(&capture, async {
        let server = start().await;
        let hop = HopClient::connect(server.local_addr()).await.unwrap();
        assert_eq!(hop.ok().await.unwrap(), 1);
        server.stop().await;
    });
    let clients = capture.spans("rpc.client");
    let servers = capture.spans("rpc.server");
    assert_eq!((clients.len(), servers.len()), (1, 1), "{clients:?} {servers:?}");
    let (client, server) = (&clients[0], &servers[0]);
    assert_eq!(client.field("rpc.system"), "rpc");
    assert_eq!(client.field("rpc.service"), "Hop");
    assert_eq!(client.field("rpc.method"), "ok");
    assert_eq!(client.field("otel.kind"), "client");
    assert_eq!(server.field("otel.kind"), "server");
    assert_eq!(server.field("rpc.request_id"), "1");
    assert!(server.field("net.peer").starts_with("127.0.0.1:"), "{server:?}");
    assert_eq!(client.field("rpc.outcome"), "ok");
    assert_eq!(server.field("rpc.outcome"), "ok");
    assert_eq!(client.field("trace_id").len(), 32);
    assert_eq!(server.field("trace_id"), client.field("trace_id"));
    assert_eq!(server.field("parent_span_id"), client.field("span_id"));
    assert_ne!(server.field("span_id"), client.field("span_id"));
}

#[test]
fn a_watched_call_dropped_while_it_runs_is_cancelled_on_the_server() {
    let capture = Capture::default();
    traced(&capture, async {
        let server = start().await;
        let hop = HopClient::connect(server.local_addr()).await.unwrap();
        // Watched (a subscriber listens), so the call runs in its boxed
        // watched path: dropping it must still tell the server.
        let mut slow = Box::pin(hop.slow());
        let running = || server.stats().calls_in_progress == 1;
        // The limit only turns a hang into a failure.
        for _ in 0..2_000 {
            tokio::select! {
                _ = &mut slow => panic!("a minute's call answered"),
                () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
            }
            if running() {
                break;
            }
        }
        assert!(running(), "the server never ran the call");
        drop(slow);
        for _ in 0..2_000 {
            if server.stats().calls_cancelled == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let stats = server.stats();
        assert_eq!(
            (stats.calls_cancelled, stats.calls_in_progress),
            (1, 0),
            "{stats:?}"
        );
        // The connection is still good.
        assert_eq!(hop.ok().await.unwrap(), 1);
        server.stop().await;
    });
    assert_eq!(capture.spans("rpc.client").len(), 2, "both calls were watched");
}

#[test]
fn a_chain_of_three_hops_is_one_trace() {
    let capture = Capture::default();
    traced(&capture, async {
        let (a, b, c) = (start().await, start().await, start().await);
        let first = HopClient::connect(a.local_addr()).await.unwrap();
        let hops = first
            .relay(vec![b.local_addr().to_string(), c.local_addr().to_string()])
            .await
            .unwrap();
        assert_eq!(hops, 2);
        for server in [a, b, c] {
            server.stop().await;
        }
    });
    let clients = capture.spans("rpc.client");
    let servers = capture.spans("rpc.server");
    assert_eq!((clients.len(), servers.len()), (3, 3), "{clients:?} {servers:?}");
    let trace = clients[0].field("trace_id").to_owned();
    for span in clients.iter().chain(&servers) {
        assert_eq!(span.field("trace_id"), trace, "{span:?}");
    }
    // Each server span's parent is a client span; each client span but the
    // first has a server span as its parent.
    let client_ids: Vec<&str> = clients.iter().map(|span| span.field("span_id")).collect();
    let server_ids: Vec<&str> = servers.iter().map(|span| span.field("span_id")).collect();
    for server in &servers {
        assert!(client_ids.contains(&server.field("parent_span_id")), "{server:?}");
    }
    let roots = clients
        .iter()
        .filter(|span| span.field("parent_span_id").is_empty())
        .count();
    assert_eq!(roots, 1, "{clients:?}");
    for client in clients
        .iter()
        .filter(|span| !span.field("parent_span_id").is_empty())
    {
        assert!(server_ids.contains(&client.field("parent_span_id")), "{client:?}");
    }
}
