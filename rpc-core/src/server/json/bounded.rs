//! Reading a JSON array or object from a peer while keeping at most a
//! limited number of its elements: a 16 MiB body can hold eight million
//! elements, and keeping a reference to each (let alone parsing each)
//! before counting them would cost hundreds of megabytes for one request.
//! Past the limit, elements are skipped and only counted.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The first `keep` elements of the array `text`, and how many it has in
/// all.
pub(crate) fn array(text: &[u8], keep: usize) -> serde_json::Result<(Vec<&RawValue>, usize)> {
    let mut reader = serde_json::Deserializer::from_slice(text);
    let read = reader.deserialize_seq(Prefix { keep })?;
    reader.end()?;
    Ok(read)
}

/// The first `keep` members of the object `text`, and how many it has in
/// all.
pub(crate) fn object(text: &[u8], keep: usize) -> serde_json::Result<(Vec<Member<'_>>, usize)> {
    let mut reader = serde_json::Deserializer::from_slice(text);
    let read = reader.deserialize_map(Members(Prefix { keep }))?;
    reader.end()?;
    Ok(read)
}

/// An object's member: its name and its value.
pub(crate) type Member<'a> = (Cow<'a, str>, &'a RawValue);

struct Prefix {
    keep: usize,
}

impl<'de> Visitor<'de> for Prefix {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Never reserve on the peer's word.
        let mut kept = Vec::with_capacity(self.keep.min(16));
        while kept.len() < self.keep {
            match seq.next_element::<&RawValue>()? {
                Some(element) => kept.push(element),
                None => {
                    let len = kept.len();
                    return Ok((kept, len));
                }
            }
        }
        let mut len = kept.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            len += 1;
        }
        Ok((kept, len))
    }
}

/// The same, for objects: a visitor of its own, as its value differs.
impl Prefix {
    fn members<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<(Vec<Member<'de>>, usize), A::Error> {
        let mut kept = Vec::with_capacity(self.keep.min(16));
        while kept.len() < self.keep {
            match map.next_entry::<Cow<'de, str>, &RawValue>()? {
                Some(member) => kept.push(member),
                None => {
                    let len = kept.len();
                    return Ok((kept, len));
                }
            }
        }
        let mut len = kept.len();
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            len += 1;
        }
        Ok((kept, len))
    }
}

/// Adapts [`Prefix`] to objects.
struct Members(Prefix);

impl<'de> Visitor<'de> for Members {
    type Value = (Vec<Member<'de>>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.members(map)
    }
}

/// Whether a parse failed because the text is not JSON (rather than JSON of
/// the wrong shape).
pub(crate) fn is_syntax(err: &serde_json::Error) -> bool {
    !matches!(err.classify(), serde_json::error::Category::Data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_elements_are_kept_and_all_are_counted() {
        let (kept, len) = array(b"[1, [2], {\"a\": 3}, 4]", 2).unwrap();
        assert_eq!(kept.iter().map(|v| v.get()).collect::<Vec<_>>(), ["1", "[2]"]);
        assert_eq!(len, 4);
        let (kept, len) = array(b"[]", 2).unwrap();
        assert_eq!((kept.len(), len), (0, 0));
        let (kept, len) = object(br#"{"a": 1, "b": [2], "c": 3}"#, 1).unwrap();
        assert_eq!(
            kept.iter()
                .map(|(k, v)| (k.as_ref(), v.get()))
                .collect::<Vec<_>>(),
            [("a", "1")]
        );
        assert_eq!(len, 3);
        assert!(array(b"[1, 2", 1).is_err());
        assert!(array(b"[1] x", 1).is_err());
        assert!(is_syntax(&array(b"[1,", 1).unwrap_err()));
        assert!(!is_syntax(&array(b"{}", 1).unwrap_err()));
    }

    #[test]
    fn a_million_elements_cost_nothing_past_the_limit() {
        let text = format!("[{}0]", "0,".repeat(1_000_000));
        let (kept, len) = array(text.as_bytes(), 10).unwrap();
        assert_eq!((kept.len(), len), (10, 1_000_001));
    }
}
