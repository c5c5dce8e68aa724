//! A value nested deeper than the decoder allows is refused with an error
//! naming the limit, in both directions, and the process, the connection
//! and every other call go on. Without the limit, each of these inputs
//! overflows the decoding thread's stack and aborts the whole process.
//! Run in a debug build, where every level costs the most stack.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use common::raw::{SERVER_PREFACE_V3, frame, raw, read_frame, request};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum List {
    Nil,
    Cons(u32, Box<List>),
}

#[rpc::service]
pub trait Deep {
    /// How many cells the list has.
    async fn length(&self, list: List) -> u32;
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Lists;

impl Deep for Lists {
    async fn length(&self, mut list: List) -> u32 {
        let mut cells = 0;
        while let List::Cons(_, rest) = list {
            list = *rest;
            cells += 1;
        }
        cells
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// `Cons(1, Cons(1, ... Nil))`, `depth` cells, in bincode: variant 1 and
/// the number for each cell, then variant 0.
fn nested(depth: usize) -> Vec<u8> {
    let mut bytes = [1u8, 1].repeat(depth);
    bytes.push(0);
    bytes
}

/// A list of `depth` cells, built without recursion.
fn list(depth: u32) -> List {
    (0..depth).fold(List::Nil, |rest, _| List::Cons(1, Box::new(rest)))
}

/// Drops a list without recursion: a deep one would overflow the stack.
fn drop_list(mut list: List) {
    while let List::Cons(_, rest) = list {
        list = *rest;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_levels_from_a_client_are_refused_and_the_server_goes_on() {
    let server = rpc::Server::new()
        .serve(DeepServer::new(Lists))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let good = DeepClient::connect(addr).await.unwrap();

    let mut socket = raw(addr).await;
    socket
        .write_all(&request(1, "Deep.length", &nested(100_000)))
        .await
        .unwrap();
    let (kind, id, payload) = read_frame(&mut socket).await;
    let message = String::from_utf8_lossy(&payload[1..]);
    assert_eq!(
        (kind, id, payload[0]),
        (3, 1, 3),
        "a bad-request error: {message}"
    );
    assert!(message.contains("more than 128 levels"), "{message}");
    assert!(message.contains("Server::max_nesting"), "{message}");
    // The same connection serves on.
    socket.write_all(&request(2, "Deep.add", &[4, 6])).await.unwrap();
    assert_eq!(read_frame(&mut socket).await, (2, 2, vec![0x0a]));

    // So does every other client, and lists within the limit decode.
    assert_eq!(good.add(2, 3).await.unwrap(), 5);
    let short = list(60);
    assert_eq!(good.length(short).await.unwrap(), 60);
    // The client hears the server's sentence.
    let err = good.length(list(200)).await.unwrap_err();
    assert!(
        matches!(&err, rpc::Error::BadRequest { reason, .. } if reason.contains("Server::max_nesting")),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nesting_limit_is_a_setting_on_each_side() {
    let server = rpc::Server::new()
        .serve(DeepServer::new(Lists))
        .max_nesting(500)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = DeepClient::connect(server.local_addr()).await.unwrap();
    let deep = list(400);
    assert_eq!(client.length(deep).await.unwrap(), 400);
    server.stop().await;
}

/// A server of our own making that answers the first call with `first`
/// and every later one with `8` (`Deep.add`'s answer, as a client reads
/// it): what a hostile or broken server could send.
async fn fake_server(first: Vec<u8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(SERVER_PREFACE_V3).await.unwrap();
        let mut preface = [0u8; 16];
        socket.read_exact(&mut preface).await.unwrap();
        let mut answer = Some(first);
        loop {
            let mut head = [0u8; 16];
            if socket.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            let id = u64::from_le_bytes(head[8..].try_into().unwrap());
            let mut payload = vec![0u8; len];
            socket.read_exact(&mut payload).await.unwrap();
            if head[4] != 1 {
                continue;
            }
            let result = answer.take().unwrap_or_else(|| vec![0x10]);
            socket.write_all(&frame(2, id, &result)).await.unwrap();
        }
    });
    addr
}

#[rpc::service]
pub trait Builder {
    async fn build(&self) -> List;
    async fn add(&self, a: i64, b: i64) -> i64;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_levels_from_a_server_are_refused_and_the_client_goes_on() {
    let addr = fake_server(nested(100_000)).await;
    let client = BuilderClient::connect(addr).await.unwrap();
    let err = client.build().await.unwrap_err();
    assert!(
        matches!(&err, rpc::Error::BadResponse { reason, .. } if reason.contains("more than 128 levels")
            && reason.contains("ClientBuilder::max_nesting")),
        "{err}"
    );
    // The connection serves on.
    assert_eq!(client.add(4, 4).await.unwrap(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_allow_deeper_answers() {
    let addr = fake_server(nested(300)).await;
    let client = BuilderClient::from_client(
        rpc::ClientBuilder::new()
            .max_nesting(400)
            .connect(addr)
            .await
            .unwrap(),
    );
    let list = client.build().await.unwrap();
    drop_list(list);
}
