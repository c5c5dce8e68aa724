//! [`Signal`]: a signal a loop looks at on every turn (the server shuts
//! down; the grace period is over; a connection's writer failed, or must
//! stop). A cancellation token, for whoever waits on it, with a flag beside
//! it that a look reads without a lock (the token's own look takes one,
//! which a server-wide token shares with every connection); and [`Watch`],
//! a wait that a loop polls on every turn at the cost of that flag.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A signal that is raised once, for good.
#[derive(Debug, Default)]
pub struct Signal {
    raised: AtomicBool,
    token: CancellationToken,
}

impl Signal {
    /// A signal not raised yet.
    pub fn new() -> Signal {
        Signal::default()
    }

    /// Raises the signal: the flag first, so that a task the token wakes
    /// finds it set.
    pub fn cancel(&self) {
        self.raised.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the signal was raised; reads the flag alone.
    pub fn is_cancelled(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Completes once the signal is raised.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A token cancelled with the signal, for waits that need one of their
    /// own. A child: cancelling it does not raise the signal (the signal's
    /// flag would not know).
    pub fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }

    /// A wait for this signal that a loop polls on every turn.
    pub(crate) fn watch(&self) -> Watch<'_> {
        Watch {
            raised: &self.raised,
            wait: Box::pin(self.token.cancelled()),
            registered: None,
        }
    }
}

/// A wait for a [`Signal`], made once and polled on every turn of a loop.
/// It joins the token's waiters once; later polls from the same task read
/// the flag alone (the token wakes the waker it holds when the signal is
/// raised, and that waker is still the task's).
pub(crate) struct Watch<'a> {
    raised: &'a AtomicBool,
    wait: Pin<Box<WaitForCancellationFuture<'a>>>,
    /// The waker the token holds, once it holds one.
    registered: Option<Waker>,
}

impl Watch<'_> {
    fn poll_raised(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = self.wait.as_mut().poll(cx);
        if polled.is_pending() {
            self.registered = Some(cx.waker().clone());
        }
        polled
    }

    /// Completes once the signal is raised.
    pub(crate) fn raised(&mut self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| self.poll_raised(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_completes_when_the_signal_is_raised_after_it_registered() {
        let signal = std::sync::Arc::new(Signal::new());
        let raise = std::sync::Arc::clone(&signal);
        let task = tokio::spawn(async move {
            let mut watch = raise.watch();
            // Polled many times from one task, as a loop's select does.
            for _ in 0..3 {
                let polled = futures::FutureExt::now_or_never(watch.raised());
                assert!(polled.is_none());
            }
            watch.raised().await;
            raise.is_cancelled()
        });
        tokio::task::yield_now().await;
        assert!(!signal.is_cancelled());
        signal.cancel();
        assert!(task.await.unwrap(), "the flag is set when the watch completes");
        assert!(signal.child_token().is_cancelled());
    }

    #[tokio::test]
    async fn a_watch_made_after_the_signal_completes_at_once() {
        let signal = Signal::new();
        signal.cancel();
        let mut watch = signal.watch();
        assert!(futures::FutureExt::now_or_never(watch.raised()).is_some());
        assert!(futures::FutureExt::now_or_never(signal.cancelled()).is_some());
    }
}
