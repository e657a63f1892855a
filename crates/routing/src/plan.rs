//! The routing plan: which neighbors routing may use, at what cost (decided by the core:
//! `tollway_core::routing`), and what this node announces beyond its own addresses (decided by
//! the driver from the config and the uplink's health).

use ipnet::IpNet;
pub use tollway_core::routing::{LinkCost, RoutedNeighbor};

/// Everything a router needs to know: exactly these neighbors, and these prefixes announced
/// beyond the node's own mesh addresses (LAN prefixes; a default route while the uplink is
/// healthy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingPlan {
    pub neighbors: Vec<RoutedNeighbor>,
    pub exports: Vec<IpNet>,
}
