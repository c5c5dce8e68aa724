//! [`FrameReader`]: frames from the reading half of a byte stream.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::FutureExt;
use rpc_core::Error;
use rpc_core::frame::{Frame, HEADER_LEN, Header, ProtocolError};
use rpc_core::transport::{FrameRead, Quiet};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use crate::codec::{CodecError, FrameCodec, room_toward};
use crate::spare::Spare;
use crate::stream::ReadHalf;

/// Reads frames from a byte stream through [`FrameCodec`].
///
/// Once the first byte of a frame has arrived, the whole frame must arrive
/// within the frame timeout: a peer that dribbles a frame byte by byte (a
/// slowloris) is cut off. Room for a payload is reserved as its bytes
/// arrive, not when its header claims them, so a header announcing a large
/// frame costs nothing until the data is really sent. Between frames, a
/// stream that can wait for data without a buffer (a socket) holds none:
/// an idle connection costs no read buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    buf: BytesMut,
    /// Since when the reader has been waiting for the rest of the frame
    /// it holds part of: from the end of the read that brought its first
    /// byte, or, for bytes left over behind a frame, from the first read
    /// after it.
    frame_started: Option<Instant>,
    /// The buffer was given back (or never taken): the next read takes a
    /// small one.
    released: bool,
    frame_timeout: Duration,
    /// When a quiet connection gives its buffer back: one timer for the
    /// reader's life, taken at its first wait, told of every read.
    quiet: Option<Quiet>,
    /// The memory the last large frames were read into, for the next ones.
    spare: Spare,
}

/// How long one frame may take to arrive once it has started, by default.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection must stay quiet before a reader that can wait for
/// data without a buffer gives its buffer back (it may wait up to twice
/// this long).
pub const RELEASE_AFTER: Duration = Duration::from_millis(100);

/// How much room to reserve when the read buffer is (nearly) full.
const READ_AHEAD: usize = 8 * 1024;

/// How much room a reader takes after giving its buffer back: a request or
/// two, and under the size the allocator serves from its per-thread cache
/// (a larger block costs it more, every time).
const READ_SMALL: usize = 960;

