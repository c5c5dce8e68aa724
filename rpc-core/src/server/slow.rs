//! [`SlowMethods`]: the methods whose first poll was once slow, which get
//! a task of their own from the start.
//!
//! A call's first poll runs in its connection's task (most handlers
//! answer on it). A handler that computes for long before its first
//! `.await` would hold that connection up, so once [`STRIKES`] first polls
//! of a method in a row take longer than [`SLOW_FIRST_POLL`], the method
//! is marked and its later calls are spawned at once. (One slow poll
//! proves nothing: the thread may have been preempted.) A connection times
//! a run of first polls as a whole, and each of them only after a run that
//! was slow ([`Stretch`]): one more slow call before the first strike, and
//! one clock reading a run rather than a call.
//!
//! A mark is not for good: a machine stalled long enough can mark a fast
//! method, which would then pay for a task on every call. One call in
//! [`PAROLE_AFTER`] of a marked method gets its first poll in place again;
//! fast, it clears the mark; slow, the next trial comes twice as late (up
//! to one call in 32 768), so a method that really computes holds its
//! connection up ever more rarely.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::descriptor::MethodDescriptor;

/// A first poll longer than this is a strike against its method.
pub(crate) const SLOW_FIRST_POLL: Duration = Duration::from_micros(500);

/// Slow first polls in a row that mark a method.
const STRIKES: u32 = 3;

/// Calls of a marked method between two trials of its first poll in place,
/// at first.
const PAROLE_AFTER: u32 = 256;

/// The most times the wait between trials doubles: at most one call in
/// 32 768 (which a record's count of calls holds).
const MAX_PAROLE_SHIFT: u32 = 7;

// A record's count of calls must reach the longest wait, or the trial
// after it would never come.
const _: () = assert!(PAROLE_AFTER << MAX_PAROLE_SHIFT <= 0xffff);

/// Slots of the set: methods share a slot now and then, which at worst
/// makes a fast method spawn too.
const SLOTS: usize = 1024;

/// One method's record, packed in a word so that it is read and written
/// at once: slow first polls in a row (up to [`STRIKES`], which marks
/// it), and, once marked, how often its first poll is tried again and how
/// many calls have gone by since the last trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    strikes: u32,
    parole_shift: u32,
    since_trial: u32,
}

impl Record {
    fn unpack(word: u32) -> Record {
        Record {
            strikes: word & 0xff,
            parole_shift: (word >> 8) & 0xff,
            since_trial: word >> 16,
        }
    }

    fn pack(self) -> u32 {
        self.strikes | (self.parole_shift << 8) | (self.since_trial.min(0xffff) << 16)
    }

    fn marked(self) -> bool {
        self.strikes >= STRIKES
    }
}

/// Methods by the address of their descriptor. Records are read and
/// written without ordering or locks: connections racing on one may lose
/// an update, which at worst brings a mark back or clears it early (any
/// fast first poll in place clears it, one that began before the mark
/// too); the next trial, or the next three slow polls, settle it.
#[derive(Debug)]
pub(crate) struct SlowMethods([AtomicU32; SLOTS]);

impl Default for SlowMethods {
    fn default() -> Self {
        SlowMethods(std::array::from_fn(|_| AtomicU32::new(0)))
    }
}

impl SlowMethods {
    fn slot(&self, method: Option<&'static MethodDescriptor>) -> Option<&AtomicU32> {
        let address = method.map_or(0, |method| std::ptr::from_ref(method) as usize);
        // Descriptors are at least 8-byte aligned: skip the zero bits.
        self.0.get((address >> 3) % SLOTS)
    }

    /// Whether this call of `method` gets a task at once: the method is
    /// marked, and it is not this call's turn to try its first poll in
    /// place.
    pub(crate) fn spawns(&self, method: Option<&'static MethodDescriptor>) -> bool {
        let Some(slot) = self.slot(method) else {
            return false;
        };
        let mut record = Record::unpack(slot.load(Ordering::Relaxed));
        if !record.marked() {
            return false;
        }
        record.since_trial += 1;
        let trial = record.since_trial >= PAROLE_AFTER << record.parole_shift;
        if trial {
            record.since_trial = 0;
        }
        slot.store(record.pack(), Ordering::Relaxed);
        !trial
    }

    /// Whether `method`'s record is clear: a fast first poll would not
    /// change it (so it need not be timed, when something else vouches
    /// that it was fast).
    pub(crate) fn clear(&self, method: Option<&'static MethodDescriptor>) -> bool {
        self.slot(method)
            .is_none_or(|slot| slot.load(Ordering::Relaxed) == 0)
    }

