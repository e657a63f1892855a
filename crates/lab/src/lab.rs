//! A running lab: load it by name, look at its nodes and links, talk to its daemons, start and
//! stop them. Building is in `up.rs`, teardown in `down.rs`.

use crate::daemon::{self, DaemonCommand};
use crate::error::{DaemonError, LinkError, LoadError, LogTail, StatusError, UnknownNode, UnknownTarget, WaitError};
use crate::names::{LabName, NodeName};
use crate::netns;
use crate::process::{self, Proc, Signal};
use crate::state::{self, HostLinkRecord, HostRecord, LabState, LinkRecord, NodeRecord, StateError, StateLock};
use crate::tunnels::LinkReport;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tollway_api::Status;

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of daemon log attached to errors.
pub const LOG_TAIL_LINES: usize = 20;

/// A lab whose state directory exists. Obtained from [`Lab::up`] or [`Lab::load`].
///
/// Methods that learn something (a daemon's pid, a node id) write it to `state.json` at once,
/// under a file lock, re-reading the file first so concurrent `tollway lab` runs do not lose
/// each other's updates.
#[derive(Debug)]
pub struct Lab {
    pub(crate) root: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) state: LabState,
    pub(crate) timings: Option<crate::up::UpTimings>,
}

/// What [`Lab::restart_daemon`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarted {
    /// The daemon stopped, if one was running.
    pub old: Option<Proc>,
    /// The daemon started.
    pub new: Proc,
    /// True if the old daemon was stopped with SIGKILL (asked for, or SIGTERM's grace ran out).
    pub needed_sigkill: bool,
}

/// One node's daemon and status, as [`Lab::statuses`] reports it.
#[derive(Debug)]
pub struct NodeReport {
    pub node: NodeName,
    /// The daemon process if it is running.
    pub daemon: Option<Proc>,
    pub status: Result<Status, StatusError>,
}

impl Lab {
    /// Load the lab `name` from the default root, `/run/tollway-lab`.
    pub fn load(name: &LabName) -> Result<Lab, LoadError> {
        Lab::load_in(Path::new(state::DEFAULT_ROOT), name)
    }

    /// Load the lab `name` whose state lives under `root`.
    pub fn load_in(root: &Path, name: &LabName) -> Result<Lab, LoadError> {
        let dir = root.join(name.as_str());
        match LabState::read(&dir) {
            Ok(state) => Ok(Lab { root: root.to_owned(), dir, state, timings: None }),
            Err(e) if e.is_not_found() => Err(LoadError::NotFound { name: name.clone(), dir }),
            Err(e) => Err(e.into()),
        }
    }

