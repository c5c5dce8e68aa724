//! [`SlowMethods`]: the methods whose first poll was once slow, which get
//! a task of their own from the start.
//!
//! A call's first poll runs in its connection's task (most handlers
//! answer on it). A handler that computes for long before its first
//! `.await` would hold that connection up, so once [`STRIKES`] first polls
//! of a method in a row take longer than [`SLOW_FIRST_POLL`], the method
//! is marked and every later call of it is spawned at once. (One slow poll
//! proves nothing: the thread may have been preempted.)

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::descriptor::MethodDescriptor;

/// A first poll longer than this is a strike against its method.
pub(crate) const SLOW_FIRST_POLL: Duration = Duration::from_micros(500);

/// Slow first polls in a row that mark a method.
const STRIKES: u8 = 3;

/// Slots of the set: methods share a slot now and then, which at worst
/// makes a fast method spawn too.
const SLOTS: usize = 1024;

/// Methods by the address of their descriptor: each slot counts slow first
/// polls in a row, up to [`STRIKES`].
#[derive(Debug)]
pub(crate) struct SlowMethods([AtomicU8; SLOTS]);

impl Default for SlowMethods {
    fn default() -> Self {
        SlowMethods(std::array::from_fn(|_| AtomicU8::new(0)))
    }
}

impl SlowMethods {
    fn slot(&self, method: Option<&'static MethodDescriptor>) -> Option<&AtomicU8> {
        let address = method.map_or(0, |method| std::ptr::from_ref(method) as usize);
        // Descriptors are at least 8-byte aligned: skip the zero bits.
        self.0.get((address >> 3) % SLOTS)
    }

    /// Whether `method` was marked.
    pub(crate) fn contains(&self, method: Option<&'static MethodDescriptor>) -> bool {
        self.slot(method)
            .is_some_and(|slot| slot.load(Ordering::Relaxed) >= STRIKES)
    }

    /// Counts a first poll of `method` that took `took`.
    pub(crate) fn first_poll(&self, method: Option<&'static MethodDescriptor>, took: Duration) {
        let Some(slot) = self.slot(method) else {
            return;
        };
        let strikes = slot.load(Ordering::Relaxed);
        if took > SLOW_FIRST_POLL {
            slot.store(strikes.saturating_add(1).min(STRIKES), Ordering::Relaxed);
        } else if strikes != 0 && strikes < STRIKES {
            // A fast one in between: the slow ones were the machine's.
            slot.store(0, Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// Inside a [`Stretch`] on this thread: when the last first poll ended
    /// (or the stretch began).
    static MARK: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A stretch of calls that one connection's task starts back to back,
/// with no `.await` between them: each first poll is timed from the end
/// of the one before, one clock reading a call instead of two. The time
/// between two polls (reading the next request) counts against the later
/// call, which only makes a strike come sooner for a method whose calls
/// are slow to start anyway.
///
/// Not `Send`, so that a connection's task (which must be) cannot hold one
/// across an `.await`: the task could resume on another thread, or other
/// tasks run in the stretch, and their first polls be timed from its mark.
pub(crate) struct Stretch(std::marker::PhantomData<*const ()>);

impl Stretch {
    /// Begins a stretch on this thread; it ends when dropped.
    pub(crate) fn begin() -> Stretch {
        MARK.set(Some(Instant::now()));
        Stretch(std::marker::PhantomData)
    }
}

impl Drop for Stretch {
    fn drop(&mut self) {
        MARK.set(None);
    }
}

/// Runs `poll`, a call's first poll, and says how long it took: measured
/// from the end of the one before in the stretch this thread is in, or
/// from now outside one.
pub(crate) fn timed<T>(poll: impl FnOnce() -> T) -> (T, Duration) {
    let started = MARK.get();
    let started_now = started.is_none().then(Instant::now);
    let polled = poll();
    let ended = Instant::now();
    // A stretch that began and ended inside `poll` (a handler that serves
    // a connection of its own, synchronously) leaves no mark to move.
    if started.is_some() && MARK.get().is_some() {
        MARK.set(Some(ended));
    }
    let took = started
        .or(started_now)
        .map_or(Duration::ZERO, |at| ended.saturating_duration_since(at));
    (polled, took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strikes_in_a_row_mark_a_method() {
        let set = SlowMethods::default();
        let (slow, fast) = (SLOW_FIRST_POLL * 2, Duration::ZERO);
        set.first_poll(None, slow);
        set.first_poll(None, slow);
        set.first_poll(None, fast);
        set.first_poll(None, slow);
        set.first_poll(None, slow);
        assert!(!set.contains(None));
        set.first_poll(None, slow);
        assert!(set.contains(None));
        set.first_poll(None, fast);
        assert!(set.contains(None), "a marked method stays marked");
    }

    #[test]
    fn first_polls_in_a_stretch_are_timed_from_the_end_of_the_one_before() {
        let pause = Duration::from_millis(20);
        let (_, alone) = timed(|| std::thread::sleep(pause));
        assert!(alone >= pause);
        assert!(MARK.get().is_none(), "outside a stretch nothing is marked");
        let stretch = Stretch::begin();
        let began = MARK.get().unwrap();
        // The time before the first poll counts against it.
        std::thread::sleep(pause);
        let (_, first) = timed(|| ());
        assert!(first >= pause, "{first:?}");
        let first_ended = MARK.get().unwrap();
        assert_eq!(first_ended - began, first);
        // The second is timed from the end of the first.
        let (_, second) = timed(|| ());
        assert_eq!(MARK.get().unwrap() - first_ended, second);
        drop(stretch);
        assert!(MARK.get().is_none());
    }
}
