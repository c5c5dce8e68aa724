//! Code generation: one function per emitted item.
//!
//! Generated code names every path absolutely, through the facade's hidden
//! `__private` module, so it compiles beside user items called `Result`,
//! `Option` or `Box`, and under `#![no_implicit_prelude]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Attribute, Ident};

use crate::parse::{Method, Service, variant_name};

pub(crate) fn expand(service: &Service) -> TokenStream {
    let generated = [
        request_enum(service),
        response_enum(service),
        client(service),
        transparent_client(service),
        server(service),
    ];
    let generated = quote!(#(#generated)*);
    let service_trait = service_trait(service);
    let cfgs: Vec<Attribute> = service.cfgs().cloned().collect();
    if cfgs.is_empty() {
        return quote!(#service_trait #generated);
    }
    // A `#[cfg]` on the trait goes on everything generated from it.
    match syn::parse2::<syn::File>(generated.clone()) {
        Ok(mut file) => {
            for item in &mut file.items {
                if let Some(attrs) = item_attrs(item) {
                    attrs.extend(cfgs.iter().cloned());
                }
            }
            quote!(#service_trait #file)
        }
        Err(_) => quote!(#service_trait #generated),
    }
}

fn item_attrs(item: &mut syn::Item) -> Option<&mut Vec<Attribute>> {
    match item {
        syn::Item::Enum(item) => Some(&mut item.attrs),
        syn::Item::Impl(item) => Some(&mut item.attrs),
        syn::Item::Struct(item) => Some(&mut item.attrs),
        _ => None,
    }
}

fn private(service: &Service) -> TokenStream {
    let krate = &service.krate;
    quote!(#krate::__private)
}

fn variant(method: &Method) -> Ident {
    format_ident!("{}", variant_name(&method.wire_name), span = method.ident.span())
}

/// The deadline a client call of `method` uses: `with_timeout`'s, else the
/// method's own `#[rpc(timeout)]`, else the connection's default.
fn method_timeout(p: &TokenStream, method: &Method) -> TokenStream {
    match method.timeout() {
        Some(timeout) => {
            let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            quote!(#p::Option::or(self.timeout, #p::Some(#p::Duration::from_millis(#millis))))
        }
        None => quote!(self.timeout),
    }
}

fn full_name(service: &Service, method: &Method) -> String {
    format!("{}.{}", service.wire_name, method.wire_name)
}

/// The trait, rewritten so each method's future is `Send` (the server runs
/// it in a spawned task). Implementors still write plain `async fn`.
fn service_trait(service: &Service) -> TokenStream {
    let p = private(service);
    let Service {
        vis, ident, attrs, ..
    } = service;
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

fn request_enum(service: &Service) -> TokenStream {
    let p = private(service);
    let vis = &service.vis;
    let trait_name = &service.ident;
    let name = format_ident!("{}Request", service.ident);
    let doc = format!(
        "The arguments of one call to a [`{trait_name}`] method: one variant per method.\n\n\
         On the wire a call names its method (`{}.method`) and carries only the arguments, \
         so adding or reordering methods never breaks a running peer.",
        service.wire_name
    );
    let variants = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let method_name = &method.ident;
        let doc = format!("The arguments of [`{trait_name}::{method_name}`].");
        let fields = method.args.iter().map(|(arg, ty)| {
            let doc = format!("The `{arg}` argument.");
            quote!(#[doc = #doc] #arg: #ty)
        });
        quote!(#(#cfgs)* #[doc = #doc] #variant { #(#fields),* })
    });
    let method_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let full = full_name(service, method);
        quote!(#(#cfgs)* #name::#variant { .. } => #full)
    });
    let encode_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let full = full_name(service, method);
        let args: Vec<_> = method.plain_args().map(|(arg, _)| arg).collect();
        let out = Ident::new("__rpc_out", Span::mixed_site());
        quote! {
            #(#cfgs)* #name::#variant { #(ref #args,)* .. } => #p::encode_args(#full, &(#(#args,)*), #out)
        }
    });
    let take_input_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let full = full_name(service, method);
        match method.input() {
            Some((stream, _)) => quote! {
                #(#cfgs)* #name::#variant { ref mut #stream, .. } => #p::Some(#p::encode_stream(
                    #full,
                    #p::replace(#stream, #p::Streaming::empty()),
                ))
            },
            None => quote!(#(#cfgs)* #name::#variant { .. } => #p::None),
        }
    });
    let out = Ident::new("__rpc_out", Span::mixed_site());
    let idempotent_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let idempotent = method.markers.idempotent;
        quote!(#(#cfgs)* #name::#variant { .. } => #idempotent)
    });
    let decode_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let full = full_name(service, method);
        let wire = &method.wire_name;
        let args: Vec<_> = method.plain_args().map(|(arg, _)| arg).collect();
        let types = method.plain_args().map(|(_, ty)| ty);
        let stream = method.input().map(|(stream, item)| {
            quote! {
                let #stream: #p::Streaming<#item> = match input {
                    #p::Some(input) => input.decode(#full),
                    #p::None => #p::Streaming::empty(),
                };
            }
        });
        let stream_name = method.input().map(|(stream, _)| stream);
        quote! {
            #(#cfgs)* #wire => {
                let (#(#args,)*): (#(#types,)*) = #p::decode_args(#full, args)?;
                #stream
                #p::Ok(#name::#variant { #(#args,)* #stream_name })
            }
        }
    });
    let service_name = &service.wire_name;
    quote! {
        #[doc = #doc]
        #vis enum #name {
            #(#variants),*
        }

        impl #name {
            /// Decodes the arguments of `method` (its name without the service
            /// prefix) from their bincode bytes; `input` is the client's
            /// stream, for a method that takes one.
            pub fn decode(
                method: &str,
                args: &#p::Bytes,
                input: #p::Option<#p::Incoming>,
            ) -> #p::Result<Self, #p::Error> {
                let _ = &input;
                match method {
                    #(#decode_arms)*
                    _ => #p::Err(#p::unknown_method(#service_name, method)),
                }
            }
        }

        impl #p::RequestMessage for #name {
            fn method(&self) -> &'static str {
                match *self {
                    #(#method_arms),*
                }
            }

            fn encode_args(&self, #out: &mut #p::BytesMut) -> #p::Result<(), #p::Error> {
                match *self {
                    #(#encode_arms),*
                }
            }

            fn idempotent(&self) -> bool {
                match *self {
                    #(#idempotent_arms),*
                }
            }

            fn take_input(&mut self) -> #p::Option<#p::ItemStream> {
                match *self {
                    #(#take_input_arms),*
                }
            }
        }
    }
}

