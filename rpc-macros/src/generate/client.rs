//! `FooClient`: one method per trait method, each returning a future that
//! owns what it needs (it can be stored, moved, spawned or raced).

use proc_macro2::TokenStream;
use quote::quote;

use super::{ServiceGenerator, is_byte_vec};

pub(crate) fn client(generator: &ServiceGenerator<'_>) -> TokenStream {
    let ServiceGenerator {
        p,
        cfgs,
        request,
        client,
        service,
        ..
    } = generator;
    let vis = &service.vis;
    let trait_name = &service.ident;
    let name_str = client.to_string();
    let trait_docs = service.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let doc = format!(
        "A client of the [`{trait_name}`] service.\n\n\
         Each method sends one call over the client's connection and returns \
         `Result<T, rpc::Error>`: `Ok` holds exactly what the server's method returned \
         (application errors included, as values), `Err` says what the network or the \
         framework did to the call. The futures own what they need: store them, spawn \
         them, race them (dropping one cancels its call on the server). Cloning is \
         cheap and every clone shares the connection.\n\n\
         # The service\n"
    );
    let methods = generator.methods.iter().map(|m| {
        let method = m.method;
        let (cfgs, variant, names) = (&m.cfgs, &m.variant, &m.names);
        let docs = method.docs();
        let deprecations = method.deprecations();
        let ident = &method.ident;
        let args = method.args.iter().enumerate().map(|(i, (arg, ty))| match method.input() {
            Some((_, item)) if Some(i) == method.input_stream => {
                quote!(#arg: impl #p::Stream<Item = #item> + #p::Send + 'static)
            }
            _ => quote!(#arg: #ty),
        });
        let wrap_input = method
            .input()
            .map(|(stream, _)| quote!(let #stream = #p::Streaming::new(#stream);));
        let output = &method.output;
        let full = &m.full_name;
        let deadline_doc = match method.timeout() {
            Some(timeout) => format!(" Its deadline is {timeout:?} unless `with_timeout` sets another."),
            None => String::new(),
        };
        let timeout = m.timeout(p);
        let errors = format!(
            "\n\n# Errors\n\nFails with `rpc::Error` when the call does not complete: \
             the connection is lost, the deadline passes, or the server does not have `{full}`.{deadline_doc}"
        );
        // A blob result is read as one byte string (see `is_byte_vec`).
        let blob = is_byte_vec(output);
        let (call, call_with_input) = match blob {
            true => (
                quote! {
                    let call = self.client.call::<_, #p::ByteVec>(request, #timeout);
                    async move { #p::Result::map(call.await, |bytes| bytes.0) }
                },
                quote! {
                    let call = self.client.call_with_input::<_, #p::ByteVec>(request, #timeout);
                    async move { #p::Result::map(call.await, |bytes| bytes.0) }
                },
            ),
            false => (
                quote!(self.client.call(request, #timeout)),
                quote!(self.client.call_with_input(request, #timeout)),
            ),
        };
        let body = match (method.input_stream.is_some(), &method.output_item) {
            (false, None) => quote! {
                pub fn #ident(&self, #(#args),*) -> impl #p::Future<Output = #p::Result<#output, #p::Error>> + 'static {
                    let request = #request::#variant { #(#names),* };
                    #call
                }
            },
            (true, None) => quote! {
                pub fn #ident(&self, #(#args),*) -> impl #p::Future<Output = #p::Result<#output, #p::Error>> + 'static {
                    #wrap_input
                    let request = #request::#variant { #(#names),* };
                    #call_with_input
                }
            },
            (_, Some(item)) => quote! {
                pub fn #ident(&self, #(#args),*) -> #p::Streaming<#item> {
                    #wrap_input
                    let request = #request::#variant { #(#names),* };
                    self.client.call_stream(request, #timeout)
                }
            },
        };
        quote! {
            #(#cfgs)*
            #(#docs)*
            #[doc = #errors]
            #(#deprecations)*
            // As many arguments as the trait's method has, which is the
            // user's call.
            #[allow(clippy::too_many_arguments)]
            #body
        }
    });
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #(#trait_docs)*
        #vis struct #client {
            client: #p::Client,
            timeout: #p::Option<#p::Duration>,
        }

        #(#cfgs)*
        impl #p::Clone for #client {
            fn clone(&self) -> Self {
                #client {
                    client: #p::Clone::clone(&self.client),
                    timeout: self.timeout,
                }
            }
        }

        #(#cfgs)*
        impl #p::Debug for #client {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.debug_struct(#name_str)
                    .field("client", &self.client)
                    .field("timeout", &self.timeout)
                    .finish()
            }
        }

        #(#cfgs)*
        impl #client {
            /// Connects to a server over TCP with the default settings.
            ///
            /// For other settings (default timeout, frame limit) or other
            /// transports (Unix sockets, your own connector) build an
            /// `rpc::Client` with `rpc::ClientBuilder` and pass it to
            /// [`Self::from_client`].
            pub async fn connect(addr: impl #p::ToSocketAddrs) -> #p::Result<Self, #p::Error> {
                #p::Result::map(#p::connect(addr).await, Self::from_client)
            }

            /// Wraps a connected client. Several typed clients (of
            /// different services) may share one connection.
            pub fn from_client(client: #p::Client) -> Self {
                #client { client, timeout: #p::None }
            }

            /// A client whose calls have `timeout` as their deadline instead
            /// of the default. Shares the connection; being a value of its
            /// own, it can be stored, and its calls' futures outlive it.
            pub fn with_timeout(&self, timeout: #p::Duration) -> Self {
                #client {
                    client: #p::Clone::clone(&self.client),
                    timeout: #p::Some(timeout),
                }
            }

            /// A client whose calls send `key: value` as metadata (an auth
            /// token, a tenant), beside what this one sends. Shares the
            /// connection. Handlers read it with `Context::metadata()`;
            /// JSON callers send it as an HTTP header. Keys are lowercase
            /// ASCII; a bad key or too much metadata fails the calls,
            /// saying why.
            pub fn with_metadata(&self, key: &str, value: impl ::core::convert::Into<#p::MetadataValue>) -> Self {
                #client {
                    client: self.client.with_metadata(key, value),
                    timeout: self.timeout,
                }
            }

            /// The untyped client underneath.
            pub fn rpc_client(&self) -> &#p::Client {
                &self.client
            }

            #(#methods)*
        }
    }
}
