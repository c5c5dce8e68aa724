//! Code generation: every name and per-method list computed once, in a
//! [`ServiceGenerator`], then one function per emitted item.
//!
//! Generated code names every path absolutely, through the facade's hidden
//! `__private` module, so it compiles beside user items called `Result`,
//! `Option` or `Box`, and under `#![no_implicit_prelude]`. A `#[cfg]` on the
//! trait goes on every item; one on a method goes on everything generated
//! for that method.

mod client;
mod descriptor;
mod request;
mod response;
mod server;
mod service_trait;
mod transparent;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Attribute, Ident, Type};

use crate::model::{Method, Service, variant_name};

/// Everything `#[rpc::service]` emits for `service`.
pub(crate) fn expand(service: &Service) -> TokenStream {
    let generator = ServiceGenerator::new(service);
    let items = [
        service_trait::service_trait(&generator),
        request::request_enum(&generator),
        descriptor::descriptor(&generator),
        response::response_enum(&generator),
        client::client(&generator),
        transparent::transparent_client(&generator),
        server::server(&generator),
    ];
    quote!(#(#items)*)
}

/// The names and lists every emitted item uses.
pub(crate) struct ServiceGenerator<'a> {
    pub(crate) service: &'a Service,
    /// The facade's hidden module: `::rpc::__private`.
    pub(crate) p: TokenStream,
    /// The trait's `#[cfg]`s, for every emitted item.
    pub(crate) cfgs: Vec<&'a Attribute>,
    pub(crate) request: Ident,
    pub(crate) response: Ident,
    pub(crate) client: Ident,
    pub(crate) server: Ident,
    pub(crate) methods: Vec<MethodGenerator<'a>>,
}

/// The names and lists one method's parts use.
pub(crate) struct MethodGenerator<'a> {
    pub(crate) method: &'a Method,
    /// Its position in the trait: the descriptor's `id`.
    pub(crate) id: u32,
    /// The request and response enums' variant.
    pub(crate) variant: Ident,
    /// The wire name, `Service.method`.
    pub(crate) full_name: String,
    /// The method's `#[cfg]`s, for everything emitted for it.
    pub(crate) cfgs: Vec<&'a Attribute>,
    /// Every argument's name, in order.
    pub(crate) names: Vec<&'a Ident>,
    /// The arguments that travel in the request (all but a stream).
    pub(crate) plain_names: Vec<&'a Ident>,
    pub(crate) plain_types: Vec<&'a Type>,
}

impl<'a> ServiceGenerator<'a> {
    fn new(service: &'a Service) -> ServiceGenerator<'a> {
        let krate = &service.krate;
        let ident = &service.ident;
        let methods = service
            .methods
            .iter()
            .enumerate()
            .map(|(id, method)| MethodGenerator {
                method,
                id: u32::try_from(id).unwrap_or(u32::MAX),
                variant: format_ident!("{}", variant_name(&method.wire_name), span = method.ident.span()),
                full_name: format!("{}.{}", service.wire_name, method.wire_name),
                cfgs: method.cfgs().collect(),
                names: method.args.iter().map(|(name, _)| name).collect(),
                plain_names: method.plain_args().map(|(name, _)| name).collect(),
                plain_types: method.plain_args().map(|(_, ty)| ty).collect(),
            })
            .collect();
        ServiceGenerator {
            service,
            p: quote!(#krate::__private),
            cfgs: service.cfgs().collect(),
            request: format_ident!("{}Request", ident),
            response: format_ident!("{}Response", ident),
            client: format_ident!("{}Client", ident),
            server: format_ident!("{}Server", ident),
            methods,
        }
    }
}

impl MethodGenerator<'_> {
    /// The deadline a client call uses: `with_timeout`'s, else the method's
    /// own `#[rpc(timeout)]`, else the connection's default.
    pub(crate) fn timeout(&self, p: &TokenStream) -> TokenStream {
        match self.method.timeout() {
            Some(timeout) => {
                let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                quote!(#p::Option::or(self.timeout, #p::Some(#p::Duration::from_millis(#millis))))
            }
            None => quote!(self.timeout),
        }
    }
}

/// Whether `ty` is written `Vec<u8>` (or `std::vec::Vec<u8>`,
/// `alloc::vec::Vec<u8>`): a blob, which the generated code sends as one
/// byte string instead of serde's byte-by-byte sequence (the same bytes on
/// the wire). Aliases and blobs inside other types are not recognised.
pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<String> = path.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let vec_path = matches!(
        segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
        ["Vec"] | ["std", "vec", "Vec"] | ["alloc", "vec", "Vec"]
    );
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    vec_path
        && args.args.len() == 1
        && matches!(args.args.first(), Some(syn::GenericArgument::Type(Type::Path(item))) if item.qself.is_none() && item.path.is_ident("u8"))
}
