//! The one writer task of a connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::frame::{Frame, HEADER_LEN};
use crate::server::metrics::CallSlot;
use crate::transport::FrameWrite;

/// Most frames handed to the transport in one batch. Bounds the batch's
/// memory; a full batch of small frames is still a single write.
const MAX_BATCH: usize = 256;

/// Batches smaller than this are worth delaying (by one pass of the
/// scheduler) to gather more frames; larger ones go out at once, since their
/// write costs far more than a system call.
const COALESCE_BELOW: usize = 16 * 1024;

/// The bytes of a batch's frames.
fn batch_len(batch: &[Outgoing]) -> usize {
    batch
        .iter()
        .map(|out| HEADER_LEN + out.frame.payload().len())
        .sum()
}

/// How long one batch may take to write before the peer is taken to have
/// stopped reading, and the connection is closed. Without it, a peer that
/// never reads would keep the connection, and everything queued for it,
/// alive for ever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a queued frame keeps alive until it is written.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the values are held only to be dropped once the frame is written"
)]
pub(crate) enum Hold {
    /// A server call's place under its connection's limit: a peer that
    /// stops reading holds its calls' places and cannot make us queue more.
    Call(CallSlot),
    /// A client call's place under the in-flight limit, shared with the
    /// call: freed when the call is over *and* its request has left, so
    /// abandoned calls cannot pile requests up behind a stalled socket.
    Place(Arc<OwnedSemaphorePermit>),
}

/// A frame on its way out, with what it holds.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) frame: Frame,
    pub(crate) hold: Option<Hold>,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Outgoing {
        Outgoing { frame, hold: None }
    }
}

/// The places of a connection's calls, which the writer reads to tell
/// whether more frames may be on their way: a server call holds its place
/// until its last frame is written, a client call until its answer comes.
/// Either way, more places held than frames in hand means other calls are
/// under way, and waiting one scheduler pass for their frames is cheap.
#[derive(Debug, Clone)]
pub(crate) struct Places {
    semaphore: Arc<Semaphore>,
    total: usize,
}

impl Places {
    pub(crate) fn new(total: usize) -> Places {
        Places {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The semaphore calls take their places from.
    pub(crate) fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    /// Calls holding a place now.
    fn in_use(&self) -> usize {
        self.total.saturating_sub(self.semaphore.available_permits())
    }
}

/// Writes frames from `outbox` until every sender is gone or `stop` is
/// cancelled, then closes the sending direction.
///
/// Whatever queued up while the previous batch was being written goes out
/// as the next batch: with many calls in flight that is one write for many
/// frames, with one call it is one write per frame and no added latency.
pub(crate) async fn run<W: FrameWrite>(
    mut writer: W,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    places: Places,
    stop: CancellationToken,
    write_timeout: Duration,
) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut frames = Vec::with_capacity(MAX_BATCH);
    let mut holds = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            received = outbox.recv_many(&mut batch, MAX_BATCH) => received,
        };
        if received == 0 {
            break;
        }
        if received < MAX_BATCH && places.in_use() > received && batch_len(&batch) < COALESCE_BELOW {
            // Whoever queued this frame woke us, and tokio runs a task woken
            // that way next, ahead of the other tasks ready to run: small
            // answers finishing together would each get a write (a system
            // call) of their own. With other calls under way, let the ones
            // that are ready queue their frames first. A lone call does not
            // wait, nor does a batch big enough to be worth its write.
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                match outbox.try_recv() {
                    Ok(out) => batch.push(out),
                    Err(_) => break,
                }
            }
        }
        for out in batch.drain(..) {
            frames.push(out.frame);
            holds.push(out.hold);
        }
        match tokio::time::timeout(write_timeout, writer.write_frames(&mut frames)).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(Error::disconnected(format!(
                    "the peer stopped reading: one batch of frames took longer than {write_timeout:?} to write"
                )));
            }
        }
        frames.clear();
        holds.clear();
    }
    writer.shutdown().await
}
