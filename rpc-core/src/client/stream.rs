//! The client's side of a streaming call, as a [`Stream`] of results.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio::time::Sleep;

use super::link::{Event, OpenCall};
use crate::error::Error;
use crate::payload;

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
    method: &'static str,
    max_frame_len: usize,
    _item: PhantomData<fn() -> T>,
}

enum State {
    Opening(BoxFuture<'static, Result<OpenCall, Error>>),
    Open(OpenCall),
    Done,
}

impl<T> ClientStream<T> {
    pub(crate) fn new(
        opening: BoxFuture<'static, Result<OpenCall, Error>>,
        deadline: tokio::time::Instant,
        budget: Duration,
        method: &'static str,
        max_frame_len: usize,
    ) -> ClientStream<T> {
        ClientStream {
            state: State::Opening(opening),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            budget,
            method,
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
                            match payload::decode_shared(&payload) {
                                Ok(item) => return Poll::Ready(Some(Ok(item))),
                                Err(err) => Err(Error::BadResponse {
                                    method: this.method.to_owned(),
                                    reason: format!("a stream item did not decode: {err}"),
                                }),
                            }
                        }
                        Event::End => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        Event::Failed(err) => {
                            Err(err.into_error(this.method, this.budget, this.max_frame_len))
                        }
                        Event::Lost(err) => Err(err),
                        Event::NotRun => Err(Error::ShuttingDown),
                        Event::Response(_) => Err(Error::BadResponse {
                            method: this.method.to_owned(),
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

use std::future::Future;
