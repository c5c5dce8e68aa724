//! Streams of values within one call: [`Streaming`], what users hold, and
//! the credit-based flow control underneath.
//!
//! Flow control counts items. Each direction of each stream starts with
//! [`STREAM_WINDOW`] items of credit; the receiver grants more (credit
//! frames) as its consumer takes items. A sender with no credit does not
//! even pull the next item from its source, so a slow consumer holds back
//! the producer itself, and neither side ever buffers more than the window.

mod credit;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

pub(crate) use credit::{RecvWindow, SendCredit};

use crate::codec::{self, Codec, DecodeLimits};
use crate::error::Error;

/// Items each direction of a stream may have in flight before the sender
/// waits for credit: deep enough to keep a fast link busy, small enough
/// that a slow consumer costs little memory.
pub const STREAM_WINDOW: u32 = 32;

/// The most credit a stream may have outstanding; a peer granting more is
/// breaking the protocol.
pub const MAX_STREAM_CREDIT: u32 = 1 << 20;

/// A stream of values flowing through a call: items of `T`, each of which
/// may instead be an [`Error`] that ended the stream.
///
/// A handler returns one for a method declared `-> Streaming<T>`, and
/// receives one for an argument declared `Streaming<T>`; a client gets one
/// from a method that returns a stream. Build one from any stream of values
/// with [`Streaming::new`], from an iterator with [`Streaming::iter`].
///
/// Read it with [`next`](Streaming::next) (no other crate needed), or
/// collect it with [`try_collect`](Streaming::try_collect). It is also a
/// [`Stream`], for the combinators of the `futures` crate.
///
/// ```
/// # use rpc_core as rpc;
/// use rpc::Streaming;
///
/// # let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # runtime.block_on(async {
/// let mut numbers = Streaming::iter(1..=3);
/// let mut total = 0;
/// while let Some(n) = numbers.next().await {
///     total += n?;
/// }
/// assert_eq!(total, 6);
/// assert_eq!(Streaming::iter(["a", "b"]).try_collect().await?, ["a", "b"]);
/// # Ok::<(), rpc::Error>(())
/// # }).unwrap();
/// ```
pub struct Streaming<T> {
    inner: Pin<Box<dyn Stream<Item = Result<T, Error>> + Send + 'static>>,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Streaming")
    }
}

impl<T: Send + 'static> Streaming<T> {
    /// A stream of the values `stream` yields.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Streaming<T> {
        Streaming::from_results(stream.map(Ok))
    }

    /// A stream of values and errors; the first error ends it for the
    /// receiver, who sees that error as the last item.
    pub fn from_results(stream: impl Stream<Item = Result<T, Error>> + Send + 'static) -> Streaming<T> {
        Streaming {
            inner: Box::pin(stream),
        }
    }

    /// A stream of the values of an iterator.
    pub fn iter<I>(items: I) -> Streaming<T>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Streaming::new(futures::stream::iter(items))
    }

    /// A stream with no items.
    pub fn empty() -> Streaming<T> {
        Streaming::new(futures::stream::empty())
    }

    /// A stream whose only item is `err`.
    pub fn failed(err: Error) -> Streaming<T> {
        Streaming::from_results(futures::stream::once(async move { Err(err) }))
    }

    /// The next item: `None` once the stream has ended, an error if it
    /// broke off (which also ends it).
    pub async fn next(&mut self) -> Option<Result<T, Error>> {
        StreamExt::next(self).await
    }

    /// Every item, or the first error.
    pub async fn try_collect(mut self) -> Result<Vec<T>, Error> {
        let mut items = Vec::new();
        while let Some(item) = self.next().await {
            items.push(item?);
        }
        Ok(items)
    }

    /// The values, up to the first error (which is dropped).
    pub fn values(self) -> impl Stream<Item = T> + Send + 'static {
        self.take_while(|item| futures::future::ready(item.is_ok()))
            .filter_map(|item| futures::future::ready(item.ok()))
    }
}

impl<T> Stream for Streaming<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Encoded items on their way to the wire: what a streaming call sends.
pub type ItemStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send + 'static>>;

