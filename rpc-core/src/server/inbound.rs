//! What each frame from a client does to its connection: requests are
//! routed and admitted, cancels stop calls, items, ends and credit feed
//! the calls' streams. A frame that breaks the protocol is an `Err`, which
//! closes the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use crate::codec::Codec;
use crate::context::Context;
use crate::error::{Error, ErrorCode, WireError};
use crate::frame::{self, CONNECTION_ID, Frame, HeadView, Kind, ProtocolError};
use crate::metadata::Metadata;
use crate::server::Outcome;
use crate::server::call::{self, ItemSink, Work};
use crate::server::calls::{Admitted, Entry, Input};
use crate::server::connection::Connection;
use crate::service::Args;
use crate::streaming::{Incoming, MAX_STREAM_CREDIT, STREAM_WINDOW, SendCredit};

impl Connection {
    /// Handles one frame from the client, read at `received`. `draining`:
    /// the connection said goodbye, so new requests are ignored (the
    /// goodbye told the client they will not run).
    pub(super) fn on_frame(&mut self, frame: Frame, draining: bool, received: Instant) -> Result<(), Error> {
        let (header, payload) = frame.into_parts();
        let id = header.id();
        match header.kind() {
            Kind::Request if draining => self.ignore_request(id),
            Kind::Request => self.on_request(id, payload, received),
            Kind::Cancel if !payload.is_empty() => {
                Err(ProtocolError::CancelWithPayload(payload.len()).into())
            }
            Kind::Cancel if id > self.calls.last_read_id => Err(ProtocolError::CancelForUnknownId(id).into()),
            Kind::Cancel => {
                self.calls.cancel(id);
                Ok(())
            }
            Kind::Item => self.on_item(id, payload),
            Kind::End => self.on_end(id),
            Kind::Credit => self.on_credit(id, &payload),
            Kind::Error if id == CONNECTION_ID => {
                let notice = WireError::decode(&payload)?;
                Err(Error::disconnected(format!(
                    "the client reported a protocol error: {}",
                    notice.message
                )))
            }
            kind @ (Kind::Response | Kind::Error | Kind::Goodbye) => Err(ProtocolError::WrongDirection {
                kind,
                sender: "server",
            }
            .into()),
        }
    }

    /// A request read after the goodbye: it will not run, as the goodbye
    /// said, but its id counts, so frames that follow it (its stream's
    /// items, a cancel) are recognised and ignored like those of any
    /// finished call.
    fn ignore_request(&mut self, id: u64) -> Result<(), Error> {
        let last = self.calls.last_read_id;
        if id <= last {
            return Err(ProtocolError::IdNotIncreasing { id, last }.into());
        }
        self.calls.last_read_id = id;
        Ok(())
    }

    /// A request: routed by its method's wire name, under its budget,
    /// counted from when it was read.
    ///
    /// A request for a method nothing here serves, or whose budget is
    /// already spent, is answered with an error without running anything;
    /// the connection goes on.
    fn on_request(&mut self, id: u64, payload: Bytes, received: Instant) -> Result<(), Error> {
        self.state.counters.request_received();
        let last = self.calls.last_read_id;
        if id <= last {
            return Err(ProtocolError::IdNotIncreasing { id, last }.into());
        }
        crate::observe::bytes(true, payload.len());
        let head = HeadView::read(&payload, self.version)?;
        self.calls.last_read_id = id;
        let route = match self.state.router.route_wire(head.method) {
            Ok(route) => route,
            Err(unknown) => {
                // Items the client sends behind the request are ignored: the
                // call has no entry, and its id is one the client has used.
                let refusal = Admitted::Refuse(call::to_wire(&unknown), Outcome::Failed);
                self.calls.admit(id, refusal, None);
                return Ok(());
            }
        };
        let method = route.method;
        // A client whose method has another shape would be misread.
        if let Some(theirs) = head.fingerprint.filter(|&theirs| !method.admits(theirs)) {
            let max_len = frame::MAX_REFUSAL_LEN.min(self.client_max_frame_len.saturating_sub(1));
            let message = crate::compat::refusal(method, theirs, max_len);
            let refused = WireError::new(ErrorCode::IncompatibleMethod, message);
            self.calls
                .admit(id, Admitted::Refuse(refused, Outcome::Failed), None);
            return Ok(());
        }
        // Streams end with their call, so a streaming method always honours
        // its caller's cancel and deadline; a method that runs to completion
        // ignores its caller's deadline, but not the server's ceiling.
        let to_completion = method.no_cancel && !method.shape.streams();
        if head.budget.is_zero() && !to_completion {
            let spent = call::deadline_exceeded(method.full_name);
            let refusal = Admitted::Refuse(spent, Outcome::DeadlineExceeded);
            self.calls.admit(id, refusal, None);
            return Ok(());
        }
        let max_budget = self.state.config.max_budget;
        let budget = if to_completion {
            max_budget
        } else {
            head.budget.min(max_budget)
        };
        // Metadata past its bounds fails the call, not the connection.
        let metadata = match head.metadata.is_empty() {
            true => Metadata::new(),
            false => match Metadata::decode(payload.slice(head.metadata)) {
                Ok(metadata) => metadata,
                Err(err) => {
                    let refused = WireError::new(ErrorCode::BadRequest, err.to_string());
                    self.calls
                        .admit(id, Admitted::Refuse(refused, Outcome::Failed), None);
                    return Ok(());
                }
            },
        };
        let ctx = Context::for_call(
            self.calls.spare.take(),
            id,
            method,
            received + budget,
            &self.peer,
            metadata,
        );
        let (input, incoming) = match method.shape.input {
            true => {
                let (input, incoming) = self.open_input(id);
                (Some(input), Some(incoming))
            }
            false => (None, None),
        };
        // What follows the head, sharing its memory: the head's own
        // slices were never made.
        let args_at = head.args_at;
        let args = HeadView::args(payload, args_at);
        let output = method.shape.output.then(SendCredit::new);
        let work = Work {
            ctx,
            args: Args::new(method, Codec::Binary, self.state.config.decode, args, incoming),
            codec: Codec::Binary,
            items: output.clone().map(|credit| {
                Box::new(ItemSink::Frames {
                    id,
                    credit,
                    outbox: self.outbox.clone(),
                })
            }),
            max_answer_len: self.client_max_frame_len,
        };
        let entry = Entry::new(input, output);
        let admitted = Admitted::Run {
            work,
            route: route.clone(),
            to_completion,
        };
        self.calls.admit(id, admitted, Some(entry));
        Ok(())
    }

