//! # tollway-traffic
//!
//! Kernel traffic facilities of a tollway node, one trait each, with a real implementation, a
//! no-op and an in-memory fake:
//!
//! - [`Firewall`] ([`NftFirewall`], [`NoopFirewall`], [`fake::FakeFirewall`]): what neighbors
//!   may send us ([`Admission`]: a reverse-path check, then only solicited or admitted
//!   traffic to this node, and forwarding into tunnels, uplinks and, as replies, elsewhere),
//!   with per-neighbor counters of what was dropped (spoofed, unsolicited); per neighbor, a
//!   counter of the bytes it sent us that we accepted; policing of throttled neighbors;
//!   cut-off; the egress class of each packet (written into `skb->priority`).
//! - [`Shaper`] ([`TcShaper`], [`NoopShaper`], [`fake::FakeShaper`]): per capacity domain, one
//!   HTB on an IFB through which all member tunnels' egress flows, one class per neighbor:
//!   work-conserving, shared in proportion to the neighbors' rates.
//!
//! Both facilities take the same input, a [`TrafficPlan`] computed by the core, and reconcile:
//! they read the kernel's state, change only what differs, and rebuild whatever someone else
//! deleted. Calls are synchronous and act on the network namespace of the calling thread
//! (child processes and netlink sockets are created from it).
//!
//! ## Accounting
//! Each direction of a link is counted by its receiver, where the verdict on each packet from
//! the tunnel is known (nftables input or forward, after the reverse-path check, admission and
//! any policing drop, see [`NftFirewall`]'s table): exact, where the sender's nftables
//! egress counters see GSO super-packets and undercount locally generated TCP by a few percent.
//! The sender's tunnel link counter (the kernel crate's `Links::stats`, `tx_bytes`) counts after segmentation
//! and serves as a cross-check. A counter is identified by a [`CounterHandle`]: when it
//! changes, the counter restarted from zero.
//!
//! ## Limitations
//! - Inbound traffic can only be policed (dropped above the rate), not shaped: a throttled
//!   neighbor's uploads lose packets at our ingress instead of queueing. Its own node shapes
//!   them properly when it applies the same plan to its egress.
//! - Exact counts need the receiver to see packets as they were sent. Userspace tunnels that
//!   write one packet at a time to the TUN device (boringtun, wireguard-go 0.0.20220316) give
//!   that; kernel WireGuard merges TCP segments with GRO unless GRO is off on the tunnel
//!   (`ethtool -K <tunnel> gro off`), and wireguard-go with TUN offloads hands the kernel GSO
//!   super-packets: a merged packet counts its headers once. Such super-packets larger than
//!   the policer's bucket (one second of the rate plus [`police_burst_bytes`]) are dropped
//!   whole.
//! - Control traffic is recognised by TCP port and by being addressed to (from) one of this
//!   node's own addresses, with `fib daddr (saddr) type local`: the kernel needs nft_fib.
//! - Admission needs connection tracking (`ct state`): it follows every connection to, from and
//!   through this node, within `nf_conntrack_max`. A connection that started before the table
//!   existed is picked up in mid-stream as new: its replies are unsolicited until our side sends
//!   again (the daemon installs the table before it opens any session).
//! - The reverse-path check is loose across tunnels: a source must be routed back out of one of
//!   our tunnels, not necessarily the one it came in by (mesh paths are asymmetric: babeld
//!   chooses each direction's route on its own). A neighbor can therefore send with the address
//!   of a node beyond another neighbor; it is billed for those bytes like for any others.
//! - HTB classifies by `skb->priority`: anything that rewrites it after our postrouting chain
//!   (another table at a later priority, a qdisc action) moves the packet to another class, and
//!   a root HTB of someone else's on a tunnel would see our class ids as its own.
//! - The tc batch is not atomic: if one command fails, those before it stay applied; the next
//!   apply reconciles from there.

pub mod command;
pub mod fake;
mod firewall;
mod link;
pub mod nat;
mod nft;
pub mod plan;
mod shaper;
mod tc;

/// Entry points of the fuzz targets in `fuzz/` (feature `fuzzing`); not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::nft::fuzzing::check_nft_output;
}

pub use command::CommandError;
pub use firewall::{
    CounterHandle, CounterReading, DropCount, Firewall, FirewallApplyError, FirewallRemoveError, FirewallReport,
    NoopFirewall, ReadCountersError,
};
pub use nft::{police_burst_bytes, NftFirewall};
pub use plan::{
    Admission, BitRate, ClassId, ControlTraffic, GroupId, IngressPolicy, LocalService, NeighborKey, NeighborTraffic,
    PlanError, Protocol, ServiceScope, ShaperGroup, TrafficPlan,
};
pub use shaper::{
    ClassState, IfbPrefixError, IfbState, InspectError, NoopShaper, RemoveFailure, Shaper, ShaperApplyError,
    ShaperRemoveError, ShaperReport,
};
pub use tc::TcShaper;
