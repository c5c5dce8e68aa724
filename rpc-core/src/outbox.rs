//! [`Outbox`]: a connection's frames on their way to its writer, encoded
//! as they are queued.
//!
//! Senders append a frame's header and payload to one buffer under a lock
//! the writer takes only to swap the buffer out. A frame costs no
//! allocation of its own (the buffer grows now and then, for many), no
//! channel slot and no second copy, and the writer hands the transport a
//! run of small frames as one piece of memory.
//!
//! What piles up while a batch is written is cut into batches of at most
//! [`MAX_BATCH_FRAMES`] frames or [`MAX_BATCH_LEN`] bytes (short of the
//! last frame), so that each write has a bounded amount of work to do
//! within the write timeout, and the permits its frames hold come free
//! batch by batch. (The writer may join a second batch to a small first
//! one, so a write takes at most twice that.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;

use crate::codec::Message;
use crate::codec::splice::Encoding;
use crate::frame::{Frame, Header, Kind, ProtocolError, RequestHead};
use crate::transport::{COPY_BELOW, Encoded};

/// Most frames in one batch.
const MAX_BATCH_FRAMES: usize = 256;

/// Most bytes in one batch, short of its last frame.
const MAX_BATCH_LEN: usize = 4 * 1024 * 1024;

/// The sending side: each clone is a sender, and the writer ends once
/// every sender is gone and everything queued is written. `P` is what a
/// frame keeps held until it is written (a server call's permit).
#[derive(Debug)]
pub(crate) struct Outbox<P> {
    shared: Arc<Shared<P>>,
}

/// A sender that does not keep the writer going: it can send only while
/// some [`Outbox`] is left.
#[derive(Debug)]
pub(crate) struct WeakOutbox<P> {
    shared: Weak<Shared<P>>,
}

/// The writer's side.
#[derive(Debug)]
pub(crate) struct Queued<P> {
    shared: Arc<Shared<P>>,
}

/// The writer is gone: nothing sent now will be written.
#[derive(Debug)]
pub(crate) struct Closed;

/// A frame on its way into the outbox: its header, and its payload in the
/// parts it is sent from.
#[derive(Debug)]
pub(crate) struct Outgoing {
    header: Header,
    payload: Message,
}

impl Outgoing {
    /// A frame of `kind` for call `id` around `payload`, if a header can
    /// say its length.
    pub(crate) fn new(kind: Kind, id: u64, payload: Message) -> Result<Outgoing, ProtocolError> {
        let header = Header::new(kind, id, payload.len())?;
        Ok(Outgoing { header, payload })
    }
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Outgoing {
        let (header, payload) = frame.into_parts();
        Outgoing {
            header,
            payload: Message::from(payload),
        }
    }
}

#[derive(Debug)]
struct Shared<P> {
    queue: Mutex<Queue<P>>,
    /// Live [`Outbox`]es.
    senders: AtomicUsize,
}

#[derive(Debug)]
struct Queue<P> {
    /// Batches cut off whole, oldest first, before `open`.
    full: VecDeque<Batch<P>>,
    /// The batch being filled: its frames, short of the bytes still in
    /// `bytes`.
    open: Batch<P>,
    /// The open batch's last bytes, not cut off into a chunk yet.
    bytes: BytesMut,
    /// The writer, when it waits for frames.
    writer: Option<Waker>,
    /// The writer is gone.
    closed: bool,
}

/// What the writer took from the queue: the frames' bytes, and what they
/// keep held until they are written.
#[derive(Debug)]
pub(crate) struct Batch<P> {
    pub(crate) encoded: Encoded,
    held: Vec<P>,
    frames: usize,
    last_request: u64,
}

impl<P> Default for Batch<P> {
    fn default() -> Batch<P> {
        Batch {
            encoded: Encoded::default(),
            held: Vec::new(),
            frames: 0,
            last_request: 0,
        }
    }
}

