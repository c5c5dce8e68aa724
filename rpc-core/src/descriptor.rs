//! Descriptors: what `#[rpc::service]` knows about a service, as data.
//!
//! The macro emits one [`ServiceDescriptor`] per service trait, built once
//! and kept for the life of the process: the service's wire name, and for
//! each method its name, arguments, result, stream shape and markers, with
//! the types as they are written in the trait. Routing, the untyped
//! client, documentation and (in later layers) other protocols read it;
//! nothing re-derives it by taking names apart.

use std::time::Duration;

/// One service: its wire name and its methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The service's wire name: the trait's name without `r#`
    /// (`Calculator`).
    pub name: &'static str,
    /// The trait's doc comment, lines joined with `\n`.
    pub docs: &'static str,
    /// The methods, in the order the trait declares them (methods removed
    /// by `#[cfg]` left out).
    pub methods: Vec<MethodDescriptor>,
}

impl ServiceDescriptor {
    /// The method called `name` (without the service prefix).
    pub fn method(&self, name: &str) -> Option<&MethodDescriptor> {
        self.methods.iter().find(|method| method.name == name)
    }
}

/// One method of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The method's position in the trait as written, counting methods
    /// removed by `#[cfg]` too: stable for one build, not a wire value.
    pub id: u32,
    /// The method's name (`add`), without `r#`.
    pub name: &'static str,
    /// The method's wire name, `Service.method` (`Calculator.add`): what a
    /// request carries.
    pub full_name: &'static str,
    /// The method's doc comment, lines joined with `\n`.
    pub docs: &'static str,
    /// The arguments after `&self`, in order.
    pub args: &'static [ArgDescriptor],
    /// The result type as written (`Result<i64, MathError>`; `()` when the
    /// method returns nothing). For a method that returns a stream, the
    /// `Streaming<T>` type.
    pub result: &'static str,
    /// Which directions stream.
    pub shape: Shape,
    /// Whether the result, as written, is `Result<T, E>`: its `Err` is an
    /// application error, which a JSON caller gets as an error object.
    pub fallible: bool,
    /// `#[rpc(idempotent)]`: safe to run twice, so retried after a lost
    /// connection.
    pub idempotent: bool,
    /// `#[rpc(no_cancel)]`: once started, runs to completion whatever the
    /// caller does.
    pub no_cancel: bool,
    /// `#[rpc(timeout = "..")]`: the method's default deadline.
    pub timeout: Option<Duration>,
    /// Whether the method is `#[deprecated]`.
    pub deprecated: bool,
    /// `#[rpc(unchecked)]`: its calls carry no fingerprint, so a server
    /// runs them whatever shape the client has.
    pub unchecked: bool,
    /// `#[rpc(accepts = "..")]`: older fingerprints a server takes for it
    /// besides its own (a change that moved no byte, made on purpose).
    pub accepts: &'static [crate::compat::Fingerprint],
    /// Names the method's types for tracing their serde form
    /// ([`types::trace`](crate::types::trace)).
    pub trace: crate::types::TraceFn,
    /// Its form and fingerprint, traced when first asked for
    /// ([`form`](MethodDescriptor::form),
    /// [`fingerprint`](MethodDescriptor::fingerprint)).
    pub signature: crate::compat::Signature,
}

/// One argument of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgDescriptor {
    /// The argument's name in the trait, without `r#`.
    pub name: &'static str,
    /// Its type as written (`Vec<u8>`, `Streaming<Line>`).
    pub ty: &'static str,
    /// Whether it is the method's stream (`Streaming<T>`), which travels as
    /// item frames rather than in the request.
    pub streams: bool,
}

/// Which directions of a method carry a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// The client sends a stream (an argument of type `Streaming<T>`).
    pub input: bool,
    /// The server sends a stream (the method returns `Streaming<T>`).
    pub output: bool,
}

impl Shape {
    /// One request, one response.
    pub const UNARY: Shape = Shape {
        input: false,
        output: false,
    };

    /// Whether either direction streams.
    pub fn streams(self) -> bool {
        self.input || self.output
    }
}

impl MethodDescriptor {
    /// The arguments that travel in the request itself (all but a stream).
    pub fn plain_args(&self) -> impl Iterator<Item = &ArgDescriptor> {
        self.args.iter().filter(|arg| !arg.streams)
    }
}
