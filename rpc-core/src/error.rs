//! [`Error`]: everything a call can fail at, in words a user can act on.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::DecodeError;
use crate::descriptor::MethodDescriptor;
use crate::frame::ProtocolError;

/// Why a remote call, a connection or a server failed.
///
/// Application errors are not here: a method returning `Result<T, MyError>`
/// delivers `MyError` as a value inside `Ok`. This type covers what the
/// network and the framework can do to a call.
///
/// `Error` is cheap to clone, so one connection failure can be handed to every
/// call that was waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection (or other transport) could not be opened.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address that was dialled.
        addr: String,
        /// What the operating system said.
        #[source]
        source: Arc<io::Error>,
    },
    /// A server could not listen on its address.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// What the operating system said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The last attempt to connect failed, and the next is not due before
    /// the call's deadline, so the call was not sent. (A call made while
    /// the client waits between attempts waits for the next one if it is
    /// due in time.)
    #[error(
        "{last_error}; that attempt failed {} ago and the next is due in {}, after this call's deadline (the delay between attempts is `ClientBuilder::backoff`)",
        human(*failed_ago),
        human(*retry_in)
    )]
    Unreachable {
        /// Why the last attempt failed.
        last_error: Arc<Error>,
        /// How long ago it failed.
        failed_ago: Duration,
        /// How long until the next attempt.
        retry_in: Duration,
    },
    /// The connection was lost, or closed by either side, before the call
    /// completed. The call may or may not have run on the server.
    #[error("the connection was lost before the call completed: {reason}")]
    Disconnected {
        /// What ended the connection.
        reason: Arc<str>,
    },
    /// The call's deadline passed before a response arrived. The server stops
    /// the handler when its own copy of the budget runs out.
    #[error(
        "the call did not complete within its deadline of {timeout:?}; raise it with `with_timeout` if the method is expected to be slow"
    )]
    DeadlineExceeded {
        /// The time budget the call had.
        timeout: Duration,
    },
    /// The server is shutting down and did not run this call, so it is safe
    /// to retry elsewhere. Clients that can reconnect retry such calls
    /// themselves; this reaches callers only when they cannot.
    #[error(
        "the server is shutting down and did not run the call; it is safe to retry once a server is available"
    )]
    ShuttingDown,
    /// The server has no service of this name.
    #[error(
        "the server does not serve `{service}`; register it with `Server::serve`, or check that client and server agree on the service"
    )]
    UnknownService {
        /// The service name the call asked for.
        service: String,
    },
    /// The service exists but has no such method (an older server, usually).
    #[error("the server has no method `{method}`; the server probably runs an older version of the service")]
    UnknownMethod {
        /// The full wire name, such as `Calculator.add`.
        method: String,
    },
    /// The server could not decode the call's arguments.
    #[error("the server could not decode the arguments of `{method}`: {reason}")]
    BadRequest {
        /// The full wire name of the method.
        method: String,
        /// What the decoder said.
        reason: String,
    },
    /// The client could not decode the server's answer.
    #[error("could not decode the response of `{method}`: {reason}")]
    BadResponse {
        /// The full wire name of the method.
        method: String,
        /// What the decoder said.
        reason: String,
    },
    /// A value could not be serialized (a `Serialize` impl returned an error).
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// What the encoder said.
        reason: String,
    },
    /// The handler panicked. The server answered with this error and goes on
    /// serving every other call.
    #[error("the handler of `{method}` panicked: {message}")]
    HandlerPanicked {
        /// The full wire name of the method.
        method: String,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The handler failed the call (for a stream: ended it with this error).
    /// Handlers return it, for example from a stream, with
    /// [`Error::failed`].
    #[error("the call failed on the server: {message}")]
    Failed {
        /// What the handler said.
        message: String,
    },
    /// The caller did not prove who it is, or the proof was refused (a
    /// missing or bad token): a middleware's or handler's answer. Calling
    /// again with the same credentials will fail again.
    #[error("the server refused the call as unauthenticated: {message}")]
    Unauthenticated {
        /// Why, as the server said it.
        message: String,
    },
    /// The caller is known but may not make this call.
    #[error("the server refused the call: permission denied: {message}")]
    PermissionDenied {
        /// Why, as the server said it.
        message: String,
    },
    /// The server's method has another shape than the client's (an argument,
    /// a field, a variant or the result changed between their builds), so
    /// it refused the call rather than misread it. The connection and the
    /// service's other methods go on working.
    #[error(
        "`{method}` differs between this client and the server, which refused the call: {difference}; build both from the same service definition, or see docs/COMPATIBILITY.md for changing a method on purpose"
    )]
    IncompatibleMethod {
        /// The full wire name of the method.
        method: String,
        /// The first difference, as the client sees it ("argument `a`: the
        /// client has u64, the server has i64"), or the server's own words.
        difference: String,
    },
    /// The server refused the call because it is at a limit; retry later.
    #[error("the server is overloaded and refused the call: {reason}; retry later")]
    Overloaded {
        /// Which limit was hit.
        reason: String,
    },
    /// A message is larger than the receiving side accepts. Nothing was sent.
    #[error(
        "{what} of {len} bytes exceeds the {side}'s frame limit of {limit} bytes; raise it with `{setting}` on the {side}"
    )]
    FrameTooLarge {
        /// What was too large ("the request to `Calculator.add`").
        what: String,
        /// Its encoded length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
        /// Which side has the limit: "server" or "client".
        side: &'static str,
        /// The setting that raises it.
        setting: &'static str,
    },
    /// The peer broke the wire protocol; the connection was closed.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server reported a failure with a code this build does not know
    /// (a newer server).
    #[error("the server reported error code {code}: {message}")]
    Remote {
        /// The wire error code.
        code: u8,
        /// The server's message.
        message: String,
    },
}

