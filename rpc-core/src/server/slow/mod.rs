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

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::descriptor::MethodDescriptor;

mod stretch;

pub(crate) use stretch::Stretch;

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
        let clear = slot.load(Ordering::Relaxed) == 0;
        let (polled, took) = stretch::timed(index, clear, poll);
        if let Some(took) = took {
            Self::count(slot, took);
        }
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) const SLOW: Duration = SLOW_FIRST_POLL.saturating_mul(2);
    const FAST: Duration = Duration::ZERO;

    /// Counts a first poll that took `took` for the method with no
    /// descriptor (slot 0).
    pub(super) fn count(set: &SlowMethods, took: Duration) {
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

    /// The record in slot `index`.
    pub(super) fn record(set: &SlowMethods, index: usize) -> Record {
        Record::unpack(set.0[index].load(Ordering::Relaxed))
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
}
