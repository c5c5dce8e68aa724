//! [`Methods`]: every spelling a JSON caller may use for a method, and for
//! its arguments.
//!
//! A method is `Service.method` as in the trait (`UserService.get_user`),
//! its lowerCamelCase spelling (`UserService.getUser`), and either of those
//! without the service (`get_user`, `getUser`) when only one service on the
//! server has a method of that name. Arguments passed by name are the
//! trait's names or their lowerCamelCase spelling (`user_id`, `userId`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::descriptor::MethodDescriptor;
use crate::server::router::{Route, Router};

/// Every spelling of every method, and where it goes.
pub(crate) struct Methods {
    by_name: HashMap<String, Route>,
    /// Bare names more than one service has: the full names they could mean.
    ambiguous: HashMap<String, Vec<&'static str>>,
}

impl Methods {
    pub(crate) fn new(router: &Router) -> Methods {
        let mut by_name = HashMap::new();
        // Bare names that more than one service has go nowhere: the caller
        // must say which service it means.
        let mut bare: HashMap<String, Option<Route>> = HashMap::new();
        let mut ambiguous: HashMap<String, Vec<&'static str>> = HashMap::new();
        for route in router.routes() {
            let method = route.method;
            let (service, _) = method
                .full_name
                .split_at(method.full_name.len() - method.name.len() - 1);
            for name in spellings(method.name) {
                by_name.insert(format!("{service}.{name}"), route.clone());
                match bare.entry(name) {
                    Entry::Vacant(free) => {
                        free.insert(Some(route.clone()));
                    }
                    Entry::Occupied(mut taken) => {
                        let same = taken
                            .get()
                            .as_ref()
                            .is_some_and(|other| std::ptr::eq(other.method, method));
                        if !same {
                            let meanings = ambiguous.entry(taken.key().clone()).or_default();
                            if let Some(first) = taken.insert(None) {
                                meanings.push(first.method.full_name);
                            }
                            meanings.push(method.full_name);
                        }
                    }
                }
            }
        }
        for (name, route) in bare {
            if let Some(route) = route {
                by_name.entry(name).or_insert(route);
            }
        }
        Methods { by_name, ambiguous }
    }

    /// Where the method a caller named goes.
    pub(crate) fn find(&self, name: &str) -> Option<&Route> {
        self.by_name.get(name)
    }

    /// The methods a bare name could mean, when more than one service has
    /// a method of that name.
    pub(crate) fn meanings(&self, name: &str) -> Option<&[&'static str]> {
        self.ambiguous.get(name).map(Vec::as_slice)
    }
}

/// A name as written and in lowerCamelCase (once, if they are the same).
fn spellings(name: &str) -> Vec<String> {
    let camel = lower_camel(name);
    if camel == name {
        vec![name.to_owned()]
    } else {
        vec![name.to_owned(), camel]
    }
}

/// `get_user_by_id` as JavaScript writes it: `getUserById`.
pub(crate) fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.trim_start_matches('_').chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The position of the argument a caller named (`user_id` or `userId`).
pub(crate) fn argument(method: &MethodDescriptor, name: &str) -> Option<usize> {
    method
        .plain_args()
        .position(|arg| arg.name == name || lower_camel(arg.name) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_becomes_lower_camel_case() {
        assert_eq!(lower_camel("get_user_by_id"), "getUserById");
        assert_eq!(lower_camel("add"), "add");
        assert_eq!(lower_camel("_private_thing"), "privateThing");
        assert_eq!(spellings("add"), ["add"]);
        assert_eq!(spellings("user_id"), ["user_id", "userId"]);
    }
}
