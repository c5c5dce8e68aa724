//! [`FrameWriter`]: batches of frames to the writing half of a byte stream.

use bytes::BytesMut;
use rpc_core::Error;
use rpc_core::frame::Frame;
use rpc_core::transport::{Encoded, FrameWrite};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Chunks' worth of room the batch queue keeps while the connection is idle.
const IDLE_CHUNKS: usize = 4;

/// Writes batches of frames to a byte stream with as few writes as it can.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    /// Headers and small payloads; reused across batches.
    buf: BytesMut,
    /// The batch, in order: slices of `buf` and large payloads.
    chunks: Encoded,
}

impl<W: AsyncWrite> FrameWriter<W> {
    /// A writer over `io`.
    pub fn new(io: W) -> FrameWriter<W> {
        FrameWriter {
            io,
            buf: BytesMut::new(),
            chunks: Encoded::default(),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWrite for FrameWriter<W> {
    async fn write_frames<'a, I>(&mut self, frames: I) -> Result<(), Error>
    where
        I: Iterator<Item = &'a Frame> + Clone + Send,
    {
        for frame in frames {
            self.chunks
                .push_frame(&mut self.buf, frame.header(), frame.payload());
        }
        self.chunks.push(self.buf.split().freeze());
        let mut chunks = std::mem::take(&mut self.chunks);
        let written = self.write_encoded(&mut chunks).await;
        chunks.clear();
        self.chunks = chunks;
        written
    }

    async fn write_encoded(&mut self, batch: &mut Encoded) -> Result<(), Error> {
        let written = self.io.write_all_buf(batch).await;
        written.map_err(|err| Error::io("writing to the connection failed", &err))?;
        self.io
            .flush()
            .await
            .map_err(|err| Error::io("writing to the connection failed", &err))
    }

    fn idle(&mut self) {
        // The buffer's memory may be more than its spare capacity shows
        // (what the last batch used comes back to it), so it goes whole.
        self.buf = BytesMut::new();
        self.chunks.shrink_to(IDLE_CHUNKS);
    }

    async fn shutdown(&mut self) -> Result<(), Error> {
        self.io
            .shutdown()
            .await
            .map_err(|err| Error::io("closing the connection failed", &err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::frame::Kind;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_batch_of_small_and_large_frames_arrives_intact_and_in_order() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut writer = FrameWriter::new(ours);
        let frames = vec![
            Frame::new(Kind::Request, 1, Bytes::from_static(b"small")).unwrap(),
            Frame::new(Kind::Request, 2, Bytes::from(vec![9u8; 12 * 1024])).unwrap(),
            Frame::new(Kind::Cancel, 3, Bytes::new()).unwrap(),
        ];
        let expected: Vec<_> = frames.clone();
        writer.write_frames(frames.iter()).await.unwrap();
        writer.shutdown().await.unwrap();

        let mut wire = Vec::new();
        theirs.read_to_end(&mut wire).await.unwrap();
        let mut reader = crate::reader::FrameReader::new(&wire[..], 1 << 20);
        for want in expected {
            let got = reader.next_frame().await.unwrap().unwrap();
            assert_eq!(got.header(), want.header());
            assert_eq!(got.payload(), want.payload());
        }
        assert!(reader.next_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_idle_writer_gives_its_buffer_back_and_writes_on() {
        let (ours, _theirs) = tokio::io::duplex(1 << 20);
        let mut writer = FrameWriter::new(ours);
        let many: Vec<_> = (1..=200)
            .map(|id| Frame::new(Kind::Response, id, Bytes::from_static(b"0123456789")).unwrap())
            .collect();
        writer.write_frames(many.iter()).await.unwrap();
        writer.write_frames(many.iter()).await.unwrap();
        writer.idle();
        assert_eq!(writer.buf.capacity(), 0);
        writer.write_frames(many.iter()).await.unwrap();
    }
}