    /// The server's end of the stream a call's client sends: open from the
    /// moment the request is read, so items sent right behind it are kept
    /// even while the call waits for a permit.
    fn open_input(&self, id: u64) -> (Input, Incoming) {
        let (items, received) = mpsc::channel(STREAM_WINDOW as usize);
        let granted = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let input = Input {
            items: Some(items),
            received: 0,
            granted: Arc::clone(&granted),
            ended: Arc::clone(&ended),
        };
        // Weak: a handler that hands its input to a task of its own must
        // not keep the connection's writer alive.
        let outbox = self.outbox.downgrade();
        let grant = move |credit: u32| {
            // Counted before the credit leaves, so an item sent on it is
            // never mistaken for one sent without credit.
            granted.fetch_add(u64::from(credit), Ordering::Release);
            let frame = Frame::new(Kind::Credit, id, frame::credit_payload(credit));
            if let (Some(outbox), Ok(frame)) = (outbox.upgrade(), frame) {
                let _ = outbox.send(frame, None);
            }
        };
        let incoming = Incoming::new(received, Box::new(grant), ended, self.state.config.decode);
        (input, incoming)
    }

    /// An item of a client's stream: handed to the handler, within credit.
    fn on_item(&mut self, id: u64, payload: Bytes) -> Result<(), Error> {
        let last_read_id = self.calls.last_read_id;
        let Some(entry) = self.calls.entry_mut(id) else {
            return finished_or_unknown(Kind::Item, id, last_read_id);
        };
        let Some(input) = &mut entry.input else {
            return Err(no_stream(Kind::Item, id));
        };
        let Some(items) = &input.items else {
            return Err(ProtocolError::AfterEnd { kind: Kind::Item, id }.into());
        };
        input.received += 1;
        let allowed = u64::from(STREAM_WINDOW) + input.granted.load(Ordering::Acquire);
        let exceeded = ProtocolError::CreditExceeded {
            id,
            window: STREAM_WINDOW,
        };
        if input.received > allowed {
            return Err(exceeded.into());
        }
        match items.try_send(payload) {
            Ok(()) => Ok(()),
            // Cannot happen within credit (the channel holds the window).
            Err(TrySendError::Full(_)) => Err(exceeded.into()),
            // The handler stopped reading its input; the rest is moot.
            Err(TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// The client's stream ended: the handler's input stream ends too.
    fn on_end(&mut self, id: u64) -> Result<(), Error> {
        let last_read_id = self.calls.last_read_id;
        let Some(entry) = self.calls.entry_mut(id) else {
            return finished_or_unknown(Kind::End, id, last_read_id);
        };
        match &mut entry.input {
            None => Err(no_stream(Kind::End, id)),
            Some(Input { items: None, .. }) => Err(ProtocolError::AfterEnd { kind: Kind::End, id }.into()),
            Some(input) => {
                input.ended.store(true, Ordering::Release);
                input.items = None;
                Ok(())
            }
        }
    }

    /// The client grants the stream the server sends more items.
    fn on_credit(&mut self, id: u64, payload: &[u8]) -> Result<(), Error> {
        let items = frame::parse_credit(payload)?;
        let last_read_id = self.calls.last_read_id;
        match self.calls.entry_mut(id).map(|entry| entry.output.as_ref()) {
            Some(Some(output)) => output.grant(items).map_err(|total| {
                ProtocolError::CreditOverflow {
                    id,
                    total,
                    max: MAX_STREAM_CREDIT,
                }
                .into()
            }),
            Some(None) => Err(no_stream(Kind::Credit, id)),
            None => finished_or_unknown(Kind::Credit, id, last_read_id),
        }
    }
}

/// A stream frame for a call that is not in flight: fine if the call has
/// finished (frames cross on the wire), a violation if it never began.
fn finished_or_unknown(kind: Kind, id: u64, last_read_id: u64) -> Result<(), Error> {
    if id > last_read_id {
        Err(no_stream(kind, id))
    } else {
        Ok(())
    }
}

fn no_stream(kind: Kind, id: u64) -> Error {
    ProtocolError::NoSuchStream { kind, id }.into()
}
