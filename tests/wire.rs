//! The exact bytes of an exchange, as `docs/PROTOCOL.md` documents them,
//! checked against a real server over a raw TCP socket.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use common::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[rpc::service]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// Parses the hex dumps of docs/PROTOCOL.md (spaces and `|` ignored).
fn hex(text: &str) -> Vec<u8> {
    let digits: String = text.chars().filter(char::is_ascii_hexdigit).collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

async fn exchange(request: &[u8], reply_len: usize) -> (Vec<u8>, Vec<u8>) {
    let server = rpc::Server::new()
        .serve(CalculatorServer::new(Calc))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
    socket
        .write_all(&hex("89 52 50 43 0d 0a 1a 0a | 01 00 | 00 00 | 00 00 00 01"))
        .await
        .unwrap();
    let mut preface = vec![0u8; 16];
    socket.read_exact(&mut preface).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut reply = vec![0u8; reply_len];
    socket.read_exact(&mut reply).await.unwrap();
    server.stop().await;
    (preface, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_add_5_3_is_byte_for_byte_as_documented() {
    let request = hex("19 00 00 00 | 01 | 00 | 00 00 | 01 00 00 00 00 00 00 00
         40 42 0f 00 00 00 00 00 | 0e | 43 61 6c 63 75 6c 61 74 6f 72 2e 61 64 64 | 0a 06");
    let (preface, reply) = exchange(&request, 17).await;
    assert_eq!(
        preface,
        hex("89 52 50 43 0d 0a 1a 0a | 01 00 | 00 01 | 00 00 00 01")
    );
    assert_eq!(
        reply,
        hex("01 00 00 00 | 02 | 00 | 00 00 | 01 00 00 00 00 00 00 00 | 10")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_is_answered_with_the_documented_error_frame() {
    let request = hex("19 00 00 00 | 01 | 00 | 00 00 | 02 00 00 00 00 00 00 00
         40 42 0f 00 00 00 00 00 | 0e | 43 61 6c 63 75 6c 61 74 6f 72 2e 73 75 62 | 0a 06");
    let (_, reply) = exchange(&request, 16 + 15).await;
    assert_eq!(
        reply,
        hex("0f 00 00 00 | 03 | 00 | 00 00 | 02 00 00 00 00 00 00 00
             02 | 43 61 6c 63 75 6c 61 74 6f 72 2e 73 75 62")
    );
}

#[rpc::service]
pub trait Say {
    async fn say(&self, n: u32) -> String;
}

/// What the server written by hand below says for `n`: answers of 1, 22
/// (the longest a client copies out of its read buffer), 23 and 201 bytes.
fn said(n: u8) -> String {
    let (letter, len) = match n {
        1 => ('a', 0),
        2 => ('b', 21),
        3 => ('c', 22),
        _ => ('d', 200),
    };
    std::iter::repeat_n(letter, len).collect()
}

#[tokio::test]
async fn answers_that_arrive_together_reach_their_calls_whatever_their_length() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(raw::SERVER_PREFACE_V3).await.unwrap();
        let mut theirs = [0u8; 16];
        socket.read_exact(&mut theirs).await.unwrap();
        loop {
            // Four requests, then their answers in one write, last first:
            // the client reads them in one go.
            let mut answers = Vec::new();
            for _ in 0..4 {
                let (_, id, payload) = raw::read_frame(&mut socket).await;
                // The argument, a small u32, is the payload's last byte.
                let text = said(*payload.last().unwrap());
                let mut answer = vec![u8::try_from(text.len()).unwrap()];
                answer.extend_from_slice(text.as_bytes());
                answers.splice(0..0, raw::frame(2, id, &answer));
            }
            socket.write_all(&answers).await.unwrap();
        }
    });
    let client = SayClient::connect(addr).await.unwrap();
    for _ in 0..3 {
        let (one, two, three, four) =
            tokio::join!(client.say(1), client.say(2), client.say(3), client.say(4));
        assert_eq!(
            [one.unwrap(), two.unwrap(), three.unwrap(), four.unwrap()],
            [said(1), said(2), said(3), said(4)]
        );
    }
}
