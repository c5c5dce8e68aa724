//! [`Spare`]: where a reader's buffer finds room for large frames, so that
//! a connection that receives them one after another reads each into
//! memory it already has.
//!
//! A frame leaves the reader as a slice of its buffer, which its user
//! keeps (a received `rpc::Bytes` is that slice), so the next frame needs
//! other memory. Taken fresh for every frame, a large frame's memory goes
//! back to the allocator when its user is done, and the allocator may give
//! it back to the system; the next frame then faults in every 4 KiB page
//! anew, which costs more than reading it. The reader keeps instead the
//! memory the last large frame was read into, and reads the next large
//! one into it once its user has let it go: two buffers that take turns.

use bytes::BytesMut;

/// Room wanted from this size on comes from large memory, which is kept.
pub(crate) const SPARE_FROM: usize = 256 * 1024;

/// Room taken past a large frame: the start of the next frame can arrive
/// with its end, and the read that ends it does not fill the buffer to
/// its last byte (which would leave the socket looking readable, and the
/// reader waiting in that read, holding its memory, when the connection
/// goes quiet).
const PAST_FRAME: usize = 8 * 1024;

/// Needs for room in a row for frames shorter than [`SPARE_FROM`] after
/// which the spare is let go: the connection has stopped receiving large
/// frames.
const SPARE_NEEDS: usize = 64;

/// The large memory a reader keeps for its next large frame.
///
/// A reader holds at most two large buffers beyond the frames its users
/// hold: the one it reads into, and the spare.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    /// The memory the reader left for other memory while it was large,
    /// emptied.
    buf: Option<BytesMut>,
    /// The reader's buffer is in large memory.
    large: bool,
    /// Needs for room for short frames since the last for a large one.
    unused: usize,
}

impl Spare {
    /// Makes room in `buf`, the reader's buffer, for `additional` more
    /// bytes of a frame of `frame_len` bytes, if its header has arrived:
    /// in the memory it is in if nothing else holds that any more, else,
    /// when large memory is wanted or left, in the spare if its frames'
    /// users have let it go, else in new memory. Large memory left behind
    /// becomes the spare.
    pub(crate) fn make_room(&mut self, buf: &mut BytesMut, additional: usize, frame_len: Option<usize>) {
        if let Some(frame_len) = frame_len {
            self.count(frame_len >= SPARE_FROM);
        }
        if buf.capacity() - buf.len() >= additional || buf.try_reclaim(additional) {
            return;
        }
        let needed = buf.len() + additional;
        // A spare free again has room for this frame and likely the whole
        // of the next: taken for any need, the frame then grows no more.
        let free = self.buf.take_if(|spare| spare.try_reclaim(needed));
        if free.is_none() && needed < SPARE_FROM && !self.large {
            buf.reserve(additional);
            return;
        }
        let (mut room, large) = match free {
            Some(spare) => (spare, true),
            None => (BytesMut::with_capacity(needed + PAST_FRAME), needed >= SPARE_FROM),
        };
        room.extend_from_slice(buf);
        let mut left = std::mem::replace(buf, room);
        // Large memory just left becomes the spare, in place of any other
        // (whose frames were still held a moment ago).
        if std::mem::replace(&mut self.large, large) {
            left.clear();
            self.buf = Some(left);
        }
    }

    /// Counts a need for room for a frame, `large` if the frame is: the
    /// spare goes after [`SPARE_NEEDS`] needs in a row for short frames
    /// (a short frame needs room when it reaches the end of the buffer:
    /// once the buffer is in use, each is for 8 KiB or more of them).
    fn count(&mut self, large: bool) {
        if large {
            self.unused = 0;
            return;
        }
        self.unused += 1;
        if self.unused >= SPARE_NEEDS {
            self.buf = None;
        }
    }

    /// Whether a spare is kept.
    #[cfg(test)]
    pub(crate) fn holds_memory(&self) -> bool {
        self.buf.is_some()
    }

