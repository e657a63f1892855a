//! Feeds arbitrary bytes to the control-session framing and message decoder, in arbitrary
//! chunks, and checks that whatever decodes re-encodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollway_core::wire::control::{ControlMessage, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size, so frames are split at every kind of boundary.
    let (chunk, rest) = match data.split_first() {
        Some((c, r)) => ((*c as usize).max(1), r),
        None => return,
    };
    let mut dec = FrameDecoder::new();
    for piece in rest.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if let Ok(msg) = ControlMessage::decode(&frame) {
                        assert_eq!(ControlMessage::decode(&msg.encode()).as_ref(), Ok(&msg));
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
