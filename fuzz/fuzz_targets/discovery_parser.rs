//! Feeds arbitrary bytes to the discovery datagram parser and signature check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollway_core::wire::discovery;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = discovery::parse(data) {
        let _ = parsed.verify();
    }
});
