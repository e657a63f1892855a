//! Starting a node's daemon inside its namespace, and reading its log.

use crate::process::Proc;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to start a node's daemon: a program and its arguments, where the argument
/// [`DaemonCommand::CONFIG`] is replaced by the node's config path. It runs as
/// `ip netns exec <ns> <program> <args...>` (ip execs in place, so the pid is the program's).
///
/// The real daemon is [`DaemonCommand::tollway`]; tests can pass any long-running program
/// (for example a script that sleeps) with [`DaemonCommand::custom`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl DaemonCommand {
    /// The argument replaced by the node's config file path.
    pub const CONFIG: &'static str = "{config}";

    /// `<exe> daemon --config <config>`.
    pub fn tollway(exe: &Path) -> DaemonCommand {
        DaemonCommand { program: exe.to_owned(), args: vec!["daemon".into(), "--config".into(), Self::CONFIG.into()] }
    }

    /// Any program; `{config}` among `args` is replaced by the config path.
    pub fn custom(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<String>>) -> DaemonCommand {
        DaemonCommand { program: program.into(), args: args.into_iter().map(Into::into).collect() }
    }

    /// The full argv run for a node: `ip netns exec <ns> <program> <args>`.
    pub fn argv(&self, namespace: &str, config: &Path) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["ip".into(), "netns".into(), "exec".into(), namespace.into()];
        v.push(self.program.clone().into());
        v.extend(self.args.iter().map(|a| if a == Self::CONFIG { config.as_os_str().to_owned() } else { a.into() }));
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open the daemon log {path}: {source}")]
    Log { path: PathBuf, source: std::io::Error },
    #[error("cannot start `{argv}`: {source}")]
    Spawn { argv: String, source: std::io::Error },
    #[error("`{argv}` exited at once (pid {pid}); see {log}")]
    Vanished { argv: String, pid: u32, log: PathBuf },
}

/// Start the daemon in `namespace`: new session (setsid), stdin from /dev/null, stdout and
/// stderr appended to `log`, `RUST_LOG=info` unless the caller's environment sets it. Returns
/// the process as recorded (pid and start time). The child is not waited for; the lab reaps it
/// when it checks liveness, and once this process exits init adopts it.
pub fn spawn(cmd: &DaemonCommand, namespace: &str, config: &Path, log: &Path) -> Result<Proc, SpawnError> {
    let argv = cmd.argv(namespace, config);
    let shown = argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let log_err = |source| SpawnError::Log { path: log.to_owned(), source };
    let mut out = OpenOptions::new().create(true).append(true).mode(0o644).open(log).map_err(log_err)?;
    writeln!(out, "==== tollway-lab: starting `{shown}` at unix time {} ====", crate::state::unix_now())
        .map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]).stdin(Stdio::null()).stdout(out).stderr(err);
    if std::env::var_os("RUST_LOG").is_none() {
        c.env("RUST_LOG", "info");
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let child = c.spawn().map_err(|source| SpawnError::Spawn { argv: shown.clone(), source })?;
    let pid = child.id();
    tracing::info!(%namespace, pid, argv = %shown, "started daemon");
    // The start time does not change across exec, and a child stays readable in /proc (as a
    // zombie at worst) until reaped, so this read cannot miss.
    Proc::of_pid(pid).ok_or(SpawnError::Vanished { argv: shown, pid, log: log.to_owned() })
}

/// The last `lines` lines of a log file (reads at most the last 64 KiB). A missing or
/// unreadable file gives a one-line note instead.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let start = len.saturating_sub(64 * 1024);
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_substitutes_the_config_path() {
        let c = DaemonCommand::tollway(Path::new("/bin/tollway"));
        let argv = c.argv("tw-x-a", Path::new("/run/tollway-lab/x/a/tollway.toml"));
        let argv: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            argv,
            [
                "ip",
                "netns",
                "exec",
                "tw-x-a",
                "/bin/tollway",
                "daemon",
                "--config",
                "/run/tollway-lab/x/a/tollway.toml"
            ]
        );
        let c = DaemonCommand::custom("/bin/sleep", ["1000"]);
        assert_eq!(c.argv("n", Path::new("/c")).len(), 6);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("log");
        std::fs::write(&p, (1..=50).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
        assert_eq!(log_tail(&p, 3), "line 48\nline 49\nline 50");
        assert!(log_tail(&tmp.path().join("nope"), 3).starts_with("(cannot read"));
    }
}
