//! Streaming calls on the client: opening one, pumping the client's
//! stream to the server under its credit, and the server's stream as the
//! caller reads it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::task::AbortOnDropHandle;

use crate::client::Callee;
use crate::client::calls::Outbox;
use crate::client::connection::Connection;
use crate::client::waiter::{Event, Reply, Waiter};
use crate::codec::splice::Encoding;
use crate::codec::{self, Message};
use crate::error::{Error, explain_decode};
use crate::frame::{self, Frame, Kind};
use crate::metadata::Metadata;
use crate::streaming::{ItemStream, RecvWindow, STREAM_WINDOW, SendCredit};

impl Connection {
    /// Starts a streaming call: sends the request (or queues it for a
    /// place under the connection's cap on calls in flight), then (for
    /// methods that take a stream) pumps `input`'s items as it has credit:
    /// the first window once the request has left, then what the server
    /// grants.
    ///
    /// The returned call receives the server's events in order; dropping it
    /// before the call ends cancels the call and stops the pump.
    pub(crate) fn open(
        self: &Arc<Self>,
        callee: Callee,
        args: &[u8],
        metadata: Option<&Metadata>,
        deadline: Instant,
        input: Option<ItemStream>,
    ) -> Result<Result<StreamCall, Reply>, Error> {
        let budget = deadline.saturating_duration_since(Instant::now());
        let mut payload = BytesMut::with_capacity(64 + args.len());
        let method = callee.name;
        super::connection::encode_head(callee, budget, self.version, metadata, &mut payload)?;
        payload.extend_from_slice(args);
        self.check_request_len(method, payload.len())?;
        // Room for a full window of items and the event that ends the call.
        let (events, received) = mpsc::channel(STREAM_WINDOW as usize + 2);
        // Opened when the request leaves, which it may not do at once.
        let credit = input.as_ref().map(|_| SendCredit::unopened());
        let waiter = Waiter::Stream {
            events,
            credit: credit.clone(),
        };
        let id = match self
            .calls
            .send(Encoding::Owned(Message::from(payload.freeze())), waiter, deadline)?
        {
            Ok((id, _queued)) => id,
            Err(refused) => return Ok(Err(refused)),
        };
        let (failed, pump_error) = oneshot::channel();
        let limit = self.server_max_frame_len;
        let pump = input.zip(credit).map(|(items, credit)| {
            let pumping = pump(id, items, credit, self.outbox.clone(), limit, method, failed);
            AbortOnDropHandle::new(tokio::spawn(pumping))
        });
        Ok(Ok(StreamCall {
            connection: Arc::clone(self),
            id,
            events: received,
            pump_error: pump.as_ref().map(|_| pump_error),
            pump,
            window: RecvWindow::default(),
            finished: false,
        }))
    }
}

/// Sends a client's stream to the server, one item per unit of credit, then
/// the end of the stream. A local failure (an item that does not encode or
/// is too large) is reported through `failed`.
async fn pump(
    id: u64,
    mut items: ItemStream,
    credit: Arc<SendCredit>,
    outbox: Outbox,
    limit: usize,
    method: &'static str,
    failed: oneshot::Sender<Error>,
) {
    while credit.spend().await {
        // The user's stream runs here (its encoding too): a panic in it
        // must fail the call, not leave it waiting for an end that never
        // comes.
        let next = std::panic::AssertUnwindSafe(items.next()).catch_unwind().await;
        let item = match next {
            Ok(Some(Ok(item))) => item,
            Ok(Some(Err(err))) => {
                let _ = failed.send(err);
                return;
            }
            Err(_panic) => {
                let _ = failed.send(Error::failed(format!(
                    "the stream passed to `{method}` panicked while it was being sent"
                )));
                return;
            }
            Ok(None) => {
                let _ = outbox.send_payload(Kind::End, id, Message::new());
                return;
            }
        };
        if item.len() > limit {
            let _ = failed.send(Error::FrameTooLarge {
                what: format!("an item sent to `{method}`"),
                len: item.len(),
                limit,
                side: "server",
                setting: "Server::max_frame_len",
            });
            return;
        }
        let Ok(frame) = Frame::new(Kind::Item, id, item) else {
            return;
        };
        if outbox.send(frame, None).is_err() {
            return;
        }
    }
}

/// A streaming call in progress, as its consumer holds it.
pub(crate) struct StreamCall {
    connection: Arc<Connection>,
    id: u64,
    events: mpsc::Receiver<Event>,
    pump: Option<AbortOnDropHandle<()>>,
    pump_error: Option<oneshot::Receiver<Error>>,
    window: RecvWindow,
    /// Set once the call has ended, so dropping it sends no cancel.
    finished: bool,
}

