//! What the lab's integration tests share: whether they can run here.
#![allow(dead_code)]

use std::path::PathBuf;

/// True (after printing why) when the test cannot run here: it needs root, the programs the lab
/// runs (`ip`, `tc`, `nft`) and every one of `programs`. Under the test command
/// (`TOLLWAY_REQUIRE_ALL_TESTS=1`) it panics instead.
pub fn skip(test: &str, programs: &[&str]) -> bool {
    let mut all = vec!["ip", "tc", "nft"];
    all.extend_from_slice(programs);
    tollway_testkit::skip_unless(test, &all)
}

/// The tollway binary named by `TOLLWAY_BIN` (which the test command sets), or `None` after
/// printing why `test` skips; a panic instead under the test command.
pub fn daemon_binary(test: &str) -> Option<PathBuf> {
    let bin = PathBuf::from(tollway_testkit::required_env(
        test,
        "TOLLWAY_BIN",
        "the tollway binary to run the lab with the real daemon (cargo build --release -p tollway)",
    )?);
    // A path that names nothing is a mistake to report, not a reason to skip.
    assert!(
        tollway_testkit::program_exists(bin.to_str().unwrap_or("")),
        "TOLLWAY_BIN={}: not an executable file",
        bin.display()
    );
    Some(bin)
}