impl<P> Batch<P> {
    /// Moves `other`'s frames to the end of this batch, leaving `other`
    /// empty with its room kept.
    fn append(&mut self, other: &mut Batch<P>) {
        self.encoded.append(&mut other.encoded);
        self.held.append(&mut other.held);
        self.frames += std::mem::take(&mut other.frames);
        self.last_request = self.last_request.max(std::mem::take(&mut other.last_request));
    }

    /// Frames in the batch.
    pub(crate) fn frames(&self) -> usize {
        self.frames
    }

    /// The batch's bytes.
    pub(crate) fn len(&self) -> usize {
        bytes::Buf::remaining(&self.encoded)
    }

    /// The id of the batch's last request (requests are queued in id
    /// order, so the highest), if it has one.
    pub(crate) fn last_request(&self) -> Option<u64> {
        Some(self.last_request).filter(|id| *id != 0)
    }

    /// Empties the batch, dropping what its frames held.
    pub(crate) fn clear(&mut self) {
        self.encoded.clear();
        self.held.clear();
        self.frames = 0;
        self.last_request = 0;
    }

    /// Gives back room kept for a busy connection.
    pub(crate) fn shrink_to(&mut self, chunks: usize) {
        self.encoded.shrink_to(chunks);
        self.held.shrink_to(chunks);
    }
}

/// A new outbox and its writer's side.
pub(crate) fn outbox<P>() -> (Outbox<P>, Queued<P>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            full: VecDeque::new(),
            open: Batch::default(),
            bytes: BytesMut::new(),
            writer: None,
            closed: false,
        }),
        senders: AtomicUsize::new(1),
    });
    let queued = Queued {
        shared: Arc::clone(&shared),
    };
    (Outbox { shared }, queued)
}

impl<P> Shared<P> {
    fn lock(&self) -> MutexGuard<'_, Queue<P>> {
        // Every update under the lock leaves the queue whole (a frame is
        // appended by infallible copies), so a panic elsewhere cannot leave
        // it half-done: poisoning is ignored.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<P> Outbox<P> {
    /// Queues a frame; `held` stays held until the frame is written. If
    /// the writer is gone, `held` comes back.
    pub(crate) fn send(&self, frame: impl Into<Outgoing>, held: Option<P>) -> Result<(), Option<P>> {
        let Outgoing { header, payload } = frame.into();
        self.send_parts(header, &[], &payload, held)
    }

    /// Queues a frame of `kind` for call `id` around `payload`: the inner
    /// `Err` if the writer is gone.
    pub(crate) fn send_payload(
        &self,
        kind: Kind,
        id: u64,
        payload: Message,
    ) -> Result<Result<(), Closed>, ProtocolError> {
        let Outgoing { header, payload } = Outgoing::new(kind, id, payload)?;
        Ok(self.send_parts(header, &[], &payload, None).map_err(|_| Closed))
    }

    /// Queues request `id`, whose payload opens with a request head, with
    /// the head's budget stamped anew: `budget`, the time its caller has
    /// left now that it leaves (it waited for a place since it was
    /// encoded). The inner `Err` if the writer is gone.
    pub(crate) fn send_request(
        &self,
        id: u64,
        budget: Duration,
        payload: &Message,
    ) -> Result<Result<(), Closed>, ProtocolError> {
        let header = Header::new(Kind::Request, id, payload.len())?;
        let stamp = RequestHead::budget_field(budget);
        Ok(self.send_parts(header, &stamp, payload, None).map_err(|_| Closed))
    }

