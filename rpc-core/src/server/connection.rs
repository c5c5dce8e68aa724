//! One server connection: the loop that reads frames, starts calls, stops
//! them at their deadlines, and closes the connection, written once.
//!
//! A connection is *open* until the client stops sending, the server shuts
//! down or the connection sits idle; then it is *draining*: it starts no
//! new call, lets the accepted ones finish and be answered, and closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{self, CONNECTION_ID, Frame, Kind};
use crate::give_way;
use crate::peer::Peer;
use crate::permit::CallPermits;
use crate::server::ServerState;
use crate::server::call::Outbox;
use crate::server::calls::CallTable;
use crate::server::report::Reports;
use crate::server::slow::Stretch;
use crate::signal::Signal;
use crate::transport::{Established, FrameRead, FrameWrite};
use crate::writer;

/// Serves one connection until the client leaves, breaks the protocol, or
/// the server shuts down.
///
/// Every request that waits runs in a task of its own (one done on its
/// first poll, in this task, is answered at once), so a slow call never
/// holds up a fast one; answers go out in completion order. At most
/// `max_calls_per_connection` calls are in progress (running, or answered
/// and waiting to be written); requests past it wait in a queue as long as
/// the cap, and with that full the server stops reading, so TCP pushes
/// back on the client.
///
/// When the client closes its side, calls already running finish and are
/// answered. When the server shuts down, the connection sends a goodbye
/// naming the last request it started, starts no more, and finishes the
/// rest; calls still running when the grace period ends are stopped and
/// answered with "interrupted".
pub async fn serve_connection<R: FrameRead, W: FrameWrite>(state: Arc<ServerState>, conn: Established<R, W>) {
    let Established {
        mut reader,
        writer,
        preface,
        peer,
    } = conn;
    let _open = state.counters.connection_opened();
    let (outbox, queued) = crate::outbox::outbox();
    let permits = CallPermits::new(state.config.max_calls_per_connection)
        .counted(Arc::clone(&state.counters.calls_in_progress));
    let reports = Reports::new();
    let writing = writer::run(
        writer,
        queued,
        permits.clone(),
        // The writer stops once the connection and its calls let go of
        // the outbox.
        None,
        state.config.write_timeout,
        reports.tidy(),
        |_: &crate::outbox::Batch<_>| {},
    );
    // A client that stops reading fails the writer (at its write timeout):
    // the connection ends then too, rather than run calls whose answers
    // can never leave.
    let stuck = Arc::new(Signal::new());
    let writer = AbortOnDropHandle::new(tokio::spawn({
        let stuck = Arc::clone(&stuck);
        async move {
            let written = writing.await;
            if written.is_err() {
                stuck.cancel();
            }
            written
        }
    }));
    let mut conn = Connection {
        calls: CallTable::new(permits, outbox.clone(), reports, Arc::clone(&state)),
        state,
        outbox,
        peer,
        client_max_frame_len: preface.max_frame_len as usize,
        version: preface.version,
        stuck,
        bursts: Bursts::new(),
    };
    let ending = conn.run(&mut reader).await;
    let peer = conn.peer.clone();
    if let Ending::Failed(err) = &ending {
        tracing::info!(%peer, error = %err, "closing connection");
        if let Error::Protocol(violation) = err {
            let notice = WireError::new(ErrorCode::Protocol, violation.to_string());
            let _ = conn.outbox.send(notice.to_frame(CONNECTION_ID), None);
        }
    }
    drop(conn);
    // The writer drains what is queued (the answers, the goodbye or the
    // notice) and closes our side.
    if let Ok(Err(err)) = writer.await {
        tracing::debug!(%peer, error = %err, "writer stopped");
    }
    // Closing a socket with unread bytes makes the kernel send a reset,
    // which can destroy the notice we just wrote before the peer reads it.
    // Read and discard a little first (a "lingering close").
    let _ = tokio::time::timeout(LINGER, reader.discard(LINGER_BYTES)).await;
}

/// How long, and how many bytes, a closing connection reads and discards so
/// that its last frames reach the peer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// The longest the connection's timer is ever set for (an idle limit of
/// `Duration::MAX` means none).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Most frames taken from the read buffer in one go, before the loop gives
/// way, on a multi-thread runtime (see [`Bursts`]).
const MAX_BURST: usize = 64;

/// Fewest frames taken in one go on a current-thread runtime.
const MIN_BURST_CURRENT_THREAD: usize = 16;

/// Most frames taken in one go on a current-thread runtime.
const MAX_BURST_CURRENT_THREAD: usize = 128;

