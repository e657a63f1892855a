//! Running `ip`, `tc` and `nft`: argv logged, failures carry argv, exit status and stderr, and
//! output read back as JSON where the tool offers it.

use serde::de::DeserializeOwned;
use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{argv}`: {source}")]
    Spawn { argv: String, source: std::io::Error },
    #[error("`{argv}` failed ({status}): {stderr}{}", input_note(.input))]
    Failed { argv: String, status: ExitStatus, stderr: String, input: Option<String> },
    #[error("`{argv}` printed output that is not the JSON expected: {detail}")]
    BadJson { argv: String, detail: String },
}

fn input_note(input: &Option<String>) -> String {
    match input {
        Some(i) => format!("\n  input was:\n    {}", i.trim_end().replace('\n', "\n    ")),
        None => String::new(),
    }
}

/// Run `argv`, optionally feeding `input` on stdin; return stdout.
pub fn run(argv: &[&str], input: Option<&str>) -> Result<String, CommandError> {
    let shown = argv.join(" ");
    tracing::debug!(argv = %shown, input = input.unwrap_or(""), "running");
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| CommandError::Spawn { argv: shown.clone(), source })?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A tool that exits early closes the pipe; its exit status then says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| CommandError::Spawn { argv: shown.clone(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        tracing::warn!(argv = %shown, status = %out.status, %stderr, "command failed");
        return Err(CommandError::Failed { argv: shown, status: out.status, stderr, input: input.map(str::to_owned) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `argv` (a `-j` invocation) and parse its stdout as JSON. Empty output counts as `[]`
/// (some `ip -j` commands print nothing when there is nothing to list).
pub fn run_json<T: DeserializeOwned>(argv: &[&str]) -> Result<T, CommandError> {
    let out = run(argv, None)?;
    let text = if out.trim().is_empty() { "[]" } else { out.trim() };
    serde_json::from_str(text).map_err(|e| CommandError::BadJson { argv: argv.join(" "), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_argv_status_and_stderr() {
        let e = run(&["sh", "-c", "echo oops >&2; exit 3"], None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`sh -c echo oops >&2; exit 3` failed"), "{msg}");
        assert!(msg.contains("exit status: 3") && msg.contains("oops"), "{msg}");
        let e = run(&["sh", "-c", "cat >/dev/null; exit 1"], Some("line1\nline2\n")).unwrap_err();
        assert!(e.to_string().contains("input was:\n    line1\n    line2"), "{e}");
        let e = run(&["/nonexistent/tool"], None).unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }));
    }

    #[test]
    fn json_output_is_parsed() {
        let v: Vec<u32> = run_json(&["echo", "[1,2]"]).unwrap();
        assert_eq!(v, vec![1, 2]);
        let v: Vec<u32> = run_json(&["true"]).unwrap();
        assert!(v.is_empty());
        assert!(matches!(run_json::<Vec<u32>>(&["echo", "nope"]), Err(CommandError::BadJson { .. })));
        assert_eq!(run(&["cat"], Some("hi")).unwrap(), "hi");
    }
}
