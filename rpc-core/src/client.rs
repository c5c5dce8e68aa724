//! The client multiplexer: any number of concurrent calls over one
//! connection, matched to their responses by request id.
//!
//! A call registers a waiter under a fresh id, queues its request frame for
//! the connection's writer task and waits. The reader task hands each
//! response to the waiter with its id, in whatever order responses come.
//! When the connection ends, every waiter is failed at once, so no call
//! outlives its connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::error::{Error, WireError};
use crate::frame::{CONNECTION_ID, DEFAULT_MAX_FRAME_LEN, Frame, Kind, ProtocolError};
use crate::payload::{self, RequestHead};
use crate::service::RequestMessage;
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::writer;

/// How long a call may take when neither the client nor the call sets a
/// timeout: long enough for any ordinary call, short enough that a lost
/// server never hangs a caller for good.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Frames the writer may have queued before callers wait for room.
const OUTBOX_CAPACITY: usize = 1024;

/// Settings of a client connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of calls that set none. Default: [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Largest response payload accepted, in bytes; announced to the server
    /// so it can refuse a larger response with a clear error instead of
    /// sending it. Default: [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: DEFAULT_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// An untyped client connection: what generated `FooClient`s wrap.
///
/// Cloning is cheap (an `Arc`), and every clone multiplexes over the same
/// connection. The connection closes when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    outbox: mpsc::Sender<Frame>,
    calls: Arc<Calls>,
    next_id: AtomicU64,
    /// The server's announced frame limit: requests larger than this are
    /// refused here, before they cost the network anything.
    server_max_frame_len: usize,
    timeout: Duration,
    reader: AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Nobody can wait on a response any more. The writer ends by itself
        // once the outbox's last sender (ours) is gone.
        self.reader.abort();
    }
}

impl Client {
    /// Starts a client over an established connection.
    ///
    /// Spawns the connection's reader and writer tasks, so it must be called
    /// inside a tokio runtime.
    pub fn new<R: FrameRead, W: FrameWrite>(conn: Connection<R, W>, config: ClientConfig) -> Client {
        let (outbox, queued) = mpsc::channel(OUTBOX_CAPACITY);
        let calls = Arc::new(Calls::default());
        let reader = tokio::spawn(read_loop(conn.reader, Arc::clone(&calls)));
        let writer_calls = Arc::clone(&calls);
        tokio::spawn(async move {
            if let Err(err) = writer::run(conn.writer, queued).await {
                writer_calls.close(err);
            }
        });
        Client {
            shared: Arc::new(Shared {
                outbox,
                calls,
                next_id: AtomicU64::new(1),
                server_max_frame_len: conn.peer.max_frame_len as usize,
                timeout: config.timeout,
                reader: reader.abort_handle(),
            }),
        }
    }

    /// The deadline of calls that do not set their own.
    pub fn default_timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Whether the connection has ended; every call on it now fails.
    pub fn is_closed(&self) -> bool {
        self.shared.calls.lock().closed.is_some()
    }

    /// Makes a call and decodes its result as `T`.
    ///
    /// `timeout` overrides the client's default deadline. The remaining
    /// budget travels with the request, so the server stops working on the
    /// call when the caller has stopped waiting.
    pub async fn call<Q, T>(&self, request: &Q, timeout: Option<Duration>) -> Result<T, Error>
    where
        Q: RequestMessage + ?Sized,
        T: DeserializeOwned,
    {
        let timeout = timeout.unwrap_or(self.shared.timeout);
        let method = request.method();
        let payload = match tokio::time::timeout(timeout, self.round_trip(request, timeout)).await {
            Ok(reply) => reply?,
            Err(_elapsed) => return Err(Error::DeadlineExceeded { timeout }),
        };
        let payload = match payload {
            Reply::Response(payload) => payload,
            Reply::Failed(err) => return Err(err.into_error(method, timeout)),
            Reply::Lost(err) => return Err(err),
        };
        payload::decode(&payload).map_err(|err| Error::BadResponse {
            method: method.to_owned(),
            reason: err.to_string(),
        })
    }

