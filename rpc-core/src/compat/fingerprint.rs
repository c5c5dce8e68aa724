//! [`Fingerprint`]: 64 bits that change whenever a method's shape on the
//! wire does.
//!
//! A hash of the method's [`MethodForm`] written out canonically: argument,
//! field and variant names and order, primitive widths, containers, stream
//! directions. Type names are left out (renaming `User` to `Account`
//! changes nothing on the wire), and forms the wire cannot tell apart hash
//! alike (`[u32; 2]` and `(u32, u32)`). The hash is FNV-1a: stable across
//! builds, platforms and Rust versions, which `std`'s hashers do not
//! promise, and short enough to travel with every request. It detects
//! accidents, not adversaries: a peer may send any fingerprint it likes.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::form::{Field, Form, MethodForm, VariantForm};

/// A method's fingerprint: never zero, which on the wire means "none".
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(NonZeroU64);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Fingerprint {
    /// The fingerprint whose wire value is `value`; `None` for zero.
    pub fn from_wire(value: u64) -> Option<Fingerprint> {
        NonZeroU64::new(value).map(Fingerprint)
    }

    /// For `#[rpc(accepts = "..")]`: the macro has checked `value` is not
    /// zero.
    #[doc(hidden)]
    pub const fn from_macro(value: u64) -> Fingerprint {
        match NonZeroU64::new(value) {
            Some(value) => Fingerprint(value),
            None => panic!("a fingerprint is never zero"),
        }
    }

    /// Its wire value.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The fingerprint of `form`.
    pub fn of(form: &MethodForm) -> Fingerprint {
        let mut hash = Fnv::new();
        hash.fields(&form.args);
        match &form.input {
            Some(item) => {
                hash.tag(1);
                hash.form(item);
            }
            None => hash.tag(0),
        }
        hash.form(&form.result);
        hash.tag(u8::from(form.output));
        Fingerprint(NonZeroU64::new(hash.0).unwrap_or(NonZeroU64::MIN))
    }
}