impl<R: ReadHalf> FrameReader<R> {
    /// Reads frames of at most `max_frame_len` payload bytes from `io`.
    pub fn new(io: R, max_frame_len: usize) -> FrameReader<R> {
        FrameReader {
            io,
            codec: FrameCodec::new(max_frame_len),
            buf: BytesMut::new(),
            frame_started: None,
            released: true,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            quiet: None,
            spare: Spare::new(R::WAITS_FOR_BYTES),
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

    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            if let Some(frame) = self.decode_buffered()? {
                return Ok(Some(frame));
            }
            if self.buf.is_empty() {
                self.wait_for_data().await?;
            }
            // Not even a header's room left: take a fresh stretch. (A
            // buffer read to its last byte has no capacity left either, but
            // it was busy: only a released one starts small.)
            if self.buf.capacity() - self.buf.len() < HEADER_LEN {
                let room = if std::mem::take(&mut self.released) {
                    READ_SMALL
                } else {
                    READ_AHEAD
                };
                self.spare.make_room(&mut self.buf, room, None);
            }
            // Bytes left over behind the last frame: waiting for the rest
            // starts now. (Stamped here rather than when the frame before
            // was taken: the owner may have paused in between, and that
            // wait is not the peer's.)
            if !self.buf.is_empty() && self.frame_started.is_none() {
                self.frame_started = Some(Instant::now());
            }
            // A timeout too long to add to an instant is none at all.
            let deadline = self
                .frame_started
                .and_then(|started| started.checked_add(self.frame_timeout));
            let read = match deadline {
                None => self.io.read_buf(&mut self.buf).await?,
                Some(deadline) => {
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
            // A frame the read did not bring whole is stamped above, on
            // the way to the next read: most reads bring whole frames. The
            // quiet timer reads the clock (about 30 ns) to be pushed back
            // rather than fire while the connection is busy.
            if let Some(quiet) = &mut self.quiet {
                quiet.heard();
            }
        }
    }
}

impl<R: ReadHalf> FrameReader<R> {
    /// The next frame, if the buffer holds all of it.
    fn decode_buffered(&mut self) -> Result<Option<Frame>, CodecError> {
        let frame = self.codec.decode_whole(&mut self.buf)?;
        match frame.is_some() {
            // Bytes left over belong to the next frame, which is not
            // waited for until the next read.
            true => self.frame_started = None,
            false => self.make_room(),
        }
        Ok(frame)
    }

    /// Makes room for the rest of the frame the buffer holds the start of,
    /// if it needs more.
    #[inline(never)]
    fn make_room(&mut self) {
        let Some(frame_len) = self.codec.frame_len(&self.buf) else {
            return;
        };
        if let Some(room) = room_toward(&self.buf, frame_len) {
            self.spare.make_room(&mut self.buf, room, Some(frame_len));
        }
    }

    /// Waits, between frames, until the stream has bytes. A connection
    /// that stays quiet for [`RELEASE_AFTER`] (up to twice that) gives its
    /// buffer back first: it would only sit there while the connection is
    /// idle. A busy one, whose next bytes come sooner, keeps it: taking a
    /// fresh buffer after every burst of frames costs more than the memory
    /// saves. After a release, the next read takes a small buffer
    /// ([`READ_SMALL`]) and grows it only for a burst.
    async fn wait_for_data(&mut self) -> std::io::Result<()> {
        // Not a buffer of no capacity: one read to its last byte still
        // holds the memory its last frame came in (and the spares).
        if self.released {
            return self.io.readable().await;
        }
        if let Some(ready) = self.io.readable().now_or_never() {
            return ready;
        }
        let quiet = self.quiet.get_or_insert_with(|| Quiet::new(RELEASE_AFTER));
        tokio::select! {
            biased;
            ready = self.io.readable() => return ready,
            () = quiet.elapsed() => {}
        }
        self.buf = BytesMut::new();
        self.spare.release();
        self.released = true;
        self.io.readable().await
    }
}

impl<R: ReadHalf + 'static> FrameRead for FrameReader<R> {
    async fn read_frame(&mut self) -> Result<Option<Frame>, Error> {
        // All state lives in `self` and `read_buf` is cancel-safe, so
        // dropping this future between polls loses nothing (the server
        // `select!`s on it).
        self.next_frame().await.map_err(Error::from)
    }

    fn buffered_frame(&mut self) -> Option<Result<Frame, Error>> {
        self.decode_buffered().map_err(Error::from).transpose()
    }

    fn lend_frame<T>(&mut self, take: impl FnOnce(Header, &[u8]) -> Option<T>) -> Option<T> {
        let (header, frame_len) = self.codec.whole(&self.buf)?;
        let taken = take(header, self.buf.get(HEADER_LEN..frame_len)?)?;
        self.buf.advance(frame_len);
        // As after a frame split off: what is left is the next frame's.
        self.frame_started = None;
        Some(taken)
    }

    fn resume(&mut self) {
        if self.frame_started.is_some() {
            self.frame_started = Some(Instant::now());
        }
    }

    async fn discard(&mut self, limit: usize) {
        // On the heap, and only while discarding: an array here would sit in
        // every connection's future, idle or not, for its whole life.
        let mut scratch = vec![0u8; 8 * 1024];
        let mut left = limit;
        while left > 0 {
            match self.io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::frame::Kind;
    use tokio::io::AsyncWriteExt;

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
    async fn a_frame_begun_before_the_owner_paused_gets_its_timeout_afresh() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, 1024).with_frame_timeout(Duration::from_secs(5));
        let frame = Frame::new(Kind::Cancel, 4, Bytes::new()).unwrap();
        let mut wire = BytesMut::new();
        frame.into_parts().0.encode(&mut wire);
        // Half a frame arrives; the owner waits for the rest a moment, then
        // stops reading (its queue is full) for longer than the timeout.
        peer.write_all(&wire[..5]).await.unwrap();
        tokio::select! {
            _ = reader.next_frame() => panic!("only half a frame was sent"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        reader.resume();
        // The rest comes a second after the owner reads again: within the
        // timeout counted from then, long after it counted from the start.
        let rest = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peer.write_all(&wire[5..]).await.unwrap();
        };
        let (read, ()) = tokio::join!(reader.next_frame(), rest);
        assert_eq!(read.unwrap().map(|f| f.header().id()), Some(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_left_over_behind_others_is_timed_from_the_read_that_waits_for_it() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, 1024).with_frame_timeout(Duration::from_secs(5));
        let mut wire = BytesMut::new();
        for id in 3..=5 {
            Frame::new(Kind::Cancel, id, Bytes::new())
                .unwrap()
                .into_parts()
                .0
                .encode(&mut wire);
        }
        let whole = 2 * HEADER_LEN;
        // Two whole frames and half of a third arrive in one read; the
        // owner takes one, pauses past the timeout (no `resume`: a pause
        // between frames needs none), and takes the second from the
        // buffer: the third is not late for the pause.
        peer.write_all(&wire[..whole + 5]).await.unwrap();
        assert_eq!(
            reader.next_frame().await.unwrap().map(|f| f.header().id()),
            Some(3)
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            reader.decode_buffered().unwrap().map(|f| f.header().id()),
            Some(4)
        );
        let rest = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peer.write_all(&wire[whole + 5..]).await.unwrap();
        };
        let (read, ()) = tokio::join!(reader.next_frame(), rest);
        assert_eq!(read.unwrap().map(|f| f.header().id()), Some(5));
    }

    #[tokio::test]
    async fn a_lent_frame_is_taken_or_left_whole() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, 1024);
        let mut wire = BytesMut::new();
        for (id, payload) in [(1, vec![1, 2, 3]), (2, vec![7; 30]), (3, vec![9])] {
            let (header, payload) = Frame::new(Kind::Response, id, Bytes::from(payload))
                .unwrap()
                .into_parts();
            header.encode(&mut wire);
            wire.extend_from_slice(&payload);
        }
        // A fourth frame, cut short, then nothing more yet.
        let (header, payload) = Frame::new(Kind::Response, 4, Bytes::from(vec![5; 8]))
            .unwrap()
            .into_parts();
        header.encode(&mut wire);
        wire.extend_from_slice(&payload);
        peer.write_all(&wire[..wire.len() - 4]).await.unwrap();
        let short =
            |header: Header, payload: &[u8]| (payload.len() <= 8).then(|| (header.id(), payload.to_vec()));

        assert_eq!(
            reader.next_frame().await.unwrap().map(|f| f.header().id()),
            Some(1)
        );
        // Too long for `take`: left where it is, for the next look.
        assert_eq!(reader.lend_frame(short), None);
        let left = reader.buffered_frame().unwrap().unwrap();
        assert_eq!((left.header().id(), left.payload().len()), (2, 30));
        assert_eq!(reader.lend_frame(short), Some((3, vec![9])));
        // Not whole yet: nothing lent, nothing lost.
        assert_eq!(reader.lend_frame(short), None);
        peer.write_all(&[5; 4]).await.unwrap();
        assert_eq!(
            reader.next_frame().await.unwrap().map(|f| f.payload().to_vec()),
            Some(vec![5; 8])
        );

        // A whole frame of an unknown kind behind a good one: the good one
        // is read, the broken one is lent to nobody, and the look after
        // reports it.
        let mut wire = BytesMut::new();
        let (header, payload) = Frame::new(Kind::Response, 5, Bytes::from(vec![1]))
            .unwrap()
            .into_parts();
        header.encode(&mut wire);
        wire.extend_from_slice(&payload);
        wire.extend_from_slice(&[1, 0, 0, 0, 99, 0, 0, 0]);
        wire.extend_from_slice(&6u64.to_le_bytes());
        wire.extend_from_slice(&[0]);
        peer.write_all(&wire).await.unwrap();
        assert_eq!(
            reader.next_frame().await.unwrap().map(|f| f.header().id()),
            Some(5)
        );
        let any = |header: Header, _: &[u8]| Some(header.id());
        assert_eq!(reader.lend_frame(any), None);
        assert!(reader.buffered_frame().unwrap().is_err());
    }

