//! A connection gives way after a large frame (64 KiB or more): a server
//! lets the call it started answer before it takes the frames behind it,
//! and a client lets the caller a large answer went to run before it reads
//! the next frame. Each then reads the next frame into the memory the last
//! one's user let go, where it would otherwise fault in new memory's pages
//! (see `docs/BENCHMARKS.md`). Tested on current-thread runtimes, where
//! who runs first follows the runtime's rule; on a multi-thread runtime
//! another worker may take either.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};

use common::held::{self, Hold};
use common::raw::{SERVER_PREFACE_V3, frame, raw, read_frame, request};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A large blob's length: over the 64 KiB from which a frame is large.
const LARGE: usize = 100_000;

#[rpc::service]
pub trait Blobs {
    /// Answers with `blob`.
    async fn echo(&self, blob: rpc::Bytes) -> rpc::Bytes;
    /// Waits, holding its thread, until the test says it may go on.
    async fn hold(&self) -> u64;
}

struct Store {
    /// Where the hold waits for the client to have heard the echo's answer
    /// begin.
    hold: Hold,
}

impl Blobs for Store {
    async fn echo(&self, blob: rpc::Bytes) -> rpc::Bytes {
        blob
    }

    async fn hold(&self) -> u64 {
        self.hold.wait();
        1
    }
}

/// `blob` as bincode writes a byte string of 65 536 bytes or more: a
/// 4-byte length after the marker 252, then the bytes.
fn encoded(blob: &[u8]) -> Vec<u8> {
    let mut out = vec![252];
    out.extend_from_slice(&u32::try_from(blob.len()).unwrap().to_le_bytes());
    out.extend_from_slice(blob);
    out
}

/// A large echo and a call that holds the server's one thread, in one
/// write: the echo's call must answer before the hold is taken from
/// behind it, or the hold waits for an answer that cannot leave.
#[tokio::test]
async fn a_current_thread_server_answers_a_large_request_before_the_frames_behind_it() {
    let (hold, release) = held::hold();
    let server = held::on_its_thread(move || async move {
        rpc::Server::new()
            .serve(BlobsServer::new(Store { hold }))
            .bind("127.0.0.1:0")
            .await
            .unwrap()
    })
    .await;
    let mut socket = raw(server.addr).await;
    let blob = vec![0x5a; LARGE];
    let mut both = request(1, "Blobs.echo", &encoded(&blob));
    both.extend(request(2, "Blobs.hold", &[]));
    socket.write_all(&both).await.unwrap();
    // The echo's answer begins to arrive while the hold waits.
    let mut head = [0u8; 16];
    socket.read_exact(&mut head).await.unwrap();
    let id = u64::from_le_bytes(head[8..].try_into().unwrap());
    assert_eq!((head[4], id), (2, 1), "the echo's answer comes first");
    release.release();
    let mut answer = vec![0u8; u32::from_le_bytes(head[..4].try_into().unwrap()) as usize];
    socket.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, encoded(&blob));
    assert_eq!(
        read_frame(&mut socket).await,
        (2, 2, vec![1]),
        "the hold's answer"
    );
    assert!(
        release.was_released(),
        "the hold was let go by its timeout: the echo's answer waited behind it"
    );
    server.stop();
}

/// A server of our own making, on a thread of its own: it reads two
/// requests, then answers the first with a large blob and the second with
/// a short one, in one write.
fn answers_in_one_write(large: Vec<u8>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket.write_all(SERVER_PREFACE_V3).unwrap();
        let mut preface = [0u8; 16];
        socket.read_exact(&mut preface).unwrap();
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let mut head = [0u8; 16];
            socket.read_exact(&mut head).unwrap();
            let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            socket.read_exact(&mut vec![0u8; len]).unwrap();
            ids.push(u64::from_le_bytes(head[8..].try_into().unwrap()));
        }
        let mut both = frame(2, ids[0], &encoded(&large));
        both.extend(frame(2, ids[1], &[3, 1, 2, 3]));
        socket.write_all(&both).unwrap();
        // Open until the client goes.
        let _ = socket.read(&mut [0u8; 16]);
    });
    addr
}

/// Both answers arrive together; the first is large. The client's reader
/// must hand it to its caller, and give way, before it reads the second:
/// the caller then runs while the second answer is still unread. (The
/// caller is the test itself, which tokio's current-thread runtime polls
/// before any task that gave way, whatever its `event_interval`.)
#[tokio::test]
async fn a_current_thread_client_lets_a_large_answers_caller_run_before_reading_on() {
    let large = vec![0xa5; LARGE];
    let client = BlobsClient::connect(answers_in_one_write(large.clone()))
        .await
        .unwrap();
    let mut first = std::pin::pin!(client.echo(rpc::Bytes::from_static(b"one")));
    let mut second = std::pin::pin!(client.echo(rpc::Bytes::from_static(b"two")));
    // Both requests are queued, in this order.
    assert!(first.as_mut().now_or_never().is_none());
    assert!(second.as_mut().now_or_never().is_none());
    let answer = first.await.unwrap();
    assert_eq!(&answer[..], &large[..]);
    assert!(
        second.as_mut().now_or_never().is_none(),
        "the second answer was read before the first one's caller ran"
    );
    assert_eq!(&second.await.unwrap()[..], &[1, 2, 3]);
}