impl std::fmt::Debug for StreamCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCall").field("id", &self.id).finish()
    }
}

impl StreamCall {
    /// The next event of the call; a local failure of the client's own
    /// stream comes as `Lost`.
    pub(crate) fn poll_event(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Event> {
        // What the server already said comes first: a call that succeeded is
        // not failed by the client's stream failing afterwards.
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                if !matches!(event, Event::Lost(_) | Event::NotRun | Event::Expired) {
                    self.connection.mark_served();
                }
                if !matches!(event, Event::Item(_)) {
                    self.finished = true;
                }
                return Poll::Ready(event);
            }
            Poll::Ready(None) => {
                self.finished = true;
                return Poll::Ready(Event::Lost(self.connection.unusable_error()));
            }
            Poll::Pending => {}
        }
        if let Some(pump_error) = &mut self.pump_error
            && let Poll::Ready(result) = Pin::new(pump_error).poll(cx)
        {
            self.pump_error = None;
            if let Ok(err) = result {
                return Poll::Ready(Event::Lost(err));
            }
        }
        Poll::Pending
    }

    /// What decoding the server's items may cost.
    pub(crate) fn decode_limits(&self) -> codec::DecodeLimits {
        self.connection.decode
    }

    /// The next event of the call.
    pub(crate) async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The consumer took an item: grant the server more credit when due.
    pub(crate) fn consumed_item(&mut self) {
        if let Some(items) = self.window.consumed()
            && let Ok(frame) = Frame::new(Kind::Credit, self.id, frame::credit_payload(items))
        {
            let _ = self.connection.outbox.send(frame, None);
        }
    }
}

impl Drop for StreamCall {
    fn drop(&mut self) {
        self.pump = None;
        if !self.finished {
            self.connection.calls.forget(self.id);
        }
    }
}

/// A server's stream of items for one call, decoded.
///
/// It opens the call on its first poll, yields each item as it arrives
/// (granting the server more credit as they are taken), and ends after the
/// server's end, or after one error: the server's, the network's, or the
/// deadline passing. Dropping it early cancels the call on the server.
pub(crate) struct ClientStream<T> {
    state: State,
    deadline: Pin<Box<Sleep>>,
    budget: Duration,
    callee: Callee,
    max_frame_len: usize,
    _item: PhantomData<fn() -> T>,
}

enum State {
    Opening(BoxFuture<'static, Result<StreamCall, Error>>),
    Open(StreamCall),
    Done,
}

impl<T> ClientStream<T> {
    pub(crate) fn new(
        opening: BoxFuture<'static, Result<StreamCall, Error>>,
        deadline: tokio::time::Instant,
        budget: Duration,
        callee: Callee,
        max_frame_len: usize,
    ) -> ClientStream<T> {
        ClientStream {
            state: State::Opening(opening),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            budget,
            callee,
            max_frame_len,
            _item: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Stream for ClientStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if matches!(this.state, State::Done) {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            // Dropping the open call cancels it on the server.
            this.state = State::Done;
            return Poll::Ready(Some(Err(Error::DeadlineExceeded { timeout: this.budget })));
        }
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(call)) => this.state = State::Open(call),
                    Poll::Ready(Err(err)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                State::Open(call) => {
                    let event = match call.poll_event(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(event) => event,
                    };
                    let item = match event {
                        Event::Item(payload) => {
                            call.consumed_item();
                            match codec::decode_shared(&payload, call.decode_limits()) {
                                Ok(item) => return Poll::Ready(Some(Ok(item))),
                                Err(err) => Err(Error::BadResponse {
                                    method: this.callee.name.to_owned(),
                                    reason: format!(
                                        "a stream item did not decode: {}",
                                        explain_decode(&err, "client")
                                    ),
                                }),
                            }
                        }
                        Event::End => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        Event::Failed(err) => Err(err.into_error(
                            this.callee.name,
                            this.callee.descriptor,
                            this.budget,
                            this.max_frame_len,
                        )),
                        Event::Lost(err) => Err(err),
                        Event::NotRun => Err(Error::ShuttingDown),
                        Event::Expired => Err(Error::DeadlineExceeded { timeout: this.budget }),
                        Event::Response(_) => Err(Error::BadResponse {
                            method: this.callee.name.to_owned(),
                            reason: "the server answered with one value where a stream was expected"
                                .to_owned(),
                        }),
                    };
                    this.state = State::Done;
                    return Poll::Ready(Some(item));
                }
            }
        }
    }
}
