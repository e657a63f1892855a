//! One neighbor's state: how we know it, its tunnel, and its control session.

use crate::action::{Endpoint, SessionId, TunnelSpec};
use crate::ids::{IfName, NodeId, WgPublicKey};
use crate::market::NeighborMarket;
use crate::time::Millis;
use crate::wire::discovery::Discovery;
use std::net::Ipv6Addr;

/// Where a neighbor is in its life, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighborState {
    /// Heard and verified; tunnel requested but no WireGuard handshake seen yet.
    Pending,
    /// WireGuard handshake seen recently; control session not (yet) established.
    TunnelUp,
    /// Tunnel up and authenticated control session established.
    Connected,
}

impl NeighborState {
    pub fn as_str(self) -> &'static str {
        match self {
            NeighborState::Pending => "pending",
            NeighborState::TunnelUp => "tunnel_up",
            NeighborState::Connected => "connected",
        }
    }
}

/// Kernel-side facts about a tunnel, as last sampled by the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Seconds since the last WireGuard handshake with the peer, if there was one.
    pub last_handshake_secs: Option<u64>,
    /// Inner (plaintext) bytes received from and sent to the peer, as counted by the tunnel.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Packets and bytes, as a kernel counter holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    pub packets: u64,
    pub bytes: u64,
}

/// What the firewall refused from a neighbor (never billed), as last sampled by the driver:
/// totals since the firewall's counters were created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Its source address is not routed back through the neighbor's tunnel.
    pub spoofed: Volume,
    /// Addressed to this node or through it, and nobody here asked for it.
    pub unsolicited: Volume,
}

/// WireGuard rejects a session key this old (REJECT_AFTER_TIME); a handshake older than this
/// means the tunnel is not up.
pub const HANDSHAKE_FRESH_SECS: u64 = 180;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Session {
    /// No connection. The connector opens one at `retry_at` (once the tunnel is up).
    Idle { retry_at: Millis },
    /// Connector: TCP connect in progress.
    Connecting { id: SessionId, deadline: Millis },
    /// Connector: ClientHello sent.
    AwaitServerHello { id: SessionId, nonce_c: [u8; 32], deadline: Millis },
    /// Acceptor: connection accepted, waiting for ClientHello.
    AwaitClientHello { id: SessionId, deadline: Millis },
    /// Acceptor: ServerHello sent.
    AwaitClientAuth { id: SessionId, nonce_c: [u8; 32], nonce_s: [u8; 32], version: u16, deadline: Millis },
    Established {
        id: SessionId,
        version: u16,
        since: Millis,
        last_rx: Millis,
        next_ping: Millis,
        /// The Ping we sent last and when (its Pong gives the round-trip time).
        ping: Option<(u64, Millis)>,
    },
}

impl Session {
    pub(crate) fn id(&self) -> Option<SessionId> {
        match self {
            Session::Idle { .. } => None,
            Session::Connecting { id, .. }
            | Session::AwaitServerHello { id, .. }
            | Session::AwaitClientHello { id, .. }
            | Session::AwaitClientAuth { id, .. }
            | Session::Established { id, .. } => Some(*id),
        }
    }

    /// When this session next needs attention.
    pub(crate) fn deadline(&self, session_timeout: Millis) -> Millis {
        match self {
            Session::Idle { retry_at, .. } => *retry_at,
            Session::Connecting { deadline, .. }
            | Session::AwaitServerHello { deadline, .. }
            | Session::AwaitClientHello { deadline, .. }
            | Session::AwaitClientAuth { deadline, .. } => *deadline,
            Session::Established { last_rx, next_ping, .. } => (*next_ping).min(*last_rx + session_timeout),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Neighbor {
    pub id: NodeId,
    pub wg_key: WgPublicKey,
    /// The tunnel interface made for this neighbor.
    pub ifname: IfName,
    /// Slot in the neighbor table; fixes the tunnel's listen port.
    pub slot: usize,
    pub listen_port: u16,
    /// The physical interface and link-local address it was heard from.
    pub underlay: IfName,
    pub underlay_addr: Ipv6Addr,
    /// The port of the tunnel it made for us, once its Hello told us.
    pub peer_port: Option<u16>,
    pub first_seen: Millis,
    pub last_heard: Millis,
    /// Since when its tunnel has not been up: `first_seen`, or when the tunnel last went down.
    /// It is removed and penalized if this lasts `pending_timeout`.
    pub(crate) pending_since: Millis,
    /// Timestamps of the newest Announce and the newest Hello accepted from it (replay
    /// protection). Kept apart because a node sends its periodic Announce and its Hellos with the
    /// same timestamp: a shared window would reject whichever arrives second.
    pub(crate) last_announce_ms: u64,
    pub(crate) last_hello_ms: u64,
    /// Signature checks of messages claiming its id (`NEIGHBOR_VERIFY_PER_INTERVAL`).
    pub(crate) verify_budget: super::TokenBucket,
    pub tunnel: TunnelStats,
    /// What the firewall dropped from it.
    pub dropped: Dropped,
    pub(crate) tunnel_seen_up: bool,
    /// The spec last handed to the driver, and when to re-send it after a failure.
    pub(crate) applied: Option<TunnelSpec>,
    pub(crate) tunnel_retry_at: Option<Millis>,
    pub last_tunnel_error: Option<String>,
    pub(crate) session: Session,
    /// Delay before the next connect attempt after a failed one (doubles up to 30 s).
    pub(crate) backoff: Millis,
    pub last_session_close: Option<String>,
    /// Prices, ledger, payments and enforcement with this neighbor.
    pub market: NeighborMarket,
    /// What we measure of its path from live traffic (the control session's round trips).
    pub passive: crate::quality::Passive,
    /// What speed tests through it measured, and what we decided from that.
    pub tests: super::quality::NeighborTests,
}

impl Neighbor {
    pub fn state(&self) -> NeighborState {
        if matches!(self.session, Session::Established { .. }) {
            NeighborState::Connected
        } else if self.tunnel_up() {
            NeighborState::TunnelUp
        } else {
            NeighborState::Pending
        }
    }

    /// True when the kernel reports a recent WireGuard handshake with this neighbor.
    pub fn tunnel_up(&self) -> bool {
        matches!(self.tunnel.last_handshake_secs, Some(s) if s < HANDSHAKE_FRESH_SECS)
    }

    pub fn session_established_since(&self) -> Option<Millis> {
        match self.session {
            Session::Established { since, .. } => Some(since),
            _ => None,
        }
    }

    /// The replay window of `msg`'s kind: the newest timestamp accepted for it.
    pub(crate) fn last_accepted_ms(&self, msg: &Discovery) -> &u64 {
        match msg {
            Discovery::Announce(_) => &self.last_announce_ms,
            Discovery::Hello(_) => &self.last_hello_ms,
        }
    }

    pub(crate) fn set_last_accepted_ms(&mut self, msg: &Discovery) {
        match msg {
            Discovery::Announce(a) => self.last_announce_ms = a.unix_ms,
            Discovery::Hello(h) => self.last_hello_ms = h.unix_ms,
        }
    }

    pub(crate) fn endpoint(&self) -> Option<Endpoint> {
        self.peer_port.map(|port| Endpoint { addr: self.underlay_addr, port, via: self.underlay.clone() })
    }
}
