//! The one writer task of a connection.

use tokio::sync::mpsc;

use crate::error::Error;
use crate::frame::Frame;
use crate::server::metrics::CallSlot;
use crate::transport::FrameWrite;

/// Most frames handed to the transport in one batch. Bounds the batch's
/// memory; a full batch of small frames is still a single write.
const MAX_BATCH: usize = 256;

/// A frame on its way out, with the permit that let its call in.
///
/// The permit is released only once the frame is written, so a peer that
/// stops reading holds its calls' permits and cannot make us queue more.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) frame: Frame,
    pub(crate) slot: Option<CallSlot>,
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Outgoing {
        Outgoing { frame, slot: None }
    }
}

/// Writes frames from `outbox` until every sender is gone, then closes the
/// sending direction.
///
/// Whatever queued up while the previous batch was being written goes out
/// as the next batch: with many calls in flight that is one write for many
/// frames, with one call it is one write per frame and no added latency.
pub(crate) async fn run<W: FrameWrite>(
    mut writer: W,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut frames = Vec::with_capacity(MAX_BATCH);
    let mut permits = Vec::with_capacity(MAX_BATCH);
    while outbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for out in batch.drain(..) {
            frames.push(out.frame);
            permits.push(out.slot);
        }
        writer.write_frames(&mut frames).await?;
        frames.clear();
        permits.clear();
    }
    writer.shutdown().await
}