/// Encodes each value of `stream` in `codec`; errors pass through. Short
/// items share a block of memory as short answers do (see
/// [`Answer::value`](crate::service::Answer::value)).
pub fn encode_stream<T: Serialize + Send + 'static>(
    method: &'static str,
    stream: Streaming<T>,
    codec: Codec,
) -> ItemStream {
    Box::pin(stream.map(move |item| {
        let value = item?;
        let encoded = crate::scratch::encode(|out| match codec {
            Codec::Binary => codec::encode_into(&value, out),
            Codec::Json => codec::json::encode_into(&value, out),
        });
        encoded.map_err(|err| Error::Encode {
            what: format!("an item of `{method}`"),
            reason: err.to_string(),
        })
    }))
}

/// Decodes the items of `stream` under `limits`; an item that does not
/// decode ends the stream with `invalid(why)`.
pub(crate) fn decode_stream<T, S>(
    stream: S,
    limits: DecodeLimits,
    invalid: impl Fn(codec::DecodeError) -> Error + Send + 'static,
) -> Streaming<T>
where
    T: DeserializeOwned + Send + 'static,
    S: Stream<Item = Result<Bytes, Error>> + Send + 'static,
{
    let decoded =
        stream.map(move |item| item.and_then(|bytes| codec::decode_shared(&bytes, limits).map_err(&invalid)));
    // End after the first error, whatever produced it.
    let mut ended = false;
    Streaming::from_results(decoded.take_while(move |item| {
        let go = !ended;
        ended = item.is_err();
        futures::future::ready(go)
    }))
}

/// The stream a client sends to a handler, as the server receives it:
/// encoded items, handed over as the handler consumes them, with credit
/// granted back to the client as it goes.
pub struct Incoming {
    items: mpsc::Receiver<Bytes>,
    window: RecvWindow,
    grant: Box<dyn Fn(u32) + Send + Sync>,
    /// Set when the client really ended its stream; a stream that stops
    /// without it broke off, and says so.
    ended: Arc<AtomicBool>,
    finished: bool,
    limits: DecodeLimits,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Incoming")
    }
}

impl Incoming {
    pub(crate) fn new(
        items: mpsc::Receiver<Bytes>,
        grant: Box<dyn Fn(u32) + Send + Sync>,
        ended: Arc<AtomicBool>,
        limits: DecodeLimits,
    ) -> Incoming {
        Incoming {
            items,
            window: RecvWindow::default(),
            grant,
            ended,
            finished: false,
            limits,
        }
    }

    /// The items as a typed stream for `method`'s handler (`method` is its
    /// wire name, for errors).
    pub fn decode<T: DeserializeOwned + Send + 'static>(self, method: &'static str) -> Streaming<T> {
        let limits = self.limits;
        decode_stream(self, limits, move |err| Error::BadRequest {
            method: method.to_owned(),
            reason: format!(
                "a stream item did not decode: {}",
                crate::error::explain_decode(&err, "server")
            ),
        })
    }
}

impl Stream for Incoming {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.items.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                if let Some(grant) = self.window.consumed() {
                    (self.grant)(grant);
                }
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(None) => {
                self.finished = true;
                if self.ended.load(Ordering::Acquire) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(Error::disconnected(
                        "the client's stream broke off before it ended (the client went away or cancelled the call)",
                    ))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_ends_after_its_first_error() {
        let items = futures::stream::iter(vec![
            Ok(Bytes::from_static(&[1])),
            Ok(Bytes::from_static(&[0xff, 0xff])),
            Ok(Bytes::from_static(&[2])),
        ]);
        let decoded: Vec<Result<u8, Error>> =
            decode_stream(items, DecodeLimits::DEFAULT, |err| Error::BadResponse {
                method: "S.m".to_owned(),
                reason: err.to_string(),
            })
            .collect()
            .await;
        assert_eq!(decoded.len(), 2);
        assert!(matches!(decoded[0], Ok(1)));
        assert!(decoded[1].is_err());
    }
}
