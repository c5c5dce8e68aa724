//! Parsing and checking the annotated trait: every rule in one pass, every
//! error with the span it is about and a sentence on what to write instead.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, Item, ItemTrait, Pat, Path, ReturnType, TraitItem, TraitItemFn, Type, Visibility,
};

use crate::args::{self, MethodMarkers};
use crate::types::{self, Position};

/// The annotated trait, checked.
pub(crate) struct Service {
    /// The path of the `rpc` facade in the user's crate (`::rpc` by default).
    pub(crate) krate: Path,
    /// Whether the client implements the trait too.
    pub(crate) transparent: bool,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    /// The trait's name on the wire (the identifier without `r#`).
    pub(crate) wire_name: String,
    /// Attributes of the trait, doc comments included.
    pub(crate) attrs: Vec<Attribute>,
    /// The trait's supertraits (only `Send`, `Sync` and `'static` pass).
    pub(crate) supertraits: TokenStream,
    pub(crate) methods: Vec<Method>,
}

/// One method of the service.
pub(crate) struct Method {
    /// Every attribute of the method but our own `#[rpc(..)]`, docs and
    /// `#[cfg]` included.
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) markers: MethodMarkers,
    pub(crate) ident: Ident,
    /// The method's name on the wire (the identifier without `r#`).
    pub(crate) wire_name: String,
    pub(crate) args: Vec<(Ident, Type)>,
    pub(crate) output: Type,
    /// The position in `args` of the one `Streaming<T>` argument, if any.
    pub(crate) input_stream: Option<usize>,
    /// `T` of a `Streaming<T>` result, if the method returns a stream.
    pub(crate) output_item: Option<Type>,
}

impl Service {
    /// The trait's `#[cfg]` attributes, which go on every generated item.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &Attribute> + Clone {
        self.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }
}

impl Method {
    /// The `#[doc]` attributes.
    pub(crate) fn docs(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| a.path().is_ident("doc"))
    }

    /// The `#[cfg]` attributes, which go on every item generated for it.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }

    /// `#[deprecated]`, which the client's method carries too.
    pub(crate) fn deprecations(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| a.path().is_ident("deprecated"))
    }

    /// The stream argument's name and item type.
    pub(crate) fn input(&self) -> Option<(&Ident, &Type)> {
        let (name, ty) = self.args.get(self.input_stream?)?;
        Some((name, stream_item(ty)?))
    }

    /// The arguments that travel in the request frame (all but a stream).
    pub(crate) fn plain_args(&self) -> impl Iterator<Item = &(Ident, Type)> + Clone {
        let skip = self.input_stream;
        self.args
            .iter()
            .enumerate()
            .filter(move |(i, _)| Some(*i) != skip)
            .map(|(_, arg)| arg)
    }

    /// The method's default deadline, from `#[rpc(timeout = "..")]`.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.markers.timeout
    }
}

/// Names the generated client uses for its own methods.
const CLIENT_METHODS: [&str; 5] = ["connect", "from_client", "with_timeout", "rpc_client", "clone"];

/// Longest wire name (`Service.method`) the request head can carry.
const MAX_WIRE_NAME_LEN: usize = 255;

/// Collects errors so the user sees all of them at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let err = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |err| err.clone().into_iter().count())
    }
}

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> Result<Service, syn::Error> {
    let mut errors = Errors::default();
    let args = args::service_args(attr, &mut errors);
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
    check_names(&service_name, &methods, &mut errors);

    let supertraits = {
        let bounds = &item.supertraits;
        quote::quote!(#bounds)
    };
    match errors.0 {
        Some(err) => Err(err),
        None => Ok(Service {
            krate: args.krate,
            transparent: args.transparent,
            vis: item.vis,
            wire_name: service_name,
            ident: item.ident,
            attrs: item.attrs,
            supertraits,
            methods,
        }),
    }
}

/// Names must be unique on the wire and as enum variants, and fit the
/// request head.
fn check_names(service_name: &str, methods: &[Method], errors: &mut Errors) {
    for (i, method) in methods.iter().enumerate() {
        let mut earlier = methods.iter().take(i);
        if let Some(twin) = earlier.clone().find(|m| m.wire_name == method.wire_name) {
            errors.push(
                method.ident.span(),
                format!(
                    "the method `{}` is defined twice; each method needs its own name",
                    twin.wire_name
                ),
            );
        } else if let Some(twin) =
            earlier.find(|m| variant_name(&m.wire_name) == variant_name(&method.wire_name))
        {
            errors.push(
                method.ident.span(),
                format!(
                    "the methods `{}` and `{}` both become the enum variant `{}`; rename one of them",
                    twin.wire_name,
                    method.wire_name,
                    variant_name(&method.wire_name)
                ),
            );
        }
        let full = service_name.len() + 1 + method.wire_name.len();
        if full > MAX_WIRE_NAME_LEN {
            errors.push(
                method.ident.span(),
                format!(
                    "`{service_name}.{}` is {full} bytes long; wire names are at most {MAX_WIRE_NAME_LEN} bytes, so shorten the trait or method name",
                    method.wire_name
                ),
            );
        }
    }
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

    let (attrs, markers) = args::method_markers(&method.attrs, errors);
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

/// `T` if `ty` is `Streaming<T>` (by any path: `rpc::Streaming<T>` too).
pub(crate) fn stream_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Streaming" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(item)) if args.args.len() == 1 => Some(item),
        _ => None,
    }
}

/// The enum variant a method becomes: `get_user` is `GetUser`.
pub(crate) fn variant_name(wire_name: &str) -> String {
    let camel: String = wire_name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    if camel.is_empty() {
        "Call".to_owned()
    } else {
        camel
    }
}

/// An identifier as written on the wire: `r#type` is `type`.
pub(crate) fn unraw(ident: &Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").map(str::to_owned).unwrap_or(name)
}
