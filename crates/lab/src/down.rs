//! `lab down`: stop the lab's daemons, then anything else inside its namespaces (nodes' and
//! hosts'), delete the namespaces (and with them every veth), remove stale userspace-WireGuard
//! sockets of its nodes, and delete its state directory. Every step runs even if an earlier one failed; failures are
//! collected, and the state directory is kept if any occurred so `lab down` can be re-run.

use crate::error::{DownError, LoadError};
use crate::lab::{recorded_proc, remove_stale_socket, Lab, STOP_GRACE};
use crate::names::{LabName, NodeName};
use crate::netns;
use crate::process::{self, NsProcess, Proc};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where userspace WireGuard implementations put their control sockets (host-wide).
pub const WIREGUARD_SOCKET_DIR: &str = "/var/run/wireguard";
/// How long other processes found in the lab's namespaces get after SIGTERM.
pub const OTHERS_GRACE: Duration = Duration::from_secs(2);

/// What `lab down` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    /// Daemons stopped: node, pid, and whether SIGKILL was needed.
    pub daemons: Vec<(NodeName, u32, bool)>,
    /// Other processes stopped inside the lab's namespaces: namespace, pid, command name.
    pub others: Vec<(String, u32, String)>,
    pub namespaces_deleted: Vec<String>,
    pub sockets_removed: Vec<PathBuf>,
    /// False when there was no state directory to begin with.
    pub state_removed: bool,
    pub elapsed: Duration,
}

impl Lab {
    /// Take the lab `name` under `root` down. Succeeds with an empty report if it does not
    /// exist, so it can be run any number of times.
    pub fn down_by_name(root: &Path, name: &LabName) -> Result<DownReport, DownError> {
        match Lab::load_in(root, name) {
            Ok(lab) => lab.down(),
            Err(LoadError::NotFound { dir, .. }) => {
                // A directory without state.json: a `lab up` that stopped before building.
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| DownError {
                        lab: name.clone(),
                        problems: vec![format!("cannot remove {}: {e}", dir.display())],
                    })?;
                }
                Ok(DownReport::default())
            }
            Err(e) => Err(DownError { lab: name.clone(), problems: vec![e.to_string()] }),
        }
    }

    /// Take this lab down. Only touches what its state records: its daemons (by pid and start
    /// time), processes inside its namespaces, its namespaces, sockets named after its nodes'
    /// ids, its state directory.
    pub fn down(mut self) -> Result<DownReport, DownError> {
        let started = Instant::now();
        let lab = self.state.name.clone();
        let mut report = DownReport::default();
        let mut problems = Vec::new();

        // Learn node ids still unknown, for the socket clean-up below.
        if self.state.nodes.iter().any(|n| n.node_id.is_none() && recorded_proc(n).is_some_and(|p| p.is_alive())) {
            self.statuses();
        }

        // 1. The daemons.
        let daemons: Vec<(NodeName, Proc)> =
            self.state.nodes.iter().filter_map(|n| recorded_proc(n).map(|p| (n.name.clone(), p))).collect();
        let procs: Vec<Proc> = daemons.iter().map(|(_, p)| *p).filter(Proc::is_alive).collect();
        if !procs.is_empty() {
            let t = process::terminate(&procs, STOP_GRACE);
            for (node, p) in &daemons {
                let killed = t.killed.contains(p);
                if killed || t.exited.contains(p) {
                    tracing::info!(%lab, %node, pid = p.pid, killed, "stopped daemon");
                    report.daemons.push((node.clone(), p.pid, killed));
                }
            }
            for (p, why) in t.failed {
                problems.push(format!("daemon pid {}: {why}", p.pid));
            }
        }

        // 2. Anything else still inside the lab's namespaces, nodes' and hosts' (e.g. an iperf3
        //    server started with `lab exec`). The namespaces are the lab's own, so whatever runs
        //    there goes with them (gotcha 4: a process inside would keep a deleted namespace
        //    alive); each one is logged and listed in the report.
        let existing = match netns::list_namespaces() {
            Ok(all) => all,
            Err(e) => {
                problems.push(format!("cannot list namespaces: {e}"));
                Vec::new()
            }
        };
        let ours: Vec<String> = self.state.namespaces().into_iter().filter(|ns| existing.contains(ns)).collect();
        // A process may fork while being stopped: look again, a few times.
        for _ in 0..3 {
            let found = others_in(&ours);
            if found.is_empty() {
                break;
            }
            let list: Vec<String> = found.iter().map(|(ns, p)| describe(ns, p)).collect();
            tracing::info!(%lab, processes = %list.join(", "), "stopping processes still running in the lab's namespaces");
            let procs: Vec<Proc> = found.iter().map(|(_, p)| p.proc).collect();
            let t = process::terminate(&procs, OTHERS_GRACE);
            for (ns, p) in &found {
                if t.exited.contains(&p.proc) || t.killed.contains(&p.proc) {
                    report.others.push((ns.clone(), p.proc.pid, p.comm.clone()));
                }
            }
        }

        // 3. The namespaces (their veths go with them). Gotcha 4: only once nothing runs inside.
        let left = others_in(&ours);
        for (ns, p) in &left {
            problems.push(format!("{} would not stop; namespace {ns} is kept", describe(ns, p)));
        }
        let deletable: Vec<String> = ours.iter().filter(|ns| !left.iter().any(|(n, _)| n == *ns)).cloned().collect();
        let ns_problems = netns::delete_namespaces(&deletable);
        report.namespaces_deleted =
            deletable.iter().filter(|ns| !ns_problems.iter().any(|p| p.contains(ns.as_str()))).cloned().collect();
        problems.extend(ns_problems);

        // 4. Stale userspace-WireGuard control sockets of the lab's nodes.
        let prefixes: Vec<String> =
            self.state.nodes.iter().filter_map(|n| n.node_id.as_deref()).filter_map(tunnel_prefix).collect();
        let (removed, socket_problems) = remove_wireguard_sockets(Path::new(WIREGUARD_SOCKET_DIR), &prefixes);
        report.sockets_removed = removed;
        problems.extend(socket_problems);

        // 5. The state directory, unless something is left to retry.
        if problems.is_empty() {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => report.state_removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("cannot remove {}: {e}", self.dir.display())),
            }
        }
        report.elapsed = started.elapsed();
        if problems.is_empty() {
            tracing::info!(%lab, ms = report.elapsed.as_millis() as u64, "lab is down");
            Ok(report)
        } else {
            Err(DownError { lab, problems })
        }
    }
}