    /// Queues a frame of `kind` for call `id` around `payload`, just
    /// encoded: copied from where it lies if it is in one short piece (as a
    /// short payload is copied anyway), else as [`Outbox::send_payload`]
    /// sends it. The inner `Err` if the writer is gone.
    pub(crate) fn send_encoding(
        &self,
        kind: Kind,
        id: u64,
        payload: Encoding<'_>,
    ) -> Result<Result<(), Closed>, ProtocolError> {
        let bytes = match payload {
            Encoding::InPlace(block) if block.bytes().len() < COPY_BELOW => block.bytes(),
            other => return self.send_payload(kind, id, other.into_message()),
        };
        let header = Header::new(kind, id, bytes.len())?;
        let queued = self.queue(&header, None, |_, tail| {
            Encoded::push_short_frame(tail, &header, bytes)
        });
        Ok(queued.map_err(|_| Closed))
    }

    fn send_parts(
        &self,
        header: Header,
        stamp: &[u8],
        payload: &Message,
        held: Option<P>,
    ) -> Result<(), Option<P>> {
        self.queue(&header, held, |encoded, tail| {
            encoded.push_frame_stamped(tail, &header, stamp, payload.parts())
        })
    }

    /// Queues the frame `header` opens, which `push` appends to the open
    /// batch (its chunks, and the run of small frames at their end).
    #[inline(always)]
    fn queue(
        &self,
        header: &Header,
        held: Option<P>,
        push: impl FnOnce(&mut Encoded, &mut BytesMut),
    ) -> Result<(), Option<P>> {
        let mut guard = self.shared.lock();
        if guard.closed {
            return Err(held);
        }
        let queue = &mut *guard;
        push(&mut queue.open.encoded, &mut queue.bytes);
        queue.open.frames += 1;
        if header.kind() == Kind::Request {
            queue.open.last_request = header.id();
        }
        if let Some(held) = held {
            queue.open.held.push(held);
        }
        if queue.open.frames >= MAX_BATCH_FRAMES || queue.open.len() + queue.bytes.len() >= MAX_BATCH_LEN {
            queue.cut();
        }
        let writer = queue.writer.take();
        drop(guard);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// A sender that does not keep the writer going.
    pub(crate) fn downgrade(&self) -> WeakOutbox<P> {
        WeakOutbox {
            shared: Arc::downgrade(&self.shared),
        }
    }
}

impl<P> Queue<P> {
    /// Closes the open batch: the next frame starts a new one.
    fn cut(&mut self) {
        let mut full = Batch::default();
        self.close_open();
        full.append(&mut self.open);
        self.full.push_back(full);
    }

    /// Cuts the open batch's last bytes off into a chunk of its own.
    fn close_open(&mut self) {
        if !self.bytes.is_empty() {
            self.open.encoded.push(self.bytes.split().freeze());
        }
    }

    fn is_empty(&self) -> bool {
        self.full.is_empty() && self.open.frames == 0
    }

    /// Moves the oldest batch into `batch`: `false` if there is none.
    fn move_into(&mut self, batch: &mut Batch<P>) -> bool {
        if let Some(mut full) = self.full.pop_front() {
            batch.append(&mut full);
            return true;
        }
        if self.open.frames == 0 {
            return false;
        }
        self.close_open();
        batch.append(&mut self.open);
        true
    }
}

impl<P> Clone for Outbox<P> {
    fn clone(&self) -> Outbox<P> {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P> Drop for Outbox<P> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: a waiting writer has nothing more to wait
            // for. Taken under the lock the writer registers under, so it
            // either sees no senders or is woken.
            let writer = self.shared.lock().writer.take();
            if let Some(writer) = writer {
                writer.wake();
            }
        }
    }
}

impl<P> WeakOutbox<P> {
    /// A sender, if any is left.
    pub(crate) fn upgrade(&self) -> Option<Outbox<P>> {
        let shared = self.shared.upgrade()?;
        let mut senders = shared.senders.load(Ordering::Relaxed);
        loop {
            if senders == 0 {
                return None;
            }
            match shared.senders.compare_exchange_weak(
                senders,
                senders + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Outbox { shared }),
                Err(now) => senders = now,
            }
        }
    }
}

