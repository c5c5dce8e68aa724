//! The JSON-RPC 2.0 front of a server: what its HTTP and WebSocket doors
//! hand requests to. Calls made this way take the server's one call path
//! (the same services, limits, counters and context), with JSON as their
//! codec; `docs/JSON.md` is the mapping, code by code.
//!
//! - `envelope`: requests and responses as the specification spells them.
//! - `names`: every spelling of a method and of its arguments.
//! - `call`: one call: its arguments in the trait's order, its run, its
//!   response.
//! - `session`: a WebSocket connection's calls, streams and cancels.
//! - `openrpc`: the service's self-description, at `rpc.discover`.

mod bounded;
mod call;
mod envelope;
mod names;
mod openrpc;
mod session;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::join_all;

use crate::metadata::Metadata;
use crate::peer::Peer;
use crate::permit::CallPermits;
use crate::server::ServerState;
use crate::server::stats::OpenConnection;

pub use session::Session;

use envelope::{Body, ErrorObject};
use names::Methods;

/// The JSON-RPC error codes a server answers with: the specification's
/// own, and the framework's, from -32000 down.
pub mod codes {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a request (or the batch is empty or too large).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No method of that name; the message names it.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params do not fit the method; the message says which argument
    /// and why.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The handler panicked, or its result could not be encoded.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The method returned `Err(e)`: `data` holds `e`, as JSON.
    pub const APPLICATION_ERROR: i64 = -32000;
    /// The call did not finish within its deadline.
    pub const DEADLINE_EXCEEDED: i64 = -32001;
    /// The handler failed the call (`rpc::Error::failed`), or its stream
    /// failed; the message is the handler's.
    pub const FAILED: i64 = -32002;
    /// The server refused the call at a limit; retry later.
    pub const OVERLOADED: i64 = -32003;
    /// The server is shutting down and did not run the call: safe to retry.
    pub const SHUTTING_DOWN: i64 = -32004;
    /// The server's shutdown stopped the call partway.
    pub const INTERRUPTED: i64 = -32005;
    /// The result is larger than the server sends.
    pub const TOO_LARGE: i64 = -32006;
    /// The method streams in a way this transport cannot carry: a stream
    /// from the caller (JSON cannot send one), or a stream to the caller
    /// over plain HTTP (call it over WebSocket).
    pub const NEEDS_STREAM: i64 = -32007;
    /// The caller did not prove who it is (a missing or bad token); the
    /// message says why.
    pub const UNAUTHENTICATED: i64 = -32008;
    /// The caller may not make this call; the message says why.
    pub const PERMISSION_DENIED: i64 = -32009;
}

/// A whole answer saying the request is invalid, and why: for a door that
/// refuses a request before it reaches the front (a body too large, a bad
/// header).
pub fn invalid_request(why: &str) -> Vec<u8> {
    envelope::error(None, &ErrorObject::invalid(why))
}

/// How JSON calls are served.
#[derive(Debug, Clone)]
pub struct JsonConfig {
    /// The most requests one batch may hold. Default 1 000.
    pub max_batch: usize,
    /// The deadline of a call whose caller sets none. Default 30 s, and
    /// never more than the server's maximum budget.
    pub default_timeout: Duration,
    /// The largest result sent, in bytes (and the largest stream item).
    /// Default 16 MiB.
    pub max_answer: usize,
}

/// The most requests one batch may hold, by default.
pub const DEFAULT_MAX_BATCH: usize = 1000;

