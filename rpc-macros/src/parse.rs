//! Parsing and checking the annotated trait.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ItemTrait, Pat, Path, ReturnType, TraitItem, TraitItemFn, Type, Visibility,
    parse_quote,
};

/// The annotated trait, checked.
pub(crate) struct Service {
    /// The path of the `rpc` facade in the user's crate (`::rpc` by default).
    pub(crate) krate: Path,
    pub(crate) vis: Visibility,
    pub(crate) ident: Ident,
    /// The trait's name on the wire (the identifier without `r#`).
    pub(crate) wire_name: String,
    /// Attributes of the trait, doc comments included.
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) methods: Vec<Method>,
}

/// One method of the service.
pub(crate) struct Method {
    /// Every attribute of the method but our own `#[rpc(..)]`, docs and
    /// `#[cfg]` included.
    pub(crate) attrs: Vec<Attribute>,
    /// `#[rpc(no_cancel)]`: once started, runs to completion.
    pub(crate) no_cancel: bool,
    /// `#[rpc(idempotent)]`: safe to run twice, so retried after a lost
    /// connection.
    pub(crate) idempotent: bool,
    pub(crate) ident: Ident,
    /// The method's name on the wire (the identifier without `r#`).
    pub(crate) wire_name: String,
    pub(crate) args: Vec<(Ident, Type)>,
    pub(crate) output: Type,
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
}

/// Names the generated client uses for its own methods.
const CLIENT_METHODS: [&str; 5] = ["connect", "from_client", "with_timeout", "rpc_client", "clone"];

/// Longest wire name (`Service.method`) the request head can carry.
const MAX_WIRE_NAME_LEN: usize = 255;

/// Collects errors so the user sees all of them at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let err = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }
}

pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> Result<Service, syn::Error> {
    let mut errors = Errors::default();
    let krate = parse_args(attr, &mut errors);
    let item: ItemTrait = syn::parse2(item).map_err(|err| {
        syn::Error::new(
            err.span(),
            "#[rpc::service] goes on a trait: `#[rpc::service] pub trait Calculator { async fn add(&self, a: i64, b: i64) -> i64; }`",
        )
    })?;

    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(
            item.generics.span(),
            "a service trait cannot be generic; use concrete types in its methods",
        );
    }
    if let Some(colon) = item.colon_token {
        errors.push(
            colon
                .span()
                .join(item.supertraits.span())
                .unwrap_or_else(|| colon.span()),
            "a service trait cannot have supertraits; the generated client cannot implement them",
        );
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

    match errors.0 {
        Some(err) => Err(err),
        None => Ok(Service {
            krate,
            vis: item.vis,
            wire_name: service_name,
            ident: item.ident,
            attrs: item.attrs,
            methods,
        }),
    }
}

fn parse_args(attr: TokenStream, errors: &mut Errors) -> Path {
    let mut krate: Path = parse_quote!(::rpc);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let value = meta.value()?;
            krate = if value.peek(syn::LitStr) {
                value.parse::<syn::LitStr>()?.parse()?
            } else {
                value.parse()?
            };
            Ok(())
        } else {
            Err(meta.error("unknown #[rpc::service] argument; the only one is `crate = path::to::rpc`"))
        }
    });
    if let Err(err) = parser.parse2(attr) {
        errors.push(err.span(), err);
    }
    krate
}

fn parse_method(method: &TraitItemFn, errors: &mut Errors) -> Option<Method> {
    let sig = &method.sig;
    let name = unraw(&sig.ident);
    let before = errors.0.as_ref().map(|e| e.clone().into_iter().count());

    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span(),
            format!("service methods must be `async fn`; write `async fn {name}(...)`"),
        );
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
        Some(FnArg::Typed(arg)) => errors.push(arg.span(), "service methods take `&self` as their first argument"),
        None => errors.push(
            sig.paren_token.span.join(),
            "service methods take `&self` as their first argument",
        ),
    }

    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(arg) = input else { continue };
        let ident = match &*arg.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            other => {
                errors.push(
                    other.span(),
                    "service method arguments must be plain names like `a: i64`; destructure inside the method",
                );
                continue;
            }
        };
        match &*arg.ty {
            Type::Reference(ty) => errors.push(
                ty.span(),
                "service method arguments must be owned (they are decoded from the network); use `String` for `&str`, `Vec<T>` for `&[T]`",
            ),
            Type::ImplTrait(ty) => errors.push(
                ty.span(),
                "service method arguments cannot be `impl Trait`; use a concrete, serializable type",
            ),
            _ => {}
        }
        args.push((ident, (*arg.ty).clone()));
    }

    let output = match &sig.output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Type::ImplTrait(_) = **ty {
                errors.push(
                    ty.span(),
                    "service methods cannot return `impl Trait`; return a concrete, serializable type",
                );
            }
            (**ty).clone()
        }
    };

    let (attrs, flags) = method_attrs(&method.attrs, errors);
    let after = errors.0.as_ref().map(|e| e.clone().into_iter().count());
    (before == after).then(|| Method {
        attrs,
        no_cancel: flags.no_cancel,
        idempotent: flags.idempotent,
        ident: sig.ident.clone(),
        wire_name: name,
        args,
        output,
    })
}

#[derive(Default)]
struct Flags {
    no_cancel: bool,
    idempotent: bool,
}

/// Splits our `#[rpc(..)]` markers off a method's attributes.
fn method_attrs(attrs: &[Attribute], errors: &mut Errors) -> (Vec<Attribute>, Flags) {
    let mut flags = Flags::default();
    let mut kept = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("rpc") {
            kept.push(attr.clone());
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("no_cancel") {
                flags.no_cancel = true;
                Ok(())
            } else if meta.path.is_ident("idempotent") {
                flags.idempotent = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[rpc(..)] marker; the markers are `no_cancel` (the handler runs to completion even if the caller goes away) and `idempotent` (retried once after a lost connection)",
                ))
            }
        });
        if let Err(err) = parsed {
            errors.push(err.span(), err);
        }
    }
    (kept, flags)
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
fn unraw(ident: &Ident) -> String {
    let name = ident.to_string();
    name.strip_prefix("r#").map(str::to_owned).unwrap_or(name)
}
