//! [`Limits`]: what a peer may send over one connection.

use std::time::Duration;

use crate::reader::{DEFAULT_FRAME_TIMEOUT, FrameReader};
use crate::stream::ReadHalf;
use rpc_core::frame::{DEFAULT_MAX_FRAME_LEN, Preface};

/// Limits on what the peer may send us over one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted, in bytes; announced in our preface.
    pub max_frame_len: usize,
    /// How long one frame may take to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// For a server: the calls it runs at once per connection, announced in
    /// its preface; it queues as many again, and clients keep fewer than
    /// twice this in flight. Clients leave it 0.
    pub max_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            max_calls: 0,
        }
    }
}

impl Limits {
    /// The preface that announces these limits.
    pub fn preface(&self) -> Preface {
        Preface::ours(self.max_frame_len).with_max_calls(self.max_calls)
    }

    /// A frame reader over `io` that enforces these limits.
    pub fn reader<R: ReadHalf>(&self, io: R) -> FrameReader<R> {
        FrameReader::new(io, self.max_frame_len).with_frame_timeout(self.frame_timeout)
    }
}
