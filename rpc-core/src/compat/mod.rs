//! Compatible by construction: each method's shape on the wire, its
//! fingerprint, and the checks built on them.
//!
//! bincode names nothing: a struct's fields and an enum's variants travel by
//! position. A server whose `add(a: i64, b: i64)` became `add(a: u64, b:
//! i64)` would decode an old client's arguments into other values, without
//! an error. So every method has a [`MethodForm`] (its arguments', stream's
//! and result's serde shapes, traced from their `Deserialize` impls: no
//! derives to add) and a [`Fingerprint`] of it, which travels with each
//! request (protocol version 3). A server whose fingerprint for the method
//! differs refuses the call with
//! [`Error::IncompatibleMethod`](crate::Error::IncompatibleMethod), and the client names the first
//! difference: "argument `a`: the client has u64, the server has i64".
//!
//! Deliberate evolution: `#[rpc(accepts = "..")]` on a method lets a server
//! take a listed older fingerprint (a change that renames but moves no
//! byte), `#[rpc(unchecked)]` turns the check off for a method. For CI, a
//! service's [`Contract`] can be written to JSON and compared with the one
//! checked in: [`breaking_changes`] lists every change that old clients
//! would be refused for. `docs/COMPATIBILITY.md` has the rules.

mod contract;
mod diff;
mod fingerprint;
mod form;

use std::fmt;
use std::sync::OnceLock;

pub use contract::{BreakingChange, Contract, MethodContract, breaking_changes};
pub use fingerprint::{Fingerprint, ParseFingerprintError};
pub use form::{Field, Form, MethodForm, Variant, VariantForm};

use crate::descriptor::MethodDescriptor;
use crate::frame::{MAX_REFUSAL_LEN, RequestHead};
use crate::types::{self, Traced};

/// A method's form and fingerprint, traced the first time either is asked
/// for, and the fixed part of its requests' heads, made on its first call:
/// what `#[rpc::service]` puts in each [`MethodDescriptor`].
#[derive(Default)]
pub struct Signature {
    known: OnceLock<Result<Known, String>>,
    /// What follows the budget in the method's version 3 request head
    /// ([`RequestHead::tail_v3`]): made once, copied into each request.
    head: OnceLock<Box<[u8]>>,
}

/// A method's traced form with its fingerprint, and what a refusal
/// says of it, made once rather than per refused call.
#[derive(Debug)]
struct Known {
    form: MethodForm,
    fingerprint: Fingerprint,
    /// `add(a: i64, b: i64) -> i64`.
    signature: String,
    /// The form as JSON.
    json: String,
}

impl Signature {
    /// Not traced yet.
    pub const fn new() -> Signature {
        Signature {
            known: OnceLock::new(),
            head: OnceLock::new(),
        }
    }
}

impl Clone for Signature {
    /// A clone traces again when asked: tracing is cheap and rare.
    fn clone(&self) -> Signature {
        Signature::new()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known.get() {
            Some(Ok(known)) => write!(f, "Signature({})", known.fingerprint),
            Some(Err(why)) => write!(f, "Signature(untraceable: {why})"),
            None => f.write_str("Signature(not traced yet)"),
        }
    }
}

impl PartialEq for Signature {
    /// Descriptors compare by what they say; the signature follows from it.
    fn eq(&self, _: &Signature) -> bool {
        true
    }
}

impl Eq for Signature {}

impl MethodDescriptor {
    /// The method's shape on the wire, or why its types could not be
    /// traced (a type whose `Deserialize` insists on particular values, or
    /// that is not self-describing in serde's terms, such as
    /// `serde_json::Value`).
    pub fn form(&self) -> Result<&MethodForm, &str> {
        match self.known() {
            Ok(known) => Ok(&known.form),
            Err(why) => Err(why),
        }
    }

    /// The method's fingerprint: `None` if its types could not be traced.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.known().ok().map(|known| known.fingerprint)
    }

    /// What a request for this method carries: its fingerprint, or none
    /// for a method that is `#[rpc(unchecked)]` or untraceable.
    pub(crate) fn wire_fingerprint(&self) -> Option<Fingerprint> {
        match self.unchecked {
            true => None,
            false => self.fingerprint(),
        }
    }

    /// What follows the budget in a version 3 request head for this
    /// method: its wire name, its fingerprint and an empty metadata block,
    /// made on the first call.
    pub(crate) fn head_tail(&self) -> &[u8] {
        self.signature
            .head
            .get_or_init(|| RequestHead::tail_v3(self.full_name, self.wire_fingerprint()))
    }

    /// Whether a call made with a client's fingerprint `theirs` may run
    /// here: the same shape, one the method `accepts`, or no check.
    pub fn admits(&self, theirs: Fingerprint) -> bool {
        match self.wire_fingerprint() {
            None => true,
            Some(ours) => ours == theirs || self.accepts.contains(&theirs),
        }
    }

    fn known(&self) -> Result<&Known, &str> {
        match self.signature.known.get_or_init(|| trace(self)) {
            Ok(known) => Ok(known),
            Err(why) => Err(why),
        }
    }
}

