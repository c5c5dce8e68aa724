//! The seam between the runtime and a byte transport.
//!
//! `rpc-core` never touches sockets: it reads frames from a [`FrameRead`]
//! and writes batches of frames to a [`FrameWrite`]. `rpc-transport`
//! implements both over any `AsyncRead`/`AsyncWrite` (TCP, Unix sockets,
//! in-memory pipes), after the connection preface has been exchanged, and
//! hands the runtime an [`Established`] connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::error::Error;
use crate::frame::{Frame, HEADER_LEN, Header, MAX_PAYLOAD_LEN, Preface};
use crate::peer::Peer;

/// The receiving half of a connection.
pub trait FrameRead: Send + 'static {
    /// Reads the next frame; `Ok(None)` when the peer closed the connection
    /// cleanly between frames.
    ///
    /// Errors are [`Error::Protocol`] for bytes that break the protocol and
    /// [`Error::Disconnected`] for I/O failures; either ends the connection.
    ///
    /// Must be cancel-safe: the server drops this future when something
    /// else wakes it first, and a partly read frame must not be lost.
    fn read_frame(&mut self) -> impl Future<Output = Result<Option<Frame>, Error>> + Send;

    /// The next frame if its bytes have all arrived already, without
    /// waiting or reading: `None` when a read would be needed. Lets a
    /// reader take a burst of frames that came together in one go. The
    /// default is always `None`.
    fn buffered_frame(&mut self) -> Option<Result<Frame, Error>> {
        None
    }

    /// The next frame if its bytes have all arrived already (the one
    /// [`buffered_frame`](Self::buffered_frame) would return), lent where it
    /// lies rather than split off as bytes of its own: `take` sees its
    /// header and payload, and either takes it (`Some`), which removes it
    /// from the reader, or leaves it (`None`). `None` too when no whole
    /// frame is buffered, or its header is broken (for
    /// [`buffered_frame`](Self::buffered_frame) to report). A client takes
    /// short answers this way, copied out: no share in the read buffer to
    /// count up and down. The default lends nothing.
    fn lend_frame<T>(&mut self, take: impl FnOnce(Header, &[u8]) -> Option<T>) -> Option<T> {
        let _ = take;
        None
    }

    /// The reader's owner stopped reading for a while of its own accord
    /// (its queue of calls was full) and reads again: a frame begun before
    /// the pause gets its full timeout from now, since the wait was not
    /// the peer's. The default does nothing.
    fn resume(&mut self) {}

    /// Reads and throws away up to `limit` bytes, until the peer closes or
    /// an error; used when closing a connection so its last frames are not
    /// destroyed by a reset.
    fn discard(&mut self, limit: usize) -> impl Future<Output = ()> + Send;
}

/// The sending half of a connection.
pub trait FrameWrite: Send + 'static {
    /// Writes every frame of `frames`, in order.
    ///
    /// The runtime calls [`write_encoded`](FrameWrite::write_encoded); its
    /// default comes here with the frames of a batch, everything that
    /// queued up while the previous batch was being written, so
    /// implementations should use as few system calls as they can.
    fn write_frames<'a, I>(&mut self, frames: I) -> impl Future<Output = Result<(), Error>> + Send
    where
        I: Iterator<Item = &'a Frame> + Clone + Send;

    /// Writes a batch of frames the runtime has already encoded, header
    /// after payload, in order, as one run of bytes: what the runtime calls
    /// for every batch. A byte stream writes it as it is (`rpc-transport`
    /// does, with vectored writes); the default takes the frames apart
    /// again and hands them to [`write_frames`](FrameWrite::write_frames),
    /// so a transport that implements only that still works.
    fn write_encoded(&mut self, batch: &mut Encoded) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            let frames = batch.frames()?;
            self.write_frames(frames.iter()).await
        }
    }

    /// Nothing has been queued for a while: a good moment to give back
    /// large buffers, so that an idle connection costs little memory.
    /// Optional.
    fn idle(&mut self) {}

    /// Flushes and closes the sending direction.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// When a connection has been quiet long enough to give its buffers back:
/// [`Quiet::elapsed`] completes no sooner than `after` since the last
/// [`Quiet::heard`], and no later than twice that. The runtime's writer
/// uses one, and so does `rpc-transport`'s reader.
///
/// The timer of a busy connection (one heard at least once every `after`)
/// never fires. Noting activity reads the clock and, once less than `after`
/// is left, pushes the timer back to twice that: a timer update at most
/// once per `after`, and no task woken (the runtime's timer thread still
/// wakes at the old deadline, to file the timer again). A timer left to
/// fire and be set again woke its task every `after` for nothing; on a
/// multi-thread runtime those wakes drew a second worker into a single
/// connection's work, and its calls' latency grew a tail.
///
/// An `after` longer than [`Quiet::MAX_AFTER`] is taken as that.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::transport::Quiet;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut quiet = Quiet::new(Duration::from_millis(100));
/// tokio::time::sleep(Duration::from_millis(60)).await;
/// quiet.heard();
/// let started = tokio::time::Instant::now();
/// quiet.elapsed().await;
/// let waited = started.elapsed();
/// assert!(waited >= Duration::from_millis(100) && waited <= Duration::from_millis(200));
/// # }
/// ```
#[derive(Debug)]
pub struct Quiet {
    timer: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

impl Quiet {
    /// The longest quiet a timer waits for: fifteen years, so that twice
    /// it stays within what tokio's timer takes.
    pub const MAX_AFTER: Duration = Duration::from_secs(15 * 365 * 24 * 3600);

