//! [`Form`]: a type's shape on the wire, as serde describes it, and
//! [`MethodForm`]: a method's arguments and result in those terms.
//!
//! Built from the formats `serde-reflection` traces ([`types`](crate::types)),
//! with what the wire cannot tell apart made one: a newtype struct is its
//! content, a unit struct is `()`, a tuple struct is a tuple, `Vec<u8>` is
//! bytes. Named structs and enums keep their names for messages; the
//! fingerprint leaves them out, so renaming a Rust type changes nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_reflection::{ContainerFormat, Format, FormatHolder, Named, Registry, VariantFormat};

/// Most nodes one method's forms may have once named types are written out
/// in place: beyond it the method is not fingerprinted (and so not checked).
const MAX_NODES: usize = 20_000;

/// The shape of one type on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Form {
    /// `()`, a unit struct.
    Unit,
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// `String`, `&str`.
    Str,
    /// A byte string: `Vec<u8>`, `bytes::Bytes`, `rpc::Bytes`.
    Bytes,
    /// `Option<T>`.
    Option(Box<Form>),
    /// A sequence: `Vec<T>`, `HashSet<T>`, ...
    Seq(Box<Form>),
    /// A map.
    Map {
        /// The keys' form.
        key: Box<Form>,
        /// The values' form.
        value: Box<Form>,
    },
    /// A tuple, or a tuple struct.
    Tuple(Vec<Form>),
    /// A fixed-size array, `[T; N]`: on the wire, a tuple of `N` `T`s.
    Array {
        /// The elements' form.
        item: Box<Form>,
        /// How many.
        len: u64,
    },
    /// A struct with named fields.
    Struct {
        /// Its serde name (for messages only).
        name: String,
        /// Its fields, in order.
        fields: Vec<Field>,
    },
    /// An enum.
    Enum {
        /// Its serde name (for messages only).
        name: String,
        /// Its variants, in order.
        variants: Vec<Variant>,
    },
    /// A type met again inside itself (`struct Tree { kids: Vec<Tree> }`).
    Recursive {
        /// The type's serde name.
        name: String,
        /// How many forms up the one it refers to is, counted in this
        /// tree (so newtype wrappers, which add none, count for nothing).
        depth: u32,
    },
}

/// A named field of a struct, or an argument of a method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Field {
    /// Its serde name.
    pub name: String,
    /// Its form.
    pub form: Form,
}

/// A variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Variant {
    /// Its serde name.
    pub name: String,
    /// What it holds.
    pub form: VariantForm,
}

/// What a variant holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VariantForm {
    /// Nothing: `Red`.
    Unit,
    /// One value: `Some(T)`.
    NewType(Form),
    /// Several: `Point(i32, i32)`.
    Tuple(Vec<Form>),
    /// Named fields: `Move { x: i32, y: i32 }`.
    Struct(Vec<Field>),
}

/// A method's shape on the wire: its arguments, its stream, its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodForm {
    /// The arguments that travel in the request, in order (a stream
    /// argument is `input`).
    pub args: Vec<Field>,
    /// The item of the stream the client sends, for a method taking one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Form>,
    /// What the server sends: the result (`Result<T, E>` as the enum it
    /// is), or each item of the stream it returns.
    pub result: Form,
    /// Whether the server sends a stream of `result`s.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output: bool,
}

impl Form {
    /// A short Rust-like name of the form for messages: `u64`, `Vec<String>`,
    /// `User`.
    pub fn describe(&self) -> String {
        let simple = match self {
            Form::Unit => "()",
            Form::Bool => "bool",
            Form::I8 => "i8",
            Form::I16 => "i16",
            Form::I32 => "i32",
            Form::I64 => "i64",
            Form::I128 => "i128",
            Form::U8 => "u8",
            Form::U16 => "u16",
            Form::U32 => "u32",
            Form::U64 => "u64",
            Form::U128 => "u128",
            Form::F32 => "f32",
            Form::F64 => "f64",
            Form::Char => "char",
            Form::Str => "String",
            Form::Bytes => "bytes",
            Form::Option(inner) => return format!("Option<{}>", inner.describe()),
            Form::Seq(item) => return format!("Vec<{}>", item.describe()),
            Form::Map { key, value } => return format!("Map<{}, {}>", key.describe(), value.describe()),
            Form::Tuple(items) => {
                let items: Vec<String> = items.iter().map(Form::describe).collect();
                return match items.len() {
                    1 => format!("({},)", items.join(", ")),
                    _ => format!("({})", items.join(", ")),
                };
            }
            Form::Array { item, len } => return format!("[{}; {len}]", item.describe()),
            Form::Enum { name, variants } if name == "Result" => match variants.as_slice() {
                [
                    Variant {
                        form: VariantForm::NewType(ok),
                        ..
                    },
                    Variant {
                        form: VariantForm::NewType(err),
                        ..
                    },
                ] => return format!("Result<{}, {}>", ok.describe(), err.describe()),
                _ => return name.clone(),
            },
            Form::Struct { name, .. } | Form::Enum { name, .. } | Form::Recursive { name, .. } => {
                return name.clone();
            }
        };
        simple.to_owned()
    }
}

