//! [`Metadata`]: a small map of keys to text or bytes that travels with each
//! request, beside its arguments: an auth token, a tenant, a trace context.
//!
//! Keys are lowercase ASCII (`a-z`, `0-9`, `-`, `_`, `.`), as HTTP header
//! names are once lowercased, so the same key works over the binary
//! protocol and as an HTTP header for JSON callers. Bounded: at most
//! [`MAX_ENTRIES`] entries, keys of at most [`MAX_KEY_LEN`] bytes, and
//! [`MAX_METADATA_LEN`] bytes encoded in all. A client refuses to send
//! more; a server answers a call that carries more with an error, and the
//! connection goes on.
//!
//! Wire form (protocol version 2, `docs/PROTOCOL.md`): a `u16` length, then
//! each entry as `u8` key length, key, `u8` kind (0 text, 1 bytes), `u16`
//! value length, value.

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Entries one request may carry.
pub const MAX_ENTRIES: usize = 32;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Most bytes a request's metadata may take, encoded (as gRPC's default
/// limit on headers).
pub const MAX_METADATA_LEN: usize = 8 * 1024;

/// A metadata value: text (what HTTP headers carry) or bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum MetadataValue {
    /// UTF-8 text.
    Text(Arc<str>),
    /// Any bytes. Over JSON, only text travels.
    Binary(Bytes),
}

impl MetadataValue {
    /// The value as text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::Text(text) => Some(text),
            MetadataValue::Binary(_) => None,
        }
    }

    /// The value's bytes (a text value's UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            MetadataValue::Text(text) => text.as_bytes(),
            MetadataValue::Binary(bytes) => bytes,
        }
    }
}

impl fmt::Debug for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataValue::Text(text) => fmt::Debug::fmt(text, f),
            MetadataValue::Binary(bytes) => write!(f, "<{} bytes>", bytes.len()),
        }
    }
}

impl From<&str> for MetadataValue {
    fn from(text: &str) -> MetadataValue {
        MetadataValue::Text(text.into())
    }
}

impl From<String> for MetadataValue {
    fn from(text: String) -> MetadataValue {
        MetadataValue::Text(text.into())
    }
}

impl From<Vec<u8>> for MetadataValue {
    fn from(bytes: Vec<u8>) -> MetadataValue {
        MetadataValue::Binary(bytes.into())
    }
}

impl From<Bytes> for MetadataValue {
    fn from(bytes: Bytes) -> MetadataValue {
        MetadataValue::Binary(bytes)
    }
}

/// Keys and values sent with a request. Cheap to clone (entries are
/// shared); setting a key that is there replaces its value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(Arc<str>, MetadataValue)>,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets (tokens): only keys and sizes are shown.
        f.debug_map()
            .entries(
                self.entries
                    .iter()
                    .map(|(key, value)| (key, format!("<{} bytes>", value.as_bytes().len()))),
            )
            .finish()
    }
}

/// Metadata that cannot be sent, or that a server refused: what is wrong,
/// naming the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MetadataError(pub String);