/// Reads of at least this many frames are cut into halves on a
/// current-thread runtime (at most [`MAX_BURST_CURRENT_THREAD`] frames
/// each), shorter ones into quarters.
const LONG_READ: usize = 128;

/// How many buffered frames a burst takes before the connection gives way
/// to its writer and the runtime's other tasks.
///
/// On a current-thread runtime the answers of a long burst would otherwise
/// all wait for its end while the client sat idle. The frames of a read
/// are cut into bursts as long as the last read's suggests: the client
/// works on the first answers while the server works on the rest.
/// - After a read of fewer than [`LONG_READ`] frames, bursts are a
///   quarter of it, at least 16: 64 callers make 1.2 to 1.5 times the
///   calls a second of one 64-frame burst.
/// - After a longer read, bursts are half of it, at most 128 frames (so a
///   read of 300 takes three bursts). A read that long means the client has
///   requests waiting and the server is the side working flat out, so
///   each write (a system call, which wakes the client too) costs calls:
///   1 024 callers made 1.10 to 1.14 times the calls a second of four
///   bursts of at most 64, and 64 callers as many.
///
/// A multi-thread runtime gains nothing from short bursts, and pays for the
/// extra writes.
///
/// A large frame ends its burst too, before the frames behind it (see
/// [`give_way`]).
#[derive(Debug)]
struct Bursts {
    len: usize,
    /// Frames taken of the read being taken.
    taken: usize,
    adapts: bool,
}

impl Bursts {
    fn new() -> Bursts {
        let flavor = tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor());
        let adapts = matches!(flavor, Ok(tokio::runtime::RuntimeFlavor::CurrentThread));
        Bursts {
            len: if adapts {
                MIN_BURST_CURRENT_THREAD
            } else {
                MAX_BURST
            },
            taken: 0,
            adapts,
        }
    }

    /// A large frame ended the burst: the loop gives way as after a
    /// [`Burst::Cut`], but the frames taken measure no read (as after a
    /// [`Burst::Held`]), or a run of large frames would pass for one long
    /// read.
    fn gave_way(&mut self) -> Burst {
        self.taken = 0;
        Burst::Cut
    }

    /// A burst took `frames` and ended as `burst` says, which it returns.
    fn took(&mut self, frames: usize, burst: Burst) -> Burst {
        self.taken += frames;
        match burst {
            Burst::Cut => {}
            // A read taken whole: the next is likely as long.
            Burst::Over => {
                if self.adapts {
                    let bursts = if self.taken < LONG_READ { 4 } else { 2 };
                    self.len =
                        (self.taken / bursts).clamp(MIN_BURST_CURRENT_THREAD, MAX_BURST_CURRENT_THREAD);
                }
                self.taken = 0;
            }
            // Cut short by something else: no measure of a read.
            Burst::Held => self.taken = 0,
        }
        burst
    }
}

/// How a burst of buffered frames ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Burst {
    /// At its length, or after a large frame, with frames perhaps left
    /// behind it.
    Cut,
    /// Nothing left to take now.
    Over,
    /// Taking stopped, with frames perhaps left: the loop must look at
    /// something else first (a full queue, a stuck writer, a shutdown).
    Held,
}

/// A server connection's state, shared by the loop and the frame handlers.
pub(super) struct Connection {
    pub(super) state: Arc<ServerState>,
    pub(super) outbox: Outbox,
    pub(super) calls: CallTable,
    pub(super) peer: Peer,
    pub(super) client_max_frame_len: usize,
    /// The protocol version the client speaks (1: no metadata).
    pub(super) version: u16,
    /// Raised when the writer fails: nothing more can reach the client.
    stuck: Arc<Signal>,
    /// How many buffered frames a burst takes.
    bursts: Bursts,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests and starting calls.
    Open,
    /// Finishing the calls it accepted. `reading` while the client may
    /// still send what those calls need (cancels, credit, stream items).
    Draining { reading: bool },
}

/// How the loop ended.
enum Ending {
    /// Every accepted call was answered.
    Drained,
    /// The client broke the protocol or the connection failed: every call
    /// is stopped.
    Failed(Error),
}