impl fmt::Display for MethodForm {
    /// `(a: i64, b: i64) -> i64`, with `stream T` for streams.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut args: Vec<String> = self
            .args
            .iter()
            .map(|arg| format!("{}: {}", arg.name, arg.form.describe()))
            .collect();
        if let Some(item) = &self.input {
            args.push(format!("stream {}", item.describe()));
        }
        let stream = if self.output { "stream " } else { "" };
        write!(f, "({}) -> {stream}{}", args.join(", "), self.result.describe())
    }
}

/// Turns traced formats into forms, writing named types out in place.
pub(crate) struct Resolver<'a> {
    registry: &'a Registry,
    /// The named types being written out, innermost last, each with the
    /// level of the form it makes.
    within: Vec<(String, u32)>,
    /// How many forms up the root is from the one being made.
    level: u32,
    nodes: usize,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(registry: &'a Registry) -> Resolver<'a> {
        Resolver {
            registry,
            within: Vec::new(),
            level: 0,
            nodes: 0,
        }
    }

    /// The form of `format`, or why there is none.
    pub(crate) fn form(&mut self, format: &Format) -> Result<Form, String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "its types have more than {MAX_NODES} parts written out, too many to fingerprint"
            ));
        }
        let boxed = |this: &mut Self, inner: &Format| this.child(inner).map(Box::new);
        Ok(match format {
            Format::Variable(variable) => {
                let resolved = variable.borrow().clone();
                match resolved {
                    Some(format) => return self.form(&format),
                    None => return Err("a type's form could not be traced to the end".to_owned()),
                }
            }
            Format::TypeName(name) => return self.named(name),
            Format::Unit => Form::Unit,
            Format::Bool => Form::Bool,
            Format::I8 => Form::I8,
            Format::I16 => Form::I16,
            Format::I32 => Form::I32,
            Format::I64 => Form::I64,
            Format::I128 => Form::I128,
            Format::U8 => Form::U8,
            Format::U16 => Form::U16,
            Format::U32 => Form::U32,
            Format::U64 => Form::U64,
            Format::U128 => Form::U128,
            Format::F32 => Form::F32,
            Format::F64 => Form::F64,
            Format::Char => Form::Char,
            Format::Str => Form::Str,
            Format::Bytes => Form::Bytes,
            Format::Option(inner) => Form::Option(boxed(self, inner)?),
            // Written the same way: a length, then the bytes.
            Format::Seq(item) if matches!(**item, Format::U8) => Form::Bytes,
            Format::Seq(item) => Form::Seq(boxed(self, item)?),
            Format::Map { key, value } => Form::Map {
                key: boxed(self, key)?,
                value: boxed(self, value)?,
            },
            Format::Tuple(items) => Form::Tuple(self.forms(items)?),
            Format::TupleArray { content, size } => Form::Array {
                item: boxed(self, content)?,
                len: u64::try_from(*size).unwrap_or(u64::MAX),
            },
        })
    }

    /// The form of a part of the form being made.
    fn child(&mut self, format: &Format) -> Result<Form, String> {
        self.level += 1;
        let form = self.form(format);
        self.level -= 1;
        form
    }

    fn forms(&mut self, formats: &[Format]) -> Result<Vec<Form>, String> {
        formats.iter().map(|format| self.child(format)).collect()
    }

    fn fields(&mut self, fields: &[Named<Format>]) -> Result<Vec<Field>, String> {
        fields
            .iter()
            .map(|field| {
                Ok(Field {
                    name: field.name.clone(),
                    form: self.child(&field.value)?,
                })
            })
            .collect()
    }

    /// A named type: written out in place, or a reference back if it is
    /// being written out already.
    fn named(&mut self, name: &str) -> Result<Form, String> {
        if let Some((_, level)) = self.within.iter().rev().find(|(within, _)| within == name) {
            return Ok(Form::Recursive {
                name: name.to_owned(),
                depth: self.level - level,
            });
        }
        let Some(container) = self.registry.get(name) else {
            return Err(format!("the type `{name}` was named but not traced"));
        };
        let mut container = container.clone();
        container
            .normalize()
            .map_err(|err| format!("the type `{name}` could not be traced to the end: {err}"))?;
        self.within.push((name.to_owned(), self.level));
        let form = self.container(name, &container);
        self.within.pop();
        form
    }

    fn container(&mut self, name: &str, container: &ContainerFormat) -> Result<Form, String> {
        Ok(match container {
            ContainerFormat::UnitStruct => Form::Unit,
            ContainerFormat::NewTypeStruct(inner) => self.form(inner)?,
            ContainerFormat::TupleStruct(items) => Form::Tuple(self.forms(items)?),
            ContainerFormat::Struct(fields) => Form::Struct {
                name: name.to_owned(),
                fields: self.fields(fields)?,
            },
            ContainerFormat::Enum(variants) => {
                let mut forms = Vec::with_capacity(variants.len());
                for variant in in_order(name, variants)? {
                    let form = match &variant.value {
                        VariantFormat::Variable(_) => {
                            return Err(format!(
                                "the variant `{name}::{}` could not be traced",
                                variant.name
                            ));
                        }
                        VariantFormat::Unit => VariantForm::Unit,
                        VariantFormat::NewType(inner) => VariantForm::NewType(self.child(inner)?),
                        VariantFormat::Tuple(items) => VariantForm::Tuple(self.forms(items)?),
                        VariantFormat::Struct(fields) => VariantForm::Struct(self.fields(fields)?),
                    };
                    forms.push(Variant {
                        name: variant.name.clone(),
                        form,
                    });
                }
                Form::Enum {
                    name: name.to_owned(),
                    variants: forms,
                }
            }
        })
    }
}

