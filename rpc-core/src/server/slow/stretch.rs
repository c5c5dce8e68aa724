//! [`Stretch`]: how the first polls a connection starts back to back are
//! timed, on the thread that runs them, and what a slow run of them tells
//! [`SlowMethods`].

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

use super::{SLOTS, SLOW_FIRST_POLL, SlowMethods};

/// Distinct methods a stretch timed as a whole remembers having polled
/// untimed; past them, it times each poll.
const UNTIMED: usize = 4;

// Slots are named by a `u16` in [`Untimed`].
const _: () = assert!(SLOTS <= 1 << 16);

/// Runs `poll`, a first poll of the method in slot `index` (whose record
/// is `clear`, or not), and says how long it took if this thread's clock
/// times it: outside a [`Stretch`], from now; in a stretch timed as a
/// whole, not at all if the record is clear (the stretch vouches for it,
/// and notes the method), else from now; in one past the methods it can
/// name, from the end of the poll before.
pub(super) fn timed<T>(index: usize, clear: bool, poll: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let mut clock = CLOCK.get();
    if let Clock::Whole(mut untimed) = clock
        && clear
    {
        match untimed.note(index) {
            Noted::Already => return (poll(), None),
            Noted::Now => {
                CLOCK.set(Clock::Whole(untimed));
                return (poll(), None);
            }
            // More methods than the stretch can name: the rest of it
            // times each poll, or a slow method behind the others could
            // go untimed in every stretch.
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
    // A stretch begun inside `poll` (a handler that serves a connection
    // of its own, synchronously) has given the clock back.
    if let Clock::Each { untimed, .. } = clock {
        CLOCK.set(Clock::Each { at: ended, untimed });
    }
    (polled, Some(ended.saturating_duration_since(started)))
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
    use super::super::tests::{SLOW, count, record};
    use super::super::{Record, STRIKES};
    use super::*;

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
