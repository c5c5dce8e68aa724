//! A buffer each thread keeps for encoding short requests, so that
//! encoding one costs no allocation of its own.

use std::cell::RefCell;

use bytes::BytesMut;

/// Requests up to this long are encoded in the thread's buffer; longer
/// ones keep the buffer they grew, as their own.
pub(crate) const SCRATCH_LEN: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The thread's buffer, empty, taken out of its slot: not borrowed across
/// the encoding (which runs the user's `Serialize` code: whatever that
/// does, it finds the slot empty), so a second message encoded meanwhile
/// gets a buffer of its own. A thread whose locals are being torn down
/// lends nothing, and the request gets a buffer of its own too.
pub(crate) fn take() -> BytesMut {
    let mut buf = SCRATCH.try_with(RefCell::take).unwrap_or_default();
    // Full room from the start, so the buffer grows once, not by doubling.
    if buf.capacity() < SCRATCH_LEN {
        buf.reserve(SCRATCH_LEN);
    }
    buf
}

/// Puts a buffer from [`take`] back, emptied, unless it grew too large to
/// keep.
pub(crate) fn give_back(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() <= SCRATCH_LEN {
        let _ = SCRATCH.try_with(|scratch| scratch.replace(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_lent_again_unless_it_grew_too_large() {
        let mut buf = take();
        assert!(buf.is_empty() && buf.capacity() >= SCRATCH_LEN);
        buf.extend_from_slice(b"short");
        let at = buf.as_ptr();
        give_back(buf);
        let again = take();
        assert_eq!((again.as_ptr(), again.len()), (at, 0), "the same buffer, emptied");

        let mut grown = again;
        grown.extend_from_slice(&[1; SCRATCH_LEN * 2]);
        give_back(grown);
        assert!(take().capacity() <= SCRATCH_LEN, "a grown buffer is not kept");
    }
}
