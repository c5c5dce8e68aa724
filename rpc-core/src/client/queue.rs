//! Requests waiting for a place on their connection: queued in id order,
//! sent by whoever frees a place, with the time their callers have left
//! then.
//!
//! A caller whose call finds every place taken does not wait for one: its
//! request waits, and the call that frees a place sends it. The caller is
//! woken once, by its answer, where waiting for a place would wake it
//! twice (once to send, once to read).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::time::Instant;

use crate::client::calls::{CallTable, Inner, Outbox};
use crate::client::waiter::{Ending, Wake};
use crate::error::Error;
use crate::permit::CallPermit;

/// A request waiting for a place.
#[derive(Debug)]
pub(super) struct Queued {
    id: u64,
    /// The caller's deadline: the request leaves with the time left until
    /// then, not the time left when it was encoded.
    deadline: Instant,
    payload: Bytes,
}

impl Queued {
    pub(super) fn new(id: u64, deadline: Instant, payload: Bytes) -> Queued {
        Queued {
            id,
            deadline,
            payload,
        }
    }
}

impl CallTable {
    /// Sends queued requests, oldest first, while there are places for
    /// them: `permit` first (a place just freed), then free ones. A request
    /// whose deadline has passed never leaves: its call ends, and its place
    /// goes to the next. Returns the waits that ended, to wake once the
    /// lock is let go.
    #[inline(never)]
    pub(super) fn dispatch(
        &self,
        inner: &mut Inner,
        outbox: &Outbox,
        mut permit: Option<CallPermit>,
    ) -> Vec<Wake> {
        let mut wakes = Vec::new();
        let mut now = None;
        while !inner.queue.is_empty() && inner.closed.is_none() && inner.goodbye.is_none() {
            let Some(place) = permit.take().or_else(|| self.permits.try_acquire()) else {
                break;
            };
            let Some(queued) = inner.queue.pop_front() else {
                break;
            };
            let budget = queued
                .deadline
                .saturating_duration_since(*now.get_or_insert_with(Instant::now));
            let ending = match budget.is_zero() {
                true => Ending::Expired,
                false => match outbox.send_request(queued.id, budget, &queued.payload) {
                    Ok(Ok(())) => {
                        inner.last_sent = queued.id;
                        inner.granted.insert(queued.id, place);
                        continue;
                    }
                    Ok(Err(_closed)) => Ending::Unsent(inner.unusable_error()),
                    Err(violation) => Ending::Unsent(Error::from(violation)),
                },
            };
            permit = Some(place);
            wakes.extend(inner.end(queued.id, ending));
        }
        self.queued.store(inner.queue.len(), Ordering::SeqCst);
        wakes
    }

    /// Frees places: `permit`, or places just freed by dropping theirs.
    /// Each goes to the oldest queued request, if there is one.
    pub(super) fn free(&self, permit: Option<CallPermit>, outbox: &Outbox) {
        if self.queued.load(Ordering::SeqCst) != 0 {
            return self.hand_on(permit, outbox);
        }
        drop(permit);
        // A request queued since the look above, by a call that found no
        // place free: one of the two looks sees the other (SeqCst on both
        // sides: here a place is counted free, then the queue read; there
        // a request is counted queued, then the places read).
        if self.queued.load(Ordering::SeqCst) != 0 {
            self.hand_on(None, outbox);
        }
    }

    /// Sends queued requests with `permit` and the places free, under the
    /// lock. Kept out of line: the path of a call that never waits is
    /// shorter without it.
    #[inline(never)]
    fn hand_on(&self, permit: Option<CallPermit>, outbox: &Outbox) {
        let mut inner = self.lock();
        let wakes = self.dispatch(&mut inner, outbox, permit);
        drop(inner);
        wakes.into_iter().for_each(Wake::wake);
    }

    /// Takes queued request `id` out of the queue: its caller gave up.
    pub(super) fn unqueue(&self, inner: &mut Inner, id: u64) {
        if let Ok(at) = inner.queue.binary_search_by_key(&id, |queued| queued.id) {
            inner.queue.remove(at);
        }
        self.queued.store(inner.queue.len(), Ordering::SeqCst);
    }

