//! Processes: identity by pid *and* start time, signals, waiting, and finding every process
//! inside a network namespace.
//!
//! A pid alone is not an identity (pids are reused), so every process the lab signals is
//! named by a [`Proc`]: its pid and the start time read from `/proc/<pid>/stat` when it was
//! recorded. A signal goes out only if the start time still matches.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A process the lab recorded: pid and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: u32,
    pub start_time: u64,
}

/// Signals the lab sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Stop,
    Cont,
    Usr1,
    Usr2,
}

impl Signal {
    pub fn raw(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Int => libc::SIGINT,
            Signal::Hup => libc::SIGHUP,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
        }
    }
}

/// The fields of `/proc/<pid>/stat` the lab uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The command name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    pub start_time: u64,
}

/// Parse `/proc/<pid>/stat` text. The command name may contain spaces and parentheses, so
/// fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    let state = rest.first()?.chars().next()?;
    let start_time = rest.get(19)?.parse().ok()?;
    Some(ProcStat { comm, state, start_time })
}

/// The `Threads:` count of `/proc/<pid>/status`.
fn threads(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl Proc {
    /// Record a running process by pid (reads its start time now).
    pub fn of_pid(pid: u32) -> Option<Proc> {
        proc_stat(pid).map(|s| Proc { pid, start_time: s.start_time })
    }

    /// True if this very process (same pid and start time) still exists and has not finished
    /// exiting. A zombie whose threads are all gone counts as dead; a zombie thread-group
    /// leader whose other threads are still exiting does not (they may still hold its files
    /// and locks).
    pub fn is_alive(&self) -> bool {
        if self.reap() {
            return false;
        }
        match proc_stat(self.pid) {
            Some(s) if s.start_time == self.start_time => match s.state {
                'X' => false,
                'Z' => threads(self.pid).is_some_and(|n| n > 1),
                _ => true,
            },
            _ => false,
        }
    }

    /// Send `signal`, after checking this is still the process recorded. Returns `Ok(false)`
    /// if it is gone (or the pid now belongs to another process), in which case nothing is sent.
    pub fn signal(&self, signal: Signal) -> std::io::Result<bool> {
        if !self.is_alive() {
            return Ok(false);
        }
        // SAFETY: kill(2) with a pid we verified just above; no memory is involved.
        if unsafe { libc::kill(self.pid as libc::pid_t, signal.raw()) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(e)
        }
    }

    /// If the process is our own child and has exited, collect it so it does not linger as a
    /// zombie; true if it was collected. Harmless for processes that are not our children.
    fn reap(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on one pid with WNOHANG; fails with ECHILD if it is not our child.
        unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) == self.pid as libc::pid_t }
    }
}

/// What [`terminate`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exited after SIGTERM (or were already gone).
    pub exited: Vec<Proc>,
    /// Needed SIGKILL.
    pub killed: Vec<Proc>,
    /// Could not be signalled or still alive after SIGKILL, with the reason.
    pub failed: Vec<(Proc, String)>,
}

/// SIGTERM every process, wait up to `grace` for all of them, SIGKILL the rest and wait up to
/// 2 s more. Processes are only signalled while their start time matches.
pub fn terminate(procs: &[Proc], grace: Duration) -> Terminated {
    let mut out = Terminated::default();
    let mut waiting = Vec::new();
    for p in procs {
        match p.signal(Signal::Term) {
            Ok(true) => waiting.push(*p),
            Ok(false) => out.exited.push(*p),
            Err(e) => out.failed.push((*p, format!("SIGTERM: {e}"))),
        }
    }
    let still = wait_gone(&waiting, grace);
    out.exited.extend(waiting.iter().filter(|p| !still.contains(p)));
    let mut killed = Vec::new();
    for p in still {
        match p.signal(Signal::Kill) {
            Ok(true) => killed.push(p),
            Ok(false) => out.exited.push(p),
            Err(e) => out.failed.push((p, format!("SIGKILL: {e}"))),
        }
    }
    let survivors = wait_gone(&killed, Duration::from_secs(2));
    for p in killed {
        if survivors.contains(&p) {
            out.failed.push((p, "still alive 2 s after SIGKILL".into()));
        } else {
            out.killed.push(p);
        }
    }
    out
}

/// Wait until none of `procs` is alive or `timeout` passes; return those still alive.
pub fn wait_gone(procs: &[Proc], timeout: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<Proc> = procs.iter().copied().filter(Proc::is_alive).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process found inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsProcess {
    pub proc: Proc,
    pub comm: String,
}

/// Every live process whose network namespace is one of `namespaces` (name → the bind-mount
/// file, e.g. `/run/netns/<name>`), by one scan of /proc comparing namespace inode numbers.
/// Namespaces whose file is missing are left out of the result.
pub fn processes_in_namespaces(namespaces: &[(String, &Path)]) -> BTreeMap<String, Vec<NsProcess>> {
    let mut wanted = BTreeMap::new();
    for (name, path) in namespaces {
        if let Ok(m) = std::fs::metadata(path) {
            wanted.insert((m.dev(), m.ino()), name.clone());
        }
    }
    let mut found: BTreeMap<String, Vec<NsProcess>> = BTreeMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(m) = std::fs::metadata(entry.path().join("ns/net")) else { continue };
        let Some(ns) = wanted.get(&(m.dev(), m.ino())) else { continue };
        let Some(stat) = proc_stat(pid) else { continue };
        if stat.state == 'Z' || stat.state == 'X' {
            continue;
        }
        let proc = Proc { pid, start_time: stat.start_time };
        found.entry(ns.clone()).or_default().push(NsProcess { proc, comm: stat.comm });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed_after_the_last_paren() {
        let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 50";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, ProcStat { comm: "my (odd) prog".into(), state: 'S', start_time: 123456 });
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = Proc::of_pid(std::process::id()).unwrap();
        assert!(me.is_alive());
        let impostor = Proc { start_time: me.start_time + 1, ..me };
        assert!(!impostor.is_alive());
        assert!(!impostor.signal(Signal::Term).unwrap(), "nothing is sent to a mismatched pid");
    }

    #[test]
    fn terminate_stops_a_child_and_kills_one_that_ignores_sigterm() {
        let mut polite = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut stubborn = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100)); // let the trap be set
        let p1 = Proc::of_pid(polite.id()).unwrap();
        let p2 = Proc::of_pid(stubborn.id()).unwrap();
        let t = terminate(&[p1, p2], Duration::from_millis(300));
        assert_eq!(t.exited, vec![p1]);
        assert_eq!(t.killed, vec![p2]);
        assert!(t.failed.is_empty());
        assert!(!p1.is_alive() && !p2.is_alive());
        // Already reaped by is_alive; these only satisfy the type's contract.
        let _ = polite.wait();
        let _ = stubborn.wait();
    }
}
