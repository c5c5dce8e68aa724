//! The hand-written baseline: what a careful engineer would write for this
//! one protocol with tokio and tokio-util, no framework.
//!
//! Frames are `LengthDelimitedCodec` frames of `[u64 id][u8 op][payload]`;
//! one connection; the client keeps an id -> oneshot map; each side has one
//! writer task that drains its queue before flushing. The server answers
//! each request in its connection's task (`inline`: the fastest thing a
//! person would write for a small, non-blocking handler), or spawns a task
//! per request (`spawn`: what a multiplexed server must do when handlers
//! may block).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

const OP_ADD: u8 = 1;
const OP_ECHO: u8 = 2;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(64 * 1024 * 1024)
        .new_codec()
}

/// Writes everything queued, then flushes once.
async fn writer(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(frame) = queue.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        while let Ok(frame) = queue.try_recv() {
            if sink.feed(frame).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

pub(crate) async fn serve(listener: TcpListener, inline: bool) {
    while let Ok((stream, _)) = listener.accept().await {
        stream.set_nodelay(true).ok();
        tokio::spawn(connection(stream, inline));
    }
}

async fn connection(stream: TcpStream, inline: bool) {
    let (read, write) = stream.into_split();
    let (queue, queued) = mpsc::unbounded_channel();
    tokio::spawn(writer(FramedWrite::new(write, codec()), queued));
    let mut frames = FramedRead::new(read, codec());
    while let Some(Ok(frame)) = frames.next().await {
        if inline {
            let _ = queue.send(answer(frame));
        } else {
            let queue = queue.clone();
            tokio::spawn(async move {
                let _ = queue.send(answer(frame));
            });
        }
    }
}

/// The answer to one request frame.
fn answer(mut frame: BytesMut) -> Bytes {
    let id = frame.get_u64_le();
    let op = frame.get_u8();
    let mut out = BytesMut::with_capacity(8 + frame.len().max(8));
    out.put_u64_le(id);
    match op {
        OP_ADD => {
            let a = frame.get_u64_le();
            let b = frame.get_u64_le();
            out.put_u64_le(a.wrapping_add(b));
        }
        _ => out.extend_from_slice(&frame),
    }
    out.freeze()
}

#[derive(Clone)]
pub(crate) struct Client {
    queue: mpsc::UnboundedSender<Bytes>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<BytesMut>>>>,
    next: Arc<AtomicU64>,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the baseline server");
        stream.set_nodelay(true).ok();
        let (read, write) = stream.into_split();
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(writer(FramedWrite::new(write, codec()), queued));
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<BytesMut>>>> = Arc::default();
        let table = Arc::clone(&waiting);
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, codec());
            while let Some(Ok(mut frame)) = frames.next().await {
                let id = frame.get_u64_le();
                if let Some(waiter) = table.lock().unwrap().remove(&id) {
                    let _ = waiter.send(frame);
                }
            }
        });
        Client {
            queue,
            waiting,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    async fn call(&self, op: u8, payload: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        let mut frame = BytesMut::with_capacity(64);
        frame.put_u64_le(id);
        frame.put_u8(op);
        payload(&mut frame);
        self.queue
            .send(frame.freeze())
            .expect("the baseline writer is running");
        rx.await.expect("the baseline server answers")
    }

    pub(crate) async fn add(&self, a: u64, b: u64) -> u64 {
        let mut answer = self
            .call(OP_ADD, |frame| {
                frame.put_u64_le(a);
                frame.put_u64_le(b);
            })
            .await;
        answer.get_u64_le()
    }

    pub(crate) async fn echo(&self, data: Bytes) -> Bytes {
        self.call(OP_ECHO, |frame| frame.extend_from_slice(&data))
            .await
            .freeze()
    }
}
