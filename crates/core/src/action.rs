//! What the core asks its driver to do. Each variant is a whole operation; the driver reports the
//! outcome back through the core's `handle_*` inputs.

use crate::ids::{IfName, NodeId, WgPublicKey};
use crate::market::{MarketRecord, Price, TrafficPolicy, UsageDelta};
use crate::wire::control::ControlMessage;
use std::net::{Ipv6Addr, SocketAddrV6};

/// Identifies one control connection for its whole life. The core allocates ids for connections
/// it opens; the driver allocates ids with [`SessionId::ACCEPTED_BIT`] set for connections it
/// accepts, so the two never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    pub const ACCEPTED_BIT: u64 = 1 << 63;
}

/// Where a neighbor's tunnel endpoint is: its link-local address on one of our physical
/// interfaces and the port of the tunnel it built for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv6Addr,
    pub port: u16,
    pub via: IfName,
}

/// Everything needed to build (or update) the tunnel to one neighbor. Applying the same spec
/// twice is a no-op; applying a changed one changes only what differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    pub ifname: IfName,
    pub neighbor: NodeId,
    pub listen_port: u16,
    pub peer_key: WgPublicKey,
    /// Unknown until the neighbor's Hello tells us its port.
    pub endpoint: Option<Endpoint>,
    /// Our address on the tunnel (fe80::/64) and the neighbor's.
    pub local_link_local: Ipv6Addr,
    pub peer_link_local: Ipv6Addr,
    /// The neighbor's mesh address, routed through this tunnel.
    pub peer_mesh_ip: Ipv6Addr,
    pub mtu: u32,
    pub keepalive_secs: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a discovery datagram out of `iface` to `dst` (the multicast group or a link-local).
    SendDiscovery {
        iface: IfName,
        dst: Ipv6Addr,
        payload: Vec<u8>,
    },
    /// Make the kernel tunnel match the spec (create, reconfigure), then report failures through
    /// `handle_tunnel_error`.
    EnsureTunnel(TunnelSpec),
    /// Remove the tunnel and every kernel object made for it.
    RemoveTunnel {
        ifname: IfName,
        neighbor: NodeId,
    },
    /// Read the state of every tunnel and report it through `handle_tunnel_stats`.
    SampleTunnels,
    /// Open a TCP connection to `peer` through tunnel `ifname`; report `handle_control_opened` or
    /// `handle_control_closed`.
    OpenControl {
        session: SessionId,
        neighbor: NodeId,
        ifname: IfName,
        peer: SocketAddrV6,
    },
    SendControl {
        session: SessionId,
        msg: ControlMessage,
    },
    /// Close the connection (after sending anything queued before this action).
    CloseControl {
        session: SessionId,
    },
    /// Make the kernel's counters, policing and shaping match this policy.
    ApplyTraffic(TrafficPolicy),
    /// Store these records and history durably, in one transaction, before executing any later
    /// action (a payment is stored before it is sent).
    Persist(PersistBatch),
    /// Routing may use exactly these neighbors' tunnels, at these costs (the whole set, sent
    /// whenever it changes).
    SetRoutingNeighbors(Vec<crate::routing::RoutedNeighbor>),
    /// Run one speed test through this neighbor's tunnel (forced through it, whatever the
    /// routing table says) against a pinned server it offers a route to, moving at most
    /// `max_bytes` each way; report `handle_speed_test` with the same `test`.
    RunSpeedTest {
        test: u64,
        neighbor: NodeId,
        ifname: IfName,
        /// The neighbor's slot: which probe address the test is sent from.
        slot: usize,
        max_bytes: u64,
    },
}

/// One durable write: the changed neighbors' records and the history since the last write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistBatch {
    pub unix_ms: u64,
    pub records: Vec<(NodeId, MarketRecord)>,
    pub usage: Vec<(NodeId, UsageDelta)>,
    pub events: Vec<MarketEvent>,
}

impl PersistBatch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.usage.is_empty() && self.events.is_empty()
    }
}

/// Whose price changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSubject {
    OurAsk,
    OurBid(NodeId),
    TheirAsk(NodeId),
    TheirBid(NodeId),
}

/// Something the operator's history should show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketEvent {
    PaymentSent {
        neighbor: NodeId,
        before: u64,
        after: u64,
        rail: &'static str,
    },
    PaymentReceived {
        neighbor: NodeId,
        before: u64,
        after: u64,
        rail: &'static str,
    },
    /// `by_operator`: changed through the API (else by the neighbor or automatically).
    PriceChange {
        subject: PriceSubject,
        old: Option<Price>,
        new: Price,
        by_operator: bool,
    },
}
