//! The routing plan: which neighbors routing may use, at what cost, and what this node
//! announces. The core decides it (from prices and liveness); routers carry it out.
//!
//! These types move to tollway-core (`tollway_core::routing`) once the core emits
//! `Action::SetRouting(RoutingPlan)`; they live here meanwhile so the routers can be built.

use ipnet::IpNet;
use std::fmt;
use std::net::Ipv6Addr;
use tollway_core::{IfName, NodeId};

/// The cost of sending through one neighbor, in Babel's units: 256 is a good wired hop,
/// 65535 is unusable. A route's metric is the sum of its links' costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkCost(pub u16);

impl LinkCost {
    /// A good, cheap hop.
    pub const GOOD: LinkCost = LinkCost(256);
    /// Never route through this neighbor.
    pub const UNUSABLE: LinkCost = LinkCost(u16::MAX);

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for LinkCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One neighbor routing may send through: its tunnel interface, its address on that tunnel
/// and what a hop through it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedNeighbor {
    pub neighbor: NodeId,
    pub ifname: IfName,
    pub peer_link_local: Ipv6Addr,
    pub cost: LinkCost,
}

/// Everything a router needs to know: exactly these neighbors, and these prefixes announced
/// beyond the node's own mesh addresses (LAN prefixes; a default route while the uplink is
/// healthy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingPlan {
    pub neighbors: Vec<RoutedNeighbor>,
    pub exports: Vec<IpNet>,
}
