//! `FooRequest::descriptor()`: the service as data, built once per process.

use proc_macro2::TokenStream;
use quote::quote;

use super::ServiceGenerator;
use crate::model::{stream_item, type_text, unraw};

pub(crate) fn descriptor(generator: &ServiceGenerator<'_>) -> TokenStream {
    let ServiceGenerator {
        p,
        cfgs,
        request,
        service,
        ..
    } = generator;
    let name = &service.wire_name;
    let docs = service.doc_text();
    let methods = generator.methods.iter().map(|m| {
        let method = m.method;
        let (cfgs, id, full) = (&m.cfgs, m.id, &m.full_name);
        let wire = &method.wire_name;
        let docs = method.doc_text();
        let args = method.args.iter().map(|(arg, ty)| {
            let arg = unraw(arg);
            let text = type_text(ty);
            let streams = stream_item(ty).is_some();
            quote!(#p::ArgDescriptor { name: #arg, ty: #text, streams: #streams })
        });
        let result = type_text(&method.output);
        let fallible = result_halves(&method.output).is_some();
        let input = method.input_stream.is_some();
        let output = method.output_item.is_some();
        let idempotent = method.markers.idempotent;
        let no_cancel = method.markers.no_cancel;
        let deprecated = method.deprecated();
        let unchecked = method.markers.unchecked;
        let accepts = &method.markers.accepts;
        let timeout = match method.timeout() {
            Some(timeout) => {
                let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                quote!(#p::Some(#p::Duration::from_millis(#millis)))
            }
            None => quote!(#p::None),
        };
        let traced_args = method.args.iter().map(|(_, ty)| {
            let ty = stream_item(ty).unwrap_or(ty);
            quote!(tracer.trace::<#ty>();)
        });
        // A `Result` is traced as its two halves: every method's `Result`
        // would be the same serde name with another form.
        let traced_result = match (result_halves(&method.output), &method.output_item) {
            (_, Some(item)) => quote!(tracer.trace::<#item>();),
            (Some((ok, err)), None) => quote!(tracer.trace::<#ok>(); tracer.trace::<#err>();),
            (None, None) => {
                let output = &method.output;
                quote!(tracer.trace::<#output>();)
            }
        };
        quote! {
            #(#cfgs)*
            methods.push(#p::MethodDescriptor {
                id: #id,
                name: #wire,
                full_name: #full,
                docs: #docs,
                args: &[#(#args),*],
                result: #result,
                shape: #p::Shape { input: #input, output: #output },
                fallible: #fallible,
                idempotent: #idempotent,
                no_cancel: #no_cancel,
                timeout: #timeout,
                deprecated: #deprecated,
                unchecked: #unchecked,
                accepts: {
                    // A constant, so the slice lives for the program.
                    const ACCEPTS: &[#p::Fingerprint] = &[#(#p::Fingerprint::from_macro(#accepts)),*];
                    ACCEPTS
                },
                trace: #p::TraceFn(|tracer: &mut #p::TypeTracer| {
                    #(#traced_args)*
                    #traced_result
                }),
                signature: #p::Signature::new(),
            });
        }
    });
    quote! {
        #(#cfgs)*
        impl #request {
            /// What the service offers: its wire name, and each method's
            /// name, arguments, result, stream shape and markers.
            pub fn descriptor() -> &'static #p::ServiceDescriptor {
                static DESCRIPTOR: #p::OnceLock<#p::ServiceDescriptor> = #p::OnceLock::new();
                DESCRIPTOR.get_or_init(|| {
                    let mut methods = #p::Vec::new();
                    #(#methods)*
                    #p::ServiceDescriptor { name: #name, docs: #docs, methods }
                })
            }
        }
    }
}

/// `T` and `E` if `ty` is written as `Result<T, E>` (by any path). An
/// alias of a result is not recognised: its JSON callers see `{"Ok": ..}`
/// or `{"Err": ..}` as the result.
fn result_halves(ty: &syn::Type) -> Option<(&syn::Type, &syn::Type)> {
    let syn::Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (args.args.first(), args.args.get(1), args.args.len()) {
        (Some(syn::GenericArgument::Type(ok)), Some(syn::GenericArgument::Type(err)), 2) => Some((ok, err)),
        _ => None,
    }
}