impl<P> Clone for WeakOutbox<P> {
    fn clone(&self) -> WeakOutbox<P> {
        WeakOutbox {
            shared: Weak::clone(&self.shared),
        }
    }
}

impl<P> Queued<P> {
    /// Moves the oldest batch queued into `batch`, after what it holds:
    /// `false` if nothing was queued.
    pub(crate) fn take(&self, batch: &mut Batch<P>) -> bool {
        let mut queue = self.shared.lock();
        queue.move_into(batch)
    }

    /// Waits for frames and moves the oldest batch of them into `batch`:
    /// `false` once every sender is gone and nothing is left.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, batch: &mut Batch<P>) -> Poll<bool> {
        let mut queue = self.shared.lock();
        if queue.move_into(batch) {
            return Poll::Ready(true);
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(false);
        }
        match &mut queue.writer {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            writer => *writer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// [`poll_take`](Queued::poll_take) as a future.
    pub(crate) async fn taken(&self, batch: &mut Batch<P>) -> bool {
        std::future::poll_fn(|cx| self.poll_take(cx, batch)).await
    }

    /// Gives back the buffer's memory while nothing is queued, for an idle
    /// connection.
    pub(crate) fn release(&self) {
        let mut queue = self.shared.lock();
        if queue.is_empty() {
            queue.bytes = BytesMut::new();
            queue.open = Batch::default();
            queue.full = VecDeque::new();
        }
    }
}

impl<P> Drop for Queued<P> {
    fn drop(&mut self) {
        // Whatever is still queued is never written: what it holds goes
        // now, outside the lock (a permit's release wakes its waiter).
        let left = {
            let mut queue = self.shared.lock();
            queue.closed = true;
            queue.bytes = BytesMut::new();
            (std::mem::take(&mut queue.open), std::mem::take(&mut queue.full))
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, Bytes};

    use super::*;

    fn frame(kind: Kind, id: u64, payload: &'static [u8]) -> Frame {
        Frame::new(kind, id, Bytes::from_static(payload)).unwrap()
    }

    fn drain(batch: &mut Batch<u32>) -> Vec<u8> {
        let len = batch.encoded.remaining();
        batch.encoded.copy_to_bytes(len).to_vec()
    }

    #[test]
    fn frames_come_out_encoded_in_the_order_they_went_in() {
        let (outbox, queued) = outbox::<u32>();
        let large = Bytes::from(vec![7u8; crate::transport::COPY_BELOW]);
        outbox.send(frame(Kind::Request, 1, b"one"), Some(1)).unwrap();
        outbox
            .send(Frame::new(Kind::Request, 2, large.clone()).unwrap(), Some(2))
            .unwrap();
        outbox
            .send_payload(Kind::Cancel, 1, Message::new())
            .unwrap()
            .unwrap();
        let mut batch = Batch::default();
        assert!(queued.take(&mut batch));
        assert_eq!((batch.frames(), batch.last_request()), (3, Some(2)));
        assert_eq!(batch.held, vec![1, 2]);
        let mut want = Vec::new();
        for (kind, id, payload) in [
            (Kind::Request, 1, &b"one"[..]),
            (Kind::Request, 2, &large[..]),
            (Kind::Cancel, 1, b""),
        ] {
            want.extend_from_slice(&Header::new(kind, id, payload.len()).unwrap().to_bytes());
            want.extend_from_slice(payload);
        }
        assert_eq!(batch.len(), want.len());
        assert_eq!(drain(&mut batch), want);
        assert!(!queued.take(&mut batch));
    }

    #[test]
    fn a_backlog_comes_out_in_bounded_batches_in_order() {
        let (outbox, queued) = outbox::<u32>();
        let frames = MAX_BATCH_FRAMES as u32 * 2 + 10;
        for id in 1..=frames {
            outbox
                .send(frame(Kind::Response, u64::from(id), b"answer"), Some(id))
                .unwrap();
        }
        let large = Bytes::from(vec![1u8; MAX_BATCH_LEN]);
        outbox
            .send(Frame::new(Kind::Response, 9_999, large).unwrap(), None)
            .unwrap();
        outbox.send(frame(Kind::Response, 10_000, b"last"), None).unwrap();
        let mut sizes = Vec::new();
        let mut held = Vec::new();
        let mut batch = Batch::default();
        while queued.take(&mut batch) {
            sizes.push(batch.frames());
            held.append(&mut batch.held);
            batch.clear();
        }
        // Whole batches of frames, then the rest with the large frame, which
        // closes its batch; the last frame starts a new one.
        let full = MAX_BATCH_FRAMES;
        assert_eq!(sizes, vec![full, full, 11, 1]);
        assert_eq!(held, (1..=frames).collect::<Vec<_>>());
    }

    #[test]
    fn frames_queued_while_a_batch_is_written_grow_the_buffer_once() {
        let (outbox, queued) = outbox::<u32>();
        let len = Header::new(Kind::Response, 1, 6).unwrap().to_bytes().len() + 6;
        let room = || {
            let queue = outbox.shared.lock();
            queue.bytes.capacity() - queue.bytes.len()
        };
        // A first batch that fills its buffer, held by the writer (as
        // while writing it): the frames behind it need memory of their
        // own, which must not be doubled into frame by frame.
        let mut id = 0;
        while id == 0 || room() >= len {
            id += 1;
            outbox.send(frame(Kind::Response, id, b"answer"), None).unwrap();
        }
        let mut batch = Batch::default();
        assert!(queued.take(&mut batch));
        let mut growths = 0;
        for _ in 0..8 {
            growths += usize::from(room() < len);
            id += 1;
            outbox.send(frame(Kind::Response, id, b"answer"), None).unwrap();
        }
        assert_eq!(growths, 1, "eight short frames grew the buffer {growths} times");
        drop(batch);
    }

    #[test]
    fn a_large_payload_is_queued_without_a_copy() {
        let (outbox, queued) = outbox::<u32>();
        let large = Bytes::from(vec![7u8; crate::transport::COPY_BELOW]);
        outbox
            .send(Frame::new(Kind::Response, 9, large.clone()).unwrap(), None)
            .unwrap();
        let mut batch = Batch::default();
        assert!(queued.take(&mut batch));
        batch.encoded.advance(crate::frame::HEADER_LEN);
        assert_eq!(batch.encoded.chunk().as_ptr(), large.as_ptr());
    }

    #[tokio::test]
    async fn the_writer_waits_for_frames_and_ends_when_every_sender_is_gone() {
        let (outbox, queued) = outbox::<u32>();
        let weak = outbox.downgrade();
        let second = weak.upgrade().expect("a sender is left");
        let mut batch = Batch::default();
        let mut taking = Box::pin(async {
            let got = queued.taken(&mut batch).await;
            (got, batch.frames())
        });
        assert!(futures::FutureExt::now_or_never(taking.as_mut()).is_none());
        second.send(frame(Kind::Response, 3, b"x"), Some(3)).unwrap();
        assert_eq!(taking.await, (true, 1));
        drop(outbox);
        drop(second);
        assert!(weak.upgrade().is_none());
        let mut batch = Batch::default();
        assert!(!queued.taken(&mut batch).await);
    }

    #[test]
    fn what_a_frame_holds_comes_back_once_the_writer_is_gone() {
        let (outbox, queued) = outbox::<Arc<()>>();
        let held = Arc::new(());
        outbox
            .send(frame(Kind::Response, 1, b"x"), Some(Arc::clone(&held)))
            .unwrap();
        drop(queued);
        assert_eq!(Arc::strong_count(&held), 1, "the queued frame's hold was dropped");
        let back = outbox.send(frame(Kind::Response, 2, b"y"), Some(Arc::clone(&held)));
        assert!(matches!(back, Err(Some(_))));
    }
}