fn response_enum(service: &Service) -> TokenStream {
    let p = private(service);
    let vis = &service.vis;
    let trait_name = &service.ident;
    let name = format_ident!("{}Response", service.ident);
    let doc = format!("The result of one call to a [`{trait_name}`] method: one variant per method.");
    let variants = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let output = &method.output;
        let method_name = &method.ident;
        let doc = format!("What [`{trait_name}::{method_name}`] returned.");
        quote!(#(#cfgs)* #[doc = #doc] #variant(#output))
    });
    let encode_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let full = full_name(service, method);
        if method.output_item.is_some() {
            quote!(#(#cfgs)* #name::#variant(stream) => #p::Ok(#p::Answer::Stream(#p::encode_stream(#full, stream))))
        } else {
            quote!(#(#cfgs)* #name::#variant(value) => #p::Result::map(#p::encode_result(#full, &value), #p::Answer::Value))
        }
    });
    quote! {
        #[doc = #doc]
        #vis enum #name {
            #(#variants),*
        }

        impl #name {
            /// Encodes the result for the wire: one value, or a stream of
            /// items.
            pub fn into_answer(self) -> #p::Result<#p::Answer, #p::Error> {
                match self {
                    #(#encode_arms),*
                }
            }
        }
    }
}

fn client(service: &Service) -> TokenStream {
    let p = private(service);
    let vis = &service.vis;
    let trait_name = &service.ident;
    let name = format_ident!("{}Client", service.ident);
    let name_str = name.to_string();
    let request = format_ident!("{}Request", service.ident);
    let trait_docs = service.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let doc = format!(
        "A client of the [`{trait_name}`] service.\n\n\
         Each method sends one call over the client's connection and returns \
         `Result<T, rpc::Error>`: `Ok` holds exactly what the server's method returned \
         (application errors included, as values), `Err` says what the network or the \
         framework did to the call. Cloning is cheap and every clone shares the \
         connection, so clone it into as many tasks as you like.\n\n\
         # The service\n"
    );
    let methods = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let docs = method.docs();
        let deprecations = method.deprecations();
        let ident = &method.ident;
        let variant = variant(method);
        let args: Vec<_> = method
            .args
            .iter()
            .enumerate()
            .map(|(i, (arg, ty))| match method.input() {
                Some((_, item)) if Some(i) == method.input_stream => {
                    quote!(#arg: impl #p::Stream<Item = #item> + #p::Send + 'static)
                }
                _ => quote!(#arg: #ty),
            })
            .collect();
        let names = method.args.iter().map(|(arg, _)| arg);
        let wrap_input = method
            .input()
            .map(|(stream, _)| quote!(let #stream = #p::Streaming::new(#stream);));
        let output = &method.output;
        let full = full_name(service, method);
        let deadline_doc = match method.timeout() {
            Some(timeout) => format!(" Its deadline is {timeout:?} unless `with_timeout` sets another."),
            None => String::new(),
        };
        let timeout = method_timeout(&p, method);
        let errors = format!(
            "\n\n# Errors\n\nFails with `rpc::Error` when the call does not complete: \
             the connection is lost, the deadline passes, or the server does not have `{full}`.{deadline_doc}"
        );
        let body = match (method.input_stream.is_some(), &method.output_item) {
            (false, None) => quote! {
                pub async fn #ident(&self, #(#args),*) -> #p::Result<#output, #p::Error> {
                    let request = #request::#variant { #(#names),* };
                    self.client.call(&request, #timeout).await
                }
            },
            (true, None) => quote! {
                pub async fn #ident(&self, #(#args),*) -> #p::Result<#output, #p::Error> {
                    #wrap_input
                    let request = #request::#variant { #(#names),* };
                    self.client.call_with_input(request, #timeout).await
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
            #body
        }
    });
    quote! {
        #[doc = #doc]
        #(#trait_docs)*
        #vis struct #name {
            client: #p::Client,
            timeout: #p::Option<#p::Duration>,
        }

        impl #p::Clone for #name {
            fn clone(&self) -> Self {
                #name {
                    client: #p::Clone::clone(&self.client),
                    timeout: self.timeout,
                }
            }
        }

        impl #p::Debug for #name {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.debug_struct(#name_str)
                    .field("client", &self.client)
                    .field("timeout", &self.timeout)
                    .finish()
            }
        }

        impl #name {
            /// Connects to a server over TCP with the default settings.
            ///
            /// For other settings (default timeout, frame limit) build an
            /// `rpc::Client` with `rpc::ClientBuilder` and pass it to
            /// [`Self::from_client`].
            pub async fn connect(addr: impl #p::ToSocketAddrs) -> #p::Result<Self, #p::Error> {
                #p::Result::map(#p::connect(addr).await, Self::from_client)
            }

            /// Wraps an established connection. Several typed clients (of
            /// different services) may share one connection.
            pub fn from_client(client: #p::Client) -> Self {
                #name { client, timeout: #p::None }
            }

            /// A handle whose calls have `timeout` as their deadline instead
            /// of the connection's default. Shares the connection.
            pub fn with_timeout(&self, timeout: #p::Duration) -> Self {
                #name {
                    client: #p::Clone::clone(&self.client),
                    timeout: #p::Some(timeout),
                }
            }

            /// The untyped connection underneath.
            pub fn rpc_client(&self) -> &#p::Client {
                &self.client
            }

            #(#methods)*
        }
    }
}

