//! `FooRequest`: one variant per method, holding its arguments; what the
//! client sends and the server's handler receives.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use super::{ServiceGenerator, is_byte_vec};

pub(crate) fn request_enum(generator: &ServiceGenerator<'_>) -> TokenStream {
    let ServiceGenerator {
        p,
        cfgs,
        request,
        service,
        ..
    } = generator;
    let vis = &service.vis;
    let trait_name = &service.ident;
    let serde_crate = format!("{}::serde", quote!(#p).to_string().replace(' ', ""));
    let empty_stream = format!("{}::Streaming::empty", quote!(#p).to_string().replace(' ', ""));
    let doc = format!(
        "The arguments of one call to a [`{trait_name}`] method: one variant per method.\n\n\
         On the wire a call names its method (`{}.method`) and carries only the arguments, \
         so adding or reordering methods never breaks a running peer. \
         [`{request}::descriptor`] describes every method.",
        service.wire_name
    );
    let variants = generator.methods.iter().map(|m| {
        let (cfgs, variant) = (&m.cfgs, &m.variant);
        let method_name = &m.method.ident;
        let doc = format!("The arguments of [`{trait_name}::{method_name}`].");
        let fields = m.method.args.iter().enumerate().map(|(i, (arg, ty))| {
            let doc = format!("The `{arg}` argument.");
            // A stream travels as item frames, not in the request.
            let skip =
                (Some(i) == m.method.input_stream).then(|| quote!(#[serde(skip, default = #empty_stream)]));
            quote!(#[doc = #doc] #skip #arg: #ty)
        });
        quote!(#(#cfgs)* #[doc = #doc] #variant { #(#fields),* })
    });
    let method_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, full) = (&m.cfgs, &m.variant, &m.full_name);
        quote!(#(#cfgs)* #request::#variant { .. } => #full)
    });
    let out = Ident::new("__rpc_out", Span::mixed_site());
    // The arguments as one tuple; blobs as one byte string (see
    // `is_byte_vec`).
    let args_tuple = |m: &super::MethodGenerator<'_>| {
        let values = m
            .plain_names
            .iter()
            .zip(&m.plain_types)
            .map(|(arg, ty)| match is_byte_vec(ty) {
                true => quote!(#p::AsBytes(&#arg[..])),
                false => quote!(#arg),
            });
        quote!(&(#(#values,)*))
    };
    let claims = Ident::new("__rpc_claims", Span::mixed_site());
    let encode_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, full, args) = (&m.cfgs, &m.variant, &m.full_name, &m.plain_names);
        let tuple = args_tuple(m);
        quote! {
            #(#cfgs)* #request::#variant { #(ref #args,)* .. } => #p::encode_args(#full, #tuple, #out, #claims)
        }
    });
    let take_input_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, full) = (&m.cfgs, &m.variant, &m.full_name);
        match m.method.input() {
            Some((stream, _)) => quote! {
                #(#cfgs)* #request::#variant { ref mut #stream, .. } => #p::Some(#p::encode_stream(
                    #full,
                    #p::replace(#stream, #p::Streaming::empty()),
                    #p::Codec::Binary,
                ))
            },
            None => quote!(#(#cfgs)* #request::#variant { .. } => #p::None),
        }
    });
    let idempotent_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant) = (&m.cfgs, &m.variant);
        let idempotent = m.method.markers.idempotent;
        quote!(#(#cfgs)* #request::#variant { .. } => #idempotent)
    });
    let descriptor_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, id) = (&m.cfgs, &m.variant, m.id);
        quote!(#(#cfgs)* #request::#variant { .. } => #id)
    });
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[derive(#p::serde::Serialize, #p::serde::Deserialize)]
        #[serde(crate = #serde_crate)]
        #vis enum #request {
            #(#variants),*
        }

        #(#cfgs)*
        impl #p::RequestMessage for #request {
            fn method(&self) -> &'static str {
                match *self {
                    #(#method_arms),*
                }
            }

            fn encode_args(&self, #out: &mut #p::BytesMut) -> #p::Result<(), #p::Error> {
                self.encode_args_spliced(#out, #p::None)
            }

            fn encode_args_spliced(
                &self,
                #out: &mut #p::BytesMut,
                #claims: #p::Option<&mut #p::Claims>,
            ) -> #p::Result<(), #p::Error> {
                match *self {
                    #(#encode_arms),*
                }
            }

            fn idempotent(&self) -> bool {
                match *self {
                    #(#idempotent_arms),*
                }
            }

            fn descriptor(&self) -> #p::Option<&'static #p::MethodDescriptor> {
                let id = match *self {
                    #(#descriptor_arms),*
                };
                // Methods are listed in the order of their ids.
                let methods = &#request::descriptor().methods;
                let found = methods.binary_search_by_key(&id, |method| method.id);
                found.ok().and_then(|index| methods.get(index))
            }

            fn descriptor_names_method(&self) -> bool {
                true
            }

            fn take_input(&mut self) -> #p::Option<#p::ItemStream> {
                match *self {
                    #(#take_input_arms),*
                }
            }
        }
    }
}
