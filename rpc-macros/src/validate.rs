//! Rules about the trait as a whole, checked once every method is parsed.

use crate::errors::Errors;
use crate::model::{Method, variant_name};

/// Longest wire name (`Service.method`) the request head can carry.
const MAX_WIRE_NAME_LEN: usize = 255;

/// Names must be unique on the wire and as enum variants, and fit the
/// request head.
pub(crate) fn check_names(service_name: &str, methods: &[Method], errors: &mut Errors) {
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
