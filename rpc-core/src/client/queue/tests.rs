//! The queue's tests: requests that wait for a place, over a real call
//! table and outbox.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::task::noop_waker_ref;

use super::*;
use crate::client::waiter::{Payload, Reply, Waiter};
use crate::codec::splice::Encoding;
use crate::frame::{HEADER_LEN, Header, Kind, MAX_PAYLOAD_LEN, ProtocolError, RequestHead};
use crate::outbox::{self, Batch};
use crate::permit::CallPermits;
use crate::scratch::Block;

struct Line {
    calls: CallTable,
    queued: outbox::Queued<Infallible>,
}

/// A table of a connection with `places` places, and its writer's side.
fn line(places: usize) -> Line {
    let (outbox, queued) = outbox::outbox();
    Line {
        calls: CallTable::new(CallPermits::new(places), outbox),
        queued,
    }
}

type Written = Vec<(Kind, u64, Option<Duration>)>;

impl Line {
    /// Sends a unary call due at `deadline`, its request encoded with
    /// the time left now; its id.
    fn call(&self, deadline: Instant) -> u64 {
        self.call_with(deadline, b"args")
    }

    fn call_with(&self, deadline: Instant, args: &[u8]) -> u64 {
        self.send(deadline, args, false)
    }

    /// Sends a unary call the server runs to its end whatever happens.
    fn call_to_completion(&self, deadline: Instant) -> u64 {
        self.send(deadline, b"args", true)
    }

    fn send(&self, deadline: Instant, args: &[u8], to_completion: bool) -> u64 {
        // In the thread's block, as a call's request is: copied out if
        // it leaves at once, split off if it waits for a place.
        let mut block = Block::lend();
        RequestHead::encode("T.m", deadline - Instant::now(), block.buf());
        block.buf().extend_from_slice(args);
        let waiter = Waiter::Unary {
            waker: None,
            deadline,
            to_completion,
        };
        self.calls
            .send(Encoding::InPlace(&mut block), waiter, deadline)
            .unwrap()
            .unwrap()
            .0
    }

    /// The frames queued for the writer since the last look (kind, id,
    /// and a request's budget), now written.
    fn written(&self) -> Written {
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
        if let Some(last) = batch.last_request() {
            self.calls.written(last);
        }
        frames
    }

    fn reply(&self, id: u64) -> Poll<Reply> {
        self.calls
            .poll_reply(id, &mut Context::from_waker(noop_waker_ref()))
    }

    /// Answers call `id`, and its caller takes the answer.
    fn finish(&self, id: u64) {
        self.calls
            .complete(id, Ok(Payload::Shared(Bytes::new())), &mut Now::default())
            .unwrap();
        assert!(matches!(self.reply(id), Poll::Ready(Reply::Response(_))));
    }

    fn places_taken(&self) -> usize {
        self.calls.permits.in_use()
    }

    fn queue_len(&self) -> usize {
        self.calls.lock().queue.len()
    }
}

const REQUEST: Kind = Kind::Request;

