//! The block of memory each thread encodes short messages in (requests,
//! answers, stream items), so that encoding one costs no allocation of its
//! own.
//!
//! A message is encoded at the block's end and split off as [`Bytes`] that
//! share the block. Most such bytes live only until a connection's outbox
//! has copied them, so by the time the block is full every message in it
//! is gone, and the block is reused from its start; a block some message
//! still holds is left to that message, and the thread takes a new one.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// The size of a thread's block.
const BLOCK_LEN: usize = 8 * 1024;

/// Messages longer than this keep the memory they were encoded in as their
/// own, and the thread starts a new block: a long-lived large message must
/// not pin a block that keeps growing.
const SHARED_UP_TO: usize = BLOCK_LEN / 4;

thread_local! {
    static BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// What `encode` appends to an empty buffer, as bytes of their own: in the
/// thread's block when the thread has one to lend.
///
/// The block is lent for the length of `encode`, which runs the user's
/// `Serialize` code. Whatever that does, it cannot break the block: an
/// encoding started inside it finds the block lent and gets a buffer of
/// its own, and a panic in it leaves bytes the next use clears.
pub(crate) fn encode<E>(encode: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<Bytes, E> {
    let mut encode = Some(encode);
    let lent = BLOCK.try_with(|block| {
        let mut block = block.try_borrow_mut().ok()?;
        let encode = encode.take()?;
        Some(encode_in(&mut block, encode))
    });
    match (lent, encode) {
        (Ok(Some(encoded)), _) => encoded,
        // Lent already, or the thread is being torn down.
        (_, Some(encode)) => {
            let mut own = BytesMut::new();
            encode(&mut own).map(|()| own.freeze())
        }
        (_, None) => unreachable!("`encode` runs only where it is taken"),
    }
}

fn encode_in<E>(
    block: &mut BytesMut,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    // Whatever a panicking encoding left behind.
    block.clear();
    if block.capacity() < SHARED_UP_TO {
        // Reuses the block from its start if no message holds it any more.
        block.reserve(BLOCK_LEN);
    }
    if block.capacity() > BLOCK_LEN {
        // Grown by an encoding that panicked before it could be split off:
        // left to go, or every short message after it would pin it.
        *block = BytesMut::with_capacity(BLOCK_LEN);
    }
    let encoded = encode(block);
    let message = block.split().freeze();
    if message.len() > SHARED_UP_TO {
        *block = BytesMut::new();
    }
    encoded.map(|()| message)
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
        let outer = encode(|buf| {
            buf.extend_from_slice(b"outer ");
            let inner = message(b"inner");
            buf.extend_from_slice(&inner);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(&outer[..], b"outer inner");
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
        let kept = BLOCK.with(|block| block.borrow().capacity());
        assert!(kept <= BLOCK_LEN, "the thread keeps {kept} bytes of block");
    }
}