impl Error {
    /// A refusal of a caller that did not prove who it is (for an auth
    /// middleware): the caller sees [`Error::Unauthenticated`].
    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::Unauthenticated {
            message: message.into(),
        }
    }

    /// A refusal of a caller that may not make this call: the caller sees
    /// [`Error::PermissionDenied`].
    pub fn permission_denied(message: impl Into<String>) -> Error {
        Error::PermissionDenied {
            message: message.into(),
        }
    }

    /// An error a handler reports to its caller, such as one that ends a
    /// stream early: the caller sees [`Error::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> Error {
        Error::Failed {
            message: message.into(),
        }
    }

    /// A [`Error::Disconnected`] with the given reason.
    pub fn disconnected(reason: impl Into<Arc<str>>) -> Error {
        Error::Disconnected {
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error that ended a connection.
    pub fn io(context: &str, err: &io::Error) -> Error {
        Error::disconnected(format!("{context}: {err}"))
    }
}

/// Words for a payload that did not decode on `side` (`"server"` or
/// `"client"`): a nesting limit names the setting that raises it; anything
/// else means the two sides disagree on the types.
pub(crate) fn explain_decode(err: &DecodeError, side: &str) -> String {
    match err {
        DecodeError::TooDeep { limit } => {
            let setting = if side == "server" {
                "Server::max_nesting"
            } else {
                "ClientBuilder::max_nesting"
            };
            format!(
                "the value nests more than {limit} levels deep, the {side}'s limit; raise it with `{setting}` if such values are expected"
            )
        }
        other => format!("{other}; client and server disagree on the method's types"),
    }
}

/// A duration as a person reads it: `250 ms`, `3.2 s`.
fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// The error codes that travel in error frames. The numbers are the wire
/// values; see `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No service of the requested name.
    UnknownService = 1,
    /// No method of the requested name.
    UnknownMethod = 2,
    /// The arguments did not decode.
    BadRequest = 3,
    /// The handler panicked.
    HandlerPanicked = 4,
    /// The request's time budget ran out on the server.
    DeadlineExceeded = 5,
    /// A server limit refused the call.
    Overloaded = 6,
    /// The response would exceed the client's frame limit.
    ResponseTooLarge = 7,
    /// The server failed in a way not listed here (e.g. could not encode).
    Internal = 8,
    /// Connection-level: the peer broke the protocol and is being closed.
    Protocol = 9,
    /// The handler failed the call with a message (`Error::failed`).
    Failed = 10,
    /// The server shut down before the call finished: its graceful
    /// shutdown's grace period ran out. The call may have partly run.
    Interrupted = 11,
    /// The caller did not prove who it is (new in 0.2; older clients see a
    /// failure with code 12).
    Unauthenticated = 12,
    /// The caller may not make this call (new in 0.2).
    PermissionDenied = 13,
    /// The client's shape of the method differs from the server's: its
    /// fingerprint is not one the server's method admits (new in 0.2).
    IncompatibleMethod = 14,
}

