//! [`Session`]: the JSON-RPC calls of one WebSocket connection.
//!
//! Each request runs in a task of its own, so a slow call never holds up
//! another; answers, and a streaming method's items (`rpc.item`
//! notifications), leave through one bounded queue in the order they are
//! ready. As on the binary side, calls past the server's cap on calls in
//! progress per connection wait their turn, up to the cap again; past that
//! the session stops taking messages (and TCP pushes back). A reader that
//! stops reading fills the queue, which holds every producer back.
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
use crate::server::json::{Caller, JsonRpc, Room};

/// The calls of one WebSocket connection. Dropping it stops them all.
pub struct Session {
    json: Arc<JsonRpc>,
    caller: Caller,
    outgoing: mpsc::Sender<Bytes>,
    /// Room for calls taken: in progress (up to the server's cap per
    /// connection) or waiting their turn (as many again).
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
            room: Arc::new(Semaphore::new(cap.saturating_mul(2))),
            running: Arc::default(),
            tasks: JoinSet::new(),
        };
        (session, queued)
    }

    /// Takes one message from the client: starts the calls in it. Waits
    /// while the connection has as many calls as it may hold.
    pub async fn message(&mut self, text: Bytes) {
        // Finished tasks are tidied here, not by a task of their own.
        while self.tasks.try_join_next().is_some() {}
        let max_batch = self.json.config.max_batch;
        let body = match envelope::parse(&text, max_batch) {
            Ok(body) => body,
            Err(err) => {
                let refused = envelope::error(None, &ErrorObject::parse(&err));
                let _ = self.outgoing.send(refused.into()).await;
                return;
            }
        };
        // A cancel frees room; it never waits for it.
        if let Body::Single(Ok(request)) = &body
            && request.method == "rpc.cancel"
        {
            let stopped = self.cancel(request);
            if let Some(id) = request.id {
                let answer = envelope::result(id, if stopped { b"true" } else { b"false" });
                let _ = self.outgoing.send(answer.into()).await;
            }
            return;
        }
        if let Body::Refused(len) = body {
            let _ = self.outgoing.send(self.json.refuse_batch(len).into()).await;
            return;
        }
        let key = match &body {
            Body::Single(Ok(request)) => request.id.map(|id| id.get().to_owned()),
            _ => None,
        };
        drop(body);
        let Ok(room) = Arc::clone(&self.room).acquire_owned().await else {
            return;
        };
        let (json, caller, outgoing) = self.parts();
        let running = Arc::clone(&self.running);
        // Held while the task is spawned and entered, so a task that ends at
        // once cannot leave its entry behind.
        let mut table = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let tracked = key.clone();
        let abort = self.tasks.spawn(async move {
            let _room = room;
            // The requests borrow the message, which this task owns.
            match envelope::parse(&text, max_batch) {
                Ok(Body::Single(request)) => {
                    if let Some(answer) = json.one(request, &caller, Some(&outgoing), None).await {
                        let _ = outgoing.send(answer.into()).await;
                    }
                }
                Ok(Body::Batch(requests)) => {
                    let room = Room::new(json.config.max_answer);
                    let answers = join_all(
                        requests
                            .into_iter()
                            .map(|request| json.one(request, &caller, Some(&outgoing), Some(&room))),
                    )
                    .await;
                    if let Some(batch) = envelope::batch(answers.into_iter().flatten().collect()) {
                        let _ = outgoing.send(batch.into()).await;
                    }
                }
                Ok(Body::Refused(_)) | Err(_) => {}
            }
            if let Some(key) = tracked {
                forget(&running, &key);
            }
        });
        if let Some(key) = key {
            table.insert(key, abort);
        }
    }

    /// Whether no call is in progress.
    pub fn is_idle(&mut self) -> bool {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.is_empty()
    }

    /// Waits for the calls already taken to be answered: the connection
    /// is closing, and reads no more.
    pub async fn finish(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    fn parts(&self) -> (Arc<JsonRpc>, Caller, mpsc::Sender<Bytes>) {
        (Arc::clone(&self.json), self.caller.clone(), self.outgoing.clone())
    }

    /// Stops the call `rpc.cancel` names; whether one was running.
    fn cancel(&self, request: &Request<'_>) -> bool {
        let Some(id) = request.params.and_then(cancelled_id) else {
            return false;
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match running.remove(id.get()) {
            Some(call) => {
                call.abort();
                true
            }
            None => false,
        }
    }
}

/// Takes a finished call's entry out of the table, unless a later call with
/// the same id has taken its place.
fn forget(running: &Mutex<HashMap<String, AbortHandle>>, key: &str) {
    let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
    let mine = running
        .get(key)
        .is_some_and(|call| Some(call.id()) == tokio::task::try_id());
    if mine {
        running.remove(key);
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