    /// Counts a first poll of `method` that took `took`.
    pub(crate) fn first_poll(&self, method: Option<&'static MethodDescriptor>, took: Duration) {
        let Some(slot) = self.slot(method) else {
            return;
        };
        let word = slot.load(Ordering::Relaxed);
        let mut record = Record::unpack(word);
        let slow = took > SLOW_FIRST_POLL;
        match (record.marked(), slow) {
            // A trial in place that was fast: the mark was the machine's.
            (true, false) => record = Record::unpack(0),
            // Slow again: the next trial comes later.
            (true, true) => record.parole_shift = (record.parole_shift + 1).min(MAX_PAROLE_SHIFT),
            (false, true) => record.strikes += 1,
            // A fast one in between: the slow ones were the machine's.
            (false, false) => record.strikes = 0,
        }
        let updated = record.pack();
        if updated != word {
            slot.store(updated, Ordering::Relaxed);
        }
    }
}

thread_local! {
    /// How first polls on this thread are timed now.
    static CLOCK: Cell<Clock> = const { Cell::new(Clock::Alone) };
}

/// How a first poll is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// Outside a [`Stretch`]: from a reading of the clock before it.
    Alone,
    /// In a stretch that times each poll: from the end of the one before
    /// (`at`), one reading a call.
    Each { at: Instant },
    /// In a stretch timed as a whole: only polls that would change their
    /// method's record are timed (with two readings); the stretch's own
    /// length vouches for the rest.
    Whole,
}

