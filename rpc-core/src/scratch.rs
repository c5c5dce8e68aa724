//! The block of memory each thread encodes short messages in (requests,
//! answers, stream items), so that encoding one costs no allocation of its
//! own.
//!
//! A message is encoded at the block's end and split off as [`Bytes`] that
//! share the block, or copied out where it lies and left for the next
//! message to overwrite. Most split-off bytes live only until a
//! connection's outbox has copied them, so by the time the block is full
//! every message in it is gone, and the block is reused from its start; a
//! block some message still holds is left to that message, and the thread
//! takes a new one.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};

/// The size of a thread's block.
const BLOCK_LEN: usize = 8 * 1024;

/// Messages longer than this keep the memory they were encoded in as their
/// own, and the thread starts a new block: a long-lived large message must
/// not pin a block that keeps growing.
const SHARED_UP_TO: usize = BLOCK_LEN / 4;

thread_local! {
    /// The thread's block; `None` while lent.
    static BLOCK: Cell<Option<BytesMut>> = Cell::new(Some(BytesMut::new()));
}

/// What `encode` appends to an empty buffer, as bytes of their own: in the
/// thread's block when the thread has one to lend.
pub(crate) fn encode<E>(encode: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<Bytes, E> {
    let mut block = Block::lend();
    encode(block.buf())?;
    Ok(block.split())
}

/// The thread's block, lent out of it for the length of one message's
/// encoding, empty; given back when dropped, with whatever is left in it
/// for the next message to overwrite.
///
/// The encoding runs the user's `Serialize` code. Whatever that does, it
/// cannot break the block: an encoding started inside it finds no block to
/// lend and gets a buffer of its own (which this one, given back later,
/// replaces), and a panic gives back what it left, for the next lend to
/// clear (or let go, if it grew).
pub(crate) struct Block {
    /// Always there until the block is given back: an `Option` so that
    /// giving it back moves it out, with no empty buffer made and dropped
    /// in its place (14 instructions a call fewer, under callgrind).
    buf: Option<BytesMut>,
}

impl Block {
    /// Lends the thread's block; if it is lent already (an encoding inside
    /// another), or the thread is being torn down, an empty buffer that
    /// grows to the message.
    #[inline]
    pub(crate) fn lend() -> Block {
        let Some(mut buf) = BLOCK.try_with(Cell::take).ok().flatten() else {
            return Block {
                buf: Some(BytesMut::new()),
            };
        };
        // Whatever the last message, read where it lay or split off
        // halfway through a failed encoding, left behind.
        buf.clear();
        if buf.capacity() < SHARED_UP_TO {
            // Reuses the block from its start if no message holds it any
            // more.
            buf.reserve(BLOCK_LEN);
        }
        if buf.capacity() > BLOCK_LEN {
            // Grown by a message that was not split off: let go, or every
            // short message after it would pin it.
            buf = BytesMut::with_capacity(BLOCK_LEN);
        }
        Block { buf: Some(buf) }
    }

    /// The message being encoded: all of the block's bytes.
    #[inline]
    pub(crate) fn buf(&mut self) -> &mut BytesMut {
        self.buf.get_or_insert_with(BytesMut::new)
    }

    /// The message, where it lies.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }

    /// Splits the message off, as bytes of its own.
    pub(crate) fn split(&mut self) -> Bytes {
        let buf = self.buf();
        let message = buf.split().freeze();
        if message.len() > SHARED_UP_TO {
            // Its memory is its own.
            *buf = BytesMut::new();
        }
        message
    }
}

impl Drop for Block {
    #[inline]
    fn drop(&mut self) {
        // A thread being torn down lets it go.
        let _ = BLOCK.try_with(|block| block.set(self.buf.take()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: &[u8]) -> Bytes {
        encode(|buf| {
            buf.extend_from_slice(bytes);
            Ok::<_, ()>(())
        })
        .unwrap()
    }

    #[test]
    fn short_messages_share_a_block_that_is_reused_once_they_are_gone() {
        let first = message(b"first");
        let second = message(b"second");
        assert_eq!((&first[..], &second[..]), (&b"first"[..], &b"second"[..]));
        // Side by side in one block.
        assert_eq!(second.as_ptr(), first.as_ptr().wrapping_add(5));
        let start = first.as_ptr();
        // Fill the block with messages that are gone at once: the next one
        // finds too little room left, and the block free again.
        drop((first, second));
        for _ in 0..3 {
            drop(message(&[0; SHARED_UP_TO]));
        }
        let again = message(&[1; SHARED_UP_TO]);
        assert_eq!(again.as_ptr(), start, "the block was reused from its start");
    }

    #[test]
    fn a_message_read_where_it_lies_leaves_its_room_to_the_next() {
        let start = {
            let mut block = Block::lend();
            block.buf().extend_from_slice(b"copied out");
            assert_eq!(block.bytes(), b"copied out");
            block.bytes().as_ptr()
        };
        let next = message(b"split off");
        assert_eq!(&next[..], b"split off");
        assert_eq!(next.as_ptr(), start, "encoded over the message read in place");
    }

    #[test]
    fn a_block_a_message_still_holds_is_left_to_it() {
        let mut held = Vec::new();
        for fill in 0..4u8 {
            held.push(message(&[fill; SHARED_UP_TO]));
        }
        let block = held[0].as_ptr() as usize..held[0].as_ptr() as usize + BLOCK_LEN;
        let next = message(&[9; SHARED_UP_TO]);
        assert!(!block.contains(&(next.as_ptr() as usize)), "a new block");
        for (fill, message) in (0..4u8).zip(&held) {
            assert!(message.iter().all(|byte| *byte == fill), "untouched");
        }
    }

    #[test]
    fn a_long_message_keeps_its_memory_and_the_thread_starts_a_new_block() {
        let long = message(&[7; BLOCK_LEN * 4]);
        assert_eq!(long.len(), BLOCK_LEN * 4);
        let short = message(b"short");
        let end = long.as_ptr().wrapping_add(long.len());
        assert!(
            !std::ptr::eq(short.as_ptr(), end),
            "not appended to the long one's memory"
        );
    }

    #[test]
    fn an_encoding_inside_an_encoding_gets_its_own_buffer() {
        let mut inner_at = None;
        let outer = encode(|buf| {
            buf.extend_from_slice(b"outer ");
            let inner = message(b"inner");
            inner_at = Some(inner.as_ptr());
            buf.extend_from_slice(&inner);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(&outer[..], b"outer inner");
        let inner_at = inner_at.unwrap();
        let block = outer.as_ptr() as usize..outer.as_ptr() as usize + BLOCK_LEN;
        assert!(!block.contains(&(inner_at as usize)), "not in the lent block");
        // The outer's block went back to the thread, not the inner's buffer.
        let next = message(b"next");
        assert_eq!(next.as_ptr(), outer.as_ptr().wrapping_add(outer.len()));
    }

    #[test]
    fn a_failed_or_panicking_encoding_leaves_nothing_behind() {
        let failed = encode(|buf| {
            buf.extend_from_slice(b"half");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        let panicked = std::panic::catch_unwind(|| {
            let _ = encode(|buf: &mut BytesMut| -> Result<(), ()> {
                buf.extend_from_slice(b"torn");
                panic!("in the middle");
            });
        });
        assert!(panicked.is_err());
        assert_eq!(&message(b"whole")[..], b"whole");
    }

    #[test]
    fn a_block_grown_by_a_panicking_encoding_is_let_go() {
        let panicked = std::panic::catch_unwind(|| {
            let _ = encode(|buf: &mut BytesMut| -> Result<(), ()> {
                buf.extend_from_slice(&[0; BLOCK_LEN * 64]);
                panic!("after growing the block");
            });
        });
        assert!(panicked.is_err());
        for _ in 0..100 {
            drop(message(&[1; SHARED_UP_TO]));
        }
        let kept = BLOCK.with(|block| {
            let buf = block.take();
            let capacity = buf.as_ref().map_or(0, BytesMut::capacity);
            block.set(buf);
            capacity
        });
        assert!(kept <= BLOCK_LEN, "the thread keeps {kept} bytes of block");
    }
}
