//! One JSON call: its arguments put in the trait's order, its run on the
//! server's one call path, and its response.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec::Codec;
use crate::context::Context;
use crate::descriptor::MethodDescriptor;
use crate::error::{ErrorCode, WireError};
use crate::metadata::Metadata;
use crate::server::Outcome;
use crate::server::call::{Call, CallHandle, End, Finished, ItemSink, Work};
use crate::server::json::envelope::{self, ErrorObject, Invalid, Request};
use crate::server::json::names;
use crate::server::json::{Caller, JsonRpc, Room, bounded, codes};
use crate::server::router::Route;
use crate::service::Args;

impl JsonRpc {
    /// Runs one request and writes its response; `None` for a
    /// notification. `items`: the queue a streaming method's items go to,
    /// each wrapped in an `rpc.item` notification naming the call (only a
    /// WebSocket has one). `room`: what a batch's answers may still add up
    /// to.
    pub(crate) async fn one(
        &self,
        request: Result<Request<'_>, Invalid<'_>>,
        caller: &Caller,
        items: Option<&mpsc::Sender<Bytes>>,
        room: Option<&Room>,
    ) -> Option<Vec<u8>> {
        let request = match request {
            Ok(request) => request,
            Err(invalid) => return Some(envelope::error(invalid.id, &ErrorObject::invalid(&invalid.why))),
        };
        self.state.counters.request_received();
        let outcome = match self.prepare(&request, items) {
            Ok(prepared) => self.run(prepared, caller).await,
            Err(refused) => {
                // Refused without running, as the binary side counts it.
                self.state.counters.ended(Outcome::Failed);
                Err(refused)
            }
        };
        let id = request.id?;
        let outcome = match outcome {
            Ok(result) if room.is_some_and(|room| !room.take(result.len())) => Err(ErrorObject::new(
                codes::TOO_LARGE,
                format!(
                    "this batch's answers add up to more than the {} bytes the server sends in one answer; send smaller batches",
                    self.config.max_answer
                ),
            )),
            outcome => outcome,
        };
        Some(match outcome {
            Ok(result) => envelope::result(id, &result),
            Err(error) => envelope::error(Some(id), &error),
        })
    }

    /// Finds what a request calls and reads its params; or says why it
    /// cannot run.
    fn prepare(
        &self,
        request: &Request<'_>,
        items: Option<&mpsc::Sender<Bytes>>,
    ) -> Result<Prepared<'_>, ErrorObject> {
        let name = request.method.as_ref();
        if name == "rpc.discover" {
            return Ok(Prepared::Discover);
        }
        if name == "rpc.cancel" {
            return Err(ErrorObject::new(
                codes::METHOD_NOT_FOUND,
                "Method not found: `rpc.cancel` stops a call made on the same WebSocket; over HTTP, close the connection to stop a call",
            ));
        }
        let Some(route) = self.methods.find(name) else {
            let message = match self.methods.meanings(name) {
                Some(meanings) => format!(
                    "Method not found: `{name}` is a method of more than one service; name one of {}",
                    meanings
                        .iter()
                        .map(|full| format!("`{full}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "Method not found: `{}`; name a method as `Service.method` (or `method` alone when one service has it)",
                    shortened(name)
                ),
            };
            return Err(ErrorObject::new(codes::METHOD_NOT_FOUND, message));
        };
        let method = route.method;
        if method.shape.input {
            return Err(ErrorObject::new(
                codes::NEEDS_STREAM,
                format!(
                    "`{}` takes a stream from its caller, which JSON-RPC cannot carry; call it from a Rust client",
                    method.full_name
                ),
            ));
        }
        let sink = match (method.shape.output, &items, request.id) {
            (false, _, _) => None,
            (true, Some(queue), Some(id)) => Some(ItemSink::Queue {
                queue: (*queue).clone(),
                open: Bytes::from(item_open(id)),
                close: Bytes::from_static(b"}}"),
            }),
            (true, Some(_), None) => {
                return Err(ErrorObject::new(
                    codes::INVALID_REQUEST,
                    "a stream's items name their call by its id; a notification has none",
                ));
            }
            (true, None, _) => {
                return Err(ErrorObject::new(
                    codes::NEEDS_STREAM,
                    format!(
                        "`{}` returns a stream, which a plain HTTP request cannot carry; call it over a WebSocket on the same path",
                        method.full_name
                    ),
                ));
            }
        };
        let params = positional(method, request.params)
            .map_err(|why| ErrorObject::new(codes::INVALID_PARAMS, format!("Invalid params: {why}")))?;
        Ok(Prepared::Call { route, sink, params })
    }

    /// Runs a prepared request; the result's JSON, or the error to answer
    /// with.
    async fn run(&self, prepared: Prepared<'_>, caller: &Caller) -> Result<Vec<u8>, ErrorObject> {
        let (route, sink, params) = match prepared {
            Prepared::Discover => return Ok(self.discover().to_vec()),
            Prepared::Call { route, sink, params } => (route, sink, params),
        };
        let method = route.method;
        let shutting_down = || {
            ErrorObject::new(
                codes::SHUTTING_DOWN,
                "the server is shutting down and did not run the call; retry elsewhere",
            )
        };
        if self.state.shutdown.is_cancelled() {
            self.state.counters.ended(Outcome::Failed);
            return Err(shutting_down());
        }
        let permit = tokio::select! {
            permit = caller.permits.acquire() => permit.map_err(|_| shutting_down())?,
            () = self.state.shutdown.cancelled() => {
                self.state.counters.ended(Outcome::Failed);
                return Err(shutting_down());
            }
        };
        // As on the binary side: a method that runs to completion gets the
        // server's ceiling; others the caller's deadline, or the method's
        // own default, or the server's default for JSON calls.
        let to_completion = method.no_cancel && !method.shape.streams();
        let budget = if to_completion {
            self.state.config.max_budget
        } else {
            caller
                .timeout
                .or(method.timeout)
                .unwrap_or(self.config.default_timeout)
                .min(self.state.config.max_budget)
        };
        let ctx = Context::for_call(
            None,
            self.next_request_id(),
            method,
            Instant::now() + budget,
            &caller.peer,
            Metadata::clone(&caller.metadata),
        );
        let work = Work {
            ctx,
            args: Args::new(method, Codec::Json, self.state.config.decode, params, None),
            codec: Codec::Json,
            items: sink.map(Box::new),
            max_answer_len: self.config.max_answer,
        };
        let state = &self.state;
        let running = async {
            if to_completion {
                let (reply, finished) = oneshot::channel();
                let call = Call {
                    state,
                    work,
                    end: End::Reply(reply),
                };
                route.service.start(method, call);
                finished.await.ok()
            } else {
                let call = Call {
                    state,
                    work,
                    end: End::Inline,
                };
                // Run here, in the caller's task: dropping this future (the
                // caller went away, or cancelled) stops the call.
                match route.service.start(method, call) {
                    CallHandle::Inline(call) => Some(call.await),
                    CallHandle::Spawned { .. } | CallHandle::Finished(_) => None,
                }
            }
        };
        // The end of a shutdown's grace period stops the call (its guard
        // counts it) and tells the caller so.
        let finished = tokio::select! {
            finished = running => finished,
            () = self.state.interrupt.cancelled() => None,
        };
        drop(permit);
        match finished {
            Some(finished) => respond(method, finished, budget, self.config.max_answer),
            None => Err(ErrorObject::new(
                codes::INTERRUPTED,
                "the server's shutdown stopped the call before it finished",
            )),
        }
    }
}

/// A request ready to run.
enum Prepared<'s> {
    /// `rpc.discover`: the OpenRPC document.
    Discover,
    /// A method of a service, its arguments in the trait's order.
    Call {
        route: &'s Route,
        sink: Option<ItemSink>,
        params: Bytes,
    },
}

