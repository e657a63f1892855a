//! Feeds arbitrary bytes to the parser of `nft -j` output (what the firewall reads back from the
//! kernel every second) and plans a batch against what it describes, checking that a counter
//! is never replaced (see `tollway_traffic::fuzzing::check_nft_output`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tollway_traffic::fuzzing::check_nft_output(data);
});
