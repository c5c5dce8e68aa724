//! The JSON payload codec, for callers in other languages: arguments from a
//! JSON array in the trait's order, results as the serde JSON form of the
//! value. Every use of `serde_json` for payloads is here.
//!
//! serde_json refuses input nested more than 128 levels deep on its own;
//! [`DecodeLimits::max_nesting`] applies on top of that, so over JSON the
//! effective limit is the smaller of the two.

use std::fmt;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::depth::{self, Limited};
use super::{DecodeError, DecodeLimits, EncodeError};

/// Appends the JSON encoding of `value` to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut) -> Result<(), EncodeError> {
    serde_json::to_writer(out.writer(), value).map_err(|err| EncodeError(err.to_string()))
}

/// Decodes one `T` from JSON text.
pub fn decode<T: DeserializeOwned>(text: &[u8], limits: DecodeLimits) -> Result<T, DecodeError> {
    let mut json = serde_json::Deserializer::from_slice(text);
    let value = T::deserialize(Limited::new(&mut json, limits.max_nesting)).map_err(|err| {
        let message = err.to_string();
        if depth::is_too_deep(&message) {
            DecodeError::TooDeep {
                limit: limits.max_nesting,
            }
        } else {
            DecodeError::Invalid(message)
        }
    })?;
    json.end().map_err(|err| DecodeError::Invalid(err.to_string()))?;
    Ok(value)
}

/// Decodes a call's arguments, a tuple in the trait's order, from `params`:
/// a JSON array with one element per argument (`names`, for errors). A
/// mistake in one argument names it: "argument `b`: invalid type: string
/// \"x\", expected i64".
pub fn decode_args<T: DeserializeOwned>(
    params: &[u8],
    names: &[&str],
    limits: DecodeLimits,
) -> Result<T, DecodeError> {
    let args: Vec<&RawValue> =
        serde_json::from_slice(params).map_err(|err| DecodeError::Invalid(format!("the params: {err}")))?;
    let positional = Positional {
        args: &args,
        names,
        limits,
    };
    T::deserialize(positional).map_err(|ArgError(message)| {
        if depth::is_too_deep(&message) {
            DecodeError::TooDeep {
                limit: limits.max_nesting,
            }
        } else {
            DecodeError::Invalid(message)
        }
    })
}

/// Why the arguments did not decode, in words.
#[derive(Debug)]
struct ArgError(String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

impl de::Error for ArgError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        ArgError(message.to_string())
    }
}

/// The arguments, one JSON value each, as the tuple the method takes.
struct Positional<'a> {
    args: &'a [&'a RawValue],
    names: &'a [&'a str],
    limits: DecodeLimits,
}

impl<'v> Deserializer<'v> for Positional<'v> {
    type Error = ArgError;

    fn deserialize_any<V: Visitor<'v>>(self, visitor: V) -> Result<V::Value, ArgError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_seq<V: Visitor<'v>>(self, visitor: V) -> Result<V::Value, ArgError> {
        visitor.visit_seq(Arguments {
            args: self.args.iter(),
            names: self.names,
            index: 0,
            limits: self.limits,
        })
    }

    fn deserialize_tuple<V: Visitor<'v>>(self, _len: usize, visitor: V) -> Result<V::Value, ArgError> {
        self.deserialize_seq(visitor)
    }

    /// A method without arguments decodes `()`.
    fn deserialize_unit<V: Visitor<'v>>(self, visitor: V) -> Result<V::Value, ArgError> {
        match self.args.len() {
            0 => visitor.visit_unit(),
            n => Err(ArgError(format!(
                "the method takes no arguments, and {n} were given"
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'v>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit_struct newtype_struct tuple_struct
        map struct enum identifier ignored_any
    }
}

/// The arguments one at a time, each decoded from its own JSON text under
/// the nesting limit, each error naming its argument.
struct Arguments<'a> {
    args: std::slice::Iter<'a, &'a RawValue>,
    names: &'a [&'a str],
    index: usize,
    limits: DecodeLimits,
}

impl<'v> SeqAccess<'v> for Arguments<'v> {
    type Error = ArgError;

    fn next_element_seed<S: DeserializeSeed<'v>>(&mut self, seed: S) -> Result<Option<S::Value>, ArgError> {
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        let name = self.names.get(self.index).copied().unwrap_or("?");
        self.index += 1;
        let mut json = serde_json::Deserializer::from_str(arg.get());
        match seed.deserialize(Limited::new(&mut json, self.limits.max_nesting)) {
            Ok(value) => Ok(Some(value)),
            Err(err) => {
                let message = err.to_string();
                if depth::is_too_deep(&message) {
                    Err(ArgError(depth::TOO_DEEP.to_owned()))
                } else {
                    Err(ArgError(format!(
                        "argument `{name}`: {}",
                        strip_position(&message)
                    )))
                }
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.args.len())
    }
}

/// serde_json ends its messages with "at line 1 column 5", a position in
/// one argument's text, which means nothing to the caller.
fn strip_position(message: &str) -> &str {
    message
        .find(" at line ")
        .map_or(message, |at| message.get(..at).unwrap_or(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const LIMITS: DecodeLimits = DecodeLimits::DEFAULT;

    #[test]
    fn arguments_decode_by_position_and_errors_name_the_argument() {
        let (a, b): (i64, String) = decode_args(br#"[5, "x"]"#, &["a", "b"], LIMITS).unwrap();
        assert_eq!((a, b.as_str()), (5, "x"));
        let () = decode_args(b"[]", &[], LIMITS).unwrap();
        let err = decode_args::<(i64, i64)>(br#"[5, "x"]"#, &["a", "b"], LIMITS).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid("argument `b`: invalid type: string \"x\", expected i64".to_owned())
        );
        assert!(decode_args::<()>(b"[1]", &[], LIMITS).is_err());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Tree {
        Leaf,
        Node(Vec<Tree>),
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let mut text = String::from("[");
        for _ in 0..40 {
            text.push_str("{\"Node\":[");
        }
        text.push_str("\"Leaf\"");
        for _ in 0..40 {
            text.push_str("]}");
        }
        text.push(']');
        let limits = DecodeLimits { max_nesting: 20 };
        assert_eq!(
            decode_args::<(Tree,)>(text.as_bytes(), &["tree"], limits).unwrap_err(),
            DecodeError::TooDeep { limit: 20 }
        );
        assert!(decode_args::<(Tree,)>(text.as_bytes(), &["tree"], LIMITS).is_ok());
    }

    #[test]
    fn values_encode_as_their_serde_json_form() {
        let mut out = BytesMut::new();
        encode_into(&(1, "two", [3.5]), &mut out).unwrap();
        assert_eq!(&out[..], br#"[1,"two",[3.5]]"#);
        assert_eq!(decode::<Vec<u8>>(b"[1,2]", LIMITS).unwrap(), [1, 2]);
    }
}
