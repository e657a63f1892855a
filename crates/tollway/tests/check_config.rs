//! `tollway check-config`: errors name the field; settings that load but will not do what the
//! operator meant are warnings on stderr (the exit status stays 0).

use std::process::Command;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollway.toml");
    std::fs::write(&path, text).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_tollway")).arg("check-config").arg("--config").arg(&path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_interface_and_max_price_zero_are_warned_about() {
    let (ok, stdout, stderr) = check("interfaces = [\"tw-no-such-if0\"]\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (2 warnings)"), "{stdout}");
    assert!(
        stderr.contains("warning: interfaces: \"tw-no-such-if0\" does not exist here (interfaces here: "),
        "{stderr}"
    );
    assert!(stderr.contains("lo"), "the names that exist are listed: {stderr}");
    assert!(stderr.contains("warning: market.max_price is 0"), "{stderr}");
}

#[test]
fn a_sane_config_has_no_warning_and_an_invalid_one_names_the_field() {
    let (ok, stdout, stderr) = check("interfaces = [\"lo\"]\n[market]\nmax_price = \"0.005\"\n");
    assert!(ok && !stderr.contains("warning"), "{stderr}");
    assert!(stdout.contains(": ok\n"), "{stdout}");
    let (ok, _, stderr) = check("interfaces = [\"lo\"]\n[market]\nmax_price = \"cheap\"\n");
    assert!(!ok);
    assert!(stderr.contains("market.max_price"), "{stderr}");
}
