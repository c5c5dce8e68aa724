//! Payload codecs: how arguments, results and stream items become bytes
//! and back, and the limits every decode runs under.
//!
//! The binary protocol's payloads are bincode 2 (serde, standard
//! configuration; `docs/PROTOCOL.md`, section 6). Whatever the codec, a
//! decode refuses values nested deeper than [`DecodeLimits::max_nesting`]
//! (a stack overflow would abort the process) and never allocates more than
//! its input could justify.

mod binary;
mod depth;
pub mod json;
mod message;
pub(crate) mod splice;

pub use binary::{LEND_FROM, decode, decode_shared, encode_into};
pub use message::Message;
#[doc(hidden)]
pub use splice::Claims;

/// How deeply a decoded value may nest by default: 128 levels, as
/// `serde_json` allows. Every struct, enum, tuple, sequence, map, option
/// and newtype is a level; a recursive type such as a linked list or a
/// tree spends one or two per node.
pub const DEFAULT_MAX_NESTING: usize = 128;

/// Limits every decode runs under.
///
/// Each level of nesting costs the decoding thread some stack: about a
/// kilobyte in a debug build, less in release. Tokio's worker threads have
/// 2 MiB of stack, so limits up to a few hundred are safe anywhere; raise
/// it further only for threads with larger stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting accepted. Default: [`DEFAULT_MAX_NESTING`].
    pub max_nesting: usize,
}

impl DecodeLimits {
    /// The default limits.
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_nesting: DEFAULT_MAX_NESTING,
    };
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits::DEFAULT
    }
}

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not spell a value of the expected type.
    #[error("{0}")]
    Invalid(String),
    /// The value decoded but bytes were left over.
    #[error("{extra} unexpected bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// The value nests deeper than the decoder allows.
    #[error("the value nests more than {limit} levels deep")]
    TooDeep {
        /// The limit it broke.
        limit: usize,
    },
}

/// Why a value could not be encoded: its `Serialize` implementation failed
/// (a map with non-string keys in a format that needs them, a custom
/// error), with what it said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// The codec a call's payloads travel in: the one its request came in, so
/// its answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2, standard configuration: the binary protocol.
    Binary,
    /// JSON (serde's JSON form of each value): JSON-RPC callers. The
    /// arguments arrive as a JSON array in the trait's order.
    Json,
}
