//! # tollway-traffic
//!
//! Kernel traffic facilities of a tollway node, one trait each, with a real implementation, a
//! no-op and an in-memory fake:
//!
//! - [`Firewall`] ([`NftFirewall`], [`NoopFirewall`], [`fake::FakeFirewall`]): per neighbor, a
//!   counter of the bytes it sent us that we accepted; policing of throttled neighbors; cut-off;
//!   the egress class of each packet (written into `skb->priority`).
//! - [`Shaper`] ([`TcShaper`], [`NoopShaper`], [`fake::FakeShaper`]): per capacity domain, one
//!   HTB on an IFB through which all member tunnels' egress flows, one class per neighbor:
//!   work-conserving, shared in proportion to the neighbors' rates.
//! - [`link_counters`]: an interface's own byte counters (the sender's cross-check).
//!
//! Both facilities take the same input, a [`TrafficPlan`] computed by the core, and reconcile:
//! they read the kernel's state, change only what differs, and rebuild whatever someone else
//! deleted. Calls are synchronous and act on the network namespace of the calling thread
//! (child processes and netlink sockets are created from it).
//!
//! ## Accounting
//! Each direction of a link is counted by its receiver, on arrival from the tunnel (nftables
//! prerouting at priority raw, after any policing drop): exact, where the sender's nftables
//! egress counters see GSO super-packets and undercount locally generated TCP by a few percent.
//! The sender's tunnel link counter ([`link_counters`], `tx_bytes`) counts after segmentation
//! and serves as a cross-check. A counter is identified by a [`CounterHandle`]: when it
//! changes, the counter restarted from zero.

pub mod command;
pub mod fake;
mod firewall;
mod link;
mod nft;
mod nl;
pub mod plan;
mod shaper;
mod tc;

pub use command::CommandError;
pub use firewall::{
    CounterHandle, CounterReading, Firewall, FirewallApplyError, FirewallRemoveError, FirewallReport, NoopFirewall,
    ReadCountersError,
};
pub use link::{link_counters, LinkCounters, LinkStatsError};
pub use nft::{police_burst_bytes, NftFirewall};
pub use plan::{
    BitRate, ClassId, ControlTraffic, GroupId, IngressPolicy, NeighborKey, NeighborTraffic, PlanError, ShaperGroup,
    TrafficPlan,
};
pub use shaper::{
    ClassState, IfbPrefixError, IfbState, InspectError, NoopShaper, RemoveFailure, Shaper, ShaperApplyError,
    ShaperRemoveError, ShaperReport,
};
pub use tc::TcShaper;
