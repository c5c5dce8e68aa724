//! Property test: arbitrary byte streams, split at arbitrary points, thrown
//! at a live server over the in-memory transport. The server must close or
//! answer every such connection (never hang or panic), and a good client on
//! another connection must keep getting correct answers.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8; 16] = b"\x89RPC\r\n\x1a\n\x01\x00\x00\x00\x00\x00\x01\x00";

/// Bytes that are sometimes frames: random noise, or noise spliced with
/// valid headers and request heads so the server's deeper paths are hit.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..512);
    let request_like = (1u64..50, proptest::collection::vec(any::<u8>(), 0..64), 0usize..4).prop_map(
        |(id, args, method)| {
            let method: &[u8] = [
                &b"Shapes.add"[..],
                b"Shapes.greet",
                b"Shapes.promote",
                b"Echo.echo",
            ][method];
            let mut payload = 1_000_000u64.to_le_bytes().to_vec();
            payload.push(method.len() as u8);
            payload.extend_from_slice(method);
            payload.extend_from_slice(&args);
            let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&[1, 0, 0, 0]);
            frame.extend_from_slice(&id.to_le_bytes());
            frame.extend_from_slice(&payload);
            frame
        },
    );
    proptest::collection::vec(prop_oneof![noise, request_like], 0..6).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_streams_never_hang_or_break_the_server(
        stream in hostile_stream(),
        with_preface in any::<bool>(),
        chunk in 1usize..128,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let server = rpc::Server::new()
                .serve(common::ShapesServer::new(Arc::new(common::ShapesImpl::default())))
                .serve(common::EchoServer::new(common::EchoImpl))
                .frame_timeout(Duration::from_millis(500));

            let (good_end, good_server_end) = tokio::io::duplex(64 * 1024);
            let good_server = server.clone();
            tokio::spawn(async move { good_server.serve_io(good_server_end).await });
            let good = common::ShapesClient::from_client(
                rpc::ClientBuilder::new().connect_io(good_end).await.unwrap(),
            );

            let (mut hostile, hostile_server_end) = tokio::io::duplex(64 * 1024);
            let hostile_server = tokio::spawn(async move { server.serve_io(hostile_server_end).await });
            if with_preface {
                hostile.write_all(PREFACE).await.unwrap();
            }
            let (mut hostile_rx, mut hostile_tx) = tokio::io::split(hostile);
            let writing = tokio::spawn(async move {
                for part in stream.chunks(chunk) {
                    if hostile_tx.write_all(part).await.is_err() {
                        break;
                    }
                }
                let _ = hostile_tx.shutdown().await;
            });
            let mut answers = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(10), hostile_rx.read_to_end(&mut answers)).await;
            assert!(closed.is_ok(), "the server neither finished nor closed the hostile connection");
            let _ = writing.await;
            let _ = hostile_server.await;

            for i in 0..20 {
                assert_eq!(good.add(i, 1).await.unwrap(), i + 1);
            }
        });
    }
}
