//! The one writer task of a connection.

use tokio::sync::mpsc;

use crate::error::Error;
use crate::frame::Frame;
use crate::transport::FrameWrite;

/// Most frames handed to the transport in one batch. Bounds the batch's
/// memory; a full batch of small frames is still a single write.
const MAX_BATCH: usize = 256;

/// Writes frames from `outbox` until every sender is gone, then closes the
/// sending direction.
///
/// Whatever queued up while the previous batch was being written goes out
/// as the next batch: with many calls in flight that is one write for many
/// frames, with one call it is one write per frame and no added latency.
pub(crate) async fn run<W: FrameWrite>(
    mut writer: W,
    mut outbox: mpsc::Receiver<Frame>,
) -> Result<(), Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while outbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        writer.write_frames(&mut batch).await?;
        batch.clear();
    }
    writer.shutdown().await
}