    /// Takes out of the queue the requests whose calls no longer wait
    /// (their deadline passed).
    pub(super) fn unqueue_ended(&self, inner: &mut Inner) {
        let Inner { queue, calls, .. } = inner;
        queue.retain(|queued| calls.get(&queued.id).is_some_and(|slot| slot.waiter().is_some()));
        self.queued.store(queue.len(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::{Buf, BytesMut};
    use futures::task::noop_waker_ref;

    use super::*;
    use crate::client::calls::Admitted;
    use crate::client::waiter::{Reply, Waiter};
    use crate::frame::{HEADER_LEN, Header, Kind, MAX_PAYLOAD_LEN, ProtocolError, RequestHead};
    use crate::outbox::{self, Batch};
    use crate::permit::CallPermits;

    struct Line {
        calls: CallTable,
        outbox: Outbox,
        queued: outbox::Queued<Infallible>,
    }

    /// A table of a connection with `places` places, and its outbox.
    fn line(places: usize) -> Line {
        let (outbox, queued) = outbox::outbox();
        Line {
            calls: CallTable::new(CallPermits::new(places)),
            outbox,
            queued,
        }
    }

    impl Line {
        /// Sends a unary call due at `deadline`, its request encoded with
        /// the time left now.
        fn call(&self, deadline: Instant) -> Admitted {
            let mut payload = BytesMut::new();
            RequestHead::encode("T.m", deadline - Instant::now(), &mut payload);
            payload.extend_from_slice(b"args");
            let waiter = Waiter::Unary {
                waker: None,
                deadline,
            };
            self.calls
                .send(&self.outbox, payload.freeze(), waiter, deadline)
                .unwrap()
                .unwrap()
        }

        /// The frames queued for the writer since the last look: kind, id,
        /// and a request's budget.
        fn written(&self) -> Vec<(Kind, u64, Option<Duration>)> {
            let mut batch = Batch::default();
            self.queued.take(&mut batch);
            let mut bytes = batch.encoded.copy_to_bytes(batch.len());
            let mut frames = Vec::new();
            while bytes.len() >= HEADER_LEN {
                let head: [u8; HEADER_LEN] = bytes.split_to(HEADER_LEN)[..].try_into().unwrap();
                let header = Header::parse(&head, MAX_PAYLOAD_LEN).unwrap();
                let payload = bytes.split_to(header.payload_len());
                let budget =
                    (header.kind() == Kind::Request).then(|| RequestHead::decode(payload).unwrap().0.budget);
                frames.push((header.kind(), header.id(), budget));
            }
            // Every request queued so far has been written.
            if let Some(last) = batch.last_request() {
                self.calls.written(last, &self.outbox.downgrade());
            }
            frames
        }

        fn reply(&self, id: u64) -> Poll<Reply> {
            self.calls
                .poll_reply(id, &mut Context::from_waker(noop_waker_ref()))
        }

        /// Answers call `id` and lets its caller go, as a caller does.
        fn finish(&self, admitted: Admitted) {
            self.calls.complete(admitted.id, Ok(Bytes::new())).unwrap();
            assert!(matches!(self.reply(admitted.id), Poll::Ready(Reply::Response(_))));
            self.calls.release(admitted.id, admitted.permit, &self.outbox);
        }
    }

    const REQUEST: Kind = Kind::Request;

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_leaves_when_a_place_frees_with_the_time_its_caller_has_left_then() {
        let line = line(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = line.call(deadline);
        let second = line.call(deadline);
        assert!(first.permit.is_some() && second.permit.is_none());
        assert_eq!(line.written(), [(REQUEST, 1, Some(Duration::from_secs(10)))]);
        assert_eq!(line.calls.queued.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        line.finish(first);
        // Stamped as it left, not as it was encoded.
        assert_eq!(line.written(), [(REQUEST, 2, Some(Duration::from_secs(7)))]);
        assert_eq!(line.calls.queued.load(Ordering::SeqCst), 0);
        assert_eq!(line.calls.permits.in_use(), 1);
        // Its place is kept for it, and freed by its release.
        line.finish(second);
        assert_eq!(line.calls.permits.in_use(), 0);
        assert!(line.calls.lock().granted.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn newcomers_queue_behind_queued_requests_and_requests_leave_in_id_order() {
        let line = line(2);
        let deadline = Instant::now() + Duration::from_secs(10);
        let calls: Vec<Admitted> = (0..6).map(|_| line.call(deadline)).collect();
        let ids = |frames: Vec<(Kind, u64, Option<Duration>)>| frames.iter().map(|f| f.1).collect::<Vec<_>>();
        assert_eq!(ids(line.written()), [1, 2]);
        let mut calls = calls.into_iter();
        let (first, second) = (calls.next().unwrap(), calls.next().unwrap());
        line.finish(second);
        assert_eq!(ids(line.written()), [3]);
        // A newcomer finds a place free only after the queue is served.
        let late = line.call(deadline);
        assert!(late.permit.is_none());
        line.finish(first);
        assert_eq!(ids(line.written()), [4]);
        let mut left = Vec::new();
        for call in calls {
            line.finish(call);
            left.extend(ids(line.written()));
        }
        assert_eq!(left, [5, 6, 7]);
        line.finish(late);
        assert_eq!(line.calls.permits.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_given_up_leaves_the_queue_and_nothing_is_sent_for_it() {
        let line = line(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = line.call(deadline);
        let given_up = line.call(deadline);
        let third = line.call(deadline);
        line.written();
        // No cancel: the server never heard of it.
        assert!(!line.calls.forget(given_up.id));
        line.calls.release(given_up.id, given_up.permit, &line.outbox);
        line.finish(first);
        assert_eq!(line.written(), [(REQUEST, 3, Some(Duration::from_secs(10)))]);
        line.finish(third);
        assert_eq!(line.calls.permits.in_use(), 0);
        assert_eq!(line.calls.queued.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_past_its_deadline_never_leaves_and_its_place_goes_to_the_next() {
        let line = line(1);
        let now = Instant::now();
        let first = line.call(now + Duration::from_secs(10));
        let hasty = line.call(now + Duration::from_secs(1));
        let patient = line.call(now + Duration::from_secs(10));
        line.written();
        tokio::time::advance(Duration::from_secs(2)).await;
        line.finish(first);
        assert!(matches!(line.reply(hasty.id), Poll::Ready(Reply::Expired)));
        assert_eq!(
            line.written(),
            [(REQUEST, patient.id, Some(Duration::from_secs(8)))]
        );
        line.calls.release(hasty.id, hasty.permit, &line.outbox);
        line.finish(patient);
        assert_eq!(line.calls.permits.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_ending_fails_queued_calls_as_never_sent() {
        let line = line(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let sent = line.call(deadline);
        let queued = line.call(deadline);
        line.calls.close(Error::disconnected("gone"));
        assert!(matches!(line.reply(sent.id), Poll::Ready(Reply::Lost(_))));
        assert!(matches!(line.reply(queued.id), Poll::Ready(Reply::Unsent(_))));
        line.calls.release(sent.id, sent.permit, &line.outbox);
        line.calls.release(queued.id, queued.permit, &line.outbox);
        assert_eq!(line.calls.permits.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn at_a_goodbye_queued_calls_did_not_run_whatever_the_server_says() {
        let line = line(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let sent = line.call(deadline);
        let queued = line.call(deadline);
        // A server that claims to have started more than it was sent.
        line.calls.goodbye(queued.id);
        assert!(line.reply(sent.id).is_pending());
        assert!(matches!(line.reply(queued.id), Poll::Ready(Reply::NotRun)));
        let id = sent.id;
        line.finish(sent);
        assert_eq!(line.written(), [(REQUEST, id, Some(Duration::from_secs(10)))]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_to_a_request_still_queued_is_a_protocol_violation() {
        let line = line(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        let sent = line.call(deadline);
        let queued = line.call(deadline);
        assert_eq!(
            line.calls.complete(queued.id, Ok(Bytes::new())),
            Err(ProtocolError::NotSent {
                kind: Kind::Response,
                id: queued.id
            })
        );
        assert_eq!(
            line.calls.stream_frame(Kind::Item, queued.id, Bytes::new()),
            Err(ProtocolError::NotSent {
                kind: Kind::Item,
                id: queued.id
            })
        );
        assert!(line.reply(queued.id).is_pending());
        line.finish(sent);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_gives_up_on_queued_calls_without_telling_the_server() {
        let line = line(1);
        let due = Instant::now() + Duration::from_secs(1);
        let sent = line.call(due);
        let queued = line.call(due);
        line.written();
        tokio::time::advance(Duration::from_secs(1)).await;
        line.calls.expire(Instant::now(), &line.outbox.downgrade());
        assert!(matches!(line.reply(sent.id), Poll::Ready(Reply::Expired)));
        assert!(matches!(line.reply(queued.id), Poll::Ready(Reply::Expired)));
        // A cancel for the call the server has; nothing for the other.
        assert_eq!(line.written(), [(Kind::Cancel, sent.id, None)]);
        assert!(line.calls.lock().queue.is_empty());
        assert_eq!(line.calls.queued.load(Ordering::SeqCst), 0);
        line.calls.release(sent.id, sent.permit, &line.outbox);
        line.calls.release(queued.id, queued.permit, &line.outbox);
        assert_eq!(line.calls.permits.in_use(), 0);
    }
}
