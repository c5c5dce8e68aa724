//! The `#[rpc::service]` attribute. Use it through the `rpc` crate, which
//! re-exports it and provides the runtime the generated code calls.
//!
//! # Layout
//!
//! - `parse`: the trait into plain `Service` and `Method` values, every
//!   error collected with its span before giving up.
//! - `args`: the `#[rpc::service(..)]` arguments and `#[rpc(..)]` markers.
//! - `types`: which argument and result types can cross the network.
//! - `expand`: one function per emitted item.

use proc_macro::TokenStream;

mod args;
mod expand;
mod parse;
mod types;

/// Turns a trait into an RPC service: a request enum, a response enum, a
/// client and a server dispatch. See the `rpc` crate's documentation.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match parse::parse(attr.into(), item.into()) {
        Ok(service) => expand::expand(&service).into(),
        Err(errors) => errors.to_compile_error().into(),
    }
}