    async fn round_trip<Q>(&self, request: &Q, budget: Duration) -> Result<Reply, Error>
    where
        Q: RequestMessage + ?Sized,
    {
        let method = request.method();
        let mut payload = BytesMut::with_capacity(64);
        RequestHead::encode(method, budget, &mut payload);
        request.encode_args(&mut payload)?;
        let limit = self.shared.server_max_frame_len;
        if payload.len() > limit {
            return Err(Error::FrameTooLarge {
                what: format!("the request to `{method}`"),
                len: payload.len(),
                limit,
                side: "server",
                setting: "Server::max_frame_len",
            });
        }

        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::new(Kind::Request, id, payload.freeze())?;
        let waiter = self.shared.calls.register(id)?;
        let registered = Registered {
            calls: &self.shared.calls,
            id,
        };
        if self.shared.outbox.send(frame).await.is_err() {
            return Err(self.shared.calls.closed_error());
        }
        let reply = waiter
            .await
            .unwrap_or_else(|_| Reply::Lost(self.shared.calls.closed_error()));
        drop(registered);
        Ok(reply)
    }
}

/// What the reader hands a waiting call.
#[derive(Debug)]
enum Reply {
    Response(Bytes),
    Failed(WireError),
    Lost(Error),
}

/// The table of calls waiting for a response.
#[derive(Debug, Default)]
struct Calls {
    inner: Mutex<CallsInner>,
}

#[derive(Debug, Default)]
struct CallsInner {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once, when the connection ends; later calls fail with it at once.
    closed: Option<Error>,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, CallsInner> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every update is one HashMap operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, id: u64) -> Result<oneshot::Receiver<Reply>, Error> {
        let mut inner = self.lock();
        if let Some(err) = &inner.closed {
            return Err(err.clone());
        }
        let (tx, rx) = oneshot::channel();
        inner.waiting.insert(id, tx);
        Ok(rx)
    }

    fn complete(&self, id: u64, reply: Reply) {
        let waiter = self.lock().waiting.remove(&id);
        // No waiter: the call already gave up (deadline, dropped future).
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }

    fn forget(&self, id: u64) {
        self.lock().waiting.remove(&id);
    }

    fn close(&self, err: Error) {
        let waiting = {
            let mut inner = self.lock();
            if inner.closed.is_none() {
                inner.closed = Some(err.clone());
            }
            std::mem::take(&mut inner.waiting)
        };
        for (_, waiter) in waiting {
            let _ = waiter.send(Reply::Lost(err.clone()));
        }
    }

    fn closed_error(&self) -> Error {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| Error::disconnected("the connection closed"))
    }
}

/// Removes a call's waiter when the call ends for any reason, including its
/// future being dropped, so abandoned calls leave nothing behind.
struct Registered<'a> {
    calls: &'a Calls,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.calls.forget(self.id);
    }
}

async fn read_loop<R: FrameRead>(mut reader: R, calls: Arc<Calls>) {
    let reason = loop {
        let frame = match reader.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Error::disconnected("the server closed the connection"),
            Err(err) => break err,
        };
        let (header, payload) = frame.into_parts();
        match header.kind() {
            Kind::Response => calls.complete(header.id(), Reply::Response(payload)),
            Kind::Error => match WireError::decode(&payload) {
                Ok(err) if header.id() == CONNECTION_ID => {
                    break Error::disconnected(format!("the server closed the connection: {}", err.message));
                }
                Ok(err) => calls.complete(header.id(), Reply::Failed(err)),
                Err(err) => break err.into(),
            },
            kind @ (Kind::Request | Kind::Cancel) => {
                break ProtocolError::WrongDirection {
                    kind,
                    sender: "client",
                }
                .into();
            }
        }
    };
    tracing::debug!(error = %reason, "client connection ended");
    calls.close(reason);
}
