//! [`Later`]: what a call table's user does once it lets the table's lock
//! go.

use crate::client::calls::CallTable;
use crate::client::queue::Now;
use crate::client::waiter::Wake;

/// What to do once the table's lock is let go: wake the waits that ended
/// (waking under the lock would hold every other call up), and look again
/// at places parked. Mostly one wake, kept apart so that it allocates
/// nothing. It carries the clock's reading for the requests sent from the
/// queue meanwhile.
#[derive(Default)]
pub(super) struct Later {
    first: Option<Wake>,
    rest: Vec<Wake>,
    pub(super) parked: bool,
    pub(super) now: Now,
}

impl Later {
    /// Nothing to do yet, with `now` for the clock's reading.
    pub(super) fn at(now: Now) -> Later {
        Later {
            now,
            ..Later::default()
        }
    }

    pub(super) fn wake(&mut self, wake: Option<Wake>) {
        match self.first {
            None => self.first = wake,
            Some(_) => self.rest.extend(wake),
        }
    }

    #[inline]
    pub(super) fn run(self, calls: &CallTable) {
        if let Some(wake) = self.first {
            wake.wake();
        }
        if !self.rest.is_empty() {
            self.rest.into_iter().for_each(Wake::wake);
        }
        if self.parked {
            // The writer may have passed a parked place's request since it
            // was parked, and looked for parked places before it was
            // there: one of the two looks sees the other (SeqCst on both
            // sides).
            calls.unpark();
        }
    }
}