impl ErrorCode {
    /// Decodes a wire code; `None` for codes this build does not know.
    pub fn from_wire(code: u8) -> Option<ErrorCode> {
        Some(match code {
            1 => ErrorCode::UnknownService,
            2 => ErrorCode::UnknownMethod,
            3 => ErrorCode::BadRequest,
            4 => ErrorCode::HandlerPanicked,
            5 => ErrorCode::DeadlineExceeded,
            6 => ErrorCode::Overloaded,
            7 => ErrorCode::ResponseTooLarge,
            8 => ErrorCode::Internal,
            9 => ErrorCode::Protocol,
            10 => ErrorCode::Failed,
            11 => ErrorCode::Interrupted,
            12 => ErrorCode::Unauthenticated,
            13 => ErrorCode::PermissionDenied,
            14 => ErrorCode::IncompatibleMethod,
            _ => return None,
        })
    }
}

/// An error as the server puts it on the wire: a code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// The wire code (kept raw so unknown codes survive).
    pub code: u8,
    /// A human-readable message.
    pub message: String,
}

impl WireError {
    /// The error frame that carries this error for call `id`.
    pub fn to_frame(&self, id: u64) -> crate::frame::Frame {
        crate::frame::Frame::error(id, self.code, &self.message)
    }

    /// Decodes an error frame's payload. A message that is not UTF-8 is
    /// repaired rather than refused: it is only ever shown to a person.
    pub fn decode(payload: &[u8]) -> Result<WireError, ProtocolError> {
        let (&code, message) = payload.split_first().ok_or(ProtocolError::EmptyError)?;
        Ok(WireError {
            code,
            message: String::from_utf8_lossy(message).into_owned(),
        })
    }

    /// A wire error with a known code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code: code as u8,
            message: message.into(),
        }
    }

    /// Turns a server's error into the [`Error`] the caller of `method` sees.
    ///
    /// `descriptor` is the method's on the client, if known: a refusal for
    /// another shape is explained by comparing it with the server's.
    /// `timeout` is the call's budget and `max_frame_len` the client's own
    /// frame limit, which the messages of those errors mention.
    pub fn into_error(
        self,
        method: &str,
        descriptor: Option<&MethodDescriptor>,
        timeout: Duration,
        max_frame_len: usize,
    ) -> Error {
        let WireError { code, message } = self;
        let method = method.to_owned();
        match ErrorCode::from_wire(code) {
            // The message is the service's name.
            Some(ErrorCode::UnknownService) => Error::UnknownService { service: message },
            Some(ErrorCode::UnknownMethod) => Error::UnknownMethod { method },
            Some(ErrorCode::BadRequest) => Error::BadRequest {
                method,
                reason: message,
            },
            Some(ErrorCode::HandlerPanicked) => Error::HandlerPanicked { method, message },
            Some(ErrorCode::DeadlineExceeded) => Error::DeadlineExceeded { timeout },
            Some(ErrorCode::Overloaded) => Error::Overloaded { reason: message },
            Some(ErrorCode::Failed) => Error::Failed { message },
            Some(ErrorCode::Unauthenticated) => Error::Unauthenticated { message },
            Some(ErrorCode::PermissionDenied) => Error::PermissionDenied { message },
            Some(ErrorCode::IncompatibleMethod) => Error::IncompatibleMethod {
                difference: crate::compat::explain_refusal(descriptor, &message),
                method,
            },
            Some(ErrorCode::Protocol) => Error::disconnected(format!(
                "the server closed the connection after a protocol error: {message}"
            )),
            Some(ErrorCode::Interrupted) => Error::disconnected(format!(
                "the server shut down before `{method}` finished (its grace period ran out); the call may have partly run: {message}"
            )),
            Some(ErrorCode::ResponseTooLarge) => Error::FrameTooLarge {
                what: format!("the response of `{method}`"),
                len: message.trim().parse().unwrap_or(0),
                limit: max_frame_len,
                side: "client",
                setting: "ClientBuilder::max_frame_len",
            },
            Some(ErrorCode::Internal) | None => Error::Remote { code, message },
        }
    }
}