impl Connection {
    /// The connection's loop, from the first frame to the last answer.
    async fn run<R: FrameRead>(&mut self, reader: &mut R) -> Ending {
        let idle_timeout = self.state.config.idle_timeout;
        let mut phase = Phase::Open;
        let mut last_frame = Instant::now();
        // One timer for the connection, for both the idle limit and the call
        // deadlines: pushed back lazily when it fires early, rather than a
        // new one per frame or per call.
        let mut timer_at = later(last_frame, idle_timeout);
        let timer = tokio::time::sleep_until(timer_at);
        tokio::pin!(timer);
        // Looked at on every turn: each wait joins its signal's waiters
        // once, and after that a look reads a flag.
        let state = Arc::clone(&self.state);
        let mut shutdown = state.shutdown.watch();
        let mut interrupt = state.interrupt.watch();
        let stuck_signal = Arc::clone(&self.stuck);
        let mut stuck = stuck_signal.watch();
        let permits = self.calls.permits().clone();
        let mut was_reading = true;
        loop {
            // Completed calls are tidied away here, not by waking this task
            // for each one: a wake-up per call is latency the client would
            // feel. Only a draining connection waits for them.
            self.calls.collect_finished();
            if matches!(phase, Phase::Draining { .. }) && self.calls.all_done() {
                return Ending::Drained;
            }
            if let Some(armed) = self.calls.armed().filter(|armed| *armed < timer_at) {
                timer_at = armed;
                timer.as_mut().reset(armed);
            }
            let open = phase == Phase::Open;
            let reading = match phase {
                Phase::Open => true,
                Phase::Draining { reading } => reading,
            } && !self.calls.queue_full();
            // The reader stood still (the queue was full): a frame it had
            // begun is not late for that wait, which was ours.
            if reading && !was_reading {
                reader.resume();
            }
            was_reading = reading;
            tokio::select! {
                biased;
                () = shutdown.raised(), if open => {
                    self.say_goodbye("shutting down");
                    phase = Phase::Draining { reading: true };
                }
                () = stuck.raised() => {
                    self.calls.abort_all();
                    return Ending::Failed(Error::disconnected("writing to the client failed"));
                }
                () = interrupt.raised(), if !open => {
                    tracing::debug!(peer = %self.peer, "grace period over; interrupting the calls left");
                    self.calls.interrupt_all();
                    self.calls.abort_all();
                    return Ending::Drained;
                }
                // Draining: a call has ended. Open: the last running call
                // has ended, so tidy up now, for the connection may be idle
                // for long.
                () = self.calls.reported(!open) => {}
                permit = permits.acquire(), if self.calls.has_queue() => {
                    if let Ok(permit) = permit {
                        self.calls.launch_next(permit);
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    self.calls.collect_finished();
                    self.calls.expire(now);
                    // Deadlines hold while draining; the idle limit does not,
                    // and it only runs while no call is in flight.
                    let idle = open && self.calls.is_empty();
                    let idle_due = match phase {
                        Phase::Open if idle => later(last_frame, idle_timeout),
                        Phase::Open => later(now, idle_timeout),
                        Phase::Draining { .. } => later(now, MAX_SLEEP),
                    };
                    if idle && now >= idle_due {
                        self.say_goodbye("idle");
                        phase = Phase::Draining { reading: true };
                        continue;
                    }
                    timer_at = self.calls.armed().map_or(idle_due, |armed| armed.min(idle_due));
                    timer.as_mut().reset(timer_at);
                }
                // Past the cap, requests wait in a queue as long as the cap,
                // and the reader goes on: the cancels, credit and items that
                // running calls need are never stuck behind a request. With
                // the queue full it stops reading, and TCP pushes back.
                frame = reader.read_frame(), if reading => match frame {
                    Ok(Some(frame)) => {
                        last_frame = Instant::now();
                        // The calls this frame and those buffered behind it
                        // start, back to back: their first polls are timed
                        // as a stretch, from the frame's reading (see
                        // `Stretch`). The stretch ends before any wait
                        // (another task, or another thread, may run in it).
                        let burst = {
                            let stretch = Stretch::begin(last_frame);
                            // Frames that came with it are taken now: another
                            // turn of this loop would arm and drop a waker
                            // for each branch above, per frame.
                            let burst = self.on_burst(frame, reader, !open, last_frame);
                            stretch.end(&self.state.slow);
                            burst
                        };
                        match burst {
                            Ok(Burst::Over | Burst::Held) => {}
                            // More may be buffered: the answers so far go
                            // out first, and other tasks get their turn.
                            Ok(Burst::Cut) => tokio::task::yield_now().await,
                            Err(err) => {
                                self.calls.abort_all();
                                return Ending::Failed(err);
                            }
                        }
                    }
                    // No more frames can come: streams that need the
                    // client's credit or items end now; everything read is
                    // still answered.
                    Ok(None) => {
                        tracing::debug!(peer = %self.peer, "client closed its side");
                        self.calls.end_streams();
                        phase = Phase::Draining { reading: false };
                    }
                    Err(err) if open => {
                        self.calls.abort_all();
                        return Ending::Failed(err);
                    }
                    // A broken protocol closes the connection whatever its
                    // phase, as the protocol says.
                    Err(err @ Error::Protocol(_)) => {
                        self.calls.abort_all();
                        return Ending::Failed(err);
                    }
                    // A draining connection's answers are what matter; a
                    // client whose side failed in other ways gets them if
                    // it can.
                    Err(err) => {
                        tracing::debug!(peer = %self.peer, error = %err, "reading from a draining connection failed");
                        self.calls.end_streams();
                        phase = Phase::Draining { reading: false };
                    }
                },
            }
        }
    }

    /// Handles `first`, just read (at `received`), and the frames already
    /// buffered behind it, up to the burst's length and while the queue has
    /// room, as the loop would; how the burst ended, counted in [`Bursts`].
    /// A large frame ends the burst at once, so that its call runs, as a
    /// rule, before the frames behind it are taken (see [`give_way`]).
    fn on_burst<R: FrameRead>(
        &mut self,
        first: Frame,
        reader: &mut R,
        draining: bool,
        received: Instant,
    ) -> Result<Burst, Error> {
        let len = self.bursts.len;
        let mut frame = first;
        // The frames handled before this one.
        let mut taken = 0;
        loop {
            let gives_way = give_way::after(frame.payload().len());
            self.on_frame(frame, draining, received)?;
            if gives_way {
                return Ok(self.bursts.gave_way());
            }
            if taken == len {
                return Ok(self.bursts.took(1 + len, Burst::Cut));
            }
            // What the loop's select would see first still comes first (a
            // look reads a flag).
            let interrupted = draining && self.state.interrupt.is_cancelled();
            let stopping = self.state.shutdown.is_cancelled() && !draining;
            if self.calls.queue_full() || self.stuck.is_cancelled() || stopping || interrupted {
                return Ok(self.bursts.took(1 + taken, Burst::Held));
            }
            frame = match reader.buffered_frame() {
                Some(frame) => frame?,
                None => return Ok(self.bursts.took(1 + taken, Burst::Over)),
            };
            taken += 1;
        }
    }

    /// Sends the goodbye: the client learns the last request that will be
    /// answered and sends no more; calls queued at the cap never ran.
    fn say_goodbye(&mut self, why: &str) {
        tracing::debug!(peer = %self.peer, why, "saying goodbye");
        self.calls.drop_queued();
        let last = self.calls.last_started_id;
        if let Ok(goodbye) = Frame::new(Kind::Goodbye, CONNECTION_ID, frame::goodbye_payload(last)) {
            let _ = self.outbox.send(goodbye, None);
        }
    }
}

/// `at + wait`, or as far off as the timer goes if that is further.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait.min(MAX_SLEEP)).unwrap_or(at + MAX_SLEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_idle_limit_sets_the_timer_far_off_without_overflowing() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::MAX), now + MAX_SLEEP);
        assert_eq!(later(now, Duration::from_secs(5)), now + Duration::from_secs(5));
    }

    /// Bursts of `len` frames, on a current-thread runtime if `adapts`.
    fn bursts(len: usize, adapts: bool) -> Bursts {
        Bursts {
            len,
            taken: 0,
            adapts,
        }
    }

    /// The burst length a current-thread runtime's connection takes after
    /// a read of `frames` frames, taken in bursts of `len`.
    fn after_read(frames: usize, len: usize) -> usize {
        let mut bursts = bursts(len, true);
        let mut left = frames;
        while left > len {
            assert_eq!(bursts.took(len, Burst::Cut), Burst::Cut);
            left -= len;
        }
        bursts.took(left, Burst::Over);
        bursts.len
    }

    #[test]
    fn bursts_are_quarters_of_a_short_read_and_halves_of_a_long_one() {
        // Quarters, at least 16.
        assert_eq!(after_read(40, 16), 16);
        assert_eq!(after_read(100, 16), 25);
        assert_eq!(after_read(127, 64), 31);
        // Halves from 128 frames on, at most 128.
        assert_eq!(after_read(128, 16), 64);
        assert_eq!(after_read(200, 64), 100);
        assert_eq!(after_read(600, 128), 128);
        // A burst cut short by something else measures no read.
        let mut held = bursts(64, true);
        held.took(10, Burst::Held);
        held.took(8, Burst::Over);
        assert_eq!(held.len, 16);
        // Large frames that ended their bursts measure no read either: a
        // run of them is no long read.
        let mut large = bursts(16, true);
        for _ in 0..200 {
            assert_eq!(large.gave_way(), Burst::Cut);
        }
        large.took(8, Burst::Over);
        assert_eq!(large.len, 16);
        // A multi-thread runtime keeps its bursts as they are.
        let mut fixed = bursts(MAX_BURST, false);
        fixed.took(300, Burst::Over);
        assert_eq!(fixed.len, MAX_BURST);
    }
}
