//! `tollway-lab`: a whole tollway mesh on one machine, for tests, demos and benchmarks.
//!
//! Each node gets a network namespace `tw-<lab>-<node>`; each link a–b is a veth pair created
//! directly in the two namespaces (`v-b` inside a, `v-a` inside b), optionally rate-limited
//! (HTB) and lossy (nftables); each node runs one daemon started as
//! `ip netns exec <ns> <program> daemon --config <node-dir>/tollway.toml`. Nodes with
//! `uplink = true` are linked to one host namespace `tw-<lab>-internet`, nodes with
//! `lan = true` to a host namespace `tw-<lab>-<node>-lan` each (see [`hosts`]).
//! State lives in `/run/tollway-lab/<lab>/` (see [`state`]). Labs with different names run side
//! by side.
//!
//! ```no_run
//! use std::time::Duration;
//! use tollway_lab::{DaemonCommand, Lab, Topology, UpOptions, Signal};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let topology = Topology::load("examples/lab/chain3.toml".as_ref())?;
//! let name = "t42".parse()?;
//! let mut lab = Lab::up(&name, &topology, &UpOptions::new(DaemonCommand::tollway("target/debug/tollway".as_ref())))?;
//! let b = lab.node("b")?.clone();
//! println!("b runs in {} and listens on {}", b.namespace, b.api_socket.display());
//! lab.kill_daemon("b", Signal::Kill)?;     // waits until it is gone
//! lab.start_daemon("b")?;                  // same config and keys
//! lab.wait_tunnels(Duration::from_secs(30))?;
//! let status = lab.status_of("a")?;
//! lab.down()?;
//! # Ok(()) }
//! ```
//!
//! The CLI mounts [`LabCommand`] as `tollway lab ...` and calls [`run`].

pub mod cli;
pub mod command;
pub mod config;
pub mod daemon;
pub mod down;
pub mod error;
pub mod hosts;
pub mod lab;
pub mod misbehave;
pub mod names;
pub mod netns;
pub mod process;
pub mod state;
pub mod topology;
pub mod tunnels;
pub mod up;

pub use cli::{run, LabCommand};
pub use daemon::DaemonCommand;
pub use down::DownReport;
pub use error::{
    DaemonError, DownError, LinkError, LoadError, LogTail, StatusError, UnknownNode, UnknownTarget, UpError, WaitError,
};
pub use hosts::Cidr;
pub use lab::{Lab, NodeReport, Restarted};
pub use names::{LabName, NameError, NodeName};
pub use process::{Proc, Signal};
pub use state::{HostLinkKind, HostLinkRecord, HostRecord, LabState, LinkRecord, NodeRecord, DEFAULT_ROOT};
pub use topology::{Degrade, LinkSpec, Misbehave, NodeSpec, Topology, TopologyError};
pub use tunnels::{EndView, LinkReport};
pub use up::{UpOptions, UpTimings};