    /// Forgets the spare, for a reader that gave its buffer back.
    pub(crate) fn release(&mut self) {
        *self = Spare::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: usize = 1 << 20;

    /// A large frame read into `buf` and split off: what its user keeps.
    fn read_large(spare: &mut Spare, buf: &mut BytesMut, fill: u8) -> bytes::Bytes {
        spare.make_room(buf, LARGE, Some(LARGE));
        buf.extend_from_slice(&vec![fill; LARGE]);
        buf.split_to(LARGE).freeze()
    }

    #[test]
    fn large_frames_take_turns_in_two_buffers_once_their_users_let_go() {
        let (mut spare, mut buf) = (Spare::default(), BytesMut::new());
        let first = read_large(&mut spare, &mut buf, 1);
        let second = read_large(&mut spare, &mut buf, 2);
        let (at_first, at_second) = (first.as_ptr(), second.as_ptr());
        assert_ne!(at_first, at_second, "the first is still held");
        drop(first);
        let third = read_large(&mut spare, &mut buf, 3);
        assert_eq!(third.as_ptr(), at_first, "read into the first's memory");
        drop(second);
        let fourth = read_large(&mut spare, &mut buf, 4);
        assert_eq!(fourth.as_ptr(), at_second, "and then into the second's");
        assert!(third.iter().all(|byte| *byte == 3) && fourth.iter().all(|byte| *byte == 4));
    }

    #[test]
    fn the_spare_goes_after_a_run_of_needs_for_small_frames() {
        let (mut spare, mut buf) = (Spare::default(), BytesMut::new());
        let _held: Vec<_> = (0..3u8)
            .map(|fill| read_large(&mut spare, &mut buf, fill))
            .collect();
        assert!(spare.holds_memory());
        for _ in 1..SPARE_NEEDS {
            spare.count(false);
        }
        spare.count(true);
        for _ in 1..SPARE_NEEDS {
            spare.count(false);
        }
        assert!(spare.holds_memory(), "a large frame starts the count again");
        spare.count(false);
        assert!(
            !spare.holds_memory(),
            "let go after {SPARE_NEEDS} needs for small frames in a row"
        );
    }

    #[test]
    fn large_frames_keep_the_spare_however_their_room_is_found() {
        let (mut spare, mut buf) = (Spare::default(), BytesMut::new());
        // Two held at once leave a spare.
        let held = (
            read_large(&mut spare, &mut buf, 1),
            read_large(&mut spare, &mut buf, 2),
        );
        drop(held);
        assert!(spare.holds_memory());
        // Then each frame is let go before the next: as the codec asks,
        // a first step finds its room in place, and the frame fits.
        const STEP: usize = 64 * 1024;
        for fill in 0..2 * SPARE_NEEDS {
            spare.make_room(&mut buf, STEP, Some(LARGE));
            if buf.capacity() - buf.len() < LARGE {
                spare.make_room(&mut buf, LARGE, Some(LARGE));
            }
            buf.extend_from_slice(&vec![fill as u8; LARGE]);
            drop(buf.split_to(LARGE));
        }
        assert!(spare.holds_memory(), "a run of large frames keeps it");
    }

    #[test]
    fn bytes_already_read_move_with_the_frame_into_the_spare() {
        let (mut spare, mut buf) = (Spare::default(), BytesMut::new());
        let first = read_large(&mut spare, &mut buf, 1);
        let _second = read_large(&mut spare, &mut buf, 2);
        drop(first);
        // The start of the next frame arrived behind the last one.
        buf.extend_from_slice(b"next frame's first bytes");
        spare.make_room(&mut buf, LARGE, Some(LARGE));
        assert_eq!(&buf[..], b"next frame's first bytes");
        assert!(buf.capacity() >= LARGE + 24);
    }

    #[test]
    fn small_frames_grow_the_buffer_as_ever() {
        let (mut spare, mut buf) = (Spare::default(), BytesMut::new());
        spare.make_room(&mut buf, 8 * 1024, None);
        assert!(buf.capacity() >= 8 * 1024);
        assert!(spare.buf.is_none() && !spare.large);
    }
}
