//! When a connection's task on a current-thread runtime gives way to the
//! runtime's other tasks at once: after a large frame.
//!
//! A frame's memory is let go only when its user is done with it: a call
//! that echoes a blob holds its request's memory until the answer is
//! written, a caller holds its answer's until it drops it. On a
//! current-thread runtime those users run only when the connection's task
//! gives way, so a connection that read several large frames in a row held
//! the memory of every one, and read the next into new memory. The
//! allocator had given the memory of the frames before back to the
//! system, so the new memory faulted in its every page: with eight 1 MiB
//! echoes in flight, tens of page faults a call on each side (24 to 43 on
//! the server's), costing more than reading the frame.
//!
//! Given way after each large frame, the frame's user runs first (as a
//! rule: tokio lets a task that gave way run again early every 61st turn
//! of the runtime, `event_interval`), and the next frame is read into the
//! memory it let go (the reader's buffer, or one of its spares). On a
//! multi-thread runtime the other workers run the users meanwhile.

/// Frames of this many payload bytes or more end a connection's turn on a
/// current-thread runtime. Reading one (and copying it, a system call or
/// two) takes several microseconds; a turn given away, well under one.
/// Shorter frames come many to a read, and share the reader's buffer.
pub(crate) const LARGE_FRAME: usize = 64 * 1024;

/// Whether the task asking runs on a current-thread runtime (not outside
/// a runtime, nor on a multi-thread one).
pub(crate) fn on_current_thread() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread)
    )
}
