//! [`Session`]: the JSON-RPC calls of one WebSocket connection.
//!
//! Each request runs in a task of its own, so a slow call never holds up
//! another; answers, and a streaming method's items (`rpc.item`
//! notifications), leave through one bounded queue in the order they are
//! ready. Past the server's cap on calls in progress per connection the
//! session stops taking messages, and a reader that stops reading fills
//! the queue, which holds every producer back: a slow WebSocket reader
//! cannot make the server hold more than the cap's worth.
//!
//! A notification `{"method": "rpc.cancel", "params": {"call": <id>}}`
//! (or `"params": [<id>]`) stops the call with that id; nothing more is
//! sent for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::future::join_all;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::server::json::envelope::{self, Body, ErrorObject, Request};
use crate::server::json::{Caller, JsonRpc};

/// The calls of one WebSocket connection. Dropping it stops them all.
pub struct Session {
    json: Arc<JsonRpc>,
    caller: Caller,
    outgoing: mpsc::Sender<Bytes>,
    /// Room for calls in progress: the server's cap per connection.
    room: Arc<Semaphore>,
    /// Calls in progress, by their id as the caller wrote it.
    running: Arc<Mutex<HashMap<String, AbortHandle>>>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.caller.peer)
            .finish()
    }
}

/// `rpc.cancel`'s params by name: the id of the call to stop.
#[derive(Deserialize)]
struct CancelByName<'a> {
    #[serde(borrow)]
    call: &'a RawValue,
}

/// The id `rpc.cancel`'s params name, by name or by position. (Not an
/// untagged enum: serde buffers those, and a `RawValue` cannot be read
/// from a buffer.)
fn cancelled_id(params: &RawValue) -> Option<&RawValue> {
    let text = params.get();
    if text.starts_with('{') {
        serde_json::from_str::<CancelByName<'_>>(text)
            .ok()
            .map(|named| named.call)
    } else {
        serde_json::from_str::<(&RawValue,)>(text)
            .ok()
            .map(|(call,)| call)
    }
}

impl Session {
    /// A session for `caller`'s connection, and the queue of messages
    /// to send it (answers and stream items, as JSON text).
    pub fn new(json: Arc<JsonRpc>, caller: Caller) -> (Session, mpsc::Receiver<Bytes>) {
        let cap = json.state.config.max_calls_per_connection.max(1);
        let (outgoing, queued) = mpsc::channel(cap);
        let session = Session {
            json,
            caller,
            outgoing,
            room: Arc::new(Semaphore::new(cap)),
            running: Arc::default(),
            tasks: JoinSet::new(),
        };
        (session, queued)
    }

    /// Takes one message from the client: starts the calls in it. Waits
    /// while the connection is at its cap on calls in progress.
    pub async fn message(&mut self, text: Bytes) {
        // Finished tasks are tidied here, not by a task of their own.
        while self.tasks.try_join_next().is_some() {}
        let body = match envelope::parse(&text) {
            Ok(body) => body,
            Err(err) => {
                let _ = self
                    .outgoing
                    .send(envelope::error(None, &ErrorObject::parse(&err)).into())
                    .await;
                return;
            }
        };
        // A cancel frees room; it never waits for it.
        if let Body::Single(Ok(request)) = &body {
            if request.method == "rpc.cancel" {
                self.cancel(request);
                return;
            }
        }
        let Ok(room) = Arc::clone(&self.room).acquire_owned().await else {
            return;
        };
        match body {
            Body::Single(request) => {
                let key = request
                    .as_ref()
                    .ok()
                    .and_then(|r| r.id)
                    .map(|id| id.get().to_owned());
                let (json, caller, outgoing) = self.parts();
                let text = text.clone();
                let abort = self.tasks.spawn(async move {
                    let _room = room;
                    // The request borrows the message, which this task owns.
                    let request = match envelope::parse(&text) {
                        Ok(Body::Single(request)) => request,
                        _ => return,
                    };
                    if let Some(answer) = json.one(request, &caller, Some(&outgoing)).await {
                        let _ = outgoing.send(answer.into()).await;
                    }
                });
                if let Some(key) = key {
                    self.track(key, abort);
                }
            }
            Body::Batch(requests) => {
                if let Some(refused) = self.json.refuse_batch(requests.len()) {
                    let _ = self.outgoing.send(refused.into()).await;
                    return;
                }
                drop(requests);
                let (json, caller, outgoing) = self.parts();
                self.tasks.spawn(async move {
                    let _room = room;
                    let Ok(Body::Batch(requests)) = envelope::parse(&text) else {
                        return;
                    };
                    let answers = join_all(
                        requests
                            .into_iter()
                            .map(|request| json.one(request, &caller, Some(&outgoing))),
                    )
                    .await;
                    if let Some(batch) = envelope::batch(answers.into_iter().flatten().collect()) {
                        let _ = outgoing.send(batch.into()).await;
                    }
                });
            }
        }
    }

    /// Waits for the calls already taken to be answered: the connection
    /// is closing, and reads no more.
    pub async fn finish(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    fn parts(&self) -> (Arc<JsonRpc>, Caller, mpsc::Sender<Bytes>) {
        (Arc::clone(&self.json), self.caller.clone(), self.outgoing.clone())
    }

    /// Remembers a running call by its id, so `rpc.cancel` can stop it.
    fn track(&self, key: String, abort: AbortHandle) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // Entries of finished calls go when the table grows, so it holds
        // little more than the calls in progress.
        if running.len() >= 2 * self.room.available_permits().max(64) {
            running.retain(|_, call| !call.is_finished());
        }
        running.insert(key, abort);
    }

    /// Stops the call `rpc.cancel` names, if it is running.
    fn cancel(&self, request: &Request<'_>) {
        let Some(params) = request.params else { return };
        let Some(id) = cancelled_id(params) else { return };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(call) = running.remove(id.get()) {
            call.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_names_its_call_by_name_or_by_position() {
        let read = |params: &str| {
            let params: &RawValue = serde_json::from_str(params).unwrap();
            cancelled_id(params).map(|id| id.get().to_owned())
        };
        assert_eq!(read(r#"{"call": 41}"#).as_deref(), Some("41"));
        assert_eq!(read(r#"{"call": "a"}"#).as_deref(), Some(r#""a""#));
        assert_eq!(read(r#"[7]"#).as_deref(), Some("7"));
        assert_eq!(read(r#"{"id": 7}"#), None);
        assert_eq!(read(r#"[]"#), None);
        assert_eq!(read(r#""7""#), None);
    }
}
