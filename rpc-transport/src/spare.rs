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
//! memory its last large frames were read into, and reads the next large
//! one into the oldest of them with room for it (its users have let it
//! go, or what is left behind its last frame is room enough): with several
//! calls in flight, several frames are held at once (an echoed blob until
//! its answer is written), and two buffers taking turns would seldom find
//! one free.

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
/// which the spares are let go: the connection has stopped receiving large
/// frames.
const SPARE_NEEDS: usize = 64;

/// Most large buffers kept on a multi-thread runtime. More would keep
/// more echoes' memory, but memory kept here is memory the allocator
/// cannot hand a handler (the `Vec` it decodes a blob into), which then
/// faults its pages in.
const MAX_SPARES: usize = 4;

/// Most large buffers kept by a reader that cannot give its memory back
/// while its connection is idle (over a stream that cannot wait for
/// bytes without a buffer, such as TLS): it holds them until the
/// connection closes.
const MAX_SPARES_KEPT_IDLE: usize = 1;

/// Most large buffers kept on a current-thread runtime, where one thread's
/// heap serves the reader and every handler it runs: with four, glibc's
/// heap served the handlers' `Vec`s from memory it had given back to the
/// system, and `Vec<u8>` echoes lost a tenth (with eight, a quarter),
/// while `rpc::Bytes` echoes gained less than on a multi-thread runtime.
const MAX_SPARES_CURRENT_THREAD: usize = 1;

/// Most memory the spares hold together: past it, the oldest go (but the
/// newest, which is kept whatever its size).
const MAX_SPARE_BYTES: usize = 16 * 1024 * 1024;

/// The large memory a reader keeps for its next large frames.
///
/// A reader holds at most [`MAX_SPARES`] large buffers
/// ([`MAX_SPARES_CURRENT_THREAD`] on a current-thread runtime,
/// [`MAX_SPARES_KEPT_IDLE`] if it cannot give them back when idle), and
/// [`MAX_SPARE_BYTES`], beyond the frames its users hold and the one it
/// reads into: memory its frames held a moment ago, while the connection
/// receives large frames (see [`SPARE_NEEDS`]). A quiet reader over a
/// socket gives them back with its buffer.
#[derive(Debug)]
pub(crate) struct Spare {
    /// The memory the reader left for other memory while it was large,
    /// emptied, oldest first, with the size it was taken at (a buffer's
    /// capacity counts only from where its last frame ended).
    bufs: Vec<(BytesMut, usize)>,
    /// The size of the large memory the reader's buffer is in, if it is.
    large: Option<usize>,
    /// Needs for room for short frames since the last for a large one.
    unused: usize,
    /// Most buffers kept.
    max: usize,
}

