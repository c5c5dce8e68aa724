//! [`CallPermits`]: a connection's cap on calls in flight, and the
//! [`CallPermit`] each call holds under it.
//!
//! Both sides use the same pair. A server call holds its permit until its
//! last frame is written (a client that stops reading holds its calls'
//! permits, so it cannot make the server queue more); a client call until
//! its caller has its answer (or gave up) *and* its request has left
//! (abandoned calls cannot pile requests up behind a stalled socket). Only
//! the server waits for a permit; a client call that finds none queues its
//! request in its connection's call table. The writer reads how many
//! permits are held to tell whether more frames are on their way.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

mod gauge;
mod queue;

pub(crate) use gauge::Gauge;
use queue::{Queue, Turn, Woken};

/// The permits of one connection.
///
/// Taking and returning a permit are one atomic operation each while
/// nobody waits (every call takes one and returns one, so this is the
/// path that counts); only waiters go through a lock, in a queue that
/// serves them first come, first served: a returned permit goes to the
/// first waiter, and newcomers queue behind waiters.
#[derive(Debug, Clone)]
pub(crate) struct CallPermits {
    pool: Arc<Pool>,
}

/// One call's permit under its connection's cap. Dropping it frees it.
#[derive(Debug)]
pub(crate) struct CallPermit {
    pool: Arc<Pool>,
}

/// Why a wait for a permit ended without one: the permits were closed
/// (the connection is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoPermit;