    /// A timer that fires `after` from now, if nothing is heard meanwhile.
    /// Must be made inside a tokio runtime with its timer enabled.
    pub fn new(after: Duration) -> Quiet {
        let after = after.min(Quiet::MAX_AFTER);
        Quiet {
            timer: Box::pin(tokio::time::sleep(after)),
            after,
        }
    }

    /// The connection was active: a read or a write.
    pub fn heard(&mut self) {
        let now = tokio::time::Instant::now();
        let deadline = self.timer.deadline();
        if deadline.saturating_duration_since(now) < self.after {
            // A clock too near its end to add to is as good as never.
            if let Some(later) = now.checked_add(self.after * 2) {
                self.timer.as_mut().reset(later);
            }
        }
    }

    /// Completes once the connection has been quiet for `after` at least.
    /// Cancel-safe: dropped while waiting, it loses nothing.
    pub async fn elapsed(&mut self) {
        self.timer.as_mut().await;
    }
}

/// Payloads at least this large are queued as chunks of their own;
/// smaller ones are copied next to their header, since one buffer of many
/// small frames is cheaper to write than a slice each.
pub(crate) const COPY_BELOW: usize = 4 * 1024;

/// Least room a run of small frames grows by.
///
/// A run is cut off into a chunk while the frames after it are queued, so
/// its memory is shared until the chunk is written. A run that must grow
/// before then gets memory of its own, and `bytes` gives it only what was
/// asked for (it remembers the capacity a buffer was made with, and the
/// outbox's starts empty): without a floor, a connection with a few calls
/// in flight would allocate afresh for every batch, and again at each
/// doubling.
const TAIL_ROOM: usize = 1024;

/// Makes room for `additional` more bytes at the end of `tail`.
#[inline(always)]
fn reserve_tail(tail: &mut BytesMut, additional: usize) {
    // Taken back whole if nothing holds it any more (asking `reserve`
    // for the floor would double a small buffer it could reuse).
    if tail.capacity() - tail.len() < additional && !tail.try_reclaim(additional) {
        tail.reserve(additional.max(TAIL_ROOM));
    }
}

/// A batch of encoded frames: their bytes in order, as the chunks they were
/// queued in (runs of small frames, and large payloads as they are), ready
/// for a vectored write. Reading it as a [`Buf`] consumes it.
///
/// ```
/// use bytes::{Buf, Bytes};
/// use rpc_core::transport::Encoded;
///
/// let mut batch = Encoded::default();
/// batch.push(Bytes::from_static(b"head"));
/// batch.push(Bytes::from_static(b"payload"));
/// assert_eq!(batch.remaining(), 11);
/// assert_eq!(batch.copy_to_bytes(11), Bytes::from_static(b"headpayload"));
/// ```
#[derive(Debug, Default)]
pub struct Encoded {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Encoded {
    /// Appends `chunk`, after everything already in the batch.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Appends a frame: its header, and its payload if short, are copied to
    /// the end of `tail`, a run of small frames that becomes a chunk when
    /// it is pushed; a long payload becomes a chunk of its own, after the
    /// run cut off in front of it.
    pub fn push_frame(&mut self, tail: &mut BytesMut, header: &Header, payload: &Bytes) {
        self.push_frame_stamped(tail, header, &[], std::slice::from_ref(payload));
    }

    /// [`Encoded::push_frame`], of a payload in `parts` (each long one a
    /// chunk of its own), with the payload's first bytes written as `stamp`
    /// instead (a queued request's budget, stamped as it leaves). Inlined,
    /// so that a frame without a stamp costs nothing for it.
    #[inline(always)]
    pub(crate) fn push_frame_stamped(
        &mut self,
        tail: &mut BytesMut,
        header: &Header,
        stamp: &[u8],
        parts: &[Bytes],
    ) {
        let head = header.to_bytes();
        let Some((first, rest)) = parts.split_first() else {
            tail.extend_from_slice(&head);
            return;
        };
        self.push_part(tail, &head, stamp, first);
        for part in rest {
            self.push_part(tail, &[], &[], part);
        }
    }

    /// Appends a frame whose payload is shorter than [`COPY_BELOW`] (a
    /// longer one goes through [`Encoded::push_frame`], to be sent from
    /// where it lies): header and payload copied to the end of `tail`.
    #[inline(always)]
    pub(crate) fn push_short_frame(tail: &mut BytesMut, header: &Header, payload: &[u8]) {
        debug_assert!(payload.len() < COPY_BELOW);
        let head = header.to_bytes();
        reserve_tail(tail, head.len() + payload.len());
        tail.extend_from_slice(&head);
        tail.extend_from_slice(payload);
    }