impl Spare {
    /// Spares for a reader made on the runtime it runs on (outside one,
    /// as on a multi-thread runtime), which `releases` its memory when
    /// idle or not.
    pub(crate) fn new(releases: bool) -> Spare {
        let flavor = tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor());
        let max = match flavor {
            _ if !releases => MAX_SPARES_KEPT_IDLE,
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => MAX_SPARES_CURRENT_THREAD,
            _ => MAX_SPARES,
        };
        Spare::keeping(max)
    }

    /// Spares, at most `max` of them.
    fn keeping(max: usize) -> Spare {
        Spare {
            bufs: Vec::new(),
            large: None,
            unused: 0,
            max,
        }
    }

    /// Makes room in `buf`, the reader's buffer, for `additional` more
    /// bytes of a frame of `frame_len` bytes, if its header has arrived:
    /// in the memory it is in if nothing else holds that any more, else,
    /// when large memory is wanted or left, in the oldest spare whose
    /// frames' users have let it go (or whose tail has the room), else in
    /// new memory. Large memory left behind becomes a spare.
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
        // (One still held may lend the room behind its last frame.)
        let free = self
            .bufs
            .iter_mut()
            .position(|(spare, _)| spare.try_reclaim(needed))
            .map(|at| self.bufs.remove(at));
        if free.is_none() && needed < SPARE_FROM && self.large.is_none() {
            buf.reserve(additional);
            return;
        }
        let (mut room, large) = match free {
            Some((spare, size)) => (spare, Some(size)),
            None => {
                let size = needed + PAST_FRAME;
                (
                    BytesMut::with_capacity(size),
                    (needed >= SPARE_FROM).then_some(size),
                )
            }
        };
        room.extend_from_slice(buf);
        let mut left = std::mem::replace(buf, room);
        // Large memory just left becomes a spare, the newest; the oldest
        // go past the bounds.
        if let Some(size) = std::mem::replace(&mut self.large, large) {
            left.clear();
            self.bufs.push((left, size));
            // The newest stays whatever its size, as the one spare did.
            while self.bufs.len() > self.max
                || (self.bufs.len() > 1
                    && self.bufs.iter().map(|(_, size)| size).sum::<usize>() > MAX_SPARE_BYTES)
            {
                self.bufs.remove(0);
            }
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
            self.bufs = Vec::new();
        }
    }

    /// Whether a spare is kept.
    #[cfg(test)]
    pub(crate) fn holds_memory(&self) -> bool {
        !self.bufs.is_empty()
    }

    /// Forgets the spares, for a reader that gave its buffer back.
    pub(crate) fn release(&mut self) {
        *self = Spare::keeping(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: usize = 1 << 20;

    /// A large frame read into `buf` and split off: what its user keeps.
    fn read_large(spare: &mut Spare, buf: &mut BytesMut, fill: u8) -> bytes::Bytes {
        read_sized(spare, buf, LARGE, fill)
    }

    /// A frame of `len` bytes of `fill` read into `buf` and split off.
    fn read_sized(spare: &mut Spare, buf: &mut BytesMut, len: usize, fill: u8) -> bytes::Bytes {
        spare.make_room(buf, len, Some(len));
        buf.resize(buf.len() + len, fill);
        buf.split_to(len).freeze()
    }

    #[test]
    fn large_frames_take_turns_in_buffers_once_their_users_let_go() {
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
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
    fn with_several_large_frames_held_the_next_go_where_their_users_let_go() {
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
        let mut held: Vec<_> = (0..4u8)
            .map(|fill| read_large(&mut spare, &mut buf, fill))
            .collect();
        let at: Vec<_> = held.iter().map(|frame| frame.as_ptr()).collect();
        assert_eq!(spare.bufs.len(), 3, "the memory of each frame but the last");
        // The first and the third are let go; the rest still held.
        let third = held.remove(2);
        let first = held.remove(0);
        drop((first, third));
        let next = read_large(&mut spare, &mut buf, 4);
        let after = read_large(&mut spare, &mut buf, 5);
        assert_eq!(
            (next.as_ptr(), after.as_ptr()),
            (at[0], at[2]),
            "read into the memory let go, oldest first"
        );
        assert!(next.iter().all(|byte| *byte == 4) && after.iter().all(|byte| *byte == 5));
        assert!(
            held.iter()
                .zip([1u8, 3])
                .all(|(frame, fill)| frame.iter().all(|byte| *byte == fill))
        );
    }

    #[test]
    fn a_reader_on_a_current_thread_runtime_keeps_one_spare() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (mut spare, mut buf) = (runtime.block_on(async { Spare::new(true) }), BytesMut::new());
        let _held: Vec<_> = (0..4u8)
            .map(|fill| read_large(&mut spare, &mut buf, fill))
            .collect();
        assert_eq!(spare.bufs.len(), MAX_SPARES_CURRENT_THREAD);
        let runtime = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        assert_eq!(runtime.block_on(async { Spare::new(true) }).max, MAX_SPARES);
        assert_eq!(
            runtime.block_on(async { Spare::new(false) }).max,
            MAX_SPARES_KEPT_IDLE,
            "a reader that keeps its memory while idle keeps one spare"
        );
    }

    #[test]
    fn the_newest_spare_is_kept_whatever_its_size() {
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
        let huge = MAX_SPARE_BYTES + 1;
        let _held: Vec<_> = (0..2)
            .map(|_| read_sized(&mut spare, &mut buf, huge, 0))
            .collect();
        assert_eq!(spare.bufs.len(), 1, "one past the bound, kept alone");
    }

    #[test]
    fn spares_are_kept_within_their_bounds() {
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
        // Past the count: the oldest go.
        let _held: Vec<_> = (0..2 * MAX_SPARES as u8)
            .map(|fill| read_large(&mut spare, &mut buf, fill))
            .collect();
        assert_eq!(spare.bufs.len(), MAX_SPARES);
        // Past the bytes: fewer, larger ones.
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
        let huge = MAX_SPARE_BYTES / 3;
        let _held: Vec<_> = (0..6)
            .map(|_| read_sized(&mut spare, &mut buf, huge, 0))
            .collect();
        let kept: usize = spare.bufs.iter().map(|(_, size)| size).sum();
        assert!(
            kept <= MAX_SPARE_BYTES && spare.bufs.len() == 2,
            "{kept} bytes in {} spares",
            spare.bufs.len()
        );
    }

    #[test]
    fn the_spare_goes_after_a_run_of_needs_for_small_frames() {
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
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
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
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
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
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
        let (mut spare, mut buf) = (Spare::new(true), BytesMut::new());
        spare.make_room(&mut buf, 8 * 1024, None);
        assert!(buf.capacity() >= 8 * 1024);
        assert!(spare.bufs.is_empty() && spare.large.is_none());
    }
}
