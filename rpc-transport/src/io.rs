//! Frame reader and writer over any `AsyncRead` / `AsyncWrite`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rpc_core::Error;
use rpc_core::frame::{Frame, HEADER_LEN, ProtocolError};
use rpc_core::transport::{FrameRead, FrameWrite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::codec::{CodecError, FrameCodec};

/// Reads frames from a byte stream through [`FrameCodec`].
///
/// Once the first byte of a frame has arrived, the whole frame must arrive
/// within the frame timeout: a peer that dribbles a frame byte by byte (a
/// slowloris) is cut off. Room for a payload is reserved as its bytes
/// arrive, not when its header claims them, so a header announcing a large
/// frame costs nothing until the data is really sent.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    buf: BytesMut,
    /// When the first byte of the frame being read arrived.
    frame_started: Option<Instant>,
    frame_timeout: Duration,
}

/// How long one frame may take to arrive once it has started, by default.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// How much room to reserve when the read buffer is (nearly) full.
const READ_AHEAD: usize = 8 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max_frame_len` payload bytes from `io`.
    pub fn new(io: R, max_frame_len: usize) -> FrameReader<R> {
        FrameReader {
            io,
            codec: FrameCodec::new(max_frame_len),
            buf: BytesMut::new(),
            frame_started: None,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
        }
    }

    /// Sets how long one frame may take to arrive once its first byte has.
    pub fn with_frame_timeout(mut self, timeout: Duration) -> FrameReader<R> {
        self.frame_timeout = timeout;
        self
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    async fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                // Bytes left over belong to the next frame, which has begun.
                self.frame_started = (!self.buf.is_empty()).then(Instant::now);
                return Ok(Some(frame));
            }
            // Not even a header's room left: take a fresh stretch.
            if self.buf.capacity() - self.buf.len() < HEADER_LEN {
                self.buf.reserve(READ_AHEAD);
            }
            let read = match self.frame_started {
                None => self.io.read_buf(&mut self.buf).await?,
                Some(started) => {
                    let deadline = started + self.frame_timeout;
                    match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                        Ok(read) => read?,
                        Err(_) => {
                            return Err(ProtocolError::FrameTimeout {
                                timeout: self.frame_timeout,
                                got: self.buf.len(),
                            }
                            .into());
                        }
                    }
                }
            };
            if read == 0 {
                return self.codec.decode_eof(&mut self.buf);
            }
            self.frame_started.get_or_insert_with(Instant::now);
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameRead for FrameReader<R> {
    async fn read_frame(&mut self) -> Result<Option<Frame>, Error> {
        // All state lives in `self` and `read_buf` is cancel-safe, so
        // dropping this future between polls loses nothing (the server
        // `select!`s on it).
        self.next_frame().await.map_err(Error::from)
    }

    async fn discard(&mut self, limit: usize) {
        let mut scratch = [0u8; 8 * 1024];
        let mut left = limit;
        while left > 0 {
            match self.io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
}

/// Payloads at least this large are written from their own memory with a
/// vectored write; smaller ones are copied next to their header, because one
/// contiguous buffer of many small frames is cheaper than an iovec each.
const COPY_BELOW: usize = 4 * 1024;

/// Writes batches of frames to a byte stream with as few writes as it can.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    /// Headers and small payloads; reused across batches.
    buf: BytesMut,
    /// The batch, in order: slices of `buf` and large payloads.
    chunks: Chunks,
}

impl<W: AsyncWrite> FrameWriter<W> {
    /// A writer over `io`.
    pub fn new(io: W) -> FrameWriter<W> {
        FrameWriter {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            chunks: Chunks::default(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWrite for FrameWriter<W> {
    async fn write_frames(&mut self, frames: &mut Vec<Frame>) -> Result<(), Error> {
        // Left over only if a previous call was cancelled mid-write; those
        // bytes are stale, and the connection is being torn down anyway.
        self.chunks.clear();
        for frame in frames.drain(..) {
            let (header, payload) = frame.into_parts();
            header.encode(&mut self.buf);
            if payload.len() < COPY_BELOW {
                self.buf.extend_from_slice(&payload);
            } else {
                self.chunks.push(self.buf.split().freeze());
                self.chunks.push(payload);
            }
        }
        self.chunks.push(self.buf.split().freeze());
        let written = self.io.write_all_buf(&mut self.chunks).await;
        self.chunks.clear();
        written.map_err(|err| Error::io("writing to the connection failed", &err))?;
        self.io
            .flush()
            .await
            .map_err(|err| Error::io("writing to the connection failed", &err))
    }

    async fn shutdown(&mut self) -> Result<(), Error> {
        self.io
            .shutdown()
            .await
            .map_err(|err| Error::io("closing the connection failed", &err))
    }
}

/// A queue of byte chunks that `write_all_buf` writes with vectored I/O.
#[derive(Debug, Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.queue.push_back(chunk);
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.remaining = 0;
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.queue.front().map_or(&[], |chunk| &chunk[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.queue) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::frame::Kind;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_batch_of_small_and_large_frames_arrives_intact_and_in_order() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut writer = FrameWriter::new(ours);
        let mut frames = vec![
            Frame::new(Kind::Request, 1, Bytes::from_static(b"small")).unwrap(),
            Frame::new(Kind::Request, 2, Bytes::from(vec![9u8; COPY_BELOW * 3])).unwrap(),
            Frame::new(Kind::Cancel, 3, Bytes::new()).unwrap(),
        ];
        let expected: Vec<_> = frames.clone();
        writer.write_frames(&mut frames).await.unwrap();
        assert!(frames.is_empty());
        writer.shutdown().await.unwrap();

        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).await.unwrap();
        let mut reader = FrameReader::new(&wire[..], 1 << 20);
        for want in expected {
            let got = reader.next_frame().await.unwrap().unwrap();
            assert_eq!(got.header(), want.header());
            assert_eq!(got.payload(), want.payload());
        }
        assert!(reader.next_frame().await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_that_dribbles_in_is_cut_off_at_the_frame_timeout() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, 1024).with_frame_timeout(Duration::from_secs(5));
        peer.write_all(&[10, 0, 0]).await.unwrap();
        let err = reader.next_frame().await.unwrap_err();
        assert!(matches!(
            err,
            CodecError::Protocol(ProtocolError::FrameTimeout { got: 3, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_reader_waits_without_a_frame_timeout() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, 1024).with_frame_timeout(Duration::from_secs(5));
        let reading =
            tokio::spawn(async move { reader.next_frame().await.map(|f| f.map(|f| f.header().id())) });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!reading.is_finished());
        let frame = Frame::new(Kind::Cancel, 4, Bytes::new()).unwrap();
        let mut wire = BytesMut::new();
        frame.into_parts().0.encode(&mut wire);
        peer.write_all(&wire).await.unwrap();
        assert_eq!(reading.await.unwrap().unwrap(), Some(4));
    }

    #[tokio::test]
    async fn a_header_claiming_a_huge_frame_reserves_only_what_arrives() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(ours, 64 * 1024 * 1024);
        let mut header = BytesMut::new();
        rpc_core::frame::Header::new(Kind::Request, 1, 60 * 1024 * 1024)
            .unwrap()
            .encode(&mut header);
        peer.write_all(&header).await.unwrap();
        drop(peer);
        assert!(reader.next_frame().await.is_err());
        assert!(reader.buf.capacity() <= 128 * 1024, "{}", reader.buf.capacity());
    }

    #[test]
    fn chunks_advance_across_boundaries() {
        let mut chunks = Chunks::default();
        chunks.push(Bytes::from_static(b"abc"));
        chunks.push(Bytes::new());
        chunks.push(Bytes::from_static(b"defg"));
        assert_eq!(chunks.remaining(), 7);
        chunks.advance(4);
        assert_eq!(chunks.chunk(), b"efg");
        assert_eq!(chunks.remaining(), 3);
        chunks.advance(3);
        assert_eq!(chunks.remaining(), 0);
        assert!(chunks.chunk().is_empty());
    }
}
