//! Which argument and return types can cross the network.
//!
//! A type travels by value: it is encoded on one machine and decoded on
//! another, so nothing in it may borrow, and it must be a concrete type the
//! decoder can build. The walk reports every offending part with its span.

use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, ReturnType, Type, TypeParamBound};

/// Where a type appears, for the error message.
#[derive(Clone, Copy)]
pub(crate) enum Position {
    Argument,
    Return,
}

impl Position {
    fn noun(self) -> &'static str {
        match self {
            Position::Argument => "service method arguments",
            Position::Return => "service method results",
        }
    }
}

/// Checks `ty`, calling `report` with a span and a message for each part of
/// it that cannot cross the network.
pub(crate) fn check(ty: &Type, at: Position, report: &mut dyn FnMut(proc_macro2::Span, String)) {
    let noun = at.noun();
    match ty {
        Type::Reference(reference) => report(
            reference.span(),
            format!(
                "{noun} must be owned: they are decoded from the network, not borrowed; use `String` for `&str`, `Vec<T>` for `&[T]`, `T` for `&T`"
            ),
        ),
        Type::ImplTrait(_) => report(
            ty.span(),
            format!("{noun} cannot be `impl Trait`; name a concrete, serializable type"),
        ),
        Type::TraitObject(_) => report(
            ty.span(),
            format!("{noun} cannot be trait objects; name a concrete, serializable type"),
        ),
        Type::Ptr(_) => report(ty.span(), format!("{noun} cannot be raw pointers")),
        Type::BareFn(_) => report(ty.span(), format!("{noun} cannot be functions")),
        Type::Infer(_) => report(
            ty.span(),
            format!("{noun} need their full type; `_` cannot be inferred here"),
        ),
        Type::Array(array) => check(&array.elem, at, report),
        Type::Slice(slice) => check(&slice.elem, at, report),
        Type::Group(group) => check(&group.elem, at, report),
        Type::Paren(paren) => check(&paren.elem, at, report),
        Type::Tuple(tuple) => tuple.elems.iter().for_each(|elem| check(elem, at, report)),
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                check(&qself.ty, at, report);
            }
            for segment in &path.path.segments {
                if segment.ident == "Self" {
                    report(
                        segment.ident.span(),
                        format!(
                            "{noun} cannot mention `Self`; the client and server have different `Self` types"
                        ),
                    );
                }
                match &segment.arguments {
                    PathArguments::AngleBracketed(args) => {
                        for arg in &args.args {
                            match arg {
                                GenericArgument::Type(ty) => check(ty, at, report),
                                GenericArgument::Lifetime(lifetime) if lifetime.ident != "static" => report(
                                    lifetime.span(),
                                    format!(
                                        "{noun} must be owned; `{lifetime}` borrows, which data from the network cannot"
                                    ),
                                ),
                                _ => {}
                            }
                        }
                    }
                    PathArguments::Parenthesized(args) => {
                        args.inputs.iter().for_each(|input| check(input, at, report));
                        if let ReturnType::Type(_, output) = &args.output {
                            check(output, at, report);
                        }
                    }
                    PathArguments::None => {}
                }
            }
        }
        _ => {}
    }
}

/// Whether a supertrait bound is one the generated client satisfies:
/// `Send`, `Sync` (by any path) or `'static`.
pub(crate) fn honourable_supertrait(bound: &TypeParamBound) -> bool {
    match bound {
        TypeParamBound::Lifetime(lifetime) => lifetime.ident == "static",
        TypeParamBound::Trait(bound) => bound
            .path
            .segments
            .last()
            .is_some_and(|last| last.ident == "Send" || last.ident == "Sync"),
        _ => false,
    }
}
