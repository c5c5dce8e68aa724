//! The seam between the runtime and a byte transport.
//!
//! `rpc-core` never touches sockets: it reads frames from a [`FrameRead`]
//! and writes batches of frames to a [`FrameWrite`]. `rpc-transport`
//! implements both over any `AsyncRead`/`AsyncWrite` (TCP, Unix sockets,
//! in-memory pipes), after the connection preface has been exchanged, and
//! hands the runtime an [`Established`] connection.

use std::future::Future;

use crate::error::Error;
use crate::frame::{Frame, Preface};
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
    /// Implementations should use as few system calls as they can: the
    /// runtime hands over everything that queued up while the previous batch
    /// was being written.
    fn write_frames<'a, I>(&mut self, frames: I) -> impl Future<Output = Result<(), Error>> + Send
    where
        I: Iterator<Item = &'a Frame> + Clone + Send;

    /// Nothing has been queued for a while: a good moment to give back
    /// large buffers, so that an idle connection costs little memory.
    /// Optional.
    fn idle(&mut self) {}

    /// Flushes and closes the sending direction.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
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