fn describe(ns: &str, p: &NsProcess) -> String {
    format!("{} (pid {}) in {ns}", p.comm, p.proc.pid)
}

fn others_in(namespaces: &[String]) -> Vec<(String, NsProcess)> {
    let paths: Vec<(String, PathBuf)> = namespaces.iter().map(|n| (n.clone(), netns::namespace_path(n))).collect();
    let refs: Vec<(String, &Path)> = paths.iter().map(|(n, p)| (n.clone(), p.as_path())).collect();
    process::processes_in_namespaces(&refs)
        .into_iter()
        .flat_map(|(ns, ps)| ps.into_iter().map(move |p| (ns.clone(), p)))
        .collect()
}

/// The tunnel interface prefix of a node: `tw` and the first 6 hex digits of its id.
pub fn tunnel_prefix(node_id: &str) -> Option<String> {
    let hex6 = node_id.get(..6)?;
    hex6.bytes().all(|c| c.is_ascii_hexdigit()).then(|| format!("tw{}", hex6.to_ascii_lowercase()))
}

/// Remove `<dir>/<ifname>.sock` for every ifname starting with one of `prefixes`, if nothing
/// listens on it any more. Returns what was removed and the problems (a socket still answering).
pub fn remove_wireguard_sockets(dir: &Path, prefixes: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let (mut removed, mut problems) = (Vec::new(), Vec::new());
    if prefixes.is_empty() {
        return (removed, problems);
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return (removed, problems) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ifname) = name.strip_suffix(".sock") else { continue };
        if !prefixes.iter().any(|p| ifname.starts_with(p.as_str())) {
            continue;
        }
        let path = e.path();
        if remove_stale_socket(&path) {
            tracing::info!(path = %path.display(), "removed stale WireGuard control socket");
            removed.push(path);
        } else if path.exists() {
            problems.push(format!("{} is still in use by a running process; not removed", path.display()));
        }
    }
    (removed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_prefixes() {
        assert_eq!(tunnel_prefix(&"ab12cd".repeat(10)).as_deref(), Some("twab12cd"));
        assert_eq!(tunnel_prefix("xyz123"), None);
        assert_eq!(tunnel_prefix("ab"), None);
    }

    #[test]
    fn only_stale_sockets_with_our_prefix_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // A stale socket: bound, then the listener dropped.
        let stale = d.join("twab12cdee0011.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        // A live one with our prefix, and a stale one belonging to someone else.
        let live = d.join("twab12cd998877.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let foreign = d.join("twffffff000000.sock");
        drop(std::os::unix::net::UnixListener::bind(&foreign).unwrap());
        let (removed, problems) = remove_wireguard_sockets(d, &["twab12cd".into()]);
        assert_eq!(removed, vec![stale.clone()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!stale.exists() && live.exists() && foreign.exists());
    }
}
