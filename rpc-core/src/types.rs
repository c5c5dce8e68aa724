//! The serde form of each method's argument and result types, traced from
//! their `Deserialize` implementations (with `serde-reflection`), so users
//! add no derives: what the OpenRPC document's schemas are made from.
//!
//! The macro gives each method a [`TraceFn`] that names its types; tracing
//! runs once, when something first asks (`rpc.discover`).

use std::fmt;
use std::panic::AssertUnwindSafe;

use serde::de::DeserializeOwned;
use serde_reflection::{Format, Registry, Tracer, TracerConfig};

use crate::descriptor::ServiceDescriptor;

/// A method's types, for tracing: the macro writes one per method.
#[derive(Clone, Copy)]
pub struct TraceFn(pub fn(&mut TypeTracer));

impl fmt::Debug for TraceFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TraceFn")
    }
}

impl PartialEq for TraceFn {
    /// Descriptors compare by what they say, not by the code that traces
    /// their types.
    fn eq(&self, _: &TraceFn) -> bool {
        true
    }
}

impl Eq for TraceFn {}

/// What tracing one type gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traced {
    /// Its serde form.
    Format(Format),
    /// A type whose `Deserialize` could not be traced (one that insists on
    /// particular values, say), with why.
    Untraceable(String),
}

/// Traces the types of one method after another.
pub struct TypeTracer {
    tracer: Tracer,
    traced: Vec<Traced>,
}

impl fmt::Debug for TypeTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeTracer")
            .field("traced", &self.traced.len())
            .finish()
    }
}

impl TypeTracer {
    fn new() -> TypeTracer {
        TypeTracer {
            tracer: Tracer::new(TracerConfig::default()),
            traced: Vec::new(),
        }
    }

    /// Traces `T`: the next argument's type, then the result's (for
    /// `Result<T, E>`, `T`'s and then `E`'s).
    pub fn trace<T: DeserializeOwned>(&mut self) {
        // Tracing runs the type's `Deserialize`, which is the user's code
        // and may panic on the made-up values it is fed: that type is then
        // untraceable, and the document is still served.
        let tracer = &mut self.tracer;
        let traced = match std::panic::catch_unwind(AssertUnwindSafe(|| tracer.trace_simple_type::<T>())) {
            Ok(Ok((format, _))) => Traced::Format(format),
            Ok(Err(err)) => Traced::Untraceable(err.to_string()),
            Err(_) => Traced::Untraceable("its `Deserialize` panicked while being traced".to_owned()),
        };
        self.traced.push(traced);
    }
}

/// The traced types of one method: its arguments' (a stream's item type
/// for a stream), then its result's (an item's, for a returned stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodTypes {
    /// One per argument, in order.
    pub args: Vec<Traced>,
    /// The result's: for a method returning `Result<T, E>`, `T`'s.
    pub result: Traced,
    /// For a method returning `Result<T, E>`, `E`'s.
    pub error: Option<Traced>,
}

/// The traced types of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTypes {
    /// One per method, in the descriptor's order.
    pub methods: Vec<MethodTypes>,
    /// The named structs and enums those types refer to.
    pub registry: Registry,
}

/// Traces the types of one method, with a tracer of its own: what each
/// gave, in the order [`TraceFn`] names them, and the named types they
/// refer to.
pub(crate) fn trace_method(method: &crate::descriptor::MethodDescriptor) -> (Vec<Traced>, Registry) {
    let mut tracer = TypeTracer::new();
    (method.trace.0)(&mut tracer);
    (tracer.traced, tracer.tracer.registry_unchecked())
}

/// Traces every type of `service`.
pub fn trace(service: &ServiceDescriptor) -> ServiceTypes {
    let mut tracer = TypeTracer::new();
    let mut methods = Vec::with_capacity(service.methods.len());
    for method in &service.methods {
        tracer.traced.clear();
        (method.trace.0)(&mut tracer);
        let mut traced = std::mem::take(&mut tracer.traced);
        let mut last = || {
            traced
                .pop()
                .unwrap_or_else(|| Traced::Untraceable("the method's types were not named".to_owned()))
        };
        let error = method.fallible.then(&mut last);
        let result = last();
        methods.push(MethodTypes {
            args: traced,
            result,
            error,
        });
    }
    ServiceTypes {
        methods,
        registry: tracer.tracer.registry_unchecked(),
    }
}
