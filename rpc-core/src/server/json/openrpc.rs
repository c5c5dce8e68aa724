//! The OpenRPC document (`rpc.discover`, `GET <path>/openrpc.json`): every
//! method of every service, its parameters with their names and JSON
//! Schemas, its result and its errors, made from the descriptors and the
//! types' traced serde forms.

use serde_json::{Map, Value, json};
use serde_reflection::{ContainerFormat, Format, Named, VariantFormat};

use crate::descriptor::{MethodDescriptor, ServiceDescriptor};
use crate::server::json::names::lower_camel;
use crate::server::json::{JsonRpc, codes};
use crate::types::{self, MethodTypes, Traced};

/// The OpenRPC version the document follows.
const OPENRPC: &str = "1.3.2";

impl JsonRpc {
    /// The OpenRPC document, made once.
    pub fn discover(&self) -> &[u8] {
        self.discovery.get_or_init(|| {
            let services = self.state.router.services();
            serde_json::to_vec(&document(&services)).unwrap_or_default()
        })
    }
}

/// The document for `services`.
fn document(services: &[&ServiceDescriptor]) -> Value {
    let mut methods = Vec::new();
    let mut schemas = Map::new();
    for service in services {
        let traced = types::trace(service);
        for (registered, container) in &traced.registry {
            schemas.insert(registered.clone(), container_schema(container));
        }
        for (method, types) in service.methods.iter().zip(&traced.methods) {
            methods.push(method_entry(method, types));
        }
    }
    let names: Vec<&str> = services.iter().map(|service| service.name).collect();
    json!({
        "openrpc": OPENRPC,
        "info": {
            "title": names.join(", "),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Method names are `Service.method` as the Rust trait spells them: the canonical spelling. \
                The lowerCamelCase spelling (`Service.getUser` for `get_user`) is accepted too, and either \
                without `Service.` when only one service has the method. Arguments go by position, in the \
                order listed, or by name (as listed, or in lowerCamelCase).",
        },
        "methods": methods,
        "components": { "schemas": schemas },
    })
}

/// One method's entry.
fn method_entry(method: &MethodDescriptor, types: &MethodTypes) -> Value {
    let params: Vec<Value> = method
        .args
        .iter()
        .zip(&types.args)
        .filter(|(arg, _)| !arg.streams)
        .map(|(arg, traced)| {
            json!({
                "name": arg.name,
                "required": !arg.ty.starts_with("Option<"),
                "schema": schema(traced, arg.ty),
            })
        })
        .collect();
    let result_written = method.result;
    let result_schema = schema(&types.result, result_written);
    let application_error = types.error.as_ref().map(|error| schema(error, result_written));
    let mut errors = vec![
        error_entry(codes::INVALID_PARAMS, "the params do not fit the method"),
        error_entry(
            codes::DEADLINE_EXCEEDED,
            "the call did not finish within its deadline",
        ),
        error_entry(codes::INTERNAL_ERROR, "the handler panicked"),
    ];
    if let Some(data) = application_error {
        let mut entry = error_entry(
            codes::APPLICATION_ERROR,
            "the method returned an error; `data` holds it",
        );
        if let Value::Object(entry) = &mut entry {
            entry.insert("data".to_owned(), data);
        }
        errors.insert(0, entry);
    }
    let mut entry = json!({
        "name": method.full_name,
        "paramStructure": "either",
        "params": params,
        "result": {
            "name": "result",
            "schema": result_schema,
        },
        "errors": errors,
        "x-camelCase": camel_name(method),
    });
    if let Value::Object(entry) = &mut entry {
        if !method.docs.is_empty() {
            entry.insert("description".to_owned(), Value::from(method.docs));
        }
        if method.deprecated {
            entry.insert("deprecated".to_owned(), Value::from(true));
        }
        if method.shape.output {
            entry.insert(
                "x-stream".to_owned(),
                Value::from(
                    "over WebSocket the result's items arrive as `rpc.item` notifications {\"call\": id, \"item\": ..}, then the response; plain HTTP cannot carry them",
                ),
            );
        }
        if method.shape.input {
            entry.insert(
                "x-stream".to_owned(),
                Value::from("takes a stream from its caller, which JSON-RPC cannot carry: Rust clients only"),
            );
        }
    }
    entry
}

