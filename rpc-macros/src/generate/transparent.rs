//! With `#[rpc::service(transparent)]`, the client implements the service
//! trait: generic code over `impl Trait` runs against a local value or a
//! remote server alike. Network failures fold into each method's own error
//! type, which must be `Result<T, E>` (or an alias of one) with
//! `E: From<rpc::Error>`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use super::ServiceGenerator;

pub(crate) fn transparent_client(generator: &ServiceGenerator<'_>) -> TokenStream {
    let ServiceGenerator {
        p,
        cfgs,
        request,
        client,
        service,
        ..
    } = generator;
    if !service.transparent {
        return TokenStream::new();
    }
    let trait_name = &service.ident;
    let methods = generator.methods.iter().map(|m| {
        let method = m.method;
        let (cfgs, variant, names) = (&m.cfgs, &m.variant, &m.names);
        let ident = &method.ident;
        let args = method.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let timeout = m.timeout(p);
        let output = &method.output;
        // Spanned at the return type, so a method whose result cannot carry
        // a network error is reported there.
        let fold = quote_spanned! {syn::spanned::Spanned::span(output)=>
            <#output as #p::FromRpcError>::from_rpc_error(err)
        };
        // A stream argument is passed on as it is, errors and all (an error
        // in it fails the call rather than cutting the stream short).
        let call = match (method.input_stream.is_some(), method.output_item.is_some()) {
            (_, true) => quote!(self.client.call_stream(#request::#variant { #(#names),* }, #timeout)),
            (true, false) => {
                quote!(self.client.call_with_input(#request::#variant { #(#names),* }, #timeout).await)
            }
            (false, false) => quote!(#client::#ident(self, #(#names),*).await),
        };
        let body = if method.output_item.is_some() {
            // A stream carries its own errors, as its last item.
            call
        } else {
            quote! {
                match #call {
                    #p::Ok(value) => value,
                    #p::Err(err) => #fold,
                }
            }
        };
        quote! {
            #(#cfgs)*
            #[allow(deprecated)]
            fn #ident(&self, #(#args),*) -> impl #p::Future<Output = #output> + #p::Send {
                async move { #body }
            }
        }
    });
    quote! {
        #(#cfgs)*
        impl #trait_name for #client {
            #(#methods)*
        }
    }
}
