//! The lab's state on disk: `/run/tollway-lab/<lab>/state.json` plus a directory per node.
//!
//! ```text
//! /run/tollway-lab/<lab>/
//!   state.json          this file's LabState, written atomically (temp + fsync + rename)
//!   .lock               flock held while state.json is read-modified-written
//!   <node>/tollway.toml generated daemon config
//!   <node>/data/        the daemon's data dir (keys); kept across daemon restarts
//!   <node>/api.sock     the daemon's operator API socket
//!   <node>/daemon.log   the daemon's stdout and stderr, appended
//! ```
//!
//! `state.json` is written before the lab changes anything in the kernel, and updated as it
//! goes, so `lab down` can always find what a half-finished `lab up` made.

use crate::daemon::DaemonCommand;
use crate::hosts::Cidr;
use crate::names::{LabName, NodeName};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where labs keep their state unless told otherwise.
pub const DEFAULT_ROOT: &str = "/run/tollway-lab";
/// The `version` written to state.json. Version 1 (before host namespaces) is still read, as
/// a lab without hosts; other versions are refused.
pub const STATE_VERSION: u32 = 2;
/// The oldest version read.
pub const OLDEST_STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";

/// Everything the lab knows about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub name: LabName,
    /// The topology file `lab up` was given, if any.
    pub topology_file: Option<PathBuf>,
    /// Unix seconds when `lab up` started, and when this state was last written.
    pub created_unix: u64,
    pub updated_unix: u64,
    /// How daemons are started (also used to restart one).
    pub daemon: DaemonCommand,
    pub nodes: Vec<NodeRecord>,
    pub links: Vec<LinkRecord>,
    /// Host namespaces (the internet, LAN hosts): no daemon, linked to one or more nodes.
    #[serde(default)]
    pub hosts: Vec<HostRecord>,
    /// Veths between a node and a host.
    #[serde(default)]
    pub host_links: Vec<HostLinkRecord>,
}

/// One node: where its files are, its namespace, and its daemon if started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: NodeName,
    /// `tw-<lab>-<node>`.
    pub namespace: String,
    /// `<lab-dir>/<node>/`.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub api_socket: PathBuf,
    pub log_path: PathBuf,
    /// The veths inside the namespace, `v-<neighbor>`.
    pub interfaces: Vec<String>,
    /// The daemon's pid and its start time (field 22 of `/proc/<pid>/stat`, clock ticks since
    /// boot), recorded at launch; a pid is only signalled if its start time still matches.
    pub pid: Option<u32>,
    pub pid_start_time: Option<u64>,
    /// The node id (64 hex digits) and mesh IP, once the daemon has reported them.
    pub node_id: Option<String>,
    pub mesh_ip: Option<String>,
}

/// One veth link: `a_interface` (= `v-<b>`) lives in a's namespace and vice versa.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub a: NodeName,
    pub b: NodeName,
    pub a_interface: String,
    pub b_interface: String,
    pub mtu: u32,
    pub rate_mbit: Option<u32>,
    pub loss_permille: Option<u16>,
    /// Set by `lab link down` (both ends administratively down), cleared by `lab link up`.
    #[serde(default)]
    pub down: bool,
}

/// A namespace that stands for something outside the mesh: the `internet`, or a node's LAN
/// host `<node>-lan`. It runs no daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// What `lab exec` and `lab link` call it: `internet` or `<node>-lan`.
    pub name: String,
    /// `tw-<lab>-internet` or `tw-<lab>-<node>-lan`.
    pub namespace: String,
    /// Addresses on its `lo` (the internet's 2001:db8::1/128 and 192.0.2.1/32).
    pub loopback: Vec<Cidr>,
}

/// What a node–host veth is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostLinkKind {
    /// Node to the internet: the node's default routes point at the host.
    Uplink,
    /// Node to its LAN host: the host's default routes point at the node.
    Lan,
}

