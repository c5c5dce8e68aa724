//! One server connection: read requests, run each in its own task, write
//! responses through the connection's single writer.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{CONNECTION_ID, Frame, Header, Kind, ProtocolError};
use crate::payload::RequestHead;
use crate::server::Router;
use crate::transport::{Connection, FrameRead, FrameWrite};
use crate::writer;

/// Frames the writer may have queued before handlers wait for room. A client
/// that stops reading fills this, then the handlers block, then the reader
/// stops reading: backpressure reaches the client through TCP.
const OUTBOX_CAPACITY: usize = 1024;

/// Serves one connection until the client leaves or breaks the protocol.
///
/// Every request runs in a task of its own, so a slow call never holds up a
/// fast one; responses go out in completion order. When the client closes
/// its side, calls already running finish and are answered before the
/// connection closes.
pub async fn serve_connection<R: FrameRead, W: FrameWrite>(router: Arc<Router>, conn: Connection<R, W>) {
    let Connection {
        mut reader,
        writer,
        peer,
        peer_addr,
    } = conn;
    let (outbox, queued) = mpsc::channel(OUTBOX_CAPACITY);
    let writer = AbortOnDropHandle::new(tokio::spawn(writer::run(writer, queued)));
    let mut calls = Calls {
        tasks: JoinSet::new(),
        running: HashMap::new(),
    };
    let client_max_frame_len = peer.max_frame_len as usize;

    let ending = loop {
        let frame = tokio::select! {
            frame = reader.read_frame() => frame,
            Some(done) = calls.tasks.join_next(), if !calls.tasks.is_empty() => {
                if let Ok(id) = done {
                    calls.running.remove(&id);
                }
                continue;
            }
        };
        let (header, payload) = match frame {
            Ok(Some(frame)) => frame.into_parts(),
            Ok(None) => break Ending::ClientClosed,
            Err(err) => break Ending::Failed(err),
        };
        match on_frame(
            &router,
            &mut calls,
            &outbox,
            header,
            payload,
            client_max_frame_len,
        ) {
            Ok(()) => {}
            Err(err) => break Ending::Failed(err),
        }
    };

    match ending {
        Ending::ClientClosed => {
            tracing::debug!(
                ?peer_addr,
                in_flight = calls.running.len(),
                "client closed its side"
            );
            while calls.tasks.join_next().await.is_some() {}
        }
        Ending::Failed(err) => {
            tracing::info!(?peer_addr, error = %err, "closing connection");
            calls.tasks.abort_all();
            if let Error::Protocol(violation) = &err {
                let notice = WireError::new(ErrorCode::Protocol, violation.to_string());
                let _ = outbox.try_send(notice.to_frame(CONNECTION_ID));
            }
        }
    }
    drop(calls);
    drop(outbox);
    // The writer drains what is queued (the answers, or the notice) and
    // closes our side.
    if let Ok(Err(err)) = writer.await {
        tracing::debug!(?peer_addr, error = %err, "writer stopped");
    }
}

enum Ending {
    ClientClosed,
    Failed(Error),
}

/// The calls running on a connection.
struct Calls {
    tasks: JoinSet<u64>,
    running: HashMap<u64, AbortHandle>,
}

fn on_frame(
    router: &Arc<Router>,
    calls: &mut Calls,
    outbox: &mpsc::Sender<Frame>,
    header: Header,
    payload: Bytes,
    client_max_frame_len: usize,
) -> Result<(), Error> {
    let id = header.id();
    match header.kind() {
        Kind::Request => {
            if calls.running.contains_key(&id) {
                return Err(ProtocolError::DuplicateId(id).into());
            }
            let (head, args) = RequestHead::decode(payload)?;
            let router = Arc::clone(router);
            let outbox = outbox.clone();
            let task = calls.tasks.spawn(async move {
                let frame = run_call(&router, id, head, args, client_max_frame_len).await;
                // A closed outbox means the connection is gone; nobody to tell.
                let _ = outbox.send(frame).await;
                id
            });
            calls.running.insert(id, task);
            Ok(())
        }
        Kind::Cancel => {
            // A cancel can cross the response on the wire; one for a call
            // that already finished is normal and ignored.
            if let Some(task) = calls.running.remove(&id) {
                task.abort();
            }
            Ok(())
        }
        Kind::Error if id == CONNECTION_ID => {
            let notice = WireError::decode(&payload)?;
            Err(Error::disconnected(format!(
                "the client reported a protocol error: {}",
                notice.message
            )))
        }
        kind @ (Kind::Response | Kind::Error) => Err(ProtocolError::WrongDirection {
            kind,
            sender: "server",
        }
        .into()),
    }
}

/// Runs one call to completion and returns the frame that answers it.
async fn run_call(
    router: &Router,
    id: u64,
    head: RequestHead,
    args: Bytes,
    client_max_frame_len: usize,
) -> Frame {
    let RequestHead { budget, method } = head;
    // Dispatch (which runs the user's `Deserialize`) happens inside the
    // unwind guard too: a panic anywhere in the call is the call's problem.
    let call = AssertUnwindSafe(async { router.dispatch(&method, args)?.await }).catch_unwind();
    let answer = match tokio::time::timeout(budget, call).await {
        Ok(Ok(Ok(result))) if result.len() > client_max_frame_len => Err(WireError::new(
            ErrorCode::ResponseTooLarge,
            format!(
                "the response of `{method}` is {} bytes, over the client's frame limit of {client_max_frame_len} bytes; raise it with `ClientBuilder::max_frame_len` on the client",
                result.len()
            ),
        )),
        Ok(Ok(Ok(result))) => Ok(result),
        Ok(Ok(Err(err))) => Err(to_wire(&err)),
        Ok(Err(panic)) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(%method, %message, "handler panicked");
            Err(WireError::new(ErrorCode::HandlerPanicked, message))
        }
        Err(_elapsed) => Err(deadline_error(&method, budget)),
    };
    match answer.map(|result| Frame::new(Kind::Response, id, result)) {
        Ok(Ok(frame)) => frame,
        Err(err) => err.to_frame(id),
        // Only a result over 4 GiB fails to frame, and the client's limit
        // (a u32) has refused any such result above.
        Ok(Err(too_large)) => WireError::new(ErrorCode::ResponseTooLarge, too_large.to_string()).to_frame(id),
    }
}

fn deadline_error(method: &str, budget: Duration) -> WireError {
    WireError::new(
        ErrorCode::DeadlineExceeded,
        format!("`{method}` did not finish within the caller's budget of {budget:?}"),
    )
}

/// The wire form of a dispatch failure. The message is the part the client
/// cannot know; the client rebuilds the rest of the sentence itself.
fn to_wire(err: &Error) -> WireError {
    match err {
        Error::UnknownService { service } => WireError::new(ErrorCode::UnknownService, service.clone()),
        Error::UnknownMethod { method } => WireError::new(ErrorCode::UnknownMethod, method.clone()),
        Error::BadRequest { reason, .. } => WireError::new(ErrorCode::BadRequest, reason.clone()),
        Error::Overloaded { reason } => WireError::new(ErrorCode::Overloaded, reason.clone()),
        other => WireError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "the panic carried no message".to_owned()
    }
}