/// An enum's traced variants in wire order, or why not all were traced.
///
/// serde-reflection meets each variant by name, in declaration order, and
/// keeps it under a provisional key (`u32::MAX - (count - 1) + position`)
/// until later visits have learned its wire index. An enum met only
/// through a later variant of another enum is visited too rarely for
/// that, so its names are read as they are: for a derived `Deserialize`
/// the wire index is the declaration position. Every name must have been
/// met, which is so once the last one has (they are met in order) or once
/// any index has been learned (that starts after all were met); and the
/// positions must leave no gap.
fn in_order<'a>(
    name: &str,
    variants: &'a BTreeMap<u32, Named<VariantFormat>>,
) -> Result<Vec<&'a Named<VariantFormat>>, String> {
    let incomplete = || format!("not every variant of `{name}` could be traced");
    let count = variants.len();
    let first_provisional = u32::MAX - u32::try_from(count.saturating_sub(1)).unwrap_or(u32::MAX);
    let learned = variants.keys().any(|&key| key < first_provisional);
    if !learned && !variants.contains_key(&u32::MAX) {
        return Err(incomplete());
    }
    let mut ordered: Vec<Option<&Named<VariantFormat>>> = vec![None; count];
    for (&key, variant) in variants {
        let position = match key >= first_provisional {
            true => key - first_provisional,
            false => key,
        };
        match usize::try_from(position)
            .ok()
            .and_then(|position| ordered.get_mut(position))
        {
            Some(slot @ None) => *slot = Some(variant),
            _ => return Err(incomplete()),
        }
    }
    ordered
        .into_iter()
        .map(|variant| variant.ok_or_else(incomplete))
        .collect()
}

/// `Result<T, E>` as the enum it is on the wire.
pub(crate) fn result_of(ok: Form, err: Form) -> Form {
    Form::Enum {
        name: "Result".to_owned(),
        variants: vec![
            Variant {
                name: "Ok".to_owned(),
                form: VariantForm::NewType(ok),
            },
            Variant {
                name: "Err".to_owned(),
                form: VariantForm::NewType(err),
            },
        ],
    }
}
