//! [`Admission`]: connections that have not yet said what they are, so a
//! server at its connection limit can make room for a new one.
//!
//! A connection costs a file descriptor from the moment it is accepted, but
//! until its first message arrives (a binary preface, or an HTTP request's
//! headers) it has done nothing for anyone. Thousands of sockets that open
//! and say nothing would otherwise hold every slot until their preface
//! timeout, and the server would stop accepting real callers. So a server
//! at its limit closes its oldest newcomer for each connection that knocks:
//! real callers, who speak at once, are never the oldest for long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// The newcomers of one server, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    next: u64,
    waiting: BTreeMap<u64, CancellationToken>,
}

/// A connection that has not yet sent its first message. Dropping it (the
/// connection has spoken, or closed) takes it out of the queue.
#[derive(Debug)]
pub struct Newcomer {
    number: u64,
    evicted: CancellationToken,
    queue: Arc<Mutex<Queue>>,
}

impl Admission {
    /// An empty queue.
    pub fn new() -> Admission {
        Admission::default()
    }

    /// Enters a newly accepted connection.
    pub fn admit(&self) -> Newcomer {
        let evicted = CancellationToken::new();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let number = queue.next;
        queue.next += 1;
        queue.waiting.insert(number, evicted.clone());
        Newcomer {
            number,
            evicted,
            queue: Arc::clone(&self.queue),
        }
    }

    /// Tells the oldest newcomer to close, if there is one.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .pop_first();
        match oldest {
            Some((_, evicted)) => {
                evicted.cancel();
                true
            }
            None => false,
        }
    }

    /// How many connections have not yet spoken.
    pub fn waiting(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .len()
    }
}

impl Newcomer {
    /// Completes when the server wants this connection's slot back.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }

    /// A token cancelled at eviction, for a task that outlives this value's
    /// place in the queue.
    pub fn eviction(&self) -> CancellationToken {
        self.evicted.clone()
    }
}

impl Drop for Newcomer {
    fn drop(&mut self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_newcomer_goes_first_and_those_that_spoke_are_spared() {
        let admission = Admission::new();
        let first = admission.admit();
        let second = admission.admit();
        let third = admission.admit();
        drop(first);
        assert_eq!(admission.waiting(), 2);
        assert!(admission.evict_oldest());
        assert!(second.evicted.is_cancelled());
        assert!(!third.evicted.is_cancelled());
        assert!(admission.evict_oldest());
        assert!(third.evicted.is_cancelled());
        assert!(!admission.evict_oldest(), "nobody is left to evict");
        drop((second, third));
        assert_eq!(admission.waiting(), 0);
    }
}