    /// Appends `head` and `part`, with `part`'s first bytes written as
    /// `stamp` instead.
    #[inline(always)]
    fn push_part(&mut self, tail: &mut BytesMut, head: &[u8], stamp: &[u8], part: &Bytes) {
        // Every request opens with its budget; were a payload shorter, it
        // would go as it is.
        let (stamp, rest) = match part.get(stamp.len()..) {
            Some(rest) => (stamp, rest),
            None => (&[][..], &part[..]),
        };
        if part.len() >= COPY_BELOW {
            reserve_tail(tail, head.len() + stamp.len());
            tail.extend_from_slice(head);
            tail.extend_from_slice(stamp);
            self.push(tail.split().freeze());
            self.push(part.slice(stamp.len()..));
        } else {
            // Room for all at once: one check, at most one allocation.
            reserve_tail(tail, head.len() + part.len());
            tail.extend_from_slice(head);
            tail.extend_from_slice(stamp);
            tail.extend_from_slice(rest);
        }
    }

    /// Moves every chunk of `other` to the end of this batch, leaving
    /// `other` empty.
    pub fn append(&mut self, other: &mut Encoded) {
        self.remaining += std::mem::take(&mut other.remaining);
        self.chunks.append(&mut other.chunks);
    }

    /// Empties the batch, keeping its room for chunks.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.remaining = 0;
    }

    /// Gives back room for chunks beyond `chunks`, for an idle connection.
    pub fn shrink_to(&mut self, chunks: usize) {
        self.chunks.shrink_to(chunks);
    }

    /// The batch taken apart into frames (the default
    /// [`FrameWrite::write_encoded`]); consumes it.
    fn frames(&mut self) -> Result<Vec<Frame>, Error> {
        let mut frames = Vec::new();
        while self.remaining >= HEADER_LEN {
            let mut bytes = [0; HEADER_LEN];
            self.copy_to_slice(&mut bytes);
            // The runtime encoded these itself: only a bug makes them bad.
            let header = Header::parse(&bytes, MAX_PAYLOAD_LEN).map_err(|err| {
                Error::disconnected(format!("an encoded batch holds a bad frame header: {err}"))
            })?;
            if self.remaining < header.payload_len() {
                break;
            }
            let payload = self.copy_to_bytes(header.payload_len());
            frames.push(Frame::new(header.kind(), header.id(), payload)?);
        }
        if self.remaining > 0 {
            return Err(Error::disconnected(
                "an encoded batch ends in the middle of a frame",
            ));
        }
        Ok(frames)
    }
}

impl Buf for Encoded {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |chunk| &chunk[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining = self.remaining.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        // A payload queued as a chunk of its own comes back out as it is.
        match self.chunks.front_mut() {
            Some(front) if front.len() == len => {
                self.remaining -= len;
                self.chunks.pop_front().unwrap_or_default()
            }
            Some(front) if front.len() > len => {
                self.remaining -= len;
                front.split_to(len)
            }
            _ => {
                let mut out = bytes::BytesMut::with_capacity(len);
                bytes::BufMut::put(&mut out, (&mut *self).take(len));
                out.freeze()
            }
        }
    }
}

/// A connection whose preface exchange succeeded: its two halves, what the
/// peer announced, and who the peer is.
#[derive(Debug)]
pub struct Established<R, W> {
    /// Frames from the peer.
    pub reader: R,
    /// Frames to the peer.
    pub writer: W,
    /// The peer's preface (its version, frame limit and call cap).
    pub preface: Preface,
    /// Who is at the other end, as the transport knows it.
    pub peer: Peer,
}

/// An established connection, under its old name.
#[deprecated(
    since = "0.2.0",
    note = "renamed `Established`; its `peer` field is now `preface`"
)]
pub type Connection<R, W> = Established<R, W>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};

    use super::*;

    const AFTER: Duration = Duration::from_millis(100);

    /// Counts the wakes of whoever waits on the timer.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `quiet.elapsed()` once, as a writer waiting for frames does:
    /// whether it completed.
    fn look(quiet: &mut Quiet, waker: &Waker) -> bool {
        let elapsed = std::pin::pin!(quiet.elapsed());
        elapsed.poll(&mut Context::from_waker(waker)).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connections_timer_wakes_nobody() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut quiet = Quiet::new(AFTER);
        // Heard every three quarters of `after`, for nine times `after`:
        // the timer is pushed back before it is due, every time.
        for _ in 0..12 {
            assert!(!look(&mut quiet, &waker));
            tokio::time::advance(AFTER * 3 / 4).await;
            quiet.heard();
        }
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a busy connection's timer fired"
        );
        // Quiet from now on: done within twice `after`.
        assert!(!look(&mut quiet, &waker));
        tokio::time::advance(AFTER * 2).await;
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(look(&mut quiet, &waker));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_of_the_longest_quiet_is_not_due_within_a_year() {
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut quiet = Quiet::new(Duration::MAX);
        quiet.heard();
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert!(!look(&mut quiet, &waker));
    }
}