impl Default for JsonConfig {
    fn default() -> Self {
        JsonConfig {
            max_batch: DEFAULT_MAX_BATCH,
            default_timeout: crate::client::DEFAULT_TIMEOUT,
            max_answer: crate::frame::DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// A server's JSON-RPC front: its services under every name a JSON caller
/// may use, and the settings its calls run under.
pub struct JsonRpc {
    state: Arc<ServerState>,
    methods: Methods,
    config: JsonConfig,
    /// Request ids for JSON calls' contexts: JSON ids need not be numbers.
    next_id: AtomicU64,
    /// The OpenRPC document, made when first asked for.
    discovery: OnceLock<Vec<u8>>,
}

impl std::fmt::Debug for JsonRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRpc").field("config", &self.config).finish()
    }
}

/// What a batch's answers may add up to: the largest answer the server
/// sends. An answer that would take the batch past it is replaced by a
/// "too large" error, so a batch of large results costs no more than one.
pub(crate) struct Room {
    left: AtomicUsize,
}

impl Room {
    pub(crate) fn new(bytes: usize) -> Room {
        Room {
            left: AtomicUsize::new(bytes),
        }
    }

    /// Takes `bytes` from the room, if they fit.
    pub(crate) fn take(&self, bytes: usize) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }
}

/// One connection of JSON callers: who they are, the deadline their HTTP
/// request asked for, and the cap on their calls in progress.
#[derive(Debug, Clone)]
pub struct Caller {
    peer: Peer,
    timeout: Option<Duration>,
    /// What the request's headers carried, for every call in it.
    metadata: Arc<Metadata>,
    permits: CallPermits,
    /// Counts the connection among the server's open ones.
    _open: Arc<OpenConnection>,
}

impl Caller {
    /// A connection from `peer`, allowed the server's cap on calls in
    /// progress per connection.
    pub fn new(json: &JsonRpc, peer: Peer) -> Caller {
        let cap = json.state.config.max_calls_per_connection;
        Caller {
            peer,
            timeout: None,
            metadata: Arc::default(),
            permits: CallPermits::new(cap).counted(Arc::clone(&json.state.counters.calls_in_progress)),
            _open: Arc::new(json.state.counters.connection_opened()),
        }
    }

    /// The same caller, with the deadline its request asked for.
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Caller {
        Caller {
            timeout,
            ..self.clone()
        }
    }

    /// The same caller, with the metadata its request carried (its HTTP
    /// headers).
    pub fn with_metadata(&self, metadata: Metadata) -> Caller {
        Caller {
            metadata: Arc::new(metadata),
            ..self.clone()
        }
    }
}

impl JsonRpc {
    /// The front of the server whose state is `state`.
    pub fn new(state: Arc<ServerState>, config: JsonConfig) -> JsonRpc {
        let methods = Methods::new(&state.router);
        JsonRpc {
            state,
            methods,
            config,
            next_id: AtomicU64::new(1),
            discovery: OnceLock::new(),
        }
    }

    /// Answers one HTTP request's body: a request or a batch. `None` when
    /// nothing is to be sent back (notifications only). Streaming methods
    /// are refused here: they need the WebSocket door.
    pub async fn answer(&self, body: &[u8], caller: &Caller) -> Option<Vec<u8>> {
        let body = match envelope::parse(body, self.config.max_batch) {
            Ok(body) => body,
            Err(err) => return Some(envelope::error(None, &ErrorObject::parse(&err))),
        };
        match body {
            Body::Single(request) => self.one(request, caller, None, None).await,
            Body::Batch(requests) => {
                let room = Room::new(self.config.max_answer);
                let answers = join_all(
                    requests
                        .into_iter()
                        .map(|request| self.one(request, caller, None, Some(&room))),
                )
                .await;
                envelope::batch(answers.into_iter().flatten().collect())
            }
            Body::Refused(len) => Some(self.refuse_batch(len)),
        }
    }

    /// The answer to a batch that is empty or over the limit.
    pub(crate) fn refuse_batch(&self, len: usize) -> Vec<u8> {
        let why = match len {
            0 => "an empty batch".to_owned(),
            n => format!(
                "a batch of {n} requests is over the limit of {}; send smaller batches (or raise `Server::max_batch`)",
                self.config.max_batch
            ),
        };
        envelope::error(None, &ErrorObject::invalid(&why))
    }

    /// The request id the next call's context carries.
    fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
