//! [`Message`]: an encoded message, in the parts it is sent from.

use std::fmt;

use bytes::{Bytes, BytesMut};

/// An encoded message (a call's request, a result): its bytes in order,
/// in one part, or in several when it carries large [`Bytes`] blobs,
/// which are sent from the memory they lie in rather than copied into
/// the message.
///
/// A message is what goes on the wire between a frame's header and the
/// next frame: how it is cut into parts never shows there.
///
/// ```
/// use bytes::Bytes;
/// use rpc_core::codec::Message;
///
/// let message = Message::from(Bytes::from_static(b"encoded"));
/// assert_eq!(message.len(), 7);
/// assert_eq!(message.parts().len(), 1);
/// assert_eq!(message.to_bytes(), Bytes::from_static(b"encoded"));
/// ```
///
/// [`Bytes`]: crate::blob::Bytes
#[derive(Clone)]
pub struct Message(Parts);

/// At least two parts, or one: a message of one part (most of them) costs
/// no allocation for its list, and is no larger than its bytes.
#[derive(Clone)]
enum Parts {
    One(Bytes),
    Many(Box<[Bytes]>),
}

impl Message {
    /// An empty message.
    pub const fn new() -> Message {
        Message(Parts::One(Bytes::new()))
    }

    /// `encoded`, with `blobs` (each an offset in it and the bytes that go
    /// there, in order) put in their places; `None` if they do not fit it
    /// (an offset past its end, or before the one before).
    pub(crate) fn spliced(encoded: Bytes, blobs: Vec<(usize, Bytes)>) -> Option<Message> {
        if blobs.is_empty() {
            return Some(Message(Parts::One(encoded)));
        }
        let mut parts = Vec::with_capacity(blobs.len() * 2 + 1);
        let mut from = 0;
        for (at, blob) in blobs {
            if at < from || at > encoded.len() {
                return None;
            }
            if at > from {
                parts.push(encoded.slice(from..at));
            }
            parts.push(blob);
            from = at;
        }
        if encoded.len() > from {
            parts.push(encoded.slice(from..));
        }
        Some(Message(Parts::Many(parts.into_boxed_slice())))
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        match &self.0 {
            Parts::One(bytes) => bytes.len(),
            Parts::Many(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    /// Whether the message has no bytes.
    pub fn is_empty(&self) -> bool {
        self.parts().iter().all(Bytes::is_empty)
    }

    /// The message's parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        match &self.0 {
            Parts::One(bytes) => std::slice::from_ref(bytes),
            Parts::Many(parts) => parts,
        }
    }

    /// The message in one piece: its bytes if it has one part, else a copy
    /// of its parts, joined.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Parts::One(bytes) => bytes.clone(),
            Parts::Many(parts) => {
                let mut joined = BytesMut::with_capacity(self.len());
                for part in parts {
                    joined.extend_from_slice(part);
                }
                joined.freeze()
            }
        }
    }
}

impl Default for Message {
    fn default() -> Message {
        Message::new()
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Message {
        Message(Parts::One(bytes))
    }
}

/// Messages are equal when their bytes are, however they are cut.
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        fn bytes(message: &Message) -> impl Iterator<Item = &u8> {
            message.parts().iter().flat_map(|part| part.iter())
        }
        self.len() == other.len() && bytes(self).eq(bytes(other))
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("len", &self.len())
            .field("parts", &self.parts().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_go_in_their_places_and_empty_parts_are_left_out() {
        let encoded = Bytes::from_static(b"ab");
        let blob = |data: &'static [u8]| Bytes::from_static(data);
        // Before the first byte, between two, and after the last.
        let message = Message::spliced(
            encoded.clone(),
            vec![
                (0, blob(b"<0>")),
                (1, blob(b"<1>")),
                (1, blob(b"<1'>")),
                (2, blob(b"<2>")),
            ],
        )
        .unwrap();
        assert_eq!(message.to_bytes(), Bytes::from_static(b"<0>a<1><1'>b<2>"));
        assert_eq!(message.len(), 15);
        assert!(message.parts().iter().all(|part| !part.is_empty()));
        assert_eq!(message.parts().len(), 6);
        // Blobs that do not fit are refused, not sliced out of bounds.
        assert!(Message::spliced(encoded.clone(), vec![(3, blob(b"x"))]).is_none());
        assert!(Message::spliced(encoded, vec![(1, blob(b"x")), (0, blob(b"y"))]).is_none());
    }

    #[test]
    fn a_message_without_blobs_is_its_bytes() {
        let encoded = Bytes::from_static(b"whole");
        let message = Message::spliced(encoded.clone(), Vec::new()).unwrap();
        assert_eq!(message.parts(), std::slice::from_ref(&encoded));
        assert_eq!(message.to_bytes().as_ptr(), encoded.as_ptr(), "not copied");
        assert!(Message::new().is_empty());
        assert_eq!(std::mem::size_of::<Message>(), std::mem::size_of::<Bytes>());
    }
}