impl fmt::Display for Fingerprint {
    /// Sixteen hex digits, as `#[rpc(accepts = "..")]` takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why text is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a fingerprint: write the 16 hex digits an error or a descriptor shows, such as \"9c1d0e6b2f3a4457\""
)]
pub struct ParseFingerprintError(String);

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(text: &str) -> Result<Fingerprint, ParseFingerprintError> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix("0x").unwrap_or(trimmed);
        let refused = || ParseFingerprintError(text.to_owned());
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused());
        }
        let value = u64::from_str_radix(digits, 16).map_err(|_| refused())?;
        Fingerprint::from_wire(value).ok_or_else(refused)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// FNV-1a, 64 bits, fed a canonical writing of forms.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn tag(&mut self, tag: u8) {
        self.bytes(&[tag]);
    }

    fn len(&mut self, len: u64) {
        self.bytes(&len.to_le_bytes());
    }

    fn name(&mut self, name: &str) {
        self.len(name.len() as u64);
        self.bytes(name.as_bytes());
    }

    fn fields(&mut self, fields: &[Field]) {
        self.len(fields.len() as u64);
        for field in fields {
            self.name(&field.name);
            self.form(&field.form);
        }
    }

    /// A tuple whose items are all alike is written as the array it is on
    /// the wire, so `(u32, u32)` and `[u32; 2]` hash alike, and an array
    /// costs one item however long it is.
    fn tuple(&mut self, items: &[Form]) {
        match items {
            [first, rest @ ..] if rest.iter().all(|item| item == first) => {
                self.array(items.len() as u64, first)
            }
            _ => {
                self.tag(b'T');
                self.len(items.len() as u64);
                for item in items {
                    self.form(item);
                }
            }
        }
    }

    fn array(&mut self, len: u64, item: &Form) {
        if len == 0 {
            return self.tuple(&[]);
        }
        self.tag(b'A');
        self.len(len);
        self.form(item);
    }

    fn form(&mut self, form: &Form) {
        match form {
            Form::Unit => self.tag(b'0'),
            Form::Bool => self.tag(b'?'),
            Form::I8 => self.tag(b'b'),
            Form::I16 => self.tag(b'h'),
            Form::I32 => self.tag(b'i'),
            Form::I64 => self.tag(b'l'),
            Form::I128 => self.tag(b'q'),
            Form::U8 => self.tag(b'B'),
            Form::U16 => self.tag(b'H'),
            Form::U32 => self.tag(b'I'),
            Form::U64 => self.tag(b'L'),
            Form::U128 => self.tag(b'Q'),
            Form::F32 => self.tag(b'f'),
            Form::F64 => self.tag(b'd'),
            Form::Char => self.tag(b'c'),
            Form::Str => self.tag(b's'),
            Form::Bytes => self.tag(b'y'),
            Form::Option(inner) => {
                self.tag(b'o');
                self.form(inner);
            }
            Form::Seq(item) => {
                self.tag(b'v');
                self.form(item);
            }
            Form::Map { key, value } => {
                self.tag(b'm');
                self.form(key);
                self.form(value);
            }
            Form::Tuple(items) => self.tuple(items),
            Form::Array { item, len } => self.array(*len, item),
            Form::Struct { fields, .. } => {
                self.tag(b'S');
                self.fields(fields);
            }
            Form::Enum { variants, .. } => {
                self.tag(b'E');
                self.len(variants.len() as u64);
                for variant in variants {
                    self.name(&variant.name);
                    match &variant.form {
                        VariantForm::Unit => self.tag(b'u'),
                        VariantForm::NewType(inner) => {
                            self.tag(b'n');
                            self.form(inner);
                        }
                        VariantForm::Tuple(items) => self.tuple(items),
                        VariantForm::Struct(fields) => {
                            self.tag(b'S');
                            self.fields(fields);
                        }
                    }
                }
            }
            Form::Recursive { depth, .. } => {
                self.tag(b'r');
                self.len(u64::from(*depth));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(result: Form) -> MethodForm {
        MethodForm {
            args: vec![Field {
                name: "a".to_owned(),
                form: Form::I64,
            }],
            input: None,
            result,
            output: false,
        }
    }

    #[test]
    fn fingerprints_ignore_type_names_and_see_everything_else() {
        let user = |name: &str, field: &str| Form::Struct {
            name: name.to_owned(),
            fields: vec![Field {
                name: field.to_owned(),
                form: Form::U32,
            }],
        };
        let base = Fingerprint::of(&method(user("User", "id")));
        assert_eq!(base, Fingerprint::of(&method(user("Account", "id"))));
        assert_ne!(base, Fingerprint::of(&method(user("User", "key"))));
        assert_ne!(base, Fingerprint::of(&method(Form::U32)));
        let mut streamed = method(user("User", "id"));
        streamed.output = true;
        assert_ne!(base, Fingerprint::of(&streamed));
    }

    #[test]
    fn arrays_and_tuples_of_the_same_items_are_one_shape() {
        let array = Form::Array {
            item: Box::new(Form::U32),
            len: 2,
        };
        let tuple = Form::Tuple(vec![Form::U32, Form::U32]);
        assert_eq!(Fingerprint::of(&method(array)), Fingerprint::of(&method(tuple)));
        let mixed = Form::Tuple(vec![Form::U32, Form::U64]);
        assert_ne!(
            Fingerprint::of(&method(mixed)),
            Fingerprint::of(&method(Form::U32))
        );
        // However long, an array costs one item.
        let huge = Form::Array {
            item: Box::new(Form::U8),
            len: u64::MAX,
        };
        let _ = Fingerprint::of(&method(huge));
    }

    #[test]
    fn fingerprints_print_and_parse_as_sixteen_hex_digits() {
        let fingerprint = Fingerprint::of(&method(Form::Unit));
        let text = fingerprint.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
        assert_eq!(format!("0x{text}").parse::<Fingerprint>(), Ok(fingerprint));
        for bad in [
            "",
            "0",
            "xyz",
            "00000000000000000",
            "12345678901234567",
            "0x0x12",
            "+12",
            "0x",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad}");
        }
    }
}
