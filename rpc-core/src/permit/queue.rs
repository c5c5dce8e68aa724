//! The queue of a connection's permit waiters: places reused, served
//! first come first served, and the waiters to wake once its lock is
//! released.

use std::collections::VecDeque;
use std::task::Waker;

/// The waiters, first come first served. Each has a place in `places`,
/// reused once its waiter is done with it: waiting allocates nothing.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// Places in order of arrival: waiting ones, and ones whose waiter
    /// left, taken out when they come up.
    pub(super) order: VecDeque<usize>,
    pub(super) places: Vec<Place>,
    pub(super) unused: Vec<usize>,
    /// Places in `order` whose waiter left: when they are more than
    /// [`COMPACT_AFTER`] and half of `order`, they are taken out, so a
    /// waiter that stays at the front while others come and go cannot
    /// make the queue grow without bound.
    pub(super) left: usize,
}

/// Left places tolerated in the queue before it is compacted.
pub(super) const COMPACT_AFTER: usize = 32;

/// One waiter's place.
#[derive(Debug)]
pub(super) struct Place {
    pub(super) turn: Turn,
    pub(super) waker: Option<Waker>,
}

/// Where a waiter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    Waiting,
    /// Handed a permit, which it has yet to take.
    Granted,
    Closed,
    /// It left while waiting; its place is still in `order`.
    Left,
}

/// Waiters to wake once the lock is released (waking under it would
/// hold every other waiter up, and a waker that came back to the pool
/// would deadlock). Mostly one, kept apart so that waking it allocates
/// nothing.
#[derive(Default)]
pub(super) struct Woken {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Woken {
    pub(super) fn add(&mut self, waker: Option<Waker>) {
        match self.first {
            None => self.first = waker,
            Some(_) => self.rest.extend(waker),
        }
    }

    pub(super) fn wake(self) {
        for waker in self.first.into_iter().chain(self.rest) {
            waker.wake();
        }
    }
}

impl Queue {
    /// Queues a waiter woken through `waker`; its place's key.
    pub(super) fn enter(&mut self, waker: &Waker) -> usize {
        let place = Place {
            turn: Turn::Waiting,
            waker: Some(waker.clone()),
        };
        let key = match self.unused.pop() {
            Some(key) => {
                if let Some(slot) = self.places.get_mut(key) {
                    *slot = place;
                }
                key
            }
            None => {
                self.places.push(place);
                self.places.len() - 1
            }
        };
        self.order.push_back(key);
        key
    }

    /// Gives the place back: nothing refers to it any more.
    pub(super) fn reuse(&mut self, key: usize) {
        self.unused.push(key);
    }

    /// A place whose waiter left, popped from `order`.
    pub(super) fn reclaim(&mut self, key: usize) {
        self.left = self.left.saturating_sub(1);
        self.reuse(key);
    }

    /// The waiter at `key` leaves while waiting. The last to arrive (a
    /// connection's own loop, most often) is taken out at once; any other
    /// is marked, and taken out when it comes up or when the marked ones
    /// are too many (finding it now would mean a walk through the queue).
    pub(super) fn leave(&mut self, key: usize) {
        if self.order.back() == Some(&key) {
            self.order.pop_back();
            self.reuse(key);
            return;
        }
        if let Some(place) = self.places.get_mut(key) {
            place.turn = Turn::Left;
            place.waker = None;
        }
        self.left += 1;
        if self.left > COMPACT_AFTER && self.left > self.order.len() / 2 {
            let Queue {
                order,
                places,
                unused,
                ..
            } = self;
            order.retain(|&key| {
                let left = places.get(key).is_none_or(|place| place.turn == Turn::Left);
                if left {
                    unused.push(key);
                }
                !left
            });
            self.left = 0;
        }
    }

    pub(super) fn turn(&self, key: usize) -> Turn {
        self.places.get(key).map_or(Turn::Closed, |place| place.turn)
    }

    /// Ends a waiter's wait (out of `order` already): its waker, to wake.
    pub(super) fn settle(&mut self, key: usize, turn: Turn) -> Option<Waker> {
        let place = self.places.get_mut(key)?;
        place.turn = turn;
        place.waker.take()
    }
}
