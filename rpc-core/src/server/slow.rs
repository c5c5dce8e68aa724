//! [`SlowMethods`]: the methods whose first poll was once slow, which get
//! a task of their own from the start.
//!
//! A call's first poll runs in its connection's task (most handlers
//! answer on it). A handler that computes for long before its first
//! `.await` would hold that connection up, so once [`STRIKES`] first polls
//! of a method in a row take longer than [`SLOW_FIRST_POLL`], the method
//! is marked and its later calls are spawned at once. (One slow poll
//! proves nothing: the thread may have been preempted.) A connection times
//! a run of first polls as a whole, with one clock reading, and a method
//! on its own once it has a strike or a run it was in was slow
//! ([`Stretch`]): a method slow on every call is marked at its fourth.
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

/// Distinct methods a stretch timed as a whole remembers having polled
/// untimed; past them, it times each poll.
const UNTIMED: usize = 4;

// Slots are named by a `u16` in [`Untimed`].
const _: () = assert!(SLOTS <= 1 << 16);

/// One method's record, packed in a word so that it is read and written
/// at once: slow first polls in a row (up to [`STRIKES`], which marks
/// it); whether it is a suspect (a call of it was in a run of first polls
/// that was slow as a whole, with no finer timing, so its next first poll
/// is timed on its own); and, once marked, how often its first poll is
/// tried again and how many calls have gone by since the last trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Record {
    strikes: u32,
    suspect: bool,
    parole_shift: u32,
    since_trial: u32,
}

// Strikes fit below the suspect bit.
const _: () = assert!(STRIKES < 0x80);

impl Record {
    fn unpack(word: u32) -> Record {
        Record {
            strikes: word & 0x7f,
            suspect: word & 0x80 != 0,
            parole_shift: (word >> 8) & 0xff,
            since_trial: word >> 16,
        }
    }

    fn pack(self) -> u32 {
        self.strikes
            | (u32::from(self.suspect) << 7)
            | (self.parole_shift << 8)
            | (self.since_trial.min(0xffff) << 16)
    }

    fn marked(self) -> bool {
        self.strikes >= STRIKES
    }
}

/// Methods by the address of their descriptor. Records are read and
/// written without ordering or locks: connections racing on one may lose
/// an update, which at worst brings a mark back, clears it early (any
/// fast first poll in place clears it, one that began before the mark
/// too) or makes a suspect of a method with strikes; the next trial, or
/// the next slow polls, settle it.
#[derive(Debug)]
pub(crate) struct SlowMethods([AtomicU32; SLOTS]);

impl Default for SlowMethods {
    fn default() -> Self {
        SlowMethods(std::array::from_fn(|_| AtomicU32::new(0)))
    }
}

/// The slot of `method`'s record.
fn slot_of(method: Option<&'static MethodDescriptor>) -> usize {
    let address = method.map_or(0, |method| std::ptr::from_ref(method) as usize);
    // Descriptors are at least 8-byte aligned: skip the zero bits.
    (address >> 3) % SLOTS
}

