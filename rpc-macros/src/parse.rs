//! Parsing and checking the annotated trait: every rule in one pass, every
//! error with the span it is about and a sentence on what to write instead.

use proc_macro2::TokenStream;
use syn::spanned::Spanned;
use syn::{FnArg, Item, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn};

use crate::attrs;
use crate::errors::Errors;
use crate::model::{Method, Service, stream_item, unraw};
use crate::types::{self, Position};
use crate::validate;

/// Names the generated client uses for its own methods.
const CLIENT_METHODS: [&str; 5] = ["connect", "from_client", "with_timeout", "rpc_client", "clone"];

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> Result<Service, syn::Error> {
    let mut errors = Errors::default();
    let args = attrs::service_args(attr, &mut errors);
    let item: ItemTrait = match syn::parse2::<Item>(item)? {
        Item::Trait(item) => item,
        other => {
            return Err(syn::Error::new(
                other.span(),
                "#[rpc::service] goes on a trait: `#[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }`",
            ));
        }
    };

    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(
            item.generics.span(),
            "a service trait cannot be generic; use concrete types in its methods",
        );
    }
    for bound in &item.supertraits {
        if !types::honourable_supertrait(bound) {
            errors.push(
                bound.span(),
                "a service trait's supertraits can only be `Send`, `Sync` and `'static`; the generated client could not implement any other",
            );
        }
    }
    if let Some(unsafety) = item.unsafety {
        errors.push(unsafety.span(), "a service trait cannot be `unsafe`");
    }
    if let Some(auto) = item.auto_token {
        errors.push(auto.span(), "a service trait cannot be an auto trait");
    }

    let mut methods = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(method) => {
                if let Some(method) = parse_method(method, &mut errors) {
                    methods.push(method);
                }
            }
            TraitItem::Type(ty) => errors.push(
                ty.span(),
                "a service trait cannot have associated types; name the concrete type in the methods",
            ),
            TraitItem::Const(c) => errors.push(
                c.span(),
                "a service trait cannot have associated consts; define a const outside the trait",
            ),
            other => errors.push(
                other.span(),
                "a service trait can only contain `async fn` methods",
            ),
        }
    }
    let service_name = unraw(&item.ident);
    validate::check_names(&service_name, &methods, &mut errors);

    let supertraits = {
        let bounds = &item.supertraits;
        quote::quote!(#bounds)
    };
    errors.finish(Service {
        krate: args.krate,
        transparent: args.transparent,
        vis: item.vis,
        wire_name: service_name,
        ident: item.ident,
        attrs: item.attrs,
        supertraits,
        methods,
    })
}

fn parse_method(method: &TraitItemFn, errors: &mut Errors) -> Option<Method> {
    let sig = &method.sig;
    let name = unraw(&sig.ident);
    let before = errors.count();

    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span(),
            format!("service methods must be `async fn`; write `async fn {name}(...)`"),
        );
    }
    if let Some(unsafety) = sig.unsafety {
        errors.push(unsafety.span(), "service methods cannot be `unsafe`");
    }
    if let Some(constness) = sig.constness {
        errors.push(constness.span(), "service methods cannot be `const`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi.span(), "service methods cannot declare an ABI (`extern`)");
    }
    if let Some(body) = &method.default {
        errors.push(
            body.span(),
            "service methods cannot have a default body; implement it in the `impl` for your server type",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(
            sig.generics.span(),
            "service methods cannot be generic; every argument needs a concrete, serializable type",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic.span(), "service methods cannot be variadic");
    }
    if CLIENT_METHODS.contains(&name.as_str()) {
        errors.push(
            sig.ident.span(),
            format!("`{name}` is the name of a method of the generated client; rename this method"),
        );
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) if receiver.reference.is_some() && receiver.mutability.is_none() => {}
        Some(FnArg::Receiver(receiver)) => errors.push(
            receiver.span(),
            "service methods take `&self`; the server calls them concurrently, so keep mutable state behind a lock",
        ),
        Some(FnArg::Typed(arg)) => errors.push(
            arg.span(),
            "service methods take `&self` as their first argument",
        ),
        None => errors.push(
            sig.paren_token.span.join(),
            "service methods take `&self` as their first argument",
        ),
    }

    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(arg) = input else { continue };
        let ident = match &*arg.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() && pat.mutability.is_none() => {
                pat.ident.clone()
            }
            other => {
                errors.push(
                    other.span(),
                    "service method arguments must be plain names like `a: i64`; destructure or rebind inside the method",
                );
                continue;
            }
        };
        types::check(&arg.ty, Position::Argument, &mut |span, message| {
            errors.push(span, message)
        });
        args.push((ident, (*arg.ty).clone()));
    }

    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            types::check(ty, Position::Return, &mut |span, message| {
                errors.push(span, message)
            });
            (**ty).clone()
        }
    };

    let (attrs, markers) = attrs::method_markers(&method.attrs, errors);
    let streams: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(_, (_, ty))| stream_item(ty).is_some())
        .map(|(i, _)| i)
        .collect();
    if let Some(second) = streams.get(1).and_then(|i| args.get(*i)) {
        errors.push(
            second.0.span(),
            "a service method can take at most one `Streaming<T>` argument; send one stream of an enum instead",
        );
    }
    let input_stream = streams.first().copied();
    let output_item = stream_item(&output).cloned();
    if input_stream.is_some() || output_item.is_some() {
        if markers.no_cancel {
            errors.push(
                sig.ident.span(),
                "streaming methods cannot be `no_cancel`: a stream ends with its call when the caller goes away",
            );
        }
        if markers.idempotent {
            errors.push(
                sig.ident.span(),
                "streaming methods cannot be `idempotent`: a stream is consumed as it is sent, so it cannot be sent again",
            );
        }
    }
    (errors.count() == before).then(|| Method {
        attrs,
        markers,
        ident: sig.ident.clone(),
        wire_name: name,
        args,
        output,
        input_stream,
        output_item,
    })
}
