//! When a connection's task gives way to the runtime's other tasks at
//! once: after a large frame.
//!
//! A frame's memory is let go only when its user is done with it: a call
//! that echoes a blob holds its request's memory until the answer is
//! written, a caller holds its answer's until it drops it. A connection
//! that read several large frames in a row, before their users ran, held
//! the memory of every one, and read the next into new memory. The
//! allocator had given the memory of the frames before back to the
//! system, so the new memory faulted in its every page: with eight 1 MiB
//! echoes in flight, tens of page faults a call on each side (17 to 50 on
//! the server's), costing more than reading the frame. That held on a
//! multi-thread runtime too: the call a frame starts is spawned onto the
//! worker that read it, which read on first.
//!
//! Given way after each large frame, the frame's user runs first (as a
//! rule: a current-thread runtime lets a task that gave way in early every
//! 61st turn of its loop, and on a multi-thread one another worker may
//! take either), and the next frame is read into the memory it let go (the
//! reader's buffer, or one of its spares).

/// Frames of this many payload bytes or more end a connection's turn.
/// Reading one (and copying it, a system call or two) takes several
/// microseconds; a turn given away, well under one. Shorter frames come
/// many to a read, and share the reader's buffer.
pub(crate) const LARGE_FRAME: usize = 64 * 1024;

/// Whether a connection gives way after a frame of `payload_len` bytes.
pub(crate) fn after(payload_len: usize) -> bool {
    payload_len >= LARGE_FRAME
}
