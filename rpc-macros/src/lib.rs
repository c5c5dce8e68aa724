//! The `#[rpc::service]` attribute. Use it through the `rpc` crate, which
//! re-exports it and provides the runtime the generated code calls.
//!
//! # Layout
//!
//! The macro runs in three stages: parse, check, generate.
//!
//! - `parse`: the trait into plain values (`model`), every mistake
//!   collected with its span (`errors`) before giving up.
//! - `attrs`: the `#[rpc::service(..)]` arguments and `#[rpc(..)]` markers.
//! - `types`: which argument and result types can cross the network.
//! - `validate`: rules about the trait as a whole (unique, short names).
//! - `generate`: names computed once, then one function per emitted item.

use proc_macro::TokenStream;

mod attrs;
mod errors;
mod generate;
mod model;
mod parse;
mod types;
mod validate;

/// Turns a trait into an RPC service: a request enum, a response enum, a
/// client and a server dispatch. See the `rpc` crate's documentation.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match parse::parse(attr.into(), item.into()) {
        Ok(service) => generate::expand(&service).into(),
        Err(errors) => errors.to_compile_error().into(),
    }
}