/// A stretch of calls that one connection's task starts back to back,
/// with no `.await` between them.
///
/// Most stretches are timed as a whole: if the stretch took no longer than
/// [`SLOW_FIRST_POLL`], none of its first polls did, and a fast poll
/// changes nothing for a method with a clear record. So a stretch of calls
/// to methods that were never slow reads the clock once at its end, not
/// once a call. A stretch that was slow as a whole makes its connection
/// time each poll in the next one ([`Stretch::end`]), from the end of the
/// one before: a method slow on every call gets its strikes from the
/// second stretch on. (The time between two polls, reading the next
/// request, then counts against the later call, which only makes a strike
/// come sooner for a method whose calls are slow to start anyway.)
///
/// Not `Send`, so that a connection's task (which must be) cannot hold one
/// across an `.await`: the task could resume on another thread, or other
/// tasks run in the stretch, and their first polls be timed by it.
pub(crate) struct Stretch {
    began: Instant,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Stretch {
    /// Begins a stretch on this thread at `now` (a reading of the clock
    /// just taken), timing each poll in it if `each`. The clock is
    /// tokio's, as the connection's: under a paused test clock first polls
    /// take no time, rather than all the real time between two readings.
    pub(crate) fn begin(now: Instant, each: bool) -> Stretch {
        CLOCK.set(if each {
            Clock::Each { at: now }
        } else {
            Clock::Whole
        });
        Stretch {
            began: now,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Ends the stretch: whether it took longer than a slow first poll, so
    /// that the next one should time each poll.
    pub(crate) fn end(self) -> bool {
        self.began.elapsed() > SLOW_FIRST_POLL
    }
}

impl Drop for Stretch {
    fn drop(&mut self) {
        CLOCK.set(Clock::Alone);
    }
}

/// Runs `poll`, a call's first poll, and says how long it took, if it was
/// timed: in a stretch timed as a whole, only a poll whose method's record
/// is not `clear` is. Outside a stretch, a poll is timed from now; in one
/// that times each poll, from the end of the one before.
pub(crate) fn timed<T>(clear: bool, poll: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let clock = CLOCK.get();
    let started = match clock {
        Clock::Whole if clear => return (poll(), None),
        Clock::Each { at } => at,
        Clock::Alone | Clock::Whole => Instant::now(),
    };
    let polled = poll();
    let ended = Instant::now();
    // A stretch that began and ended inside `poll` (a handler that serves
    // a connection of its own, synchronously) leaves the clock alone.
    if matches!(clock, Clock::Each { .. }) && matches!(CLOCK.get(), Clock::Each { .. }) {
        CLOCK.set(Clock::Each { at: ended });
    }
    (polled, Some(ended.saturating_duration_since(started)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = SLOW_FIRST_POLL.saturating_mul(2);
    const FAST: Duration = Duration::ZERO;

    /// Marks the method with no descriptor.
    fn marked() -> SlowMethods {
        let set = SlowMethods::default();
        for _ in 0..STRIKES {
            set.first_poll(None, SLOW);
        }
        set
    }

    /// Calls of `set`'s marked method until one is tried in place: how
    /// many were spawned before it.
    fn spawned_before_trial(set: &SlowMethods) -> u32 {
        let mut spawned = 0;
        while set.spawns(None) {
            spawned += 1;
            assert!(spawned < PAROLE_AFTER << (MAX_PAROLE_SHIFT + 1), "no trial came");
        }
        spawned
    }

    #[test]
    fn only_strikes_in_a_row_mark_a_method() {
        let set = SlowMethods::default();
        set.first_poll(None, SLOW);
        set.first_poll(None, SLOW);
        set.first_poll(None, FAST);
        set.first_poll(None, SLOW);
        set.first_poll(None, SLOW);
        assert!(!set.spawns(None));
        set.first_poll(None, SLOW);
        assert!(set.spawns(None));
        assert!(set.spawns(None), "marked, calls are spawned");
    }

    #[test]
    fn a_marked_method_is_tried_in_place_now_and_then_and_cleared_if_fast() {
        let set = marked();
        assert_eq!(spawned_before_trial(&set), PAROLE_AFTER - 1);
        // The trial was fast: the mark is gone.
        set.first_poll(None, FAST);
        assert!(!set.spawns(None));
        assert_eq!(set.0[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_method_slow_on_trial_is_tried_ever_more_rarely() {
        let set = marked();
        let mut waits = Vec::new();
        for _ in 0..=MAX_PAROLE_SHIFT + 1 {
            waits.push(spawned_before_trial(&set) + 1);
            set.first_poll(None, SLOW);
        }
        let expected: Vec<u32> = (0..=MAX_PAROLE_SHIFT + 1)
            .map(|shift| PAROLE_AFTER << shift.min(MAX_PAROLE_SHIFT))
            .collect();
        assert_eq!(waits, expected);
        assert!(set.spawns(None), "still marked");
    }

    #[test]
    fn records_round_trip_through_their_word() {
        let record = Record {
            strikes: STRIKES,
            parole_shift: MAX_PAROLE_SHIFT,
            since_trial: PAROLE_AFTER << MAX_PAROLE_SHIFT,
        };
        assert_eq!(Record::unpack(record.pack()), record);
    }

    #[test]
    fn first_polls_in_a_stretch_that_times_each_are_timed_from_the_end_of_the_one_before() {
        let pause = Duration::from_millis(20);
        let (_, alone) = timed(true, || std::thread::sleep(pause));
        assert!(alone.is_some_and(|alone| alone >= pause), "{alone:?}");
        assert_eq!(CLOCK.get(), Clock::Alone, "outside a stretch nothing is marked");
        let stretch = Stretch::begin(Instant::now(), true);
        let Clock::Each { at: began } = CLOCK.get() else {
            panic!("not timing each poll");
        };
        // The time before the first poll counts against it.
        std::thread::sleep(pause);
        let (_, first) = timed(true, || ());
        let first = first.expect("timed");
        assert!(first >= pause, "{first:?}");
        let Clock::Each { at: first_ended } = CLOCK.get() else {
            panic!("no longer timing each poll");
        };
        assert_eq!(first_ended - began, first);
        // The second is timed from the end of the first.
        let (_, second) = timed(true, || ());
        let Clock::Each { at: second_ended } = CLOCK.get() else {
            panic!("no longer timing each poll");
        };
        assert_eq!(second_ended - first_ended, second.expect("timed"));
        assert!(stretch.end(), "the stretch was slow");
        assert_eq!(CLOCK.get(), Clock::Alone);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stretch_timed_as_a_whole_times_only_polls_of_methods_with_a_record() {
        let stretch = Stretch::begin(Instant::now(), false);
        let (_, clear) = timed(true, || ());
        assert_eq!(clear, None, "a method with a clear record is not timed");
        // Time passes in the stretch (a slow poll, say); a method with a
        // record is timed from its own start, not from the stretch's.
        tokio::time::advance(SLOW_FIRST_POLL * 4).await;
        let (_, struck) = timed(false, || ());
        assert_eq!(struck, Some(Duration::ZERO));
        assert_eq!(CLOCK.get(), Clock::Whole);
        // The stretch was slow as a whole: the next one times each poll.
        assert!(stretch.end());
        assert_eq!(CLOCK.get(), Clock::Alone);
        let fast = Stretch::begin(Instant::now(), false);
        let _ = timed(true, || ());
        assert!(!fast.end(), "a stretch in which no time passed is fast");
    }

    #[test]
    fn a_method_slow_on_every_call_is_marked_in_stretches_timed_as_a_whole() {
        // What a connection does: each stretch holds one call of a method
        // that computes for long, and a fast one.
        let set = SlowMethods::default();
        let slow_poll = || std::thread::sleep(SLOW_FIRST_POLL * 2);
        let mut time_each = false;
        let mut stretches = 0;
        while !set.spawns(None) {
            stretches += 1;
            assert!(stretches <= STRIKES + 1, "not marked after {stretches} stretches");
            let stretch = Stretch::begin(Instant::now(), time_each);
            let (_, took) = timed(set.clear(None), slow_poll);
            if let Some(took) = took {
                set.first_poll(None, took);
            }
            time_each = stretch.end();
        }
        // The first stretch only learns that something in it was slow.
        assert_eq!(stretches, STRIKES + 1);
    }
}