/// With `#[rpc::service(transparent)]`, the client implements the service
/// trait: generic code over `impl Trait` runs against a local value or a
/// remote server alike. Network failures fold into each method's own error
/// type, which must be `Result<T, E>` (or an alias of one) with
/// `E: From<rpc::Error>`.
fn transparent_client(service: &Service) -> TokenStream {
    if !service.transparent {
        return TokenStream::new();
    }
    let p = private(service);
    let trait_name = &service.ident;
    let name = format_ident!("{}Client", service.ident);
    let methods = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let ident = &method.ident;
        let args = method.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let names: Vec<_> = method.args.iter().map(|(arg, _)| arg).collect();
        let request = format_ident!("{}Request", service.ident);
        let variant = variant(method);
        let timeout = method_timeout(&p, method);
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
            (false, false) => quote!(#name::#ident(self, #(#names),*).await),
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
        impl #trait_name for #name {
            #(#methods)*
        }
    }
}

fn server(service: &Service) -> TokenStream {
    let p = private(service);
    let vis = &service.vis;
    let trait_name = &service.ident;
    let name = format_ident!("{}Server", service.ident);
    let name_str = name.to_string();
    let request = format_ident!("{}Request", service.ident);
    let response = format_ident!("{}Response", service.ident);
    let wire_name = &service.wire_name;
    let doc = format!(
        "Serves a [`{trait_name}`] implementation: pass it to `rpc::Server::serve`.\n\n\
         Each call runs in its own task under the caller's deadline; a panic in a \
         method answers that call with an error and leaves the server running."
    );
    let arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let variant = variant(method);
        let ident = &method.ident;
        let names: Vec<_> = method.args.iter().map(|(arg, _)| arg).collect();
        quote! {
            #(#cfgs)*
            #request::#variant { #(#names),* } => #response::#variant(#trait_name::#ident(&*self.service, #(#names),*).await),
        }
    });
    let shape_arms = service.methods.iter().map(|method| {
        let cfgs = method.cfgs();
        let wire = &method.wire_name;
        let input = method.input_stream.is_some();
        let output = method.output_item.is_some();
        quote!(#(#cfgs)* #wire => #p::Some(#p::Shape { input: #input, output: #output }),)
    });
    let no_cancel_arms = service
        .methods
        .iter()
        .filter(|m| m.markers.no_cancel)
        .map(|method| {
            let cfgs = method.cfgs();
            let wire = &method.wire_name;
            quote!(#(#cfgs)* #wire => true,)
        });
    quote! {
        #[doc = #doc]
        #vis struct #name<S> {
            service: #p::Arc<S>,
        }

        impl<S> #p::Clone for #name<S> {
            fn clone(&self) -> Self {
                #name { service: #p::Clone::clone(&self.service) }
            }
        }

        impl<S> #p::Debug for #name<S> {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.write_str(#name_str)
            }
        }

        #[allow(deprecated)]
        impl<S: #trait_name + #p::Send + #p::Sync + 'static> #name<S> {
            /// Serves `service`.
            pub fn new(service: S) -> Self {
                #name { service: #p::Arc::new(service) }
            }

            /// Serves a service that is shared with other code.
            pub fn from_arc(service: #p::Arc<S>) -> Self {
                #name { service }
            }

            /// Runs one decoded request against the service, in this task.
            pub async fn handle(&self, request: #request) -> #response {
                match request {
                    #(#arms)*
                }
            }
        }

        impl<S: #trait_name + #p::Send + #p::Sync + 'static> #p::Service for #name<S> {
            fn name(&self) -> &'static str {
                #wire_name
            }

            fn runs_to_completion(&self, method: &str) -> bool {
                match method {
                    #(#no_cancel_arms)*
                    _ => false,
                }
            }

            fn shape(&self, method: &str) -> #p::Option<#p::Shape> {
                match method {
                    #(#shape_arms)*
                    _ => #p::None,
                }
            }

            fn launch(&self, launch: #p::Launch) -> #p::Launched {
                let this = #p::Clone::clone(self);
                // Decoding runs inside the call's task (under its panic
                // guard); the method's future is spawned as it is, unboxed.
                launch.spawn(move |method: &str, args: #p::Bytes, input: #p::Option<#p::Incoming>| {
                    let request = #request::decode(method, &args, input);
                    async move { this.handle(request?).await.into_answer() }
                })
            }
        }
    }
}
