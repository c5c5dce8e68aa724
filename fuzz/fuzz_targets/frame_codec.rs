//! The frame codec and every pure parser of network bytes, on arbitrary
//! input split at arbitrary points. Any panic, or an allocation over the
//! limit, is a crash.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_core::error::WireError;
use rpc_core::frame::{PREFACE_LEN, Preface, RequestHead, parse_goodbye};
use rpc_transport::codec::FrameCodec;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, stream)) = data.split_first() else {
        return;
    };

    if let Some(preface) = stream.first_chunk::<PREFACE_LEN>() {
        let _ = Preface::parse(preface);
    }

    // Feed the stream in chunks whose sizes come from the seed.
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::new();
    let chunk = usize::from(split_seed % 31) + 1;
    for part in stream.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let payload = frame.payload().clone();
                    let _ = RequestHead::decode(payload.clone());
                    let _ = WireError::decode(&payload);
                    let _ = parse_goodbye(&payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
    let _ = RequestHead::decode(Bytes::copy_from_slice(stream));
});
