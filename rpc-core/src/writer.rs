//! The one writer task of a connection, on either side.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::error::Error;
use crate::outbox::{Batch, Queued};
use crate::permit::CallPermits;
use crate::signal::Signal;
use crate::transport::{FrameWrite, Quiet};

/// Batches smaller than this are worth delaying (by one pass of the
/// scheduler) to gather more frames; larger ones go out at once, since their
/// write costs far more than a system call.
const COALESCE_BELOW: usize = 16 * 1024;

/// Chunks' worth of room the batch keeps while the connection is idle; a
/// burst grows it, and the next idle spell gives the rest back.
const IDLE_BATCH: usize = 4;

/// How long a connection's writer must go without frames before it gives
/// back its buffers (it may wait up to twice this long).
const RELEASE_AFTER: Duration = Duration::from_millis(100);

/// How long one batch may take to write, from its first wait for the
/// peer, before the peer is taken to have stopped reading, and the
/// connection is closed. Without it, a peer that
/// never reads would keep the connection, and everything queued for it,
/// alive for ever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes what is queued in the outbox until every sender is gone or
/// `stop` (if there is one) is raised, then closes the sending direction.
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
    stop: Option<Arc<Signal>>,
    write_timeout: Duration,
    idle: impl Fn() + Send,
    written: impl Fn(&Batch<P>) + Send,
) -> Result<(), Error>
where
    W: FrameWrite,
    P: Send,
{
    let mut batch: Batch<P> = Batch::default();
    // One timer for the writer's life, told of every batch written.
    let mut quiet = Quiet::new(RELEASE_AFTER);
    // Looked at before every batch and waited on at every wait: a watch
    // reads a flag, where the token's own look and wait take locks. A
    // writer nobody stops (a server's: its connection lets go of the
    // outbox instead) looks at nothing, for the flag would be one more
    // line of memory to fetch per batch.
    let mut stopped = Stopped(stop.as_deref().map(Signal::watch));
    loop {
        if stop.as_deref().is_some_and(Signal::is_cancelled) {
            break;
        }
        if !queued.take(&mut batch) {
            idle();
            // Nothing queued: wait. A connection that stays quiet for a
            // while gives its buffers back, so an idle one holds little;
            // a busy one keeps them, since taking them afresh after
            // every batch costs more than the memory saves.
            let taken = tokio::select! {
                biased;
                () = stopped.raised() => break,
                taken = queued.taken(&mut batch) => Some(taken),
                () = quiet.elapsed() => None,
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
            writing = within(write_timeout, writer.write_encoded(&mut batch.encoded)) => writing,
        };
        match writing {
            Some(written) => written?,
            None => {
                return Err(Error::disconnected(format!(
                    "the peer stopped reading: one batch of frames took longer than {write_timeout:?} to write"
                )));
            }
        }
        // Written: what the frames held (permits) is free now.
        written(&batch);
        batch.clear();
        quiet.heard();
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

/// The writer's wait for its stop signal, if it has one.
struct Stopped<'a>(Option<crate::signal::Watch<'a>>);

impl Stopped<'_> {
    /// Completes once the signal is raised; never without one.
    async fn raised(&mut self) {
        match &mut self.0 {
            Some(watch) => watch.raised().await,
            None => std::future::pending().await,
        }
    }
}

/// `write`'s output, or `None` if it takes longer than `limit` from its
/// first wait: a write that finishes at once (most of them: the socket
/// takes the batch) reads no clock and sets no timer.
async fn within<F: Future>(limit: Duration, write: F) -> Option<F::Output> {
    let mut write = std::pin::pin!(write);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(written) = write.as_mut().poll(cx) {
            return Poll::Ready(Some(written));
        }
        if timer.is_none() {
            timer.set(Some(tokio::time::sleep(limit)));
        }
        match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
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

    /// A transport whose writes finish at once, and that counts the times
    /// it was told to give its buffers back.
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl FrameWrite for Counting {
        async fn write_frames<'a, I>(&mut self, _frames: I) -> Result<(), Error>
        where
            I: Iterator<Item = &'a Frame> + Clone + Send,
        {
            Ok(())
        }

        fn idle(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }

        async fn shutdown(&mut self) -> Result<(), Error> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_gives_its_buffers_back_only_once_the_connection_is_quiet() {
        let (outbox, queued) = outbox::<()>();
        let released = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = tokio::spawn(run(
            Counting(Arc::clone(&released)),
            queued,
            CallPermits::new(4),
            None,
            DEFAULT_WRITE_TIMEOUT,
            || {},
            |_: &Batch<()>| {},
        ));
        let frame = || Frame::new(Kind::Request, 1, bytes::Bytes::from_static(b"x")).unwrap();
        let count = || released.load(std::sync::atomic::Ordering::SeqCst);
        // A frame every three quarters of the quiet time, for six times
        // the quiet time: the timer is pushed back each time before it is
        // due.
        for _ in 0..8 {
            outbox.send(frame(), None).unwrap();
            tokio::time::sleep(RELEASE_AFTER * 3 / 4).await;
            assert_eq!(count(), 0, "a busy writer keeps its buffers");
        }
        tokio::time::sleep(RELEASE_AFTER * 2).await;
        assert_eq!(count(), 1, "a quiet writer gives its buffers back");
        drop(outbox);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_given_its_limit_from_its_first_wait() {
        let limit = Duration::from_secs(1);
        assert_eq!(within(limit, async { 7 }).await, Some(7));
        let slow = async {
            tokio::time::sleep(limit / 2).await;
            7
        };
        assert_eq!(within(limit, slow).await, Some(7));
        let started = tokio::time::Instant::now();
        assert_eq!(within(limit, pending::<u8>()).await, None);
        assert_eq!(started.elapsed(), limit);
        // Time spent before the first wait is not the peer's.
        let busy_then_stuck = async {
            tokio::time::advance(limit / 2).await;
            pending::<u8>().await
        };
        let started = tokio::time::Instant::now();
        assert_eq!(within(limit, busy_then_stuck).await, None);
        assert_eq!(started.elapsed(), limit * 3 / 2);
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
            Some(Arc::clone(&stop)),
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
