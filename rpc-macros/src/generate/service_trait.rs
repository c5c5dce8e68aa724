//! The trait itself, rewritten so each method's future is `Send` (the
//! server runs it in a spawned task). Implementors still write plain
//! `async fn`.

use proc_macro2::TokenStream;
use quote::quote;

use super::ServiceGenerator;

pub(crate) fn service_trait(generator: &ServiceGenerator<'_>) -> TokenStream {
    let p = &generator.p;
    let service = generator.service;
    let (vis, ident, attrs) = (&service.vis, &service.ident, &service.attrs);
    let methods = service.methods.iter().map(|method| {
        let attrs = &method.attrs;
        let name = &method.ident;
        let args = method.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let output = &method.output;
        quote! {
            #(#attrs)*
            fn #name(&self, #(#args),*) -> impl #p::Future<Output = #output> + #p::Send;
        }
    });
    let supertraits = &service.supertraits;
    let colon = (!supertraits.is_empty()).then(|| quote!(:));
    quote! {
        #(#attrs)*
        #vis trait #ident #colon #supertraits {
            #(#methods)*
        }
    }
}