/// A veth between a node and a host, with both ends' addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLinkRecord {
    pub kind: HostLinkKind,
    pub node: NodeName,
    /// The host's name (a [`HostRecord::name`]).
    pub host: String,
    /// `v-internet` or `v-lan`, inside the node.
    pub node_interface: String,
    /// `v-<node>` (internet) or `lan0` (LAN host), inside the host.
    pub host_interface: String,
    pub mtu: u32,
    pub node_ipv4: Cidr,
    pub node_ipv6: Cidr,
    pub host_ipv4: Cidr,
    pub host_ipv6: Cidr,
    /// Set by `lab link down`, cleared by `lab link up`.
    #[serde(default)]
    pub down: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid lab state file: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path} has state version {found}, this tollway understands versions {OLDEST_STATE_VERSION} to {STATE_VERSION}: remove the lab with the tollway that made it")]
    Version { path: PathBuf, found: u32 },
}

impl StateError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
        move |source| StateError::Io { path: path.to_owned(), source }
    }

    /// True if the state file (or its directory) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StateError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl LabState {
    /// Read `<dir>/state.json`.
    pub fn read(dir: &Path) -> Result<LabState, StateError> {
        let path = dir.join(STATE_FILE);
        let bytes = fs::read(&path).map_err(StateError::io(&path))?;
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: path.clone(), source })?;
        if !(OLDEST_STATE_VERSION..=STATE_VERSION).contains(&v.version) {
            return Err(StateError::Version { path, found: v.version });
        }
        let mut state: LabState =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })?;
        state.version = STATE_VERSION; // what it is written back as
        Ok(state)
    }

    /// Write `<dir>/state.json` atomically: a temp file in the same directory, fsync, rename
    /// over, fsync the directory. Sets `updated_unix`.
    pub fn write(&mut self, dir: &Path) -> Result<(), StateError> {
        self.updated_unix = unix_now();
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        let mut json = serde_json::to_vec_pretty(self).expect("state serializes");
        json.push(b'\n');
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(StateError::io(&path))
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeRecord> {
        self.nodes.iter_mut().find(|n| n.name.as_str() == name)
    }

    pub fn host(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Every namespace of the lab: the nodes', then the hosts'.
    pub fn namespaces(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.namespace.clone()).chain(self.hosts.iter().map(|h| h.namespace.clone())).collect()
    }

    /// The namespace of a node or host called `name`.
    pub fn namespace_of(&self, name: &str) -> Option<&str> {
        self.node(name).map(|n| n.namespace.as_str()).or_else(|| self.host(name).map(|h| h.namespace.as_str()))
    }
}

/// An exclusive `flock` on `<dir>/.lock`, released on drop. Held while state.json is
/// read-modified-written so two `tollway lab` processes don't lose each other's updates.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(dir: &Path) -> Result<StateLock, StateError> {
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(StateError::io(&path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(StateError::Io { path, source: std::io::Error::last_os_error() });
        }
        Ok(StateLock { _file: file })
    }
}