/// Traces `method`'s types into its form.
fn trace(method: &MethodDescriptor) -> Result<Known, String> {
    let (traced, registry) = types::trace_method(method);
    let mut resolver = form::Resolver::new(&registry);
    let mut traced = traced.into_iter();
    let mut next = |what: &str| match traced.next() {
        Some(Traced::Format(format)) => resolver.form(&format),
        Some(Traced::Untraceable(why)) => Err(format!("{what} could not be traced: {why}")),
        None => Err(format!("{what} was not named for tracing")),
    };
    let mut args = Vec::new();
    let mut input = None;
    for arg in method.args {
        let form = next(&format!("the type of argument `{}`", arg.name))?;
        match arg.streams {
            true => input = Some(form),
            false => args.push(form::Field {
                name: arg.name.to_owned(),
                form,
            }),
        }
    }
    let output = method.shape.output;
    let result = next("the result type")?;
    let result = match method.fallible && !output {
        true => form::result_of(result, next("the error type")?),
        false => result,
    };
    let form = MethodForm {
        args,
        input,
        result,
        output,
    };
    let fingerprint = Fingerprint::of(&form);
    let signature = format!("{}{form}", method.name);
    // A tree of strings and numbers always serializes.
    let json = serde_json::to_string(&form).unwrap_or_default();
    Ok(Known {
        form,
        fingerprint,
        signature,
        json,
    })
}

/// Deepest nesting of brackets a refusal's JSON may have: far more than
/// any form a server of ours sends, far less than would strain a stack.
const MAX_REFUSAL_NESTING: usize = 64;

/// The message of a server's refusal of a call whose fingerprint differs
/// from `method`'s: a sentence, then (if it fits in `max_len` bytes) a
/// newline and the server's form as JSON, from which a client names the
/// first difference.
pub(crate) fn refusal(method: &MethodDescriptor, theirs: Fingerprint, max_len: usize) -> String {
    let mut message = match method.known() {
        Ok(known) => format!(
            "`{}` has another shape on the server: {} (fingerprint {}; the client's is {theirs})",
            method.full_name, known.signature, known.fingerprint
        ),
        // Only a method with a fingerprint refuses calls.
        Err(_) => format!("`{}` has another shape on the server", method.full_name),
    };
    if let Ok(known) = method.known()
        && message.len() + 1 + known.json.len() <= max_len
    {
        message.push('\n');
        message.push_str(&known.json);
    }
    // Within the client's frame limit, whatever the names' lengths.
    let mut end = message.len().min(max_len);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message
}

/// Words for the caller of `method` whose call a server refused with
/// `message` (a [`refusal`]): the first difference between the client's
/// form and the server's, when both are known, else the server's sentence.
pub(crate) fn explain_refusal(method: Option<&MethodDescriptor>, message: &str) -> String {
    let (sentence, json) = message.split_once('\n').unwrap_or((message, ""));
    let ours = method.and_then(|method| method.form().ok());
    // The server's JSON is hostile input like any other: a server of ours
    // sends at most MAX_REFUSAL_LEN bytes and little nesting, so anything
    // longer or deeper is not read (serde_json's own nesting limit is a
    // crate feature away from being lifted).
    let readable = message.len() <= MAX_REFUSAL_LEN && nesting(json) <= MAX_REFUSAL_NESTING;
    let theirs = readable
        .then(|| serde_json::from_str::<MethodForm>(json).ok())
        .flatten();
    if let (Some(ours), Some(theirs)) = (ours, theirs)
        && let Some(first) = diff::differences(ours, &theirs, diff::CLIENT_SERVER, 1)
            .into_iter()
            .next()
    {
        return first;
    }
    sentence.to_owned()
}

/// The deepest nesting of brackets in `json`, counting those inside
/// strings too: never less than the real depth.
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in json.bytes() {
        match byte {
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_from_a_hostile_server_falls_back_to_its_sentence() {
        let deep = format!(
            "{{\"args\":[],\"result\":{}\"u8\"{}}}",
            "{\"option\":".repeat(100_000),
            "}".repeat(100_000)
        );
        for message in [
            "the server's words".to_owned(),
            "the server's words\n{not json".to_owned(),
            "the server's words\n[1, 2, 3]".to_owned(),
            format!("the server's words\n{deep}"),
            format!(
                "the server's words\n{{\"args\":[],\"result\":{{\"tuple\":[{}\"u8\"]}}}}",
                "\"u8\",".repeat(10_000)
            ),
        ] {
            assert_eq!(explain_refusal(None, &message), "the server's words");
        }
    }
}
