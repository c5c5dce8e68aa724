//! [`Balance`]: the picker of a client over a changing set of servers.
//!
//! Power of two choices over a peak-EWMA latency estimate weighted by the
//! calls in flight, as Finagle does it: pick two endpoints at random,
//! send to the one whose `latency × (in flight + 1)` is lower. Cheap (two
//! reads per call, no shared sort) and it keeps traffic off a slow
//! replica, where a slow one's calls pile up. Round robin is the other
//! policy, for servers known to be equal.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::endpoint::Endpoint;
use crate::client::picker::Pick;

/// How a client spreads its calls over its servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Power of two choices over a peak-EWMA latency estimate weighted by
    /// calls in flight (Finagle's defaults: 10 s decay; an endpoint with
    /// calls in flight and no estimate yet costs as much as can be).
    #[default]
    PeakEwma,
    /// Each server in turn.
    RoundRobin,
}

/// The cost of an endpoint with calls in flight and no latency estimate
/// yet: Finagle's penalty, higher than any measured cost, so a new
/// endpoint gets one call at a time until it has answered one.
const PENALTY: f64 = (u64::MAX >> 16) as f64;

/// The endpoints of a balanced client.
pub(crate) struct Balance {
    policy: Policy,
    /// The set, replaced whole on each change: picks read a snapshot.
    set: RwLock<Arc<[Arc<Endpoint>]>>,
    /// Told when the set changes, for calls waiting for a first server.
    changed: Notify,
    /// Told when an endpoint fails, so discovery looks again at once.
    failed: Arc<Notify>,
    /// The next endpoint for round robin.
    next: AtomicUsize,
    /// Cancelled when the balancer (the last clone of its client) drops.
    gone: CancellationToken,
}

impl Drop for Balance {
    fn drop(&mut self) {
        self.gone.cancel();
    }
}

impl Balance {
    /// An empty set, spread by `policy`; `failed` hears of each endpoint
    /// that fails.
    pub(crate) fn new(policy: Policy, failed: Arc<Notify>) -> Balance {
        Balance {
            policy,
            set: RwLock::new(Arc::from(Vec::new())),
            changed: Notify::new(),
            failed,
            next: AtomicUsize::new(0),
            gone: CancellationToken::new(),
        }
    }

    /// Cancelled when the balancer drops.
    pub(crate) fn gone(&self) -> CancellationToken {
        self.gone.clone()
    }

    /// Every endpoint in the set.
    pub(crate) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.snapshot().to_vec()
    }

    fn snapshot(&self) -> Arc<[Arc<Endpoint>]> {
        Arc::clone(&self.set.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the set with `endpoints`: endpoints with a target already
    /// there are kept (with their connection and estimates), the rest are
    /// added, and those not listed are removed: they take no new calls,
    /// and their connections close once their calls have ended.
    pub(crate) fn update(&self, endpoints: Vec<Arc<Endpoint>>) {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let mut old: HashMap<&str, &Arc<Endpoint>> = set.iter().map(|e| (&**e.target(), e)).collect();
        let mut kept: Vec<Arc<Endpoint>> = Vec::with_capacity(endpoints.len());
        let mut seen = HashSet::with_capacity(endpoints.len());
        for new in endpoints {
            // A target listed twice is one server.
            if !seen.insert(Arc::clone(new.target())) {
                continue;
            }
            kept.push(old.remove(&**new.target()).map_or(new, Arc::clone));
        }
        for gone in old.into_values() {
            gone.remove();
        }
        *set = Arc::from(kept);
        drop(set);
        self.changed.notify_waiters();
    }

    fn pick_from(&self, set: &[Arc<Endpoint>], avoid: Option<&Endpoint>) -> Option<Arc<Endpoint>> {
        let now = Instant::now();
        let usable = |endpoint: &Arc<Endpoint>| {
            endpoint.available(now) && avoid.is_none_or(|avoid| !std::ptr::eq(avoid, endpoint.as_ref()))
        };
        match self.policy {
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % set.len().max(1);
                let (after, before) = set.split_at(start);
                before
                    .iter()
                    .chain(after)
                    .find(|endpoint| usable(endpoint))
                    .cloned()
            }
            Policy::PeakEwma => {
                let cost = |endpoint: &Endpoint| {
                    let pending = endpoint.pending() as f64;
                    match endpoint.latency_now(now) {
                        0.0 if pending == 0.0 => 0.0,
                        0.0 => PENALTY + pending,
                        latency => latency * (pending + 1.0),
                    }
                };
                let (a, b) = two(set.len());
                let (Some(a), Some(b)) = (set.get(a), set.get(b)) else {
                    return None;
                };
                match (usable(a), usable(b)) {
                    (true, true) if cost(b) < cost(a) => Some(Arc::clone(b)),
                    (true, _) => Some(Arc::clone(a)),
                    (false, true) => Some(Arc::clone(b)),
                    // Both out: the cheapest of the rest that is usable.
                    (false, false) => set
                        .iter()
                        .filter(|endpoint| usable(endpoint))
                        .min_by(|x, y| cost(x).total_cmp(&cost(y)))
                        .cloned(),
                }
            }
        }
    }
}

impl Pick for Arc<Balance> {
    fn pick(&self, avoid: Option<&Endpoint>) -> Option<Cow<'_, Arc<Endpoint>>> {
        let set = self.snapshot();
        if set.is_empty() {
            return None;
        }
        self.pick_from(&set, avoid)
            // Only `avoid` left: better it than nothing.
            .or_else(|| self.pick_from(&set, None))
            // Every endpoint out (all waiting out a backoff): the one whose
            // next attempt comes first gets the call, which waits for it
            // if its deadline allows.
            .or_else(|| {
                set.iter()
                    .filter(|endpoint| !endpoint.is_removed())
                    .min_by_key(|endpoint| endpoint.retry_due())
                    .cloned()
            })
            .map(Cow::Owned)
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        Balance::endpoints(self)
    }

    fn balanced(&self) -> bool {
        true
    }

    fn failed(&self, _endpoint: &Endpoint) {
        self.failed.notify_one();
    }

    fn changes(&self) -> Option<&Notify> {
        Some(&self.changed)
    }
}

/// Two different indexes below `len` (the same one if `len` is 1).
fn two(len: usize) -> (usize, usize) {
    if len < 2 {
        return (0, 0);
    }
    let a = random() % len;
    let b = (a + 1 + random() % (len - 1)) % len;
    (a, b)
}

/// A fast per-thread pseudorandom number (xorshift64*), seeded from the
/// standard library's random hash keys: a balancer needs spread, not
/// secrecy.
fn random() -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u8) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_differs_and_spreads() {
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            let (a, b) = two(3);
            assert_ne!(a, b);
            seen[a] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
        assert_eq!(two(1), (0, 0));
    }
}