#[derive(Debug)]
struct Pool {
    /// Calls the cap allows.
    total: usize,
    /// Counts permits held across every connection of a server.
    gauge: Option<Arc<Gauge>>,
    /// Permits neither held nor handed to a waiter.
    free: AtomicUsize,
    /// How many wait in the queue: while any do, a returned permit goes
    /// to them, through the lock.
    queued: AtomicUsize,
    closed: AtomicBool,
    queue: Mutex<Queue>,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Each update under the lock leaves the queue whole: a panic
        // cannot interrupt one halfway, so poisoning is ignored.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a free permit, if there is one.
    fn take_free(&self) -> bool {
        // SeqCst, read and write: with `release`'s pair (return a permit,
        // then look for waiters) and a waiter's (count itself, then look
        // here), one of the two always sees the other.
        let mut free = self.free.load(Ordering::SeqCst);
        loop {
            if free == 0 {
                return false;
            }
            match self
                .free
                .compare_exchange_weak(free, free - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
    }

    /// A permit for a newcomer: only when nobody waits, and the pool is open.
    fn try_take(&self) -> bool {
        self.queued.load(Ordering::SeqCst) == 0 && !self.closed.load(Ordering::Acquire) && self.take_free()
    }

    /// Returns a permit; it goes to the first waiter, if any.
    fn release(&self) {
        self.free.fetch_add(1, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) != 0 {
            let mut queue = self.lock();
            let woken = self.hand_off(&mut queue);
            drop(queue);
            woken.wake();
        }
    }

    /// Gives free permits to waiters, first come first served, and takes
    /// the places of waiters that left out of the way. Under the lock.
    fn hand_off(&self, queue: &mut Queue) -> Woken {
        let mut woken = Woken::default();
        while let Some(&key) = queue.order.front() {
            if queue.turn(key) == Turn::Left {
                queue.order.pop_front();
                queue.reclaim(key);
                continue;
            }
            if !self.take_free() {
                break;
            }
            queue.order.pop_front();
            self.queued.fetch_sub(1, Ordering::SeqCst);
            woken.add(queue.settle(key, Turn::Granted));
        }
        woken
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut queue = self.lock();
        let mut woken = Woken::default();
        while let Some(key) = queue.order.pop_front() {
            match queue.turn(key) {
                Turn::Left => queue.reclaim(key),
                _ => woken.add(queue.settle(key, Turn::Closed)),
            }
        }
        self.queued.store(0, Ordering::SeqCst);
        drop(queue);
        woken.wake();
    }
}

impl CallPermits {
    /// `total` permits (at least one).
    pub(crate) fn new(total: usize) -> CallPermits {
        Self::with_gauge(total, None)
    }

    fn with_gauge(total: usize, gauge: Option<Arc<Gauge>>) -> CallPermits {
        let total = total.max(1);
        CallPermits {
            pool: Arc::new(Pool {
                total,
                gauge,
                free: AtomicUsize::new(total),
                queued: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                queue: Mutex::default(),
            }),
        }
    }

    /// The same number of permits, each also counted in `gauge` while
    /// held. (Made where the permits are: they are new ones.)
    pub(crate) fn counted(self, gauge: Arc<Gauge>) -> CallPermits {
        Self::with_gauge(self.pool.total, Some(gauge))
    }

    /// How many calls the cap allows.
    pub(crate) fn total(&self) -> usize {
        self.pool.total
    }

    /// A permit, if one is free now and nobody waits for one.
    pub(crate) fn try_acquire(&self) -> Option<CallPermit> {
        self.pool.try_take().then(|| self.issue())
    }

    /// Waits for a permit, behind those already waiting; fails only once
    /// the permits are closed. Dropped while waiting, it leaves the queue
    /// (and passes on a permit it was handed but never took). Like any
    /// future, it is not to be polled again once it has completed.
    pub(crate) fn acquire(&self) -> Acquire {
        Acquire {
            permits: self.clone(),
            place: None,
        }
    }

    /// Permits held now (or handed to a waiter that has yet to take one).
    pub(crate) fn in_use(&self) -> usize {
        let pool = &self.pool;
        pool.total.saturating_sub(pool.free.load(Ordering::Acquire))
    }

    /// Wakes every waiter with an error: the connection is gone.
    pub(crate) fn close(&self) {
        self.pool.close();
    }

    fn issue(&self) -> CallPermit {
        if let Some(gauge) = &self.pool.gauge {
            gauge.up();
        }
        CallPermit {
            pool: Arc::clone(&self.pool),
        }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let Some(gauge) = &self.pool.gauge {
            gauge.down();
        }
        self.pool.release();
    }
}

/// Waiting for a permit ([`CallPermits::acquire`]).
#[derive(Debug)]
pub(crate) struct Acquire {
    permits: CallPermits,
    /// Its place in the queue, once it has one.
    place: Option<usize>,
}

impl Future for Acquire {
    type Output = Result<CallPermit, NoPermit>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let pool = &this.permits.pool;
        if this.place.is_none() {
            if pool.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(NoPermit));
            }
            if pool.try_take() {
                return Poll::Ready(Ok(this.permits.issue()));
            }
        }
        let mut queue = pool.lock();
        let mut woken = Woken::default();
        let key = match this.place {
            Some(key) => key,
            None => {
                if pool.closed.load(Ordering::Acquire) {
                    return Poll::Ready(Err(NoPermit));
                }
                let key = queue.enter(cx.waker());
                pool.queued.fetch_add(1, Ordering::SeqCst);
                this.place = Some(key);
                // A permit returned just before it counted itself.
                woken = pool.hand_off(&mut queue);
                key
            }
        };
        let polled = match queue.turn(key) {
            Turn::Waiting | Turn::Left => {
                if let Some(place) = queue.places.get_mut(key) {
                    match &mut place.waker {
                        Some(waker) => waker.clone_from(cx.waker()),
                        None => place.waker = Some(cx.waker().clone()),
                    }
                }
                Poll::Pending
            }
            turn => {
                queue.reuse(key);
                this.place = None;
                Poll::Ready(turn)
            }
        };
        drop(queue);
        woken.wake();
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Turn::Granted) => Poll::Ready(Ok(this.permits.issue())),
            Poll::Ready(_) => Poll::Ready(Err(NoPermit)),
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(key) = self.place.take() else {
            return;
        };
        let pool = &self.permits.pool;
        let mut queue = pool.lock();
        let mut woken = Woken::default();
        match queue.turn(key) {
            Turn::Waiting => {
                queue.leave(key);
                pool.queued.fetch_sub(1, Ordering::SeqCst);
            }
            // Handed a permit it never took: the next waiter gets it.
            Turn::Granted => {
                queue.reuse(key);
                pool.free.fetch_add(1, Ordering::SeqCst);
                woken = pool.hand_off(&mut queue);
            }
            Turn::Closed => queue.reuse(key),
            Turn::Left => {}
        }
        drop(queue);
        woken.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::queue::COMPACT_AFTER;
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn permits_are_capped_counted_and_returned_on_drop() {
        let gauge = Arc::new(Gauge::default());
        let permits = CallPermits::new(2).counted(Arc::clone(&gauge));
        let a = permits.try_acquire().unwrap();
        let b = permits.acquire().await.unwrap();
        assert!(permits.try_acquire().is_none());
        assert_eq!((permits.in_use(), gauge.now(), gauge.peak()), (2, 2, 2));
        drop(a);
        assert_eq!((permits.in_use(), gauge.now()), (1, 1));
        drop(b);
        assert_eq!((permits.in_use(), gauge.now(), gauge.peak()), (0, 0, 2));
        permits.close();
        assert!(permits.acquire().await.is_err());
        assert!(permits.try_acquire().is_none());
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_and_newcomers_queue_behind_them() {
        let permits = CallPermits::new(1);
        let held = permits.try_acquire().unwrap();
        let mut first = Box::pin(permits.acquire());
        let mut second = Box::pin(permits.acquire());
        assert!((&mut first).now_or_never().is_none());
        assert!((&mut second).now_or_never().is_none());
        drop(held);
        // The permit went to the first waiter: a newcomer cannot take it,
        // nor can the second waiter.
        assert!(permits.try_acquire().is_none());
        assert!((&mut second).now_or_never().is_none());
        let first = first.now_or_never().unwrap().unwrap();
        drop(first);
        let second = second.now_or_never().unwrap().unwrap();
        assert_eq!(permits.in_use(), 1);
        drop(second);
        assert_eq!(permits.in_use(), 0);
        assert!(permits.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_passes_on_its_place_and_any_permit_it_was_handed() {
        let permits = CallPermits::new(1);
        let held = permits.try_acquire().unwrap();
        let mut leaving = Box::pin(permits.acquire());
        let mut handed = Box::pin(permits.acquire());
        let mut last = Box::pin(permits.acquire());
        for waiting in [&mut leaving, &mut handed, &mut last] {
            assert!(waiting.now_or_never().is_none());
        }
        // Leaves before its turn: the queue forgets it.
        drop(leaving);
        drop(held);
        // `handed` got the permit but leaves without taking it: `last`
        // gets it.
        drop(handed);
        let permit = last.now_or_never().unwrap().unwrap();
        assert_eq!(permits.in_use(), 1);
        drop(permit);
        assert_eq!(permits.in_use(), 0);
    }

    #[tokio::test]
    async fn places_of_waiters_that_left_are_taken_out_of_the_way_and_reused() {
        let permits = CallPermits::new(1);
        let held = permits.try_acquire().unwrap();
        for _ in 0..100 {
            let mut leaving = Box::pin(permits.acquire());
            assert!((&mut leaving).now_or_never().is_none());
        }
        // A hundred left; the next waiter is served first when the permit
        // comes back, and the places are reused rather than grown.
        let mut next = Box::pin(permits.acquire());
        assert!((&mut next).now_or_never().is_none());
        drop(held);
        let permit = next.now_or_never().unwrap().unwrap();
        let queue = permits.pool.lock();
        assert!(queue.order.is_empty());
        assert!(queue.places.len() <= 2, "{} places", queue.places.len());
        drop(queue);
        drop(permit);
    }

    #[tokio::test]
    async fn waiters_coming_and_going_behind_one_that_stays_do_not_grow_the_queue() {
        let permits = CallPermits::new(1);
        let _held = permits.try_acquire().unwrap();
        let mut front = Box::pin(permits.acquire());
        assert!((&mut front).now_or_never().is_none());
        for _ in 0..1_000 {
            let batch: Vec<_> = (0..10)
                .map(|_| {
                    let mut waiting = Box::pin(permits.acquire());
                    assert!((&mut waiting).now_or_never().is_none());
                    waiting
                })
                .collect();
            // They leave first come first: all but the last leave from
            // the middle of the queue.
            drop(batch);
        }
        let queue = permits.pool.lock();
        assert!(
            queue.order.len() <= 2 * COMPACT_AFTER + 24,
            "{} in the queue",
            queue.order.len()
        );
        assert!(
            queue.places.len() <= 2 * COMPACT_AFTER + 24,
            "{} places",
            queue.places.len()
        );
        drop(queue);
        assert_eq!(permits.pool.queued.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn closing_fails_every_waiter() {
        let permits = CallPermits::new(1);
        let _held = permits.try_acquire().unwrap();
        let waiting = tokio::spawn({
            let permits = permits.clone();
            async move { permits.acquire().await.is_err() }
        });
        tokio::task::yield_now().await;
        permits.close();
        assert!(waiting.await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_never_hold_more_than_the_cap_and_all_get_through() {
        const CAP: usize = 3;
        let permits = CallPermits::new(CAP);
        let held = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (permits, held, most) = (permits.clone(), Arc::clone(&held), Arc::clone(&most));
                tokio::spawn(async move {
                    for round in 0..500 {
                        let permit = match round % 2 {
                            0 => permits.acquire().await.unwrap(),
                            _ => match permits.try_acquire() {
                                Some(permit) => permit,
                                None => permits.acquire().await.unwrap(),
                            },
                        };
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= CAP);
        assert_eq!(permits.in_use(), 0);
        assert_eq!(permits.pool.queued.load(Ordering::SeqCst), 0);
        assert!(permits.pool.lock().order.is_empty());
    }
}