fn ids(frames: Written) -> Vec<u64> {
    frames.iter().map(|frame| frame.1).collect()
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_leaves_when_a_place_frees_with_the_time_its_caller_has_left_then() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = line.call(deadline);
    let second = line.call(deadline);
    assert_eq!(line.written(), [(REQUEST, first, Some(Duration::from_secs(10)))]);
    assert_eq!(line.queue_len(), 1);
    tokio::time::advance(Duration::from_secs(3)).await;
    // The answer frees the place, before its caller takes it.
    line.calls
        .complete(first, Ok(Payload::Shared(Bytes::new())), &mut Now::default())
        .unwrap();
    // Stamped as it left, not as it was encoded.
    assert_eq!(line.written(), [(REQUEST, second, Some(Duration::from_secs(7)))]);
    assert!(matches!(line.reply(first), Poll::Ready(Reply::Response(_))));
    assert!(line.written().is_empty());
    assert_eq!((line.queue_len(), line.places_taken()), (0, 1));
    line.finish(second);
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_answers_sends_queued_requests_on_one_reading_of_the_clock() {
    let line = line(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (first, second) = (line.call(deadline), line.call(deadline));
    let (third, fourth) = (line.call(deadline), line.call(deadline));
    line.written();
    tokio::time::advance(Duration::from_secs(3)).await;
    let mut now = Now::default();
    line.calls
        .complete(first, Ok(Payload::Shared(Bytes::new())), &mut now)
        .unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    line.calls
        .complete(second, Ok(Payload::Shared(Bytes::new())), &mut now)
        .unwrap();
    let seven = Some(Duration::from_secs(7));
    assert_eq!(
        line.written(),
        [(REQUEST, third, seven), (REQUEST, fourth, seven)]
    );
    // With no request waiting, an answer keeps its place until its
    // caller takes it.
    line.calls
        .complete(third, Ok(Payload::Shared(Bytes::new())), &mut now)
        .unwrap();
    assert_eq!(line.places_taken(), 2);
    assert!(matches!(line.reply(third), Poll::Ready(Reply::Response(_))));
    assert_eq!(line.places_taken(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reading_of_the_clock_serves_a_bounded_number_of_uses() {
    let mut now = Now::default();
    let first = now.get();
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 1..USES_PER_READING {
        assert_eq!(now.get(), first);
    }
    assert_eq!(now.get(), first + Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_long_queued_request_is_stamped_too_and_its_arguments_go_whole() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let args: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let first = line.call(deadline);
    let long = line.call_with(deadline, &args);
    line.written();
    tokio::time::advance(Duration::from_secs(4)).await;
    line.finish(first);
    let mut batch = Batch::default();
    line.queued.take(&mut batch);
    let mut bytes = batch.encoded.copy_to_bytes(batch.len());
    let head: [u8; HEADER_LEN] = bytes.split_to(HEADER_LEN)[..].try_into().unwrap();
    let header = Header::parse(&head, MAX_PAYLOAD_LEN).unwrap();
    assert_eq!(
        (header.kind(), header.id(), header.payload_len()),
        (REQUEST, long, bytes.len())
    );
    let (head, rest) = RequestHead::decode(bytes).unwrap();
    assert_eq!(head.budget, Duration::from_secs(6));
    assert_eq!(rest, args);
}

#[tokio::test(start_paused = true)]
async fn newcomers_queue_behind_queued_requests_and_requests_leave_in_id_order() {
    let line = line(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let calls: Vec<u64> = (0..6).map(|_| line.call(deadline)).collect();
    assert_eq!(ids(line.written()), [1, 2]);
    line.finish(calls[1]);
    assert_eq!(ids(line.written()), [3]);
    // A place is free only once the queue is served: a newcomer queues.
    let late = line.call(deadline);
    assert!(line.written().is_empty());
    line.finish(calls[0]);
    assert_eq!(ids(line.written()), [4]);
    let mut left = Vec::new();
    for id in &calls[2..] {
        line.finish(*id);
        left.extend(ids(line.written()));
    }
    assert_eq!(left, [5, 6, late]);
    line.finish(late);
    assert_eq!(line.places_taken(), 0);
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
    assert!(!line.calls.forget(given_up));
    line.finish(first);
    assert_eq!(line.written(), [(REQUEST, third, Some(Duration::from_secs(10)))]);
    line.finish(third);
    assert_eq!((line.queue_len(), line.places_taken()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_sent_call_given_up_hands_its_place_on_once_its_request_is_written() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = line.call(deadline);
    let second = line.call(deadline);
    // Given up on before its request was written: the place waits, and
    // the cancel follows the request.
    assert!(line.calls.forget(first));
    assert_eq!(line.places_taken(), 1);
    let written = line.written();
    assert_eq!(ids(written.clone()), [first, first]);
    assert_eq!(written[1].0, Kind::Cancel);
    assert_eq!(ids(line.written()), [second]);
    line.finish(second);
    assert_eq!(line.places_taken(), 0);
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
    assert!(matches!(line.reply(hasty), Poll::Ready(Reply::Expired)));
    assert_eq!(line.written(), [(REQUEST, patient, Some(Duration::from_secs(8)))]);
    line.finish(patient);
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_connection_ending_fails_queued_calls_as_never_sent() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = line.call(deadline);
    let queued = line.call(deadline);
    line.calls.close(Error::disconnected("gone"));
    assert!(matches!(line.reply(sent), Poll::Ready(Reply::Lost(_))));
    assert!(matches!(line.reply(queued), Poll::Ready(Reply::Unsent(_))));
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_a_goodbye_queued_calls_did_not_run_whatever_the_server_says() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = line.call(deadline);
    let queued = line.call(deadline);
    // A server that claims to have started more than it was sent.
    line.calls.goodbye(queued);
    assert!(line.reply(sent).is_pending());
    assert!(matches!(line.reply(queued), Poll::Ready(Reply::NotRun)));
    line.finish(sent);
    assert_eq!(line.written(), [(REQUEST, sent, Some(Duration::from_secs(10)))]);
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_to_a_request_still_queued_is_a_protocol_violation() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = line.call(deadline);
    let queued = line.call(deadline);
    assert_eq!(
        line.calls
            .complete(queued, Ok(Payload::Shared(Bytes::new())), &mut Now::default()),
        Err(ProtocolError::NotSent {
            kind: Kind::Response,
            id: queued
        })
    );
    assert_eq!(
        line.calls.stream_frame(Kind::Item, queued, Bytes::new()),
        Err(ProtocolError::NotSent {
            kind: Kind::Item,
            id: queued
        })
    );
    assert!(line.reply(queued).is_pending());
    line.finish(sent);
}

#[tokio::test(start_paused = true)]
async fn a_call_given_up_on_is_cancelled_before_its_place_takes_the_next_request() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = line.call(deadline);
    let queued = line.call(deadline);
    line.written();
    assert!(line.calls.forget(first));
    assert_eq!(
        line.written(),
        [
            (Kind::Cancel, first, None),
            (REQUEST, queued, Some(Duration::from_secs(10)))
        ]
    );
    line.finish(queued);
}

/// A caller that takes its end the moment it is woken, as one on
/// another thread may, before the waker's caller goes on.
struct TakesItsEnd(Arc<Line>, u64);

impl std::task::Wake for TakesItsEnd {
    fn wake(self: Arc<Self>) {
        assert!(matches!(self.0.reply(self.1), Poll::Ready(Reply::Expired)));
    }
}

#[tokio::test(start_paused = true)]
async fn the_sweep_cancels_before_an_expired_caller_hands_its_place_on() {
    let line = Arc::new(line(1));
    let due = Instant::now() + Duration::from_secs(1);
    let first = line.call(due);
    let later = line.call(Instant::now() + Duration::from_secs(10));
    line.written();
    let waker = std::task::Waker::from(Arc::new(TakesItsEnd(Arc::clone(&line), first)));
    assert!(
        line.calls
            .poll_reply(first, &mut Context::from_waker(&waker))
            .is_pending()
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    line.calls.expire(Instant::now());
    assert_eq!(
        line.written(),
        [
            (Kind::Cancel, first, None),
            (REQUEST, later, Some(Duration::from_secs(9)))
        ]
    );
    line.finish(later);
}

#[tokio::test(start_paused = true)]
async fn a_no_cancel_call_given_up_on_keeps_its_place_until_its_answer() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = line.call_to_completion(deadline);
    let queued = line.call(deadline);
    line.written();
    // No cancel, and the place stays: the server still runs it.
    assert!(!line.calls.forget(kept));
    assert_eq!(line.written(), []);
    assert_eq!((line.queue_len(), line.places_taken()), (1, 1));
    // Its answer frees the place for the next request.
    line.calls
        .complete(kept, Ok(Payload::Shared(Bytes::new())), &mut Now::default())
        .unwrap();
    assert_eq!(ids(line.written()), [queued]);
    line.finish(queued);
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_end_for_a_kept_call_frees_its_place() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = line.call_to_completion(deadline);
    line.written();
    line.calls.forget(kept);
    assert_eq!(line.places_taken(), 1);
    // A server whose method streams where ours does not: its stream's
    // end is its answer.
    line.calls.stream_frame(Kind::End, kept, Bytes::new()).unwrap();
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_unary_call_answered_with_a_stream_is_cancelled_before_its_place_goes() {
    let line = line(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = line.call(deadline);
    let queued = line.call(deadline);
    line.written();
    line.calls.stream_frame(Kind::Item, first, Bytes::new()).unwrap();
    assert!(matches!(line.reply(first), Poll::Ready(Reply::Failed(_))));
    assert_eq!(
        line.written(),
        [
            (Kind::Cancel, first, None),
            (REQUEST, queued, Some(Duration::from_secs(10)))
        ]
    );
    line.finish(queued);
}

#[tokio::test(start_paused = true)]
async fn kept_places_go_at_a_goodbye_for_calls_never_started_and_all_at_the_close() {
    let line = line(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = line.call_to_completion(deadline);
    let never_started = line.call_to_completion(deadline);
    line.written();
    line.calls.forget(started);
    line.calls.forget(never_started);
    assert_eq!(line.places_taken(), 2);
    line.calls.goodbye(started);
    assert_eq!(line.places_taken(), 1);
    line.calls.close(crate::error::Error::disconnected("gone"));
    assert_eq!(line.places_taken(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_gives_up_on_queued_calls_without_telling_the_server() {
    let line = line(1);
    let due = Instant::now() + Duration::from_secs(1);
    let sent = line.call(due);
    let queued = line.call(due);
    line.written();
    tokio::time::advance(Duration::from_secs(1)).await;
    line.calls.expire(Instant::now());
    assert!(matches!(line.reply(sent), Poll::Ready(Reply::Expired)));
    assert!(matches!(line.reply(queued), Poll::Ready(Reply::Expired)));
    // A cancel for the call the server has; nothing for the other.
    assert_eq!(line.written(), [(Kind::Cancel, sent, None)]);
    assert_eq!((line.queue_len(), line.places_taken()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_sweep_still_cancels_sent_calls_after_queued_ones_were_skipped() {
    let line = line(1);
    let due = Instant::now() + Duration::from_secs(1);
    let first = line.call(due);
    let given_up = line.call(due);
    let sent_later = line.call(due);
    assert_eq!(ids(line.written()), [first]);
    assert!(!line.calls.forget(given_up));
    line.finish(first);
    assert_eq!(ids(line.written()), [sent_later]);
    // Fewer requests went out than the last id sent: the sweep must
    // still know `sent_later` left.
    tokio::time::advance(Duration::from_secs(1)).await;
    line.calls.expire(Instant::now());
    assert_eq!(line.written(), [(Kind::Cancel, sent_later, None)]);
    assert!(matches!(line.reply(sent_later), Poll::Ready(Reply::Expired)));
    assert_eq!(line.places_taken(), 0);
}
