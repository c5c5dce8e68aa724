//! The arguments of `#[rpc::service(..)]` and the `#[rpc(..)]` markers on
//! methods.

use std::time::Duration;

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Attribute, LitStr, Path, parse_quote};

use crate::errors::Errors;

/// `#[rpc::service(..)]` arguments.
pub(crate) struct ServiceArgs {
    /// `crate = path`: where the `rpc` facade is (`::rpc` by default).
    pub(crate) krate: Path,
    /// `transparent`: the client implements the service trait too.
    pub(crate) transparent: bool,
}

pub(crate) fn service_args(attr: TokenStream, errors: &mut Errors) -> ServiceArgs {
    let mut args = ServiceArgs {
        krate: parse_quote!(::rpc),
        transparent: false,
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let value = meta.value()?;
            args.krate = if value.peek(LitStr) {
                value.parse::<LitStr>()?.parse()?
            } else {
                value.parse()?
            };
            Ok(())
        } else if meta.path.is_ident("transparent") {
            args.transparent = true;
            Ok(())
        } else {
            Err(meta.error(
                "unknown #[rpc::service] argument; the arguments are `crate = path::to::rpc` (when the dependency is renamed) and `transparent` (the client implements the trait)",
            ))
        }
    });
    if let Err(err) = parser.parse2(attr) {
        errors.push(err.span(), err);
    }
    args
}

/// What the `#[rpc(..)]` markers on one method say.
#[derive(Default)]
pub(crate) struct MethodMarkers {
    /// `no_cancel`: once started, runs to completion.
    pub(crate) no_cancel: bool,
    /// `idempotent`: safe to run twice, so retried after a lost connection.
    pub(crate) idempotent: bool,
    /// `timeout = "5s"`: the method's default deadline.
    pub(crate) timeout: Option<Duration>,
    /// `unchecked`: calls carry no fingerprint.
    pub(crate) unchecked: bool,
    /// `accepts = "9c1d0e6b2f3a4457"`: older fingerprints a server takes.
    pub(crate) accepts: Vec<u64>,
}

/// Splits our `#[rpc(..)]` markers off a method's attributes.
pub(crate) fn method_markers(attrs: &[Attribute], errors: &mut Errors) -> (Vec<Attribute>, MethodMarkers) {
    let mut markers = MethodMarkers::default();
    let mut kept = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("rpc") {
            kept.push(attr.clone());
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("no_cancel") {
                markers.no_cancel = true;
                Ok(())
            } else if meta.path.is_ident("idempotent") {
                markers.idempotent = true;
                Ok(())
            } else if meta.path.is_ident("timeout") {
                let literal: LitStr = meta.value()?.parse()?;
                match parse_duration(&literal.value()) {
                    Some(timeout) => {
                        markers.timeout = Some(timeout);
                        Ok(())
                    }
                    None => Err(syn::Error::new(
                        literal.span(),
                        "write the timeout as a number and a unit: \"250ms\", \"5s\", \"2m\" or \"1h\"",
                    )),
                }
            } else if meta.path.is_ident("unchecked") {
                markers.unchecked = true;
                Ok(())
            } else if meta.path.is_ident("accepts") {
                let literal: LitStr = meta.value()?.parse()?;
                match parse_fingerprint(&literal.value()) {
                    Some(fingerprint) => {
                        markers.accepts.push(fingerprint);
                        Ok(())
                    }
                    None => Err(syn::Error::new(
                        literal.span(),
                        "write the fingerprint as the 16 hex digits an `IncompatibleMethod` error or a descriptor shows: accepts = \"9c1d0e6b2f3a4457\"",
                    )),
                }
            } else {
                Err(meta.error(
                    "unknown #[rpc(..)] marker; the markers are `no_cancel` (the handler runs to completion even if the caller goes away), `idempotent` (retried once after a lost connection), `timeout = \"5s\"` (the method's default deadline), `accepts = \"<fingerprint>\"` (a server also takes calls of that older shape) and `unchecked` (calls carry no fingerprint)",
                ))
            }
        });
        if let Err(err) = parsed {
            errors.push(err.span(), err);
        }
    }
    (kept, markers)
}

/// A fingerprint: up to 16 hex digits, `0x` allowed, not zero.
fn parse_fingerprint(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok().filter(|value| *value != 0)
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`: a positive whole number and a unit.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok().filter(|n| *n > 0)?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.checked_mul(60)?),
        "h" => Duration::from_secs(number.checked_mul(3600)?),
        _ => return None,
    };
    Some(duration)
}
