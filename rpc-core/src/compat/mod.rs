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
use crate::types::{self, Traced};

/// A method's form and fingerprint, traced the first time either is asked
/// for: what `#[rpc::service]` puts in each [`MethodDescriptor`].
#[derive(Default)]
pub struct Signature(OnceLock<Result<Known, String>>);

/// A method's traced form with its fingerprint.
#[derive(Debug)]
struct Known {
    form: MethodForm,
    fingerprint: Fingerprint,
}

impl Signature {
    /// Not traced yet.
    pub const fn new() -> Signature {
        Signature(OnceLock::new())
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
        match self.0.get() {
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

    /// Whether a call made with a client's fingerprint `theirs` may run
    /// here: the same shape, one the method `accepts`, or no check.
    pub fn admits(&self, theirs: Fingerprint) -> bool {
        match self.wire_fingerprint() {
            None => true,
            Some(ours) => ours == theirs || self.accepts.contains(&theirs),
        }
    }

    fn known(&self) -> Result<&Known, &str> {
        match self.signature.0.get_or_init(|| trace(self)) {
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
    Ok(Known { form, fingerprint })
}

/// The message of a server's refusal of a call whose fingerprint differs
/// from `method`'s: a sentence, then (if it fits in `max_len` bytes) a
/// newline and the server's form as JSON, from which a client names the
/// first difference.
pub(crate) fn refusal(method: &MethodDescriptor, theirs: Fingerprint, max_len: usize) -> String {
    let (ours, form) = match (method.fingerprint(), method.form()) {
        (Some(ours), Ok(form)) => (ours, form),
        // Only a method with a fingerprint refuses calls.
        _ => return format!("`{}` has another shape on the server", method.full_name),
    };
    let sentence = format!(
        "`{}` has another shape on the server: {}{form} (fingerprint {ours}; the client's is {theirs})",
        method.full_name, method.name
    );
    let Ok(json) = serde_json::to_string(form) else {
        return sentence;
    };
    match sentence.len() + 1 + json.len() <= max_len {
        true => format!("{sentence}\n{json}"),
        false => sentence,
    }
}

/// Words for the caller of `method` whose call a server refused with
/// `message` (a [`refusal`]): the first difference between the client's
/// form and the server's, when both are known, else the server's sentence.
pub(crate) fn explain_refusal(method: Option<&MethodDescriptor>, message: &str) -> String {
    let (sentence, json) = message.split_once('\n').unwrap_or((message, ""));
    let ours = method.and_then(|method| method.form().ok());
    // The server's JSON is hostile input like any other: serde_json refuses
    // nesting past 128 levels, and the message's length bounds the rest.
    let theirs = serde_json::from_str::<MethodForm>(json).ok();
    if let (Some(ours), Some(theirs)) = (ours, theirs) {
        if let Some(first) = diff::differences(ours, &theirs, diff::CLIENT_SERVER, 1)
            .into_iter()
            .next()
        {
            return first;
        }
    }
    sentence.to_owned()
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
        ] {
            assert_eq!(explain_refusal(None, &message), "the server's words");
        }
    }
}