impl SlowMethods {
    /// Whether this call of `method` gets a task at once: the method is
    /// marked, and it is not this call's turn to try its first poll in
    /// place.
    pub(crate) fn spawns(&self, method: Option<&'static MethodDescriptor>) -> bool {
        let Some(slot) = self.0.get(slot_of(method)) else {
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

    /// Runs `poll`, the first poll of a call of `method`, and counts how
    /// long it took, timed as this thread's clock says: outside a
    /// [`Stretch`], from now; in one that times each poll, from the end of
    /// the one before; in one timed as a whole, not at all for a method
    /// whose record is clear (the stretch vouches for it), and from now
    /// for the others.
    pub(crate) fn first_poll<T>(
        &self,
        method: Option<&'static MethodDescriptor>,
        poll: impl FnOnce() -> T,
    ) -> T {
        self.first_poll_in(slot_of(method), poll)
    }

    fn first_poll_in<T>(&self, index: usize, poll: impl FnOnce() -> T) -> T {
        let Some(slot) = self.0.get(index) else {
            return poll();
        };
        let mut clock = CLOCK.get();
        if let Clock::Whole(mut untimed) = clock
            && slot.load(Ordering::Relaxed) == 0
        {
            match untimed.note(index) {
                Noted::Already => return poll(),
                Noted::Now => {
                    CLOCK.set(Clock::Whole(untimed));
                    return poll();
                }
                // More methods than the stretch can name: the rest of
                // it times each poll, or a slow method behind the
                // others could go untimed in every stretch.
                Noted::Full => {
                    clock = Clock::Each {
                        at: Instant::now(),
                        untimed,
                    };
                    CLOCK.set(clock);
                }
            }
        }
        let started = match clock {
            Clock::Each { at, .. } => at,
            Clock::Alone | Clock::Whole(_) => Instant::now(),
        };
        let polled = poll();
        let ended = Instant::now();
        // A stretch begun inside `poll` (a handler that serves a
        // connection of its own, synchronously) has given the clock back.
        if let Clock::Each { untimed, .. } = clock {
            CLOCK.set(Clock::Each { at: ended, untimed });
        }
        Self::count(slot, ended.saturating_duration_since(started));
        polled
    }

    /// Counts a first poll that took `took` in `slot`'s record.
    fn count(slot: &AtomicU32, took: Duration) {
        let word = slot.load(Ordering::Relaxed);
        let mut record = Record::unpack(word);
        let slow = took > SLOW_FIRST_POLL;
        match (record.marked(), slow) {
            // A trial in place that was fast: the mark was the machine's.
            (true, false) => record = Record::default(),
            // Slow again: the next trial comes later.
            (true, true) => record.parole_shift = (record.parole_shift + 1).min(MAX_PAROLE_SHIFT),
            (false, true) => {
                record.strikes += 1;
                record.suspect = false;
            }
            // A fast one in between: the slow ones were the machine's.
            (false, false) => record = Record::default(),
        }
        let updated = record.pack();
        if updated != word {
            slot.store(updated, Ordering::Relaxed);
        }
    }

    /// Makes the method in slot `index` a suspect, if its record is clear.
    fn suspect(&self, index: usize) {
        let Some(slot) = self.0.get(index) else {
            return;
        };
        if slot.load(Ordering::Relaxed) == 0 {
            let suspect = Record {
                suspect: true,
                ..Record::default()
            };
            slot.store(suspect.pack(), Ordering::Relaxed);
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
    /// In a stretch that polled more methods untimed than it can name:
    /// from the end of the one before (`at`), one reading a call. Those it
    /// named are kept, for the stretch's end.
    Each { at: Instant, untimed: Untimed },
    /// In a stretch timed as a whole: polls of methods with a clear record
    /// are not timed (the stretch's own length vouches for them, and which
    /// they were is noted); the others are, on their own.
    Whole(Untimed),
}

/// The methods (by slot) a stretch timed as a whole polled untimed, at
/// most [`UNTIMED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Untimed {
    slots: [u16; UNTIMED],
    len: u8,
}

/// What noting a method did.
enum Noted {
    /// It was noted before in the stretch.
    Already,
    /// It is noted now.
    Now,
    /// There is no room to note it.
    Full,
}

impl Untimed {
    fn note(&mut self, index: usize) -> Noted {
        // Below `SLOTS`, which fits.
        let index = index as u16;
        if self.slots().any(|noted| noted == usize::from(index)) {
            return Noted::Already;
        }
        match self.slots.get_mut(usize::from(self.len)) {
            Some(free) => {
                *free = index;
                self.len += 1;
                Noted::Now
            }
            None => Noted::Full,
        }
    }

    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .take(usize::from(self.len))
            .map(|slot| usize::from(*slot))
    }
}

/// A stretch of calls that one connection's task starts back to back,
/// with no `.await` between them.
///
/// A stretch is timed as a whole: if it took no longer than
/// [`SLOW_FIRST_POLL`], none of its first polls did, and a fast poll
/// changes nothing for a method with a clear record. So a stretch of calls
/// to methods that were never slow reads the clock once, at its end, not
/// once a call. A stretch that was slow makes suspects of the methods it
/// polled untimed, and a suspect's next first poll is timed on its own: a
/// method slow on every call gets its first strike from its second call.
/// Past [`UNTIMED`] methods polled untimed, the rest of the stretch times
/// each poll from the end of the one before (the time between two polls,
/// reading the next request, then counts against the later call).
///
/// Not `Send`, so that a connection's task (which must be) cannot hold one
/// across an `.await`: the task could resume on another thread, or other
/// tasks run in the stretch, and their first polls be timed by it.
pub(crate) struct Stretch {
    began: Instant,
    /// The clock of the stretch this one is inside, if any.
    outer: Clock,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Stretch {
    /// Begins a stretch on this thread at `now` (a reading of the clock
    /// just taken). The clock is tokio's, as the connection's: under a
    /// paused test clock first polls take no time, rather than all the
    /// real time between two readings.
    pub(crate) fn begin(now: Instant) -> Stretch {
        Stretch {
            began: now,
            outer: CLOCK.replace(Clock::Whole(Untimed::default())),
            _not_send: std::marker::PhantomData,
        }
    }

    /// Ends the stretch, whose first polls were counted in `methods`: if
    /// it was slow, what it polled untimed is suspect.
    pub(crate) fn end(self, methods: &SlowMethods) {
        if self.began.elapsed() <= SLOW_FIRST_POLL {
            return;
        }
        // (Each poll after the first `UNTIMED` methods was timed.)
        if let Clock::Whole(untimed) | Clock::Each { untimed, .. } = CLOCK.get() {
            untimed.slots().for_each(|index| methods.suspect(index));
        }
    }
}

impl Drop for Stretch {
    fn drop(&mut self) {
        CLOCK.set(self.outer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Duration = SLOW_FIRST_POLL.saturating_mul(2);
    const FAST: Duration = Duration::ZERO;

    /// Counts a first poll that took `took` for the method with no
    /// descriptor (slot 0).
    fn count(set: &SlowMethods, took: Duration) {
        SlowMethods::count(&set.0[0], took);
    }

    /// Marks the method with no descriptor.
    fn marked() -> SlowMethods {
        let set = SlowMethods::default();
        for _ in 0..STRIKES {
            count(&set, SLOW);
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

    fn record(set: &SlowMethods, index: usize) -> Record {
        Record::unpack(set.0[index].load(Ordering::Relaxed))
    }

    /// Lets time pass, strikes the method in slot 0, and polls it fast:
    /// timed on its own, from its own start, so the strike goes.
    async fn struck_then_fast(set: &SlowMethods) {
        tokio::time::advance(SLOW_FIRST_POLL * 4).await;
        count(set, SLOW);
        set.first_poll_in(0, || ());
        assert_eq!(
            record(set, 0),
            Record::default(),
            "timed fast: the strike is gone"
        );
    }

    #[test]
    fn only_strikes_in_a_row_mark_a_method() {
        let set = SlowMethods::default();
        count(&set, SLOW);
        count(&set, SLOW);
        count(&set, FAST);
        count(&set, SLOW);
        count(&set, SLOW);
        assert!(!set.spawns(None));
        count(&set, SLOW);
        assert!(set.spawns(None));
        assert!(set.spawns(None), "marked, calls are spawned");
    }

    #[test]
    fn a_marked_method_is_tried_in_place_now_and_then_and_cleared_if_fast() {
        let set = marked();
        assert_eq!(spawned_before_trial(&set), PAROLE_AFTER - 1);
        // The trial was fast: the mark is gone.
        count(&set, FAST);
        assert!(!set.spawns(None));
        assert_eq!(set.0[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_method_slow_on_trial_is_tried_ever_more_rarely() {
        let set = marked();
        let mut waits = Vec::new();
        for _ in 0..=MAX_PAROLE_SHIFT + 1 {
            waits.push(spawned_before_trial(&set) + 1);
            count(&set, SLOW);
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
            suspect: false,
            parole_shift: MAX_PAROLE_SHIFT,
            since_trial: PAROLE_AFTER << MAX_PAROLE_SHIFT,
        };
        assert_eq!(Record::unpack(record.pack()), record);
        let suspect = Record {
            suspect: true,
            strikes: STRIKES - 1,
            ..Record::default()
        };
        assert_eq!(Record::unpack(suspect.pack()), suspect);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_poll_outside_a_stretch_is_timed_from_its_start() {
        let set = SlowMethods::default();
        struck_then_fast(&set).await;
        set.first_poll_in(0, || std::thread::sleep(SLOW_FIRST_POLL * 2));
        assert_eq!(
            record(&set, 0),
            Record::default(),
            "a paused clock does not move in it"
        );
        assert_eq!(CLOCK.get(), Clock::Alone);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stretch_timed_as_a_whole_times_no_poll_of_a_method_with_a_clear_record() {
        let set = SlowMethods::default();
        let stretch = Stretch::begin(Instant::now());
        set.first_poll_in(1, || ());
        // Time passes in the stretch (a slow poll, say).
        struck_then_fast(&set).await;
        set.first_poll_in(1, || ());
        // The stretch was slow: what it polled untimed is suspect.
        stretch.end(&set);
        assert_eq!(CLOCK.get(), Clock::Alone);
        let suspect = Record {
            suspect: true,
            ..Record::default()
        };
        assert_eq!(record(&set, 1), suspect);
        assert_eq!(
            record(&set, 0),
            Record::default(),
            "timed on its own, it is no suspect"
        );
        // A suspect is timed on its own: a fast poll clears it.
        let fast = Stretch::begin(Instant::now());
        set.first_poll_in(1, || ());
        assert_eq!(record(&set, 1), Record::default());
        set.first_poll_in(2, || ());
        fast.end(&set);
        assert_eq!(
            record(&set, 2),
            Record::default(),
            "a fast stretch suspects nobody"
        );
    }

    #[test]
    fn past_the_methods_a_stretch_names_it_times_each_poll_from_the_end_of_the_one_before() {
        let set = SlowMethods::default();
        let stretch = Stretch::begin(Instant::now());
        for index in 1..=UNTIMED {
            set.first_poll_in(index, || ());
            set.first_poll_in(index, || ());
        }
        let Clock::Whole(named) = CLOCK.get() else {
            panic!("not timed as a whole");
        };
        assert_eq!(
            named.slots().collect::<Vec<_>>(),
            (1..=UNTIMED).collect::<Vec<_>>()
        );
        // One more method: from now on each poll is timed, the time before
        // it counting against it.
        let (slow, fast) = (UNTIMED + 1, UNTIMED + 2);
        set.first_poll_in(slow, || ());
        let Clock::Each {
            at: first_ended,
            untimed,
        } = CLOCK.get()
        else {
            panic!("not timing each poll");
        };
        assert_eq!(untimed, named, "the named methods are kept");
        std::thread::sleep(SLOW_FIRST_POLL * 2);
        set.first_poll_in(slow, || ());
        assert_eq!(record(&set, slow).strikes, 1);
        let Clock::Each { at: second_ended, .. } = CLOCK.get() else {
            panic!("no longer timing each poll");
        };
        assert!(second_ended - first_ended >= SLOW_FIRST_POLL * 2);
        set.first_poll_in(fast, || ());
        assert_eq!(record(&set, fast), Record::default());
        // The stretch was slow: the named methods are suspects.
        stretch.end(&set);
        assert!((1..=UNTIMED).all(|index| record(&set, index).suspect));
        assert_eq!(CLOCK.get(), Clock::Alone);
    }

    #[test]
    fn a_method_slow_on_every_call_is_marked_at_its_fourth_between_fast_ones() {
        // What a connection does when a client calls a slow method and a
        // fast one in turn, each in a read of its own.
        let set = SlowMethods::default();
        let (slow, fast) = (1, 2);
        let mut calls = 0;
        while !record(&set, slow).marked() {
            calls += 1;
            assert!(
                calls <= STRIKES + 1,
                "not marked after {calls} calls: {:?}",
                record(&set, slow)
            );
            let stretch = Stretch::begin(Instant::now());
            set.first_poll_in(slow, || std::thread::sleep(SLOW_FIRST_POLL * 2));
            stretch.end(&set);
            let stretch = Stretch::begin(Instant::now());
            set.first_poll_in(fast, || ());
            stretch.end(&set);
        }
        // The first call only made it a suspect.
        assert_eq!(calls, STRIKES + 1);
    }

    #[test]
    fn a_method_slow_on_every_call_behind_more_methods_than_a_stretch_names_is_marked() {
        // Each read: eight fast methods, then the slow one; in between, a
        // read with none of them.
        let set = SlowMethods::default();
        let slow = 20;
        let mut reads = 0;
        while !record(&set, slow).marked() {
            reads += 1;
            assert!(reads <= STRIKES + 1, "not marked after {reads} reads");
            let stretch = Stretch::begin(Instant::now());
            for fast in 1..=2 * UNTIMED {
                set.first_poll_in(fast, || ());
            }
            set.first_poll_in(slow, || std::thread::sleep(SLOW_FIRST_POLL * 2));
            stretch.end(&set);
            let stretch = Stretch::begin(Instant::now());
            set.first_poll_in(30, || ());
            stretch.end(&set);
        }
    }

    #[test]
    fn a_stretch_inside_a_first_poll_gives_the_clock_back() {
        let set = SlowMethods::default();
        let outer = Stretch::begin(Instant::now());
        set.first_poll_in(1, || {
            let inner = Stretch::begin(Instant::now());
            set.first_poll_in(2, || ());
            drop(inner);
        });
        let Clock::Whole(untimed) = CLOCK.get() else {
            panic!("the outer stretch's clock is gone");
        };
        assert_eq!(untimed.slots().collect::<Vec<_>>(), [1]);
        drop(outer);
        assert_eq!(CLOCK.get(), Clock::Alone);
    }
}
