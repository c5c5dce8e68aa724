//! One JSON call: its arguments put in the trait's order, its run on the
//! server's one call path, and its response.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::codec::Codec;
use crate::context::Context;
use crate::descriptor::MethodDescriptor;
use crate::error::{ErrorCode, WireError};
use crate::server::call::{Call, End, Finished, ItemSink, Work};
use crate::server::json::envelope::{self, ErrorObject, Invalid, Request};
use crate::server::json::names;
use crate::server::json::{Caller, JsonRpc, codes};
use crate::service::Args;

impl JsonRpc {
    /// Runs one request and writes its response; `None` for a
    /// notification. `items`: the queue a streaming method's items go to,
    /// each wrapped in an `rpc.item` notification naming the call (only a
    /// WebSocket has one).
    pub(crate) async fn one(
        &self,
        request: Result<Request<'_>, Invalid<'_>>,
        caller: &Caller,
        items: Option<&mpsc::Sender<Bytes>>,
    ) -> Option<Vec<u8>> {
        let request = match request {
            Ok(request) => request,
            Err(invalid) => return Some(envelope::error(invalid.id, &ErrorObject::invalid(invalid.why))),
        };
        let outcome = self.run(&request, caller, items).await;
        let id = request.id?;
        Some(match outcome {
            Ok(result) => envelope::result(id, &result),
            Err(error) => envelope::error(Some(id), &error),
        })
    }

    /// Runs a request; the result's JSON, or the error to answer with.
    async fn run(
        &self,
        request: &Request<'_>,
        caller: &Caller,
        items: Option<&mpsc::Sender<Bytes>>,
    ) -> Result<Vec<u8>, ErrorObject> {
        self.state.counters.request_received();
        if request.method == "rpc.discover" {
            return Ok(self.discover().to_vec());
        }
        let Some(route) = self.methods.find(&request.method) else {
            let name = &request.method;
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
                    "Method not found: `{name}`; name a method as `Service.method` (or `method` alone when one service has it)"
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
        let sink = match (method.shape.output, &items) {
            (false, _) => None,
            (true, Some(queue)) => Some(ItemSink::Queue {
                queue: (*queue).clone(),
                open: Bytes::from(item_open(request.id)),
                close: Bytes::from_static(b"}}"),
            }),
            (true, None) => {
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
        let permit = caller
            .permits
            .acquire()
            .await
            .map_err(|_| ErrorObject::new(codes::SHUTTING_DOWN, "the connection is closing"))?;
        let budget = caller
            .timeout
            .unwrap_or(self.config.default_timeout)
            .min(self.state.config.max_budget);
        let ctx = Context::for_call(
            self.next_request_id(),
            method,
            Instant::now() + budget,
            caller.peer.clone(),
        );
        let (tx, finished) = oneshot::channel();
        let work = Work {
            ctx,
            args: Args::new(method, Codec::Json, self.state.config.decode, params, None),
            codec: Codec::Json,
            items: sink,
            max_answer_len: self.config.max_answer,
        };
        let call = Call {
            state: Arc::clone(&self.state),
            work,
            end: End::Reply(tx),
        };
        // Dropping this future (the caller went away) stops the call.
        let handle = route.service.start(method, call);
        let _stop = Stop(handle.abort);
        let finished = finished.await;
        drop(permit);
        match finished {
            Ok(finished) => respond(method, finished),
            Err(_) => Err(ErrorObject::new(
                codes::INTERRUPTED,
                "the call was stopped before it finished",
            )),
        }
    }
}

/// Stops a call's task when its caller stops waiting.
struct Stop(Option<tokio::task::AbortHandle>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(abort) = &self.0 {
            abort.abort();
        }
    }
}

/// The start of an `rpc.item` notification for the call `id`; the item and
/// `}}` follow.
fn item_open(id: Option<&RawValue>) -> Vec<u8> {
    let mut open = br#"{"jsonrpc":"2.0","method":"rpc.item","params":{"call":"#.to_vec();
    open.extend_from_slice(id.map_or("null", |id| id.get()).as_bytes());
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
    if params.get().starts_with('[') {
        let given: Vec<&RawValue> = serde_json::from_str(params.get()).map_err(|err| err.to_string())?;
        if given.len() > expected.len() {
            return Err(format!("{} arguments were given; {}", given.len(), signature()));
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
    let given: HashMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(params.get()).map_err(|err| err.to_string())?;
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
enum Outcome<'a> {
    #[serde(borrow)]
    Ok(&'a RawValue),
    #[serde(borrow)]
    Err(&'a RawValue),
}

/// The response to a finished call of `method`.
fn respond(method: &MethodDescriptor, finished: Finished) -> Result<Vec<u8>, ErrorObject> {
    match finished {
        Finished::Value(value) if method.fallible => match serde_json::from_slice::<Outcome<'_>>(&value) {
            Ok(Outcome::Ok(result)) => Ok(result.get().as_bytes().to_vec()),
            Ok(Outcome::Err(error)) => Err(ErrorObject {
                code: codes::APPLICATION_ERROR,
                message: format!("`{}` returned an error", method.full_name),
                data: Some(error.get().as_bytes().to_vec()),
            }),
            // A `Result` the encoder wrote some other way.
            Err(_) => Ok(value.to_vec()),
        },
        Finished::Value(value) => Ok(value.to_vec()),
        Finished::End => Ok(b"null".to_vec()),
        Finished::Failed(err) => Err(error_object(method, err)),
    }
}

/// A failed call's error object: the binary protocol's error, in
/// JSON-RPC's codes, with the same words.
fn error_object(method: &MethodDescriptor, err: WireError) -> ErrorObject {
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
        Some(ErrorCode::DeadlineExceeded) => (codes::DEADLINE_EXCEEDED, err.message),
        Some(ErrorCode::Overloaded) => (codes::OVERLOADED, err.message),
        Some(ErrorCode::ResponseTooLarge) => (
            codes::TOO_LARGE,
            format!(
                "the result of `{name}` is {} bytes, more than the server sends",
                err.message
            ),
        ),
        Some(ErrorCode::Failed) => (
            codes::FAILED,
            format!("the call failed on the server: {}", err.message),
        ),
        Some(ErrorCode::Interrupted) => (codes::INTERRUPTED, err.message),
        Some(ErrorCode::Internal | ErrorCode::Protocol) | None => (codes::INTERNAL_ERROR, err.message),
    };
    ErrorObject::new(code, message)
}