impl Metadata {
    /// No entries.
    pub const fn new() -> Metadata {
        Metadata { entries: Vec::new() }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sets `key` to `value`, replacing what it held. The key is checked
    /// (lowercase ASCII letters, digits, `-`, `_`, `.`; at most
    /// [`MAX_KEY_LEN`] bytes); the sizes are checked when the metadata is
    /// sent.
    pub fn insert(&mut self, key: &str, value: impl Into<MetadataValue>) -> Result<(), MetadataError> {
        check_key(key)?;
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, slot)) => *slot = value,
            None => self.entries.push((key.into(), value)),
        }
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, value)| value)
    }

    /// The value of `key`, if it is text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetadataValue::as_str)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<MetadataValue> {
        let at = self.entries.iter().position(|(k, _)| &**k == key)?;
        Some(self.entries.remove(at).1)
    }

    /// Every entry, in the order they were set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(key, value)| (&**key, value))
    }

    /// `other`'s entries over this one's.
    pub fn merged(&self, other: &Metadata) -> Metadata {
        let mut merged = self.clone();
        for (key, value) in &other.entries {
            match merged.entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, slot)) => *slot = value.clone(),
                None => merged.entries.push((Arc::clone(key), value.clone())),
            }
        }
        merged
    }

    /// Whether the entries fit the bounds: at most [`MAX_ENTRIES`], and
    /// [`MAX_METADATA_LEN`] bytes encoded; if not, which bound they break.
    pub fn check(&self) -> Result<usize, MetadataError> {
        if self.entries.len() > MAX_ENTRIES {
            return Err(MetadataError(format!(
                "{} metadata entries exceed the limit of {MAX_ENTRIES}",
                self.entries.len()
            )));
        }
        let len = self.encoded_len();
        if len > MAX_METADATA_LEN {
            return Err(MetadataError(format!(
                "metadata of {len} bytes exceeds the limit of {MAX_METADATA_LEN} bytes"
            )));
        }
        Ok(len)
    }

    /// Appends the wire form to `out`, or says which bound it breaks.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), MetadataError> {
        let len = self.check()?;
        out.put_u16_le(u16::try_from(len).unwrap_or(u16::MAX));
        for (key, value) in &self.entries {
            out.put_u8(u8::try_from(key.len()).unwrap_or(u8::MAX));
            out.put_slice(key.as_bytes());
            let (kind, bytes) = match value {
                MetadataValue::Text(text) => (0, text.as_bytes()),
                MetadataValue::Binary(bytes) => (1, &bytes[..]),
            };
            out.put_u8(kind);
            out.put_u16_le(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
            out.put_slice(bytes);
        }
        Ok(())
    }

    /// Bytes the entries take on the wire (after the `u16` length).
    fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(key, value)| 1 + key.len() + 1 + 2 + value.as_bytes().len())
            .sum()
    }

    /// Reads the entries of a metadata block (without its `u16` length).
    /// A block that breaks the bounds or the layout is refused, saying how.
    pub fn decode(mut block: Bytes) -> Result<Metadata, MetadataError> {
        if block.len() > MAX_METADATA_LEN {
            return Err(MetadataError(format!(
                "metadata of {} bytes exceeds the server's limit of {MAX_METADATA_LEN} bytes",
                block.len()
            )));
        }
        let broken = |what: &str| MetadataError(format!("the metadata is malformed: {what}"));
        let mut entries: Vec<(Arc<str>, MetadataValue)> = Vec::new();
        while block.has_remaining() {
            if entries.len() == MAX_ENTRIES {
                return Err(MetadataError(format!(
                    "more than {MAX_ENTRIES} metadata entries, the server's limit"
                )));
            }
            let key_len = usize::from(block.get_u8());
            if block.remaining() < key_len + 3 {
                return Err(broken("an entry runs past the end"));
            }
            let key = block.split_to(key_len);
            let key = std::str::from_utf8(&key).map_err(|_| broken("a key is not UTF-8"))?;
            check_key(key)?;
            let kind = block.get_u8();
            let len = usize::from(block.get_u16_le());
            if block.remaining() < len {
                return Err(broken("a value runs past the end"));
            }
            let value = block.split_to(len);
            let value = match kind {
                0 => MetadataValue::Text(
                    std::str::from_utf8(&value)
                        .map_err(|_| broken("a text value is not UTF-8"))?
                        .into(),
                ),
                1 => MetadataValue::Binary(value),
                _ => return Err(broken("a value of unknown kind")),
            };
            // A key sent twice keeps its last value, as for HTTP headers, so
            // a check and a use never read different copies.
            match entries.iter_mut().find(|(k, _)| &**k == key) {
                Some((_, slot)) => *slot = value,
                None => entries.push((Arc::from(key), value)),
            }
        }
        Ok(Metadata { entries })
    }
}

/// Whether `key` may be a metadata key.
pub fn check_key(key: &str) -> Result<(), MetadataError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(MetadataError(format!(
            "the metadata key {key:?} must be 1 to {MAX_KEY_LEN} bytes long"
        )));
    }
    let allowed = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.');
    if !key.bytes().all(allowed) {
        return Err(MetadataError(format!(
            "the metadata key {key:?} may hold only lowercase ASCII letters, digits, `-`, `_` and `.` (as HTTP header names, lowercased)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_refuses_what_breaks_its_bounds() {
        let mut metadata = Metadata::new();
        metadata.insert("authorization", "Bearer abc").unwrap();
        metadata.insert("blob", vec![0u8, 255]).unwrap();
        metadata.insert("authorization", "Bearer xyz").unwrap();
        assert_eq!(metadata.len(), 2);
        let mut out = BytesMut::new();
        metadata.encode(&mut out).unwrap();
        let mut wire = out.freeze();
        let len = usize::from(wire.get_u16_le());
        assert_eq!(len, wire.len());
        let back = Metadata::decode(wire).unwrap();
        assert_eq!(back, metadata);
        assert_eq!(back.get_str("authorization"), Some("Bearer xyz"));
        assert_eq!(back.get("blob").unwrap().as_bytes(), &[0, 255]);
        assert!(!format!("{back:?}").contains("xyz"), "values stay out of logs");

        assert!(
            metadata
                .insert("Authorization", "x")
                .unwrap_err()
                .0
                .contains("lowercase")
        );
        assert!(metadata.insert("", "x").is_err());
        let mut big = Metadata::new();
        big.insert("blob", vec![0u8; MAX_METADATA_LEN]).unwrap();
        let err = big.encode(&mut BytesMut::new()).unwrap_err();
        assert!(err.0.contains("8192 bytes"), "{err}");
        let mut many = Metadata::new();
        for i in 0..=MAX_ENTRIES {
            many.insert(&format!("k{i}"), "v").unwrap();
        }
        assert!(
            many.encode(&mut BytesMut::new())
                .unwrap_err()
                .0
                .contains("entries")
        );
    }

    #[test]
    fn malformed_blocks_are_refused_without_panicking() {
        for block in [
            &[5u8][..],
            &[1, b'a', 0, 9, 0],
            &[1, b'a', 7, 0, 0],
            &[1, b'A', 0, 0, 0],
            &[1, b'a', 0, 1, 0, 0xff],
        ] {
            assert!(
                Metadata::decode(Bytes::copy_from_slice(block)).is_err(),
                "{block:?}"
            );
        }
        assert!(Metadata::decode(Bytes::new()).unwrap().is_empty());
    }
}
