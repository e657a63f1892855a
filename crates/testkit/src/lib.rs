//! # tollway-testkit
//!
//! Whether an integration test can run on this machine, and what happens when it cannot.
//!
//! The integration tests build network namespaces, tunnels, nftables tables and tc qdiscs and
//! run real programs (iperf3, wireguard-go, ping, ...): they need root and those programs. When
//! something is missing a test *skips*: it prints `SKIPPED <test>: <why>` and returns, and
//! `cargo test` counts it as passed. On a developer's machine that is a convenience. Under the
//! project's test command (`scripts/test.sh`, which `.ci/run` runs) it would let a missing
//! install step hide behind a green run, so the test command sets
//! [`REQUIRE_ALL_TESTS`]` = 1`, and then every such skip panics with the same reason: the test
//! fails, naming what is missing.
//!
//! Each crate's `tests/common` wraps [`skip_unless`] with the programs all of its tests need;
//! each test adds the ones it uses itself.

use std::ffi::OsString;
use std::path::Path;

/// The environment variable that turns skips into failures (set to anything but `""` or `"0"`).
pub const REQUIRE_ALL_TESTS: &str = "TOLLWAY_REQUIRE_ALL_TESTS";

/// Whether a test that cannot run must fail rather than skip: [`REQUIRE_ALL_TESTS`] is set.
pub fn skips_are_failures() -> bool {
    std::env::var_os(REQUIRE_ALL_TESTS).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is an executable file: a path as given, or a name found on `PATH`.
pub fn program_exists(program: &str) -> bool {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// Why a test that needs root and every one of `programs` cannot run here, or `None` if it can.
pub fn missing(programs: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root (network namespaces, interfaces, nftables, tc)".into());
    }
    let absent: Vec<&str> = programs.iter().copied().filter(|p| !program_exists(p)).collect();
    match absent.as_slice() {
        [] => None,
        [one] => Some(format!("{one} is not installed (not found on PATH)")),
        many => Some(format!("{} are not installed (not found on PATH)", many.join(", "))),
    }
}

/// True, after printing `SKIPPED <test>: <reason>`, when `reason` says the test cannot run;
/// false when it is `None`. Panics with the same reason instead when skips are failures.
pub fn skip_because(test: &str, reason: Option<String>) -> bool {
    decide(skips_are_failures(), test, reason)
}

/// [`skip_because`]`(test, `[`missing`]`(programs))`: the usual first line of an integration
/// test, `if skip_unless("name", &["iperf3"]) { return; }`.
pub fn skip_unless(test: &str, programs: &[&str]) -> bool {
    skip_because(test, missing(programs))
}

/// The value of environment variable `name`, which `test` needs (`what` says for what); `None`,
/// after printing why the test skips, when it is unset or empty. Panics instead when skips are
/// failures.
pub fn required_env(test: &str, name: &str, what: &str) -> Option<OsString> {
    match std::env::var_os(name).filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None => {
            skip_because(test, Some(format!("set {name} to {what}")));
            None
        }
    }
}

/// The decision, with the switch passed in: skip (true), run (false), or panic.
fn decide(skips_are_failures: bool, test: &str, reason: Option<String>) -> bool {
    let Some(reason) = reason else { return false };
    if skips_are_failures {
        panic!(
            "{test} cannot run here: {reason}. {REQUIRE_ALL_TESTS} is set (as by scripts/test.sh), so a test \
             that cannot run fails instead of being skipped"
        );
    }
    eprintln!("SKIPPED {test}: {reason}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_runs_the_test_either_way() {
        assert!(!decide(false, "t", None));
        assert!(!decide(true, "t", None));
    }

    #[test]
    fn a_missing_requirement_skips_or_fails_with_the_reason() {
        assert!(decide(false, "t", Some("iperf3 is not installed".into())));
        let panic = std::panic::catch_unwind(|| decide(true, "my_test", Some("iperf3 is not installed".into())))
            .expect_err("a skip is a failure when required");
        let msg = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(msg.starts_with("my_test cannot run here: iperf3 is not installed."), "{msg}");
        assert!(msg.contains(REQUIRE_ALL_TESTS), "{msg}");
    }

    #[test]
    fn programs_are_found_on_the_path_or_by_path() {
        assert!(program_exists("sh"));
        assert!(program_exists("/bin/sh"));
        assert!(!program_exists("tollway-no-such-program"));
        assert!(!program_exists("/nonexistent/sh"));
        // A directory, or a file that is not executable, is not a program.
        assert!(!program_exists("/"));
        use std::os::unix::fs::PermissionsExt;
        let file = std::env::temp_dir().join(format!("tollway-testkit-{}", std::process::id()));
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let not_executable = program_exists(file.to_str().unwrap());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let executable = program_exists(file.to_str().unwrap());
        std::fs::remove_file(&file).unwrap();
        assert!(!not_executable && executable);
    }

    #[test]
    fn missing_names_every_absent_program() {
        if !is_root() {
            assert!(missing(&[]).unwrap().contains("needs root"));
            return;
        }
        assert_eq!(missing(&["sh"]), None);
        assert_eq!(missing(&["sh", "tw-none-1"]).unwrap(), "tw-none-1 is not installed (not found on PATH)");
        assert_eq!(
            missing(&["tw-none-1", "tw-none-2"]).unwrap(),
            "tw-none-1, tw-none-2 are not installed (not found on PATH)"
        );
    }
}
