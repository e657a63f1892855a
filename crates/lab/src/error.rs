//! Errors of the lab's operations, one enum per operation.

use crate::daemon::SpawnError;
use crate::names::{LabName, NodeName};
use crate::netns::NetError;
use crate::state::StateError;
use crate::tunnels::LinkReport;
use std::path::PathBuf;
use std::time::Duration;

/// A node name that is not in the lab.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lab {lab} has no node {node:?} (its nodes: {known})")]
pub struct UnknownNode {
    pub lab: LabName,
    pub node: String,
    pub known: String,
}

/// A name that is neither a node nor a host of the lab (what `lab exec` and `lab link` take).
#[derive(Debug, Clone, thiserror::Error)]
#[error("lab {lab} has no node or host {name:?} (its nodes: {nodes}; its hosts: {hosts})")]
pub struct UnknownTarget {
    pub lab: LabName,
    pub name: String,
    pub nodes: String,
    /// `none` when the lab has no hosts.
    pub hosts: String,
}

/// `lab link down|up`.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Unknown(#[from] UnknownTarget),
    #[error("lab {lab} has no link between {a} and {b} (its links: {links})")]
    NoSuchLink { lab: LabName, a: String, b: String, links: String },
    #[error("lab {lab}: setting link {a}–{b} {word}: {source}", word = if *.up { "up" } else { "down" })]
    Network { lab: LabName, a: String, b: String, up: bool, source: Box<NetError> },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Finding or loading a lab.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no lab named {name} is running ({dir} does not exist)")]
    NotFound { name: LabName, dir: PathBuf },
    #[error("no lab is running (nothing in {root})")]
    NoLab { root: PathBuf },
    #[error("several labs are running ({names}): pick one with --name")]
    Ambiguous { names: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// `lab up`.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("lab {name} is already running (daemons alive: {alive}); run `tollway lab down --name {name}` first")]
    AlreadyRunning { name: LabName, alive: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    State(#[from] StateError),
    /// Namespaces with the lab's names exist but no lab state records them: the lab will not
    /// adopt (or later delete) namespaces it did not make.
    #[error("namespaces {} already exist but lab {name} has no state recording them; if they are left over from an earlier lab, delete them with `ip netns del`", names.join(", "))]
    NamespaceExists { name: LabName, names: Vec<String> },
    #[error("cleaning up the stale lab {name} failed: {source}")]
    StaleCleanup { name: LabName, source: Box<DownError> },
    #[error("building the lab's network: {0}")]
    Network(#[from] NetError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Tunnels(#[from] WaitError),
    /// The internet host's speed-test server could not be set up.
    #[error("the internet host's speed-test server: {0}")]
    Speedtest(String),
    /// Making a node misbehave (`misbehave = {...}`) failed.
    #[error("misbehave: {0}")]
    Misbehave(String),
    /// `up` failed, and tearing down what it had built failed too.
    #[error("{cause}\nand tearing the lab down again failed:\n  {}", problems.join("\n  "))]
    TeardownFailed { cause: Box<UpError>, problems: Vec<String> },
}

/// Starting, stopping or signalling one node's daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    UnknownNode(#[from] UnknownNode),
    #[error("node {node}: its daemon is already running (pid {pid})")]
    AlreadyRunning { node: NodeName, pid: u32 },
    #[error("node {node}: its daemon is not running")]
    NotRunning { node: NodeName },
    #[error("node {node}: {source}")]
    Spawn { node: NodeName, source: SpawnError },
    #[error("node {node}: cannot signal daemon pid {pid}: {source}")]
    Signal { node: NodeName, pid: u32, source: std::io::Error },
    #[error("node {node}: daemon pid {pid} is still running {waited:?} after the signal")]
    StillRunning { node: NodeName, pid: u32, waited: Duration },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Asking one node's daemon for its status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    UnknownNode(#[from] UnknownNode),
    #[error("node {node}: daemon not running")]
    NotRunning { node: NodeName },
    #[error("node {node}: {source}")]
    Api { node: NodeName, source: tollway_api::ClientError },
}

/// The tail of one daemon's log, attached to errors.
#[derive(Debug, Clone)]
pub struct LogTail {
    pub node: NodeName,
    pub path: PathBuf,
    pub tail: String,
}

impl std::fmt::Display for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "--- daemon log of {} ({}), last lines:", self.node, self.path.display())?;
        for line in self.tail.lines() {
            writeln!(f, "  | {line}")?;
        }
        Ok(())
    }
}

fn tails(logs: &[LogTail]) -> String {
    logs.iter().map(ToString::to_string).collect()
}

/// Waiting for every link's tunnel.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(
        "tunnels not up after {timeout:?} on {} of {total} links:\n  {}\n{}{}",
        not_up.len(),
        not_up.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "),
        no_status.iter().map(|p| format!("  {p}\n")).collect::<String>(),
        tails(logs)
    )]
    Timeout {
        timeout: Duration,
        total: usize,
        not_up: Vec<LinkReport>,
        /// Why nodes on those links gave no status (one line per node).
        no_status: Vec<String>,
        logs: Vec<LogTail>,
    },
    #[error("node {node}: the daemon (pid {pid}) exited while waiting for tunnels\n{log}")]
    DaemonDied { node: NodeName, pid: u32, log: LogTail },
    #[error("node {node}: no daemon was started")]
    NotStarted { node: NodeName },
}

/// `lab down` ran to the end but some steps failed; the state directory is kept so that
/// `lab down` can be run again.
#[derive(Debug, thiserror::Error)]
#[error("taking down lab {lab} left things behind:\n  {}", problems.join("\n  "))]
pub struct DownError {
    pub lab: LabName,
    pub problems: Vec<String>,
}