/// The lab directories under `root`: every entry whose name is a valid lab name. A directory
/// without state.json (a crashed `lab up` before it wrote any) is listed too.
pub fn list_lab_dirs(root: &Path) -> Result<Vec<LabName>, StateError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateError::Io { path: root.to_owned(), source: e }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StateError::io(root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Ok(n) = LabName::parse_as(&name, "lab directory") {
                names.push(n);
            }
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LabState {
        let dir = PathBuf::from("/run/tollway-lab/t1/a");
        LabState {
            version: STATE_VERSION,
            name: "t1".parse().unwrap(),
            topology_file: Some("/x/chain3.toml".into()),
            created_unix: 1,
            updated_unix: 2,
            daemon: DaemonCommand::tollway(Path::new("/usr/bin/tollway")),
            nodes: vec![NodeRecord {
                name: "a".parse().unwrap(),
                namespace: "tw-t1-a".into(),
                config_path: dir.join("tollway.toml"),
                data_dir: dir.join("data"),
                api_socket: dir.join("api.sock"),
                log_path: dir.join("daemon.log"),
                dir,
                interfaces: vec!["v-b".into()],
                pid: Some(1234),
                pid_start_time: Some(987654),
                node_id: Some("ab".repeat(32)),
                mesh_ip: Some("fd00::1".into()),
            }],
            links: vec![LinkRecord {
                a: "a".parse().unwrap(),
                b: "b".parse().unwrap(),
                a_interface: "v-b".into(),
                b_interface: "v-a".into(),
                mtu: 1500,
                rate_mbit: Some(10),
                loss_permille: None,
                down: true,
            }],
            hosts: vec![HostRecord {
                name: "internet".into(),
                namespace: "tw-t1-internet".into(),
                loopback: vec!["2001:db8::1/128".parse().unwrap()],
            }],
            host_links: vec![HostLinkRecord {
                kind: HostLinkKind::Uplink,
                node: "a".parse().unwrap(),
                host: "internet".into(),
                node_interface: "v-internet".into(),
                host_interface: "v-a".into(),
                mtu: 1500,
                node_ipv4: "198.51.100.6/30".parse().unwrap(),
                node_ipv6: "2001:db8:ffff:1::2/64".parse().unwrap(),
                host_ipv4: "198.51.100.5/30".parse().unwrap(),
                host_ipv6: "2001:db8:ffff:1::1/64".parse().unwrap(),
                down: false,
            }],
        }
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = sample();
        s.write(tmp.path()).unwrap();
        assert!(s.updated_unix > 2);
        let back = LabState::read(tmp.path()).unwrap();
        assert_eq!(back, s);
        // no temp file left behind
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        // rewriting replaces
        s.nodes[0].pid = None;
        s.write(tmp.path()).unwrap();
        assert_eq!(LabState::read(tmp.path()).unwrap().nodes[0].pid, None);
    }

    #[test]
    fn bad_state_files_are_reported_with_their_path() {
        let tmp = tempfile::tempdir().unwrap();
        let e = LabState::read(tmp.path()).unwrap_err();
        assert!(e.is_not_found());
        fs::write(tmp.path().join(STATE_FILE), "{").unwrap();
        let e = LabState::read(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("state.json is not a valid lab state file"), "{e}");
        fs::write(tmp.path().join(STATE_FILE), r#"{"version": 99}"#).unwrap();
        let e = LabState::read(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("understands versions 1 to 2"), "{e}");
        let e = LabState::read(tmp.path()).unwrap_err();
        assert!(matches!(e, StateError::Version { found: 99, .. }), "{e}");
        let mut bad = serde_json::to_value(sample()).unwrap();
        bad["nodes"][0]["name"] = "Bad".into();
        fs::write(tmp.path().join(STATE_FILE), bad.to_string()).unwrap();
        assert!(LabState::read(tmp.path()).is_err());
    }

    #[test]
    fn version_1_state_reads_as_a_lab_without_hosts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v1 = serde_json::to_value(sample()).unwrap();
        v1["version"] = 1.into();
        let obj = v1.as_object_mut().unwrap();
        obj.remove("hosts");
        obj.remove("host_links");
        obj["links"][0].as_object_mut().unwrap().remove("down");
        fs::write(tmp.path().join(STATE_FILE), v1.to_string()).unwrap();
        let s = LabState::read(tmp.path()).unwrap();
        assert_eq!(s.version, STATE_VERSION);
        assert!(s.hosts.is_empty() && s.host_links.is_empty() && !s.links[0].down);
        assert_eq!(s.namespaces(), vec!["tw-t1-a"]);
        assert_eq!(sample().namespaces(), vec!["tw-t1-a", "tw-t1-internet"]);
        assert_eq!(sample().namespace_of("internet"), Some("tw-t1-internet"));
    }

    #[test]
    fn lab_dirs_are_listed_by_valid_name() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list_lab_dirs(&tmp.path().join("absent")).unwrap().is_empty());
        for d in ["b2", "a1", "Not-A-Lab"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        fs::write(tmp.path().join("c3"), "a file").unwrap();
        let names: Vec<String> = list_lab_dirs(tmp.path()).unwrap().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, vec!["a1", "b2"]);
        let _lock = StateLock::acquire(&tmp.path().join("a1")).unwrap();
    }
}