/// `Service.getUser` for `Service.get_user`.
fn camel_name(method: &MethodDescriptor) -> String {
    let service = method
        .full_name
        .strip_suffix(method.name)
        .and_then(|service| service.strip_suffix('.'))
        .unwrap_or_default();
    format!("{service}.{}", lower_camel(method.name))
}

fn error_entry(code: i64, message: &str) -> Value {
    json!({ "code": code, "message": message })
}

/// The schema of a traced type, or an open one saying why there is none.
fn schema(traced: &Traced, written: &str) -> Value {
    match traced {
        Traced::Format(format) => format_schema(format),
        Traced::Untraceable(why) => json!({
            "description": format!("{written}: its serde form could not be traced ({why}); any JSON value its serde form accepts"),
        }),
    }
}

/// The JSON Schema of a value with serde form `format`, as serde_json
/// writes it.
fn format_schema(format: &Format) -> Value {
    match format {
        Format::Variable(_) => json!({}),
        Format::TypeName(name) => json!({ "$ref": format!("#/components/schemas/{name}") }),
        Format::Unit => json!({ "type": "null" }),
        Format::Bool => json!({ "type": "boolean" }),
        Format::I8 | Format::I16 | Format::I32 | Format::I64 | Format::I128 => json!({ "type": "integer" }),
        Format::U8 | Format::U16 | Format::U32 | Format::U64 | Format::U128 => {
            json!({ "type": "integer", "minimum": 0 })
        }
        Format::F32 | Format::F64 => json!({ "type": "number" }),
        Format::Char => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
        Format::Str => json!({ "type": "string" }),
        Format::Bytes => {
            json!({ "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 255 } })
        }
        Format::Option(inner) => json!({ "anyOf": [format_schema(inner), { "type": "null" }] }),
        Format::Seq(item) => json!({ "type": "array", "items": format_schema(item) }),
        Format::Map { value, .. } => {
            json!({ "type": "object", "additionalProperties": format_schema(value) })
        }
        Format::Tuple(items) => tuple_schema(items),
        Format::TupleArray { content, size } => {
            json!({ "type": "array", "items": format_schema(content), "minItems": size, "maxItems": size })
        }
    }
}

fn tuple_schema(items: &[Format]) -> Value {
    let items: Vec<Value> = items.iter().map(format_schema).collect();
    let len = items.len();
    json!({ "type": "array", "prefixItems": items, "minItems": len, "maxItems": len })
}

/// The schema of a named struct or enum, as serde_json writes it
/// (enums externally tagged).
fn container_schema(container: &ContainerFormat) -> Value {
    match container {
        ContainerFormat::UnitStruct => json!({ "type": "null" }),
        ContainerFormat::NewTypeStruct(inner) => format_schema(inner),
        ContainerFormat::TupleStruct(items) => tuple_schema(items),
        ContainerFormat::Struct(fields) => struct_schema(fields),
        ContainerFormat::Enum(variants) => {
            let variants: Vec<Value> = variants.values().map(variant_schema).collect();
            json!({ "oneOf": variants })
        }
    }
}

fn struct_schema(fields: &[Named<Format>]) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in fields {
        properties.insert(field.name.clone(), format_schema(&field.value));
        // serde takes a missing `Option` field as `None`.
        if !matches!(field.value, Format::Option(_)) {
            required.push(Value::from(field.name.clone()));
        }
    }
    json!({ "type": "object", "properties": properties, "required": required })
}

fn variant_schema(variant: &Named<VariantFormat>) -> Value {
    let inner = match &variant.value {
        VariantFormat::Unit => return json!({ "const": variant.name }),
        VariantFormat::Variable(_) => json!({}),
        VariantFormat::NewType(inner) => format_schema(inner),
        VariantFormat::Tuple(items) => tuple_schema(items),
        VariantFormat::Struct(fields) => struct_schema(fields),
    };
    let mut properties = Map::new();
    properties.insert(variant.name.clone(), inner);
    json!({
        "type": "object",
        "properties": properties,
        "required": [variant.name],
        "additionalProperties": false,
    })
}
