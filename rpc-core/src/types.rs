//! The serde form of each method's argument and result types, traced from
//! their `Deserialize` implementations (with `serde-reflection`), so users
//! add no derives: what the OpenRPC document's schemas are made from.
//!
//! The macro gives each method a [`TraceFn`] that names its types; tracing
//! runs once, when something first asks (`rpc.discover`).

use std::fmt;
use std::panic::AssertUnwindSafe;

use serde::de::DeserializeOwned;
use serde_reflection::{Format, Registry, Samples, Tracer, TracerConfig};

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
    /// Enums found inside other types in an earlier pass, traced again
    /// until each of their variants has been seen.
    enums: Vec<String>,
}

/// Most passes spent finding enums inside other types (an enum inside a
/// variant of another is found a pass later).
const MAX_PASSES: usize = 8;

/// Most times one type is traced in a pass to reach every variant of the
/// enums in it.
const MAX_ROUNDS: usize = 256;

impl fmt::Debug for TypeTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeTracer")
            .field("traced", &self.traced.len())
            .finish()
    }
}

impl TypeTracer {
    fn new(enums: Vec<String>) -> TypeTracer {
        TypeTracer {
            tracer: Tracer::new(TracerConfig::default()),
            traced: Vec::new(),
            enums,
        }
    }

    /// Traces `T`: the next argument's type, then the result's (for
    /// `Result<T, E>`, `T`'s and then `E`'s).
    pub fn trace<T: DeserializeOwned>(&mut self) {
        // Tracing runs the type's `Deserialize`, which is the user's code
        // and may panic on the made-up values it is fed: that type is then
        // untraceable, and the document is still served.
        let (tracer, enums) = (&mut self.tracer, &self.enums);
        let traced = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            let samples = Samples::new();
            let mut rounds = 0;
            // Each round takes the next unseen variant of every enum met.
            loop {
                let (format, _) = tracer.trace_type_once::<T>(&samples)?;
                rounds += 1;
                let mut incomplete = match &format {
                    Format::TypeName(name) => tracer.check_incomplete_enum(name).is_some(),
                    _ => false,
                };
                for name in enums {
                    incomplete |= tracer.check_incomplete_enum(name).is_some();
                }
                if !incomplete || rounds >= MAX_ROUNDS {
                    return Ok::<_, serde_reflection::Error>(format);
                }
            }
        })) {
            Ok(Ok(format)) => Traced::Format(format),
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
    traced_fully(|tracer| {
        (method.trace.0)(tracer);
        std::mem::take(&mut tracer.traced)
    })
}

/// What `run` traces, and the named types it met, every variant of their
/// enums included: serde-reflection completes an enum only when it is the
/// type traced, so enums met inside other types are named to the next
/// pass, which traces until it has seen all their variants.
fn traced_fully<R>(mut run: impl FnMut(&mut TypeTracer) -> R) -> (R, Registry) {
    let mut enums: Vec<String> = Vec::new();
    let mut pass = 1;
    loop {
        let mut tracer = TypeTracer::new(enums.clone());
        let result = run(&mut tracer);
        if pass >= MAX_PASSES {
            return (result, tracer.tracer.registry_unchecked());
        }
        match tracer.tracer.registry() {
            Ok(registry) => return (result, registry),
            Err(serde_reflection::Error::MissingVariants(names))
                if names.iter().any(|n| !enums.contains(n)) =>
            {
                for name in names {
                    if !enums.contains(&name) {
                        enums.push(name);
                    }
                }
            }
            // Nothing more to learn: one last pass keeps what it can.
            Err(_) => pass = MAX_PASSES - 1,
        }
        pass += 1;
    }
}

/// Traces every type of `service`.
pub fn trace(service: &ServiceDescriptor) -> ServiceTypes {
    let (methods, registry) = traced_fully(|tracer| {
        service
            .methods
            .iter()
            .map(|method| method_types(method, tracer))
            .collect()
    });
    ServiceTypes { methods, registry }
}

fn method_types(method: &crate::descriptor::MethodDescriptor, tracer: &mut TypeTracer) -> MethodTypes {
    tracer.traced.clear();
    (method.trace.0)(tracer);
    let mut traced = std::mem::take(&mut tracer.traced);
    let mut last = || {
        traced
            .pop()
            .unwrap_or_else(|| Traced::Untraceable("the method's types were not named".to_owned()))
    };
    let error = method.fallible.then(&mut last);
    let result = last();
    MethodTypes {
        args: traced,
        result,
        error,
    }
}
