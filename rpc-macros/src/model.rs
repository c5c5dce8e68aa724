//! The annotated trait as plain values: a [`Service`] and its [`Method`]s,
//! checked, with every name the generator needs.

use std::time::Duration;

use proc_macro2::TokenStream;
use syn::{Attribute, Ident, Path, Type, Visibility};

use crate::attrs::MethodMarkers;

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

    /// The trait's doc comment as text.
    pub(crate) fn doc_text(&self) -> String {
        doc_text(&self.attrs)
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

    /// The method's doc comment as text.
    pub(crate) fn doc_text(&self) -> String {
        doc_text(&self.attrs)
    }

    /// Whether the method is `#[deprecated]`.
    pub(crate) fn deprecated(&self) -> bool {
        self.deprecations().next().is_some()
    }
}

/// The text of `#[doc = ".."]` attributes (doc comments), one line each,
/// without the space a `///` comment starts with.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }),
                ..
            }) => Some(text.value()),
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').map(str::to_owned).unwrap_or(line))
        .collect();
    lines.join("\n").trim().to_owned()
}

/// A type as a person writes it: `Result<i64, MathError>`, not the token
/// stream's `Result < i64 , MathError >`.
pub(crate) fn type_text(ty: &Type) -> String {
    let mut text = quote::quote!(#ty).to_string();
    for (spaced, tight) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ::", "::"),
        (":: ", "::"),
        (" ,", ","),
        (" ;", ";"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        ("& ", "&"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
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
