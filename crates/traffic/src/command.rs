//! Running `nft` and `tc`: argv, stdin and the outcome, logged when something fails.
//!
//! Child processes inherit the network namespace of the calling thread, so every command acts
//! where the caller is (as the netlink sockets of this crate do).

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

/// A command that could not be run or did not succeed. Carries everything needed to reproduce
/// it by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("running {}: {error}", Argv(.argv))]
    Spawn { argv: Vec<String>, error: String },
    #[error("{} exited with {}: {}", Argv(.argv), Status(.status), .stderr.trim())]
    Failed {
        argv: Vec<String>,
        /// The exit code, `None` if killed by a signal.
        status: Option<i32>,
        stderr: String,
        /// For batch input (`nft -f -`, `tc -batch -`): the line or command the tool blamed,
        /// when it said which.
        failed_input: Option<String>,
    },
}

struct Argv<'a>(&'a [String]);

impl fmt::Display for Argv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

struct Status<'a>(&'a Option<i32>);

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(c) => write!(f, "status {c}"),
            None => f.write_str("a signal"),
        }
    }
}

impl CommandError {
    /// The standard error of a failed command ("" if it could not be spawned).
    pub fn stderr(&self) -> &str {
        match self {
            CommandError::Spawn { .. } => "",
            CommandError::Failed { stderr, .. } => stderr,
        }
    }

    /// An error as a fake implementation reports it.
    pub fn injected(what: &str, detail: &str) -> CommandError {
        CommandError::Failed {
            argv: vec!["fake".into(), what.into()],
            status: Some(1),
            stderr: detail.into(),
            failed_input: None,
        }
    }
}

/// Run `program args…`, feeding `stdin` if given, and return its standard output.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, CommandError> {
    let argv: Vec<String> = std::iter::once(program).chain(args.iter().copied()).map(String::from).collect();
    let spawn_err = |e: std::io::Error| CommandError::Spawn { argv: argv.clone(), error: e.to_string() };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(input) = stdin {
        // Write from another thread so that a child filling its stdout pipe cannot deadlock us.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            // A child that exits early closes the pipe: its exit status says what went wrong.
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().map_err(spawn_err)?;
        let _ = writer.join();
        finish(argv, out, stdin)
    } else {
        let out = child.wait_with_output().map_err(spawn_err)?;
        finish(argv, out, None)
    }
}

fn finish(argv: Vec<String>, out: std::process::Output, stdin: Option<&[u8]>) -> Result<Vec<u8>, CommandError> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let failed_input = stdin.and_then(|input| blamed_line(&stderr, input));
    tracing::warn!(
        argv = %argv.join(" "),
        status = ?out.status.code(),
        stderr = %stderr.trim(),
        failed_input = failed_input.as_deref().unwrap_or(""),
        "command failed"
    );
    Err(CommandError::Failed { argv, status: out.status.code(), stderr, failed_input })
}

/// `tc -batch -` reports "Command failed -:N"; return input line N.
fn blamed_line(stderr: &str, input: &[u8]) -> Option<String> {
    let n: usize = stderr.lines().find_map(|l| l.trim().strip_prefix("Command failed -:"))?.trim().parse().ok()?;
    String::from_utf8_lossy(input).lines().nth(n.checked_sub(1)?).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successful_commands_return_stdout() {
        assert_eq!(run("cat", &[], Some(b"hello")).unwrap(), b"hello");
        assert_eq!(run("true", &[], None).unwrap(), b"");
    }

    #[test]
    fn failures_carry_argv_status_and_stderr() {
        let e = run("sh", &["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        let CommandError::Failed { argv, status, stderr, .. } = &e else { panic!("{e:?}") };
        assert_eq!(argv, &["sh", "-c", "echo oops >&2; exit 3"]);
        assert_eq!(*status, Some(3));
        assert_eq!(stderr, "oops\n");
        assert!(e.to_string().contains("status 3: oops"), "{e}");
        let e = run("/nonexistent/tool", &[], None).unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }), "{e:?}");
    }

    #[test]
    fn the_batch_line_tc_blames_is_reported() {
        let input = b"qdisc add a\nclass add b\nfilter add c\n";
        assert_eq!(blamed_line("Error: x\nCommand failed -:2\n", input).as_deref(), Some("class add b"));
        assert_eq!(blamed_line("Error: x\n", input), None);
        assert_eq!(blamed_line("Command failed -:9\n", input), None);
        let e = run("sh", &["-c", "cat >/dev/null; echo 'Command failed -:1' >&2; exit 1"], Some(b"first\nsecond"))
            .unwrap_err();
        assert!(matches!(&e, CommandError::Failed { failed_input: Some(l), .. } if l == "first"), "{e:?}");
    }
}