    /// The lab to act on: `name` if given, else the only lab under `root`. Fails listing the
    /// labs if there are several, or saying none runs.
    pub fn resolve_name(root: &Path, name: Option<&LabName>) -> Result<LabName, LoadError> {
        if let Some(n) = name {
            return Ok(n.clone());
        }
        let mut all = state::list_lab_dirs(root)?;
        match all.len() {
            0 => Err(LoadError::NoLab { root: root.to_owned() }),
            1 => Ok(all.remove(0)),
            _ => Err(LoadError::Ambiguous { names: all.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ") }),
        }
    }

    /// Names of every lab with a state directory under `root`.
    pub fn list(root: &Path) -> Result<Vec<LabName>, StateError> {
        state::list_lab_dirs(root)
    }

    pub fn name(&self) -> &LabName {
        &self.state.name
    }

    /// Where lab state directories live (normally `/run/tollway-lab`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<lab>/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything recorded about the lab (as last loaded or written by this value).
    pub fn state(&self) -> &LabState {
        &self.state
    }

    pub fn nodes(&self) -> &[NodeRecord] {
        &self.state.nodes
    }

    pub fn links(&self) -> &[LinkRecord] {
        &self.state.links
    }

    /// The host namespaces: the internet (if any node has an uplink), then the LAN hosts.
    pub fn hosts(&self) -> &[HostRecord] {
        &self.state.hosts
    }

    /// The veths between nodes and hosts.
    pub fn host_links(&self) -> &[HostLinkRecord] {
        &self.state.host_links
    }

    /// A host by name (`internet`, `<node>-lan`).
    pub fn host(&self, name: &str) -> Result<&HostRecord, UnknownTarget> {
        self.state.host(name).ok_or_else(|| self.unknown_target(name))
    }

    fn unknown_target(&self, name: &str) -> UnknownTarget {
        let hosts = self.state.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ");
        UnknownTarget {
            lab: self.state.name.clone(),
            name: name.to_owned(),
            nodes: self.state.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
            hosts: if hosts.is_empty() { "none".into() } else { hosts },
        }
    }

    /// How long the parts of `up` took, when this value came from [`Lab::up`].
    pub fn up_timings(&self) -> Option<crate::up::UpTimings> {
        self.timings
    }

    /// A node by name: its namespace, files, daemon pid and node id.
    pub fn node(&self, name: &str) -> Result<&NodeRecord, UnknownNode> {
        self.state.node(name).ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> UnknownNode {
        UnknownNode {
            lab: self.state.name.clone(),
            node: name.to_owned(),
            known: self.state.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        }
    }

    /// The node's daemon, if it is running (same pid and start time as recorded at launch).
    pub fn daemon(&self, node: &str) -> Result<Option<Proc>, UnknownNode> {
        Ok(recorded_proc(self.node(node)?).filter(Proc::is_alive))
    }

    /// Nodes whose daemon is running.
    pub fn running_daemons(&self) -> Vec<(NodeName, Proc)> {
        self.state
            .nodes
            .iter()
            .filter_map(|n| recorded_proc(n).filter(Proc::is_alive).map(|p| (n.name.clone(), p)))
            .collect()
    }

    /// Ask the node's daemon for its status over its API socket.
    pub fn status_of(&self, node: &str) -> Result<Status, StatusError> {
        let rec = self.node(node)?;
        if self.daemon(node)?.is_none() {
            return Err(StatusError::NotRunning { node: rec.name.clone() });
        }
        tollway_api::Client::connect(&rec.api_socket)
            .and_then(|mut c| c.status())
            .map_err(|source| StatusError::Api { node: rec.name.clone(), source })
    }

    /// Every node's daemon and status, in node order. Node ids and mesh IPs learned are
    /// recorded in state.json.
    pub fn statuses(&mut self) -> Vec<NodeReport> {
        let reports: Vec<NodeReport> = self
            .state
            .nodes
            .iter()
            .map(|n| NodeReport {
                node: n.name.clone(),
                daemon: recorded_proc(n).filter(Proc::is_alive),
                status: self.status_of(n.name.as_str()),
            })
            .collect();
        let learned: Vec<(NodeName, String, String)> = reports
            .iter()
            .filter_map(|r| r.status.as_ref().ok().map(|s| (r.node.clone(), s.node.id.clone(), s.node.mesh_ip.clone())))
            .filter(|(n, id, ip)| {
                self.state.node(n.as_str()).is_some_and(|rec| {
                    rec.node_id.as_deref() != Some(id.as_str()) || rec.mesh_ip.as_deref() != Some(ip.as_str())
                })
            })
            .collect();
        if !learned.is_empty() {
            let result = self.update(|s| {
                for (n, id, ip) in &learned {
                    if let Some(rec) = s.node_mut(n.as_str()) {
                        rec.node_id = Some(id.clone());
                        rec.mesh_ip = Some(ip.clone());
                    }
                }
            });
            if let Err(e) = result {
                tracing::warn!("cannot record node ids: {e}");
            }
        }
        reports
    }

    /// Every link as both ends see it now (asks every daemon once).
    pub fn link_reports(&mut self) -> Vec<LinkReport> {
        let reports = self.statuses();
        self.judge_links(&reports)
    }

    /// Every link as both ends see it, from statuses already fetched with [`Lab::statuses`].
    pub fn judge_links(&self, reports: &[NodeReport]) -> Vec<LinkReport> {
        let end = |name: &NodeName| {
            let r = reports.iter().find(|r| &r.node == name).expect("every link end is a node");
            let status = r.status.as_ref().map_err(|e| e.to_string());
            let id = self.state.node(name.as_str()).and_then(|n| n.node_id.clone());
            (status, id)
        };
        self.state
            .links
            .iter()
            .map(|l| {
                let (sa, ida) = end(&l.a);
                let (sb, idb) = end(&l.b);
                LinkReport::judge(
                    l,
                    (sa.as_ref().copied().map_err(String::as_str), ida.as_deref()),
                    (sb.as_ref().copied().map_err(String::as_str), idb.as_deref()),
                )
            })
            .collect()
    }

    /// Wait until every link's tunnel is up at both ends, polling every 200 ms. Fails at the
    /// timeout naming the links that are not up, with the tail of the logs of their nodes, or
    /// as soon as a daemon dies.
    pub fn wait_tunnels(&mut self, timeout: Duration) -> Result<Vec<LinkReport>, WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in &self.state.nodes {
                let Some(p) = recorded_proc(n) else { return Err(WaitError::NotStarted { node: n.name.clone() }) };
                if !p.is_alive() {
                    return Err(WaitError::DaemonDied { node: n.name.clone(), pid: p.pid, log: self.log_tail(n) });
                }
            }
            let nodes = self.statuses();
            let reports = self.judge_links(&nodes);
            if reports.iter().all(LinkReport::is_up) {
                return Ok(reports);
            }
            if Instant::now() >= deadline {
                let total = reports.len();
                let not_up: Vec<LinkReport> = reports.into_iter().filter(|r| !r.is_up()).collect();
                let mut involved: Vec<&NodeName> = not_up.iter().flat_map(|r| [&r.a, &r.b]).collect();
                involved.sort();
                involved.dedup();
                let no_status = nodes
                    .iter()
                    .filter(|r| involved.contains(&&r.node))
                    .filter_map(|r| r.status.as_ref().err().map(|e| e.to_string()))
                    .collect();
                let logs =
                    involved.iter().filter_map(|n| self.state.node(n.as_str())).map(|n| self.log_tail(n)).collect();
                return Err(WaitError::Timeout { timeout, total, not_up, no_status, logs });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of a node's daemon log.
    pub fn log_tail(&self, node: &NodeRecord) -> LogTail {
        LogTail {
            node: node.name.clone(),
            path: node.log_path.clone(),
            tail: daemon::log_tail(&node.log_path, LOG_TAIL_LINES),
        }
    }

    /// Start the node's daemon (again): refuses if it is running. Reuses the node's config and
    /// data dir, so its keys and node id stay the same. Removes a stale API socket first.
    pub fn start_daemon(&mut self, node: &str) -> Result<Proc, DaemonError> {
        Ok(self.start_daemons(&[node])?[0])
    }

    /// Start several nodes' daemons, recording them all with one state write. Stops at the
    /// first failure; daemons started before it are recorded.
    pub fn start_daemons(&mut self, nodes: &[&str]) -> Result<Vec<Proc>, DaemonError> {
        let mut started: Vec<(String, Proc)> = Vec::new();
        let mut failure = None;
        for node in nodes {
            match self.spawn_daemon(node) {
                Ok(p) => started.push((node.to_string(), p)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !started.is_empty() {
            self.update(|s| {
                for (node, proc) in &started {
                    if let Some(n) = s.node_mut(node) {
                        n.pid = Some(proc.pid);
                        n.pid_start_time = Some(proc.start_time);
                    }
                }
            })?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(started.into_iter().map(|(_, p)| p).collect()),
        }
    }

    fn spawn_daemon(&self, node: &str) -> Result<Proc, DaemonError> {
        let rec = self.node(node)?;
        if let Some(p) = recorded_proc(rec).filter(Proc::is_alive) {
            return Err(DaemonError::AlreadyRunning { node: rec.name.clone(), pid: p.pid });
        }
        remove_stale_socket(&rec.api_socket);
        daemon::spawn(&self.state.daemon, &rec.namespace, &rec.config_path, &rec.log_path)
            .map_err(|source| DaemonError::Spawn { node: rec.name.clone(), source })
    }

    /// Send `signal` to the node's daemon (only if it is still the process the lab started).
    /// For [`Signal::Kill`] and [`Signal::Term`] this waits until the process is gone (up to
    /// [`STOP_GRACE`]), so the daemon can be restarted at once with [`Lab::start_daemon`].
    pub fn kill_daemon(&mut self, node: &str, signal: Signal) -> Result<(), DaemonError> {
        let rec = self.node(node)?;
        let name = rec.name.clone();
        let proc = recorded_proc(rec).ok_or(DaemonError::NotRunning { node: name.clone() })?;
        let sent =
            proc.signal(signal).map_err(|source| DaemonError::Signal { node: name.clone(), pid: proc.pid, source })?;
        if !sent {
            return Err(DaemonError::NotRunning { node: name });
        }
        tracing::info!(lab = %self.state.name, node = %name, pid = proc.pid, ?signal, "signalled daemon");
        if matches!(signal, Signal::Kill | Signal::Term) && !process::wait_gone(&[proc], STOP_GRACE).is_empty() {
            return Err(DaemonError::StillRunning { node: name, pid: proc.pid, waited: STOP_GRACE });
        }
        Ok(())
    }

    /// Stop the node's daemon: SIGTERM, up to [`STOP_GRACE`], then SIGKILL. Not an error if it
    /// was not running.
    pub fn stop_daemon(&mut self, node: &str) -> Result<(), DaemonError> {
        let rec = self.node(node)?;
        let Some(proc) = recorded_proc(rec) else { return Ok(()) };
        let t = process::terminate(&[proc], STOP_GRACE);
        match t.failed.first() {
            Some((p, why)) => Err(DaemonError::Signal {
                node: rec.name.clone(),
                pid: p.pid,
                source: std::io::Error::other(why.clone()),
            }),
            None => Ok(()),
        }
    }

    /// A command that runs `argv` inside the namespace of a node or a host (`internet`,
    /// `<node>-lan`): `ip netns exec <ns> argv...`, ready to be spawned with whatever stdio the
    /// caller wants. For a node, `TOLLWAY_SOCKET` is set to its API socket, so `tollway status`
    /// (or any other client command) run this way talks to that node's daemon.
    pub fn command_in(&self, target: &str, argv: &[impl AsRef<std::ffi::OsStr>]) -> Result<Command, UnknownTarget> {
        let mut c = Command::new("ip");
        if let Some(rec) = self.state.node(target) {
            c.args(["netns", "exec", &rec.namespace]).args(argv).env("TOLLWAY_SOCKET", &rec.api_socket);
        } else {
            let host = self.host(target)?;
            c.args(["netns", "exec", &host.namespace]).args(argv);
        }
        Ok(c)
    }

    /// Restart a node's daemon: stop it (SIGTERM, up to [`STOP_GRACE`], then SIGKILL; or
    /// SIGKILL at once with `kill`), then start it again with the same config and data dir,
    /// recording the new pid in state.json. A daemon that was not running is just started.
    pub fn restart_daemon(&mut self, node: &str, kill: bool) -> Result<Restarted, DaemonError> {
        let old = self.daemon(node)?;
        let mut needed_sigkill = kill && old.is_some();
        if let Some(p) = old {
            if kill {
                self.kill_daemon(node, Signal::Kill)?;
            } else {
                let name = self.node(node)?.name.clone();
                let t = process::terminate(&[p], STOP_GRACE);
                if let Some((p, why)) = t.failed.first() {
                    let source = std::io::Error::other(why.clone());
                    return Err(DaemonError::Signal { node: name, pid: p.pid, source });
                }
                needed_sigkill = !t.killed.is_empty();
            }
        }
        let new = self.start_daemon(node)?;
        tracing::info!(lab = %self.state.name, node, old = ?old.map(|p| p.pid), new = new.pid, "restarted daemon");
        Ok(Restarted { old, new, needed_sigkill })
    }

    /// Take the link between `a` and `b` (two nodes, or a node and a host, in either order)
    /// down or up: both ends of the veth, administratively, checked with `ip -j` afterwards.
    /// Bringing an uplink or LAN link up puts back the default routes the kernel deleted when
    /// it went down. Recorded in state.json; `lab status` shows it.
    pub fn set_link(&mut self, a: &str, b: &str, up: bool) -> Result<(), LinkError> {
        for name in [a, b] {
            if self.state.namespace_of(name).is_none() {
                return Err(self.unknown_target(name).into());
            }
        }
        enum Which {
            Mesh(usize),
            Host(usize),
        }
        let pair = |x: &str, y: &str| (x == a && y == b) || (x == b && y == a);
        let which = match self.state.links.iter().position(|l| pair(l.a.as_str(), l.b.as_str())) {
            Some(i) => Which::Mesh(i),
            None => match self.state.host_links.iter().position(|l| pair(l.node.as_str(), &l.host)) {
                Some(i) => Which::Host(i),
                None => {
                    let links = (self.state.links.iter().map(|l| format!("{}–{}", l.a, l.b)))
                        .chain(self.state.host_links.iter().map(|l| format!("{}–{}", l.node, l.host)))
                        .collect::<Vec<_>>();
                    let links = if links.is_empty() { "none".to_owned() } else { links.join(", ") };
                    let lab = self.state.name.clone();
                    return Err(LinkError::NoSuchLink { lab, a: a.into(), b: b.into(), links });
                }
            },
        };
        let ends: [(&str, &str); 2] = match which {
            Which::Mesh(i) => {
                let l = &self.state.links[i];
                [(l.a.as_str(), &l.a_interface), (l.b.as_str(), &l.b_interface)]
            }
            Which::Host(i) => {
                let l = &self.state.host_links[i];
                [(l.node.as_str(), &l.node_interface), (&l.host, &l.host_interface)]
            }
        };
        let changes: Vec<(String, Vec<String>)> = ends
            .iter()
            .filter_map(|(name, iface)| Some((self.state.namespace_of(name)?.to_owned(), vec![iface.to_string()])))
            .collect();
        let lab = self.state.name.clone();
        let network =
            |source| LinkError::Network { lab: lab.clone(), a: a.into(), b: b.into(), up, source: Box::new(source) };
        netns::set_links(&changes, up).map_err(network)?;
        self.update(|s| {
            let down = match which {
                Which::Mesh(i) => s.links.get_mut(i).map(|l| &mut l.down),
                Which::Host(i) => s.host_links.get_mut(i).map(|l| &mut l.down),
            };
            if let Some(d) = down {
                *d = !up;
            }
        })?;
        if up && matches!(which, Which::Host(_)) {
            let namespaces: Vec<&String> = changes.iter().map(|(ns, _)| ns).collect();
            let setups = crate::up::namespace_setups(&self.state);
            for setup in setups.iter().filter(|s| namespaces.contains(&&s.namespace)) {
                let routes = setup.route_batch();
                if !routes.is_empty() {
                    crate::command::run(&["ip", "-n", &setup.namespace, "-batch", "-"], Some(&routes))
                        .map_err(|e| network(e.into()))?;
                }
            }
        }
        tracing::info!(lab = %self.state.name, a, b, up, "link {}", if up { "up" } else { "down" });
        Ok(())
    }

    /// Read state.json under its lock, apply `f`, write it back, and keep the result.
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut LabState)) -> Result<(), StateError> {
        let _lock = StateLock::acquire(&self.dir)?;
        let mut s = LabState::read(&self.dir)?;
        f(&mut s);
        s.write(&self.dir)?;
        self.state = s;
        Ok(())
    }

    /// Change how daemons are started from now on (e.g. a test swapping in another binary).
    pub fn set_daemon_command(&mut self, cmd: DaemonCommand) -> Result<(), StateError> {
        self.update(|s| s.daemon = cmd)
    }
}

/// The process recorded for a node, if a daemon was ever started.
pub(crate) fn recorded_proc(n: &NodeRecord) -> Option<Proc> {
    Some(Proc { pid: n.pid?, start_time: n.pid_start_time? })
}

/// Remove a unix socket nobody listens on (connecting is refused). Leaves it if a process
/// answers, or if it is not there.
pub(crate) fn remove_stale_socket(path: &Path) -> bool {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => std::fs::remove_file(path).is_ok(),
    }
}
