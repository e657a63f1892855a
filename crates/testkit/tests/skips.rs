//! The switch itself, end to end: this test binary runs one of its own tests as a child
//! process, a test that needs a program no machine has, once with `TOLLWAY_REQUIRE_ALL_TESTS`
//! set (it must fail, naming the program) and once without (it must skip and pass).

use std::process::{Command, Output};
use tollway_testkit::{skip_unless, REQUIRE_ALL_TESTS};

/// Set in the child: only there does the probe below try to run.
const CHILD: &str = "TOLLWAY_TESTKIT_CHILD";
const PROBE: &str = "probe_needs_a_program_that_does_not_exist";
const ABSENT: &str = "tollway-no-such-program";

/// Runs only as the child of the tests below (it returns at once otherwise).
#[test]
fn probe_needs_a_program_that_does_not_exist() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    if skip_unless(PROBE, &["sh", ABSENT]) {
        return;
    }
    panic!("{ABSENT} was found, so the probe cannot test skipping");
}

fn run_probe(require: Option<&str>) -> Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", PROBE, "--nocapture", "--test-threads=1"]).env(CHILD, "1").env_remove(REQUIRE_ALL_TESTS);
    if let Some(v) = require {
        c.env(REQUIRE_ALL_TESTS, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// What the probe cannot run without: the program, or root when not root.
fn reason() -> &'static str {
    if tollway_testkit::is_root() {
        "tollway-no-such-program is not installed"
    } else {
        "needs root"
    }
}

#[test]
fn a_skip_is_a_failure_when_the_test_command_requires_all_tests() {
    let out = run_probe(Some("1"));
    let text = text(&out);
    assert!(!out.status.success(), "the probe must fail:\n{text}");
    assert!(text.contains(&format!("{PROBE} cannot run here: {}", reason())), "{text}");
    assert!(text.contains(REQUIRE_ALL_TESTS), "{text}");
    assert!(text.contains("1 failed"), "{text}");
}

#[test]
fn a_skip_passes_with_its_reason_printed_otherwise() {
    for require in [None, Some(""), Some("0")] {
        let out = run_probe(require);
        let text = text(&out);
        assert!(out.status.success(), "{REQUIRE_ALL_TESTS}={require:?}: the probe must skip and pass:\n{text}");
        assert!(text.contains(&format!("SKIPPED {PROBE}: {}", reason())), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }
}
