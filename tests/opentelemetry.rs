//! The OpenTelemetry bridge (feature `opentelemetry`): with a
//! `tracing-opentelemetry` layer, the exported server span is the child of
//! its remote caller's exported span, over a real socket.
#![cfg(feature = "opentelemetry")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

#[rpc::service]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
}

struct Polite;

impl Greeter for Polite {
    async fn hello(&self, name: String) -> String {
        format!("Hello, {name}!")
    }
}

#[test]
fn an_exported_server_span_is_the_child_of_its_remote_callers() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("rpc-test")));
    let guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let server = rpc::Server::new()
                .serve(GreeterServer::new(Polite))
                .bind("127.0.0.1:0")
                .await
                .unwrap();
            let greeter = GreeterClient::connect(server.local_addr()).await.unwrap();
            assert_eq!(greeter.hello("Ada".to_owned()).await.unwrap(), "Hello, Ada!");
            server.stop().await;
        });
    drop(guard);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let client = spans
        .iter()
        .find(|span| span.span_kind == SpanKind::Client)
        .unwrap_or_else(|| panic!("no client span in {spans:#?}"));
    let server = spans
        .iter()
        .find(|span| span.span_kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
    assert_eq!(client.name, "Greeter.hello");
    assert_eq!(server.name, "Greeter.hello");
    assert_eq!(server.span_context.trace_id(), client.span_context.trace_id());
    assert_eq!(server.parent_span_id, client.span_context.span_id());
}
