//! The one writer task of a connection, on either side.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::outbox::{Batch, Queued};
use crate::permit::CallPermits;
use crate::signal::Signal;
use crate::transport::FrameWrite;

/// Batches smaller than this are worth delaying (by one pass of the
/// scheduler) to gather more frames; larger ones go out at once, since their
/// write costs far more than a system call.
const COALESCE_BELOW: usize = 16 * 1024;

/// Chunks' worth of room the batch keeps while the connection is idle; a
/// burst grows it, and the next idle spell gives the rest back.
const IDLE_BATCH: usize = 4;

/// How long a connection's writer must go without frames before it gives
/// back its buffers.
const RELEASE_AFTER: Duration = Duration::from_millis(100);

/// How long one batch may take to write before the peer is taken to have
/// stopped reading, and the connection is closed. Without it, a peer that
/// never reads would keep the connection, and everything queued for it,
/// alive for ever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes what is queued in the outbox until every sender is gone or
/// `stop` is raised, then closes the sending direction.
///
/// Whatever queued up while the previous batch was being written goes out
/// as the next batch: with many calls in flight that is one write for many
/// frames, with one call it is one write per frame and no added latency.
/// `permits` are the connection's: more of them held than frames in hand
/// means other calls are under way. `idle` runs whenever everything queued
/// has been written and the writer is about to wait; `written` gets each
/// batch once it is written, before what its frames hold (`P`, a server
/// call's permit) is let go.
pub(crate) async fn run<W, P>(
    mut writer: W,
    queued: Queued<P>,
    permits: CallPermits,
    stop: Arc<Signal>,
    write_timeout: Duration,
    idle: impl Fn() + Send,
    written: impl Fn(&Batch<P>) + Send,
) -> Result<(), Error>
where
    W: FrameWrite,
    P: Send,
{
    let mut batch: Batch<P> = Batch::default();
    // One timer for the writer's life, pushed back at each wait: while it
    // has not fired, that costs the runtime an atomic update, where a
    // timer per wait would cost a registration and a removal.
    let release_at = tokio::time::sleep(RELEASE_AFTER);
    tokio::pin!(release_at);
    // Looked at before every batch and waited on at every wait: a watch
    // reads a flag, where the token's own look and wait take locks.
    let mut stopped = stop.watch();
    loop {
        if stop.is_cancelled() {
            break;
        }
        if !queued.take(&mut batch) {
            idle();
            // Nothing queued: wait. A connection that stays quiet for a
            // while gives its buffers back, so an idle one holds little;
            // a busy one keeps them, since taking them afresh after
            // every batch costs more than the memory saves.
            release_at.as_mut().reset(Instant::now() + RELEASE_AFTER);
            let taken = tokio::select! {
                biased;
                () = stopped.raised() => break,
                taken = queued.taken(&mut batch) => Some(taken),
                () = release_at.as_mut() => None,
            };
            let taken = match taken {
                Some(taken) => taken,
                None => {
                    batch.shrink_to(IDLE_BATCH);
                    queued.release();
                    writer.idle();
                    tokio::select! {
                        biased;
                        () = stopped.raised() => break,
                        taken = queued.taken(&mut batch) => taken,
                    }
                }
            };
            if !taken {
                break;
            }
        }
        if permits.in_use() > batch.frames() && batch.len() < COALESCE_BELOW {
            // Whoever queued this frame woke us, and tokio runs a task woken
            // that way next, ahead of the other tasks ready to run: small
            // answers finishing together would each get a write (a system
            // call) of their own. With other calls under way, let the ones
            // that are ready queue their frames first. A lone call does not
            // wait, nor does a batch big enough to be worth its write.
            tokio::task::yield_now().await;
            queued.take(&mut batch);
        }
        // A peer that stopped reading holds a write up to the timeout;
        // `stop` does not wait for it (a client whose reader found the
        // server gone closes its side at once).
        let writing = tokio::select! {
            biased;
            () = stopped.raised() => break,
            writing = tokio::time::timeout(write_timeout, writer.write_encoded(&mut batch.encoded)) => writing,
        };
        match writing {
            Ok(written) => written?,
            Err(_) => {
                return Err(Error::disconnected(format!(
                    "the peer stopped reading: one batch of frames took longer than {write_timeout:?} to write"
                )));
            }
        }
        // Written: what the frames held (permits) is free now.
        written(&batch);
        batch.clear();
    }
    // Closing writes too (a TLS close_notify), under the same bound.
    tokio::time::timeout(write_timeout, writer.shutdown())
        .await
        .unwrap_or_else(|_| {
            Err(Error::disconnected(format!(
                "the peer stopped reading: closing the connection took longer than {write_timeout:?}"
            )))
        })
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;
    use crate::frame::{Frame, Kind};
    use crate::outbox::outbox;

    /// A transport whose peer never reads: writes never finish.
    struct Stalled;

    impl FrameWrite for Stalled {
        async fn write_frames<'a, I>(&mut self, _frames: I) -> Result<(), Error>
        where
            I: Iterator<Item = &'a Frame> + Clone + Send,
        {
            pending().await
        }

        async fn shutdown(&mut self) -> Result<(), Error> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_writer_stopped_in_the_middle_of_a_write_ends_without_waiting_for_it() {
        let (outbox, queued) = outbox::<()>();
        let stop = Arc::new(Signal::new());
        outbox
            .send(
                Frame::new(Kind::Request, 1, bytes::Bytes::from_static(b"x")).unwrap(),
                None,
            )
            .unwrap();
        let writing = run(
            Stalled,
            queued,
            CallPermits::new(4),
            Arc::clone(&stop),
            Duration::from_secs(3600),
            || {},
            |_: &Batch<()>| {},
        );
        tokio::pin!(writing);
        // The writer takes the frame and is inside the stalled write.
        for _ in 0..3 {
            assert!(futures::FutureExt::now_or_never(writing.as_mut()).is_none());
        }
        stop.cancel();
        // The guard only keeps a broken writer from hanging the test.
        let ended = tokio::time::timeout(Duration::from_secs(10), writing).await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the writer waited for its write: {ended:?}"
        );
        drop(outbox);
    }
}