/// A name as an error message may quote it: a peer's name may be long.
fn shortened(name: &str) -> Cow<'_, str> {
    const MAX: usize = 100;
    match name.char_indices().nth(MAX) {
        Some((end, _)) => Cow::Owned(format!("{}...", name.get(..end).unwrap_or_default())),
        None => Cow::Borrowed(name),
    }
}

/// The start of an `rpc.item` notification for the call `id`; the item and
/// `}}` follow.
fn item_open(id: &RawValue) -> Vec<u8> {
    let mut open = br#"{"jsonrpc":"2.0","method":"rpc.item","params":{"call":"#.to_vec();
    open.extend_from_slice(id.get().as_bytes());
    open.extend_from_slice(br#","item":"#);
    open
}

/// The arguments, as the JSON array in the trait's order that the codec
/// decodes. By position or by name; trailing `Option` arguments may be left
/// out (they are `None`).
fn positional(method: &MethodDescriptor, params: Option<&RawValue>) -> Result<Bytes, String> {
    let expected: Vec<_> = method.plain_args().collect();
    let signature = || {
        let list: Vec<String> = expected
            .iter()
            .map(|arg| format!("{}: {}", arg.name, arg.ty))
            .collect();
        format!("`{}` takes ({})", method.full_name, list.join(", "))
    };
    let optional = |index: usize| {
        expected
            .get(index)
            .is_some_and(|arg| arg.ty.starts_with("Option<"))
    };
    let Some(params) = params else {
        return match (0..expected.len()).all(optional) {
            true => Ok(nulls(&[], expected.len())),
            false => Err(format!("no params were given; {}", signature())),
        };
    };
    // Never more than one past what the method takes is kept: a peer's
    // params may hold millions.
    if params.get().starts_with('[') {
        let (given, len) =
            bounded::array(params.get().as_bytes(), expected.len() + 1).map_err(|err| err.to_string())?;
        if len > expected.len() {
            return Err(format!("{len} arguments were given; {}", signature()));
        }
        if given.len() == expected.len() {
            return Ok(Bytes::copy_from_slice(params.get().as_bytes()));
        }
        if let Some(missing) = (given.len()..expected.len()).find(|index| !optional(*index)) {
            let arg = expected.get(missing).map_or("?", |arg| arg.name);
            return Err(format!("argument `{arg}` is missing; {}", signature()));
        }
        return Ok(nulls(&given, expected.len()));
    }
    let (given, _) =
        bounded::object(params.get().as_bytes(), expected.len() + 1).map_err(|err| err.to_string())?;
    let mut ordered: Vec<Option<&RawValue>> = vec![None; expected.len()];
    for (name, value) in given {
        let Some(index) = names::argument(method, &name) else {
            return Err(format!("there is no argument `{name}`; {}", signature()));
        };
        if let Some(slot) = ordered.get_mut(index) {
            *slot = Some(value);
        }
    }
    let mut values = Vec::with_capacity(expected.len());
    for (index, value) in ordered.into_iter().enumerate() {
        match value {
            Some(value) => values.push(value),
            None if optional(index) => values.push(RawValue::NULL),
            None => {
                let arg = expected.get(index).map_or("?", |arg| arg.name);
                return Err(format!("argument `{arg}` is missing; {}", signature()));
            }
        }
    }
    Ok(nulls(&values, values.len()))
}

/// `values` as a JSON array, padded with `null` to `len` elements.
fn nulls(values: &[&RawValue], len: usize) -> Bytes {
    let mut out = Vec::with_capacity(2 + values.iter().map(|v| v.get().len() + 1).sum::<usize>() + 5 * len);
    out.push(b'[');
    for index in 0..len {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(values.get(index).map_or("null", |value| value.get()).as_bytes());
    }
    out.push(b']');
    Bytes::from(out)
}

/// How a method's `Result` looks in JSON.
#[derive(Deserialize)]
enum Returned<'a> {
    #[serde(borrow)]
    Ok(&'a RawValue),
    #[serde(borrow)]
    Err(&'a RawValue),
}

/// The response to a finished call of `method`.
fn respond(
    method: &MethodDescriptor,
    finished: Finished,
    budget: Duration,
    max_answer: usize,
) -> Result<Vec<u8>, ErrorObject> {
    match finished {
        // A JSON answer is one part: its bytes, not a copy.
        Finished::Value(value) if method.fallible => {
            let value = value.to_bytes();
            match serde_json::from_slice::<Returned<'_>>(&value) {
                Ok(Returned::Ok(result)) => Ok(result.get().as_bytes().to_vec()),
                Ok(Returned::Err(error)) => Err(ErrorObject {
                    code: codes::APPLICATION_ERROR,
                    message: format!("`{}` returned an error", method.full_name),
                    data: Some(error.get().as_bytes().to_vec()),
                }),
                // A `Result` the encoder wrote some other way.
                Err(_) => Ok(value.to_vec()),
            }
        }
        Finished::Value(value) => Ok(value.to_bytes().to_vec()),
        Finished::End => Ok(b"null".to_vec()),
        Finished::Failed(err) => Err(error_object(method, err, budget, max_answer)),
    }
}

/// A failed call's error object: the binary protocol's error, in
/// JSON-RPC's codes, with the same words.
fn error_object(
    method: &MethodDescriptor,
    err: WireError,
    budget: Duration,
    max_answer: usize,
) -> ErrorObject {
    let name = method.full_name;
    let (code, message) = match ErrorCode::from_wire(err.code) {
        Some(ErrorCode::UnknownService | ErrorCode::UnknownMethod) => {
            (codes::METHOD_NOT_FOUND, format!("Method not found: `{name}`"))
        }
        Some(ErrorCode::BadRequest) => (codes::INVALID_PARAMS, format!("Invalid params: {}", err.message)),
        Some(ErrorCode::HandlerPanicked) => (
            codes::INTERNAL_ERROR,
            format!("the handler of `{name}` panicked: {}", err.message),
        ),
        Some(ErrorCode::DeadlineExceeded) => (
            codes::DEADLINE_EXCEEDED,
            format!(
                "`{name}` did not finish within its deadline of {budget:?}; if it is expected to be slow, send a longer one in the `rpc-timeout` header"
            ),
        ),
        Some(ErrorCode::Overloaded) => (codes::OVERLOADED, err.message),
        Some(ErrorCode::ResponseTooLarge) => (
            codes::TOO_LARGE,
            format!(
                "`{name}` answered with more than the {max_answer} bytes the server sends in one answer or stream item (`Server::max_frame_len`)"
            ),
        ),
        Some(ErrorCode::Failed) => (
            codes::FAILED,
            format!("the call failed on the server: {}", err.message),
        ),
        Some(ErrorCode::Interrupted) => (codes::INTERRUPTED, err.message),
        Some(ErrorCode::Unauthenticated) => (codes::UNAUTHENTICATED, err.message),
        Some(ErrorCode::PermissionDenied) => (codes::PERMISSION_DENIED, err.message),
        // JSON calls carry no fingerprint; a layer that refuses one anyway
        // says the parameters do not fit.
        Some(ErrorCode::IncompatibleMethod) => (codes::INVALID_PARAMS, err.message),
        Some(ErrorCode::Internal | ErrorCode::Protocol) | None => (codes::INTERNAL_ERROR, err.message),
    };
    ErrorObject::new(code, message)
}
