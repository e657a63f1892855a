//! Physical links: which interfaces they join, whether they are up, their latency and loss, and
//! the bytes that crossed them in each direction.

use crate::{IfName, Millis, NodeIdx};
use std::net::Ipv6Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub usize);

/// One end of a link: a node's physical interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEnd {
    pub node: NodeIdx,
    pub iface: IfName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// One-way delay of everything crossing the link.
    pub latency: Millis,
    /// Up to this much extra delay, drawn per datagram or segment (segments of one connection
    /// still arrive in order). Without jitter every event falls on a lattice of whole
    /// milliseconds and periodic senders can stay phase-locked with each other forever.
    pub jitter: Millis,
    /// Chance, in parts per million, that a datagram (discovery, WireGuard handshake message,
    /// TCP segment) is lost. Lost TCP segments are retransmitted; the others are not. Data
    /// flows lose this share of their bytes.
    pub loss_ppm: u32,
    /// Most data a flow can carry in each direction, bit/s (`None`: no limit).
    pub capacity_bps: Option<u64>,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions { latency: Millis(1), jitter: Millis::ZERO, loss_ppm: 0, capacity_bps: None }
    }
}

/// What crossed a link in one direction. Control traffic and data flows are counted as tunnel
/// bytes; data flows also on their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub discovery_packets: u64,
    pub discovery_bytes: u64,
    /// Inner bytes carried through tunnels running over this link.
    pub tunnel_bytes: u64,
    /// Datagrams lost to `loss_ppm` or to the link being cut.
    pub dropped: u64,
    /// Bytes of data flows sent into the link, and lost on it.
    pub data_sent: u64,
    pub data_lost: u64,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub ends: [LinkEnd; 2],
    pub up: bool,
    pub opts: LinkOptions,
    /// `flows[0]` is from `ends[0]` to `ends[1]`, `flows[1]` the other way.
    pub flows: [Flow; 2],
}

impl Link {
    pub(crate) fn new(ends: [LinkEnd; 2], opts: LinkOptions) -> Link {
        Link { ends, up: true, opts, flows: [Flow::default(); 2] }
    }

    pub fn joins(&self, a: NodeIdx, b: NodeIdx) -> bool {
        let (x, y) = (self.ends[0].node, self.ends[1].node);
        (x, y) == (a, b) || (x, y) == (b, a)
    }

    /// The end across from `n`'s interface `iface`, if this link is plugged into it.
    pub fn far_end(&self, n: NodeIdx, iface: &IfName) -> Option<&LinkEnd> {
        self.side_of(n, iface).map(|s| &self.ends[1 - s])
    }

    /// Which end (0 or 1) is `n`'s interface `iface`.
    pub fn side_of(&self, n: NodeIdx, iface: &IfName) -> Option<usize> {
        self.ends.iter().position(|e| e.node == n && &e.iface == iface)
    }

    /// The flow leaving `n` over this link.
    pub fn flow_from(&self, n: NodeIdx) -> &Flow {
        &self.flows[if self.ends[0].node == n { 0 } else { 1 }]
    }

    pub(crate) fn flow_from_mut(&mut self, n: NodeIdx) -> &mut Flow {
        &mut self.flows[if self.ends[0].node == n { 0 } else { 1 }]
    }
}

/// The simulated link-local address of node `n`'s `j`-th physical interface:
/// `fe80::5157:0:<n>:<j+1>`, distinct for every interface of every node.
pub(crate) fn link_local(n: NodeIdx, j: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5157, 0, n.0 as u16, j as u16 + 1)
}
