//! `FooServer<S>`: a `Foo` implementation as an `rpc::Service`: decode a
//! request, run the method, encode the result.

use proc_macro2::TokenStream;
use quote::quote;

use super::{ServiceGenerator, is_byte_vec};

pub(crate) fn server(generator: &ServiceGenerator<'_>) -> TokenStream {
    let ServiceGenerator {
        p,
        cfgs,
        request,
        response,
        server,
        service,
        ..
    } = generator;
    let vis = &service.vis;
    let trait_name = &service.ident;
    let name_str = server.to_string();
    let doc = format!(
        "Serves a [`{trait_name}`] implementation: pass it to `rpc::Server::serve`.\n\n\
         Each call runs under the caller's deadline, in a task of its own once it waits; a panic in a \
         method answers that call with an error and leaves the server running."
    );
    let decode_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, id) = (&m.cfgs, &m.variant, m.id);
        let (args, types) = (&m.plain_names, &m.plain_types);
        let stream = m
            .method
            .input()
            .map(|(stream, item)| quote!(let #stream: #p::Streaming<#item> = args.input();));
        let stream_name = m.method.input().map(|(stream, _)| stream);
        // Blobs read as one byte string (see `is_byte_vec`).
        let wire_types = types.iter().map(|ty| match is_byte_vec(ty) {
            true => quote!(#p::ByteVec),
            false => quote!(#ty),
        });
        let unwrap = args
            .iter()
            .zip(types)
            .filter(|(_, ty)| is_byte_vec(ty))
            .map(|(arg, _)| quote!(let #arg = #arg.0;));
        quote! {
            #(#cfgs)* #id => {
                let (#(#args,)*): (#(#wire_types,)*) = args.decode()?;
                #(#unwrap)*
                #stream
                #p::Ok(#request::#variant { #(#args,)* #stream_name })
            }
        }
    });
    let call_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, names) = (&m.cfgs, &m.variant, &m.names);
        let ident = &m.method.ident;
        quote! {
            #(#cfgs)*
            #request::#variant { #(#names),* } => #response::#variant(#trait_name::#ident(&*self.service, #(#names),*).await),
        }
    });
    let encode_arms = generator.methods.iter().map(|m| {
        let (cfgs, variant, full) = (&m.cfgs, &m.variant, &m.full_name);
        if m.method.output_item.is_some() {
            quote!(#(#cfgs)* #response::#variant(stream) => #p::Ok(#p::Answer::stream(#full, stream, codec)),)
        } else if is_byte_vec(&m.method.output) {
            // Owned now: a long one is answered from where it lies.
            quote!(#(#cfgs)* #response::#variant(value) => #p::Answer::value(#full, &#p::OwnedBytes::new(value), codec),)
        } else {
            quote!(#(#cfgs)* #response::#variant(value) => #p::Answer::value(#full, &value, codec),)
        }
    });
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #vis struct #server<S> {
            service: #p::Arc<S>,
        }

        #(#cfgs)*
        impl<S> #p::Clone for #server<S> {
            fn clone(&self) -> Self {
                #server { service: #p::Clone::clone(&self.service) }
            }
        }

        #(#cfgs)*
        impl<S> #p::Debug for #server<S> {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.write_str(#name_str)
            }
        }

        #(#cfgs)*
        #[allow(deprecated)]
        impl<S: #trait_name + #p::Send + #p::Sync + 'static> #server<S> {
            /// Serves `service`.
            pub fn new(service: S) -> Self {
                #server { service: #p::Arc::new(service) }
            }

            /// Serves a service that is shared with other code.
            pub fn from_arc(service: #p::Arc<S>) -> Self {
                #server { service }
            }

            /// The service's descriptor as JSON: each method's shape on the
            /// wire and its fingerprint. Keep it in the repository and
            /// compare it with each build's (`rpc::compat::breaking_changes`)
            /// to catch a change that old clients would be refused for.
            pub fn descriptor_json() -> #p::String {
                #request::descriptor().contract().to_json()
            }

            /// Runs one decoded request against the service, in this task.
            pub async fn handle(&self, request: #request) -> #response {
                <Self as #p::Service>::call(self, request).await
            }
        }

        #(#cfgs)*
        #[allow(deprecated)]
        impl<S: #trait_name + #p::Send + #p::Sync + 'static> #p::Service for #server<S> {
            type Request = #request;
            type Response = #response;

            fn descriptor(&self) -> &'static #p::ServiceDescriptor {
                #request::descriptor()
            }

            fn decode(
                &self,
                method: &'static #p::MethodDescriptor,
                mut args: #p::Args,
            ) -> #p::Result<#request, #p::Error> {
                let _ = &mut args;
                match method.id {
                    #(#decode_arms)*
                    _ => #p::Err(#p::unknown_method(method)),
                }
            }

            fn call(&self, request: #request) -> impl #p::Future<Output = #response> + #p::Send {
                async move {
                    match request {
                        #(#call_arms)*
                    }
                }
            }

            fn encode(&self, response: #response, codec: #p::Codec) -> #p::Result<#p::Answer, #p::Error> {
                match response {
                    #(#encode_arms)*
                }
            }
        }
    }
}
