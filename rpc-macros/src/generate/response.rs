//! `FooResponse`: one variant per method, holding its result.

use proc_macro2::TokenStream;
use quote::quote;

use super::ServiceGenerator;

pub(crate) fn response_enum(generator: &ServiceGenerator<'_>) -> TokenStream {
    let ServiceGenerator {
        p,
        cfgs,
        response,
        service,
        ..
    } = generator;
    let vis = &service.vis;
    let trait_name = &service.ident;
    let serde_crate = format!("{}::serde", quote!(#p).to_string().replace(' ', ""));
    let doc = format!("The result of one call to a [`{trait_name}`] method: one variant per method.");
    let variants = generator.methods.iter().map(|m| {
        let (cfgs, variant) = (&m.cfgs, &m.variant);
        let output = &m.method.output;
        let method_name = &m.method.ident;
        let doc = format!("What [`{trait_name}::{method_name}`] returned.");
        // A stream is sent item by item, never as one value.
        let skip = m.method.output_item.is_some().then(|| quote!(#[serde(skip)]));
        quote!(#(#cfgs)* #[doc = #doc] #skip #variant(#output))
    });
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[derive(#p::serde::Serialize, #p::serde::Deserialize)]
        #[serde(crate = #serde_crate)]
        #vis enum #response {
            #(#variants),*
        }
    }
}
