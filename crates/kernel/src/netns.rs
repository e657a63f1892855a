//! Throw-away network namespaces, for tests of this crate and others.
//!
//! A network namespace belongs to a thread, not a process: [`run_in`] runs a closure on a fresh
//! thread that first joins the namespace with `setns(CLONE_NEWNET)`. Threads spawned from there
//! inherit it, which is how an embedded boringtun's threads end up in the namespace its device
//! was created in.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;

/// True when running as root (needed to create namespaces and interfaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A uniquely named network namespace (`twk-<pid>-<n>`), deleted on drop after killing the
/// processes started in it with [`NetNs::spawn`] (and only those).
///
/// On creation it sets `net.ipv6.conf.{all,default}.accept_dad=0` and `keep_addr_on_down=1`
/// (before any interface is made or moved in: otherwise link-local sends fail for a second or
/// two and addresses vanish on link down) and brings `lo` up.
pub struct NetNs {
    name: String,
    children: Mutex<Vec<Child>>,
}

impl NetNs {
    pub fn new() -> io::Result<NetNs> {
        static N: AtomicU32 = AtomicU32::new(0);
        static CLEANED: std::sync::Once = std::sync::Once::new();
        CLEANED.call_once(|| {
            for name in remove_stale() {
                eprintln!("deleted stale network namespace {name}");
            }
        });
        let name = format!("twk-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on, dropping `ns` deletes the namespace.
        let ns = NetNs { name, children: Mutex::new(Vec::new()) };
        ns.run(|| -> io::Result<()> {
            for (key, value) in [
                ("ipv6/conf/all/accept_dad", "0"),
                ("ipv6/conf/default/accept_dad", "0"),
                ("ipv6/conf/all/keep_addr_on_down", "1"),
                ("ipv6/conf/default/keep_addr_on_down", "1"),
            ] {
                let path = format!("/proc/sys/net/{key}");
                std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
            }
            use crate::Links;
            let lo = tollway_core::IfName::new("lo").expect("valid name");
            crate::NetlinkLinks::new().set_up(&lo, None).map_err(io::Error::other)
        })??;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` on a fresh thread inside this namespace; see [`run_in`].
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        run_in(&self.name, f)
    }

    /// Run a program inside the namespace (`ip netns exec`) and wait for it. A nonzero exit
    /// status is an error carrying the command line, the status and stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run_cmd(Command::new("ip").args(["netns", "exec", &self.name, program]).args(args))
    }

    /// Like [`NetNs::exec`] but returns the output whatever the exit status.
    pub fn exec_unchecked(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        Command::new("ip").args(["netns", "exec", &self.name, program]).args(args).output()
    }

    /// Start a program inside the namespace without waiting; it is killed when the namespace
    /// is dropped (or with [`NetNs::kill`]). Returns its pid.
    pub fn spawn(&self, program: &str, args: &[&str]) -> io::Result<u32> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.children.lock().unwrap_or_else(|p| p.into_inner()).push(child);
        Ok(pid)
    }

    /// Kill a process started with [`NetNs::spawn`]; false if it is not one of ours.
    pub fn kill(&self, pid: u32) -> bool {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = children.iter().position(|c| c.id() == pid) else { return false };
        let mut child = children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        true
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("deleting network namespace {}: {e}", self.name);
        }
    }
}

/// Delete the namespaces named like ours (`twk-<pid>-<n>`) whose process no longer exists: a
/// test run killed before its guards could clean up. Returns their names.
pub fn remove_stale() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if run_cmd(Command::new("ip").args(["netns", "del", &name])).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// The pid in a name of the form `twk-<pid>-<n>`.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("twk-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Run `f` on a fresh OS thread that first joins network namespace `ns` (a name under
/// `/run/netns`), and return its result. A panic in `f` is resumed in the caller.
pub fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    thread::scope(|s| {
        let joined = s
            .spawn(move || -> io::Result<T> {
                // SAFETY: `file` is an open namespace file; setns affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(e.kind(), format!("setns({path}): {e}")));
                }
                drop(file);
                Ok(f())
            })
            .join();
        match joined {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Connect two namespaces with a veth pair, `a_if` in `a` and `b_if` in `b`, both down. The
/// ends are created directly inside the namespaces.
pub fn veth_pair(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> io::Result<()> {
    run_cmd(
        Command::new("ip")
            .args(["link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name]),
    )
    .map(|_| ())
}

/// Run a command to completion; a nonzero exit is an error naming the command line, status and
/// stderr.
pub fn run_cmd(cmd: &mut Command) -> io::Result<Output> {
    let argv = format!("{:?}", cmd);
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("{argv}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{argv}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::stale_pid;

    #[test]
    fn only_our_namespace_names_are_considered_stale() {
        assert_eq!(stale_pid("twk-123-0"), Some(123));
        assert_eq!(stale_pid("twk-123-x"), None);
        assert_eq!(stale_pid("twk-abc-1"), None);
        assert_eq!(stale_pid("twxa"), None);
        assert_eq!(stale_pid("lab-123-0"), None);
    }
}
