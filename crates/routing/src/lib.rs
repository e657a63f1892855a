//! Mesh routing behind one [`Router`] trait.
//!
//! The core decides a [`RoutingPlan`]: which neighbors (tunnel interfaces) routing may use, what
//! a hop through each costs, and which prefixes the node announces. The driver hands the plan
//! to a router with [`Router::apply`] whenever it changes and calls [`Router::tick`] once a
//! second. Every router kind installs its routes into one kernel table (the mesh table) that
//! the policy rules of [`rules`] consult; see ARCHITECTURE.md "Routing".
//!
//! - [`babel::BabelRouter`]: the distribution's stock babeld, one instance per node, driven
//!   over its control socket and supervised.
//! - [`fake::FakeRouter`]: records plans, for unit tests of the driver.

pub mod babel;
pub mod fake;
pub mod plan;
pub mod rules;
pub mod table;

pub use plan::{LinkCost, RoutedNeighbor, RoutingPlan};

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use tollway_core::IfName;
use tollway_kernel::RouteError;

/// Which routing implementation a node runs (`routing.kind` in the config; "none" means no
/// router at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouterKind {
    /// The stock babeld, driven over its control socket.
    Babel,
    /// Routes from the config, installed while their neighbor is connected.
    Static,
    /// Routes from a file an external controller writes.
    Controller,
}

impl RouterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Babel => "babel",
            RouterKind::Static => "static",
            RouterKind::Controller => "controller",
        }
    }
}

impl fmt::Display for RouterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown router kind {0:?} (expected \"babel\", \"static\" or \"controller\")")]
pub struct ParseRouterKindError(pub String);

impl FromStr for RouterKind {
    type Err = ParseRouterKindError;

    fn from_str(s: &str) -> Result<RouterKind, ParseRouterKindError> {
        match s {
            "babel" => Ok(RouterKind::Babel),
            "static" => Ok(RouterKind::Static),
            "controller" => Ok(RouterKind::Controller),
            other => Err(ParseRouterKindError(other.to_string())),
        }
    }
}

/// One route a router knows, installed or not (what `tollway routes` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub prefix: IpNet,
    /// The tunnel it goes through; `None` for a prefix this node announces itself.
    pub ifname: Option<IfName>,
    /// The neighbor's link-local address on that tunnel.
    pub next_hop: Option<IpAddr>,
    /// Our metric for the route (the neighbor's advertised metric plus the link's cost);
    /// 65535 means retracted.
    pub metric: u32,
    /// Babel: the metric the neighbor advertised, the one part of `metric` it controls.
    pub refmetric: Option<u32>,
    /// In the kernel's mesh table now.
    pub installed: bool,
    /// Babel: the router-id of the node that originates the prefix.
    pub router_id: Option<String>,
    pub source: RouterKind,
}

/// What can go wrong in a router. Every variant names the file, socket, request or route it
/// is about.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("invalid routing settings: {0}")]
    Settings(String),
    #[error("{what} {path}: {source}")]
    File { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("starting {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("babeld exited ({status}) during start-up; last lines of {log}: {tail}")]
    StartFailed { status: String, log: PathBuf, tail: String },
    #[error("babeld did not open its control socket {socket} within {secs} s")]
    StartTimeout { socket: PathBuf, secs: u64 },
    #[error("babeld is not running (restarted at the next tick)")]
    NotRunning,
    #[error("babeld control socket {socket}: {source}")]
    Control { socket: PathBuf, source: babel::control::ControlError },
    #[error("stopping babeld (pid {pid}): {detail}")]
    Stop { pid: u32, detail: String },
    #[error(transparent)]
    Kernel(#[from] RouteError),
    /// Several independent steps failed (teardown keeps going and reports them all).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<RoutingError>),
}

/// A routing implementation. Calls are synchronous, from the driver thread; they act on the
/// network namespace of the calling thread.
pub trait Router: Send {
    fn kind(&self) -> RouterKind;

    /// Make routing use exactly these neighbors (tunnel interfaces) at these costs, and
    /// announce these prefixes (babel only; other kinds ignore them). Cheap when nothing
    /// changed. What could not be applied now is applied by a later [`Router::tick`].
    fn apply(&mut self, plan: &RoutingPlan) -> Result<(), RoutingError>;

    /// Once a second: supervise (restart a dead babeld, re-read a controller file) and
    /// reconcile the kernel and the routing daemon with the current plan.
    fn tick(&mut self) -> Result<(), RoutingError>;

    /// Every route the router knows, installed or not.
    fn routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError>;

    /// What is wrong now that the operator should know (a rejected routes file, a babeld that
    /// keeps dying, an address collision), for status.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// Withdraw everything this router installed and stop what it started (on daemon stop).
    /// Idempotent.
    fn shutdown(&mut self) -> Result<(), RoutingError>;
}
