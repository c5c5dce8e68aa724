//! [`SlowMethods`]: the methods whose first poll was once slow, which get
//! a task of their own from the start.
//!
//! A call's first poll runs in its connection's task (most handlers
//! answer on it). A handler that computes for long before its first
//! `.await` would hold that connection up, so the first time one takes
//! longer than [`SLOW_FIRST_POLL`], its method is marked and every later
//! call of it is spawned at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::descriptor::MethodDescriptor;

/// A first poll longer than this marks its method slow.
pub(crate) const SLOW_FIRST_POLL: Duration = Duration::from_micros(200);

/// Bits of the set: methods share a bit now and then, which only makes a
/// fast method spawn too.
const BITS: usize = 1024;

/// A set of methods, one bit each, by the address of their descriptor.
#[derive(Debug)]
pub(crate) struct SlowMethods([AtomicU64; BITS / 64]);

impl Default for SlowMethods {
    fn default() -> Self {
        SlowMethods(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl SlowMethods {
    fn bit(method: Option<&'static MethodDescriptor>) -> (usize, u64) {
        let address = method.map_or(0, |method| std::ptr::from_ref(method) as usize);
        // Descriptors are at least 8-byte aligned: skip the zero bits.
        let bit = (address >> 3) % BITS;
        (bit / 64, 1 << (bit % 64))
    }

    /// Whether `method` was marked.
    pub(crate) fn contains(&self, method: Option<&'static MethodDescriptor>) -> bool {
        let (word, mask) = Self::bit(method);
        self.0
            .get(word)
            .is_some_and(|word| word.load(Ordering::Relaxed) & mask != 0)
    }

    /// Marks `method`.
    pub(crate) fn mark(&self, method: Option<&'static MethodDescriptor>) {
        let (word, mask) = Self::bit(method);
        if let Some(word) = self.0.get(word) {
            word.fetch_or(mask, Ordering::Relaxed);
        }
    }
}
