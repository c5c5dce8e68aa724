//! [`Contract`]: a service's descriptor as a JSON document, kept in a
//! repository, and [`breaking_changes`]: what changed between two of them
//! that old clients would be refused for.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::diff::{self, OLD_NEW};
use super::{Fingerprint, MethodForm};
use crate::descriptor::ServiceDescriptor;

/// What a service promises on the wire: its methods, each with its form
/// and fingerprint. Written with [`to_json`](Contract::to_json) (the
/// generated `FooServer::descriptor_json`), read back with
/// [`from_json`](Contract::from_json).
///
/// The facade's `rpc::compat` shows one made, written and compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Contract {
    /// The service's wire name.
    pub service: String,
    /// Its methods, in the trait's order.
    pub methods: Vec<MethodContract>,
}

/// One method of a [`Contract`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodContract {
    /// The method's name, without the service.
    pub name: String,
    /// `add(a: i64, b: i64) -> i64`: the form, for people (as
    /// `declared` when the form is unknown).
    pub signature: String,
    /// The method as the trait declares it, types as written.
    #[serde(default)]
    pub declared: String,
    /// Its fingerprint; absent for a method whose types could not be
    /// traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Older fingerprints it takes (`#[rpc(accepts = "..")]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepts: Vec<Fingerprint>,
    /// `#[rpc(unchecked)]`: its calls carry no fingerprint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
    /// Why its types could not be traced, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untraceable: Option<String>,
    /// Its shape on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<MethodForm>,
}

impl ServiceDescriptor {
    /// The service's [`Contract`], its methods' types traced.
    pub fn contract(&self) -> Contract {
        let methods = self
            .methods
            .iter()
            .map(|method| {
                let (form, untraceable) = match method.form() {
                    Ok(form) => (Some(form.clone()), None),
                    Err(why) => (None, Some(why.to_owned())),
                };
                let args: Vec<String> = method
                    .args
                    .iter()
                    .map(|arg| format!("{}: {}", arg.name, arg.ty))
                    .collect();
                let declared = format!("{}({}) -> {}", method.name, args.join(", "), method.result);
                let signature = match &form {
                    Some(form) => format!("{}{form}", method.name),
                    None => declared.clone(),
                };
                MethodContract {
                    name: method.name.to_owned(),
                    signature,
                    declared,
                    fingerprint: method.fingerprint(),
                    accepts: method.accepts.to_vec(),
                    unchecked: method.unchecked,
                    untraceable,
                    form,
                }
            })
            .collect();
        Contract {
            service: self.name.to_owned(),
            methods,
        }
    }
}

impl Contract {
    /// The contract as pretty-printed JSON, ending in a newline: the file to
    /// keep in the repository.
    pub fn to_json(&self) -> String {
        // A tree of strings and numbers always serializes.
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// Reads a contract written by [`to_json`](Contract::to_json).
    pub fn from_json(json: &str) -> Result<Contract, String> {
        serde_json::from_str(json).map_err(|err| format!("not a service descriptor written by rpc: {err}"))
    }

    fn method(&self, name: &str) -> Option<&MethodContract> {
        self.methods.iter().find(|method| method.name == name)
    }
}

/// A change between two contracts of one service that clients built
/// against the old one would be refused for, or would misread.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakingChange {
    /// The method's wire name, `Service.method`.
    pub method: String,
    /// What changed, in words.
    pub change: String,
}

impl fmt::Display for BreakingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.method, self.change)
    }
}

/// Every change from `old` to `new` that breaks a client built against
/// `old`, like `buf breaking` for protobuf. Empty when every old client
/// keeps working: methods added, types renamed, docs, timeouts and
/// markers changed, or a changed method that `accepts` the old
/// fingerprint.
///
/// Breaking: a service renamed, a method removed, and any change to a
/// method's form (argument, field or variant added, removed, renamed,
/// reordered or retyped; the result or a stream changed), since the server
/// refuses the old fingerprint. A method made `unchecked` is still
/// listed when its form changed: nothing would catch old clients then.
pub fn breaking_changes(old: &Contract, new: &Contract) -> Vec<BreakingChange> {
    let mut changes = Vec::new();
    if old.service != new.service {
        changes.push(BreakingChange {
            method: old.service.clone(),
            change: format!(
                "the service was renamed to `{}`: its methods' wire names changed with it",
                new.service
            ),
        });
        return changes;
    }
    for before in &old.methods {
        let method = format!("{}.{}", old.service, before.name);
        let Some(now) = new.method(&before.name) else {
            changes.push(BreakingChange {
                method,
                change: "the method was removed (old clients get \"unknown method\")".to_owned(),
            });
            continue;
        };
        let accepted = match (before.fingerprint, now.fingerprint) {
            (Some(old), Some(new)) => old == new || now.accepts.contains(&old),
            _ => false,
        };
        if accepted {
            continue;
        }
        let found = match (&before.form, &now.form) {
            (Some(x), Some(y)) => diff::differences(x, y, OLD_NEW, usize::MAX),
            // Unchecked on the wire: only the declarations can be compared.
            _ if before.declared != now.declared => vec![format!(
                "its types cannot be traced, so nothing checks its calls, and its declaration changed from `{}` to `{}`",
                before.declared, now.declared
            )],
            _ => Vec::new(),
        };
        changes.extend(found.into_iter().map(|change| BreakingChange {
            method: method.clone(),
            change,
        }));
    }
    changes
}