    #[tokio::test]
    async fn a_busy_reader_reads_ahead_after_using_up_its_buffer() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(ours, 1024);
        let mut wire = BytesMut::new();
        for id in 1..=1000 {
            Frame::new(Kind::Cancel, id, Bytes::new())
                .unwrap()
                .into_parts()
                .0
                .encode(&mut wire);
        }
        peer.write_all(&wire).await.unwrap();
        // The first read takes a small buffer; once the reader has used it
        // to its last byte, it reads ahead rather than small again.
        let mut largest = 0;
        for id in 1..=1000 {
            assert_eq!(
                reader.next_frame().await.unwrap().map(|f| f.header().id()),
                Some(id)
            );
            largest = largest.max(reader.buf.len());
        }
        assert!(
            largest > READ_SMALL,
            "the reader never read more than {largest} bytes at once"
        );
    }

    #[tokio::test]
    async fn an_endless_frame_timeout_waits_for_the_rest_instead_of_overflowing() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = FrameReader::new(ours, 1024).with_frame_timeout(Duration::MAX);
        let mut wire = BytesMut::new();
        Frame::new(Kind::Cancel, 4, Bytes::new())
            .unwrap()
            .into_parts()
            .0
            .encode(&mut wire);
        peer.write_all(&wire[..5]).await.unwrap();
        let rest = async {
            tokio::task::yield_now().await;
            peer.write_all(&wire[5..]).await.unwrap();
        };
        let (read, ()) = tokio::join!(reader.next_frame(), rest);
        assert_eq!(read.unwrap().map(|f| f.header().id()), Some(4));
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

    /// A reader of one end of a socket, the other end, the reader's own
    /// writing half (kept open), and the bytes of a small frame (a cancel
    /// of call 4) for the peer to send.
    async fn socket_reader() -> (
        tokio::net::TcpStream,
        FrameReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
        bytes::BytesMut,
    ) {
        socket_reader_of(1024).await
    }

    async fn socket_reader_of(
        max_frame_len: usize,
    ) -> (
        tokio::net::TcpStream,
        FrameReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
        bytes::BytesMut,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (read, write) = ours.into_split();
        let mut wire = bytes::BytesMut::new();
        Frame::new(Kind::Cancel, 4, Bytes::new())
            .unwrap()
            .header()
            .encode(&mut wire);
        (peer, FrameReader::new(read, max_frame_len), write, wire)
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_reader_that_hears_from_its_peer_in_time_keeps_its_buffer() {
        let (mut peer, mut reader, _write, wire) = socket_reader().await;
        // A frame every three quarters of the quiet time, for six times
        // the quiet time: the timer is pushed back each time before it is
        // due.
        for _ in 0..8 {
            peer.write_all(&wire).await.unwrap();
            assert_eq!(reader.next_frame().await.unwrap().unwrap().header().id(), 4);
            {
                let reading = reader.next_frame();
                tokio::pin!(reading);
                tokio::select! {
                    _ = &mut reading => panic!("nothing was sent"),
                    () = tokio::time::sleep(RELEASE_AFTER * 3 / 4) => {}
                }
            }
            assert!(
                reader.buf.capacity() > 0,
                "a reader that hears in time keeps its buffer"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_reader_gives_its_buffer_back_once_the_connection_is_quiet() {
        let (mut peer, mut reader, _write, wire) = socket_reader().await;
        peer.write_all(&wire).await.unwrap();
        assert_eq!(reader.next_frame().await.unwrap().unwrap().header().id(), 4);
        assert!(reader.buf.capacity() > 0, "a busy reader keeps its buffer");
        // Nothing more comes for a while: the reader waits with no buffer.
        {
            let reading = reader.next_frame();
            tokio::pin!(reading);
            tokio::select! {
                _ = &mut reading => panic!("nothing was sent"),
                () = tokio::time::sleep(RELEASE_AFTER * 3) => {}
            }
        }
        assert_eq!(reader.buf.capacity(), 0);
        peer.write_all(&wire).await.unwrap();
        assert_eq!(reader.next_frame().await.unwrap().unwrap().header().id(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_reader_lets_go_of_large_frames_memory_too() {
        let (mut peer, mut reader, _write, _) = socket_reader_of(4 << 20).await;
        let mut wire = bytes::BytesMut::new();
        for id in 1..=3u8 {
            let frame = Frame::new(Kind::Response, id.into(), Bytes::from(vec![id; 1 << 20])).unwrap();
            frame.header().encode(&mut wire);
            wire.extend_from_slice(frame.payload());
        }
        peer.write_all(&wire).await.unwrap();
        // Held, as a user would hold them for a while: each needs new room.
        let mut held = Vec::new();
        for id in 1..=3u8 {
            let frame = reader.next_frame().await.unwrap().unwrap();
            assert!(frame.payload().iter().all(|byte| *byte == id));
            held.push(frame);
        }
        assert!(reader.spare.holds_memory(), "large frames leave a spare");
        drop(held);
        {
            let reading = reader.next_frame();
            tokio::pin!(reading);
            tokio::select! {
                _ = &mut reading => panic!("nothing was sent"),
                () = tokio::time::sleep(RELEASE_AFTER * 3) => {}
            }
        }
        assert!(reader.released, "the buffer was given back");
        assert!(!reader.spare.holds_memory(), "and the spare with it");
    }
}
