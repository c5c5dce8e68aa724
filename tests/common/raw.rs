//! Raw protocol bytes for tests that speak to a server over a bare socket.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8; 16] = b"\x89RPC\r\n\x1a\n\x01\x00\x00\x00\x00\x00\x00\x01";

/// What a default server answers a version 1 client: version 1, 256 calls
/// at once, 16 MiB frames.
pub const SERVER_PREFACE: &[u8; 16] = b"\x89RPC\r\n\x1a\n\x01\x00\x00\x01\x00\x00\x00\x01";

/// What a default server sends a client of the current version (3), and a
/// preface it refuses: version 3, 256 calls at once, 16 MiB frames.
pub const SERVER_PREFACE_V3: &[u8; 16] = b"\x89RPC\r\n\x1a\n\x03\x00\x00\x01\x00\x00\x00\x01";

pub fn header(len: u32, kind: u8, flags: u8, reserved: u16, id: u64) -> Vec<u8> {
    let mut out = len.to_le_bytes().to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&reserved.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out
}

pub fn frame(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = header(payload.len() as u32, kind, 0, 0, id);
    out.extend_from_slice(payload);
    out
}

pub fn request_payload(budget_micros: u64, method: &[u8], args: &[u8]) -> Vec<u8> {
    let mut out = budget_micros.to_le_bytes().to_vec();
    out.push(method.len() as u8);
    out.extend_from_slice(method);
    out.extend_from_slice(args);
    out
}

pub fn request(id: u64, method: &str, args: &[u8]) -> Vec<u8> {
    frame(1, id, &request_payload(5_000_000, method.as_bytes(), args))
}

/// `Shapes.add(2, 3)`.
pub fn add_2_3(id: u64) -> Vec<u8> {
    request(id, "Shapes.add", &[0x04, 0x06])
}

/// A raw connection past the preface exchange.
pub async fn raw(addr: SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(PREFACE).await.unwrap();
    let mut theirs = [0u8; 16];
    socket.read_exact(&mut theirs).await.unwrap();
    assert_eq!(&theirs[..8], &PREFACE[..8]);
    socket
}

/// Everything the server sends until it closes. The timeout only stops a
/// broken server from hanging the test; it decides nothing.
pub async fn until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut got))
        .await
        .expect("the server must close the connection")
        .unwrap();
    got
}

/// Reads one frame: (kind, id, payload).
pub async fn read_frame(socket: &mut TcpStream) -> (u8, u64, Vec<u8>) {
    let mut head = [0u8; 16];
    socket.read_exact(&mut head).await.unwrap();
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let id = u64::from_le_bytes(head[8..].try_into().unwrap());
    let mut payload = vec![0u8; len];
    socket.read_exact(&mut payload).await.unwrap();
    (head[4], id, payload)
}

/// Sends `bytes` after the preface and expects the connection to be closed
/// with one protocol-error notice (code 9) whose message contains `why`.
pub async fn expect_notice(addr: SocketAddr, name: &str, bytes: &[u8], why: &str) {
    let mut socket = raw(addr).await;
    socket.write_all(bytes).await.unwrap();
    let mut got = until_closed(&mut socket).await;
    // Calls the bytes made before the violation may be answered first (a
    // response, stream items, an end, a call's own error): a handler that
    // answers at once does so before the next frame is read.
    while got.len() >= 16 && matches!(got[4], 2 | 3 | 6 | 7) && got[8..16] != [0; 8] {
        let len = u32::from_le_bytes(got[..4].try_into().unwrap()) as usize;
        got.drain(..16 + len);
    }
    assert!(got.len() > 17, "{name}: expected a notice, got {got:02x?}");
    assert_eq!(
        &got[4..16],
        &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "{name}: an error frame with id 0"
    );
    let len = u32::from_le_bytes(got[..4].try_into().unwrap()) as usize;
    assert_eq!(got.len(), 16 + len, "{name}: nothing after the notice");
    assert_eq!(got[16], 9, "{name}: code 9, protocol");
    let message = String::from_utf8_lossy(&got[17..]);
    assert!(
        message.contains(why),
        "{name}: {message:?} should mention {why:?}"
    );
}
