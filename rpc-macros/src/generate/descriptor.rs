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
        let input = method.input_stream.is_some();
        let output = method.output_item.is_some();
        let idempotent = method.markers.idempotent;
        let no_cancel = method.markers.no_cancel;
        let deprecated = method.deprecated();
        let timeout = match method.timeout() {
            Some(timeout) => {
                let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                quote!(#p::Some(#p::Duration::from_millis(#millis)))
            }
            None => quote!(#p::None),
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
                idempotent: #idempotent,
                no_cancel: #no_cancel,
                timeout: #timeout,
                deprecated: #deprecated,
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
