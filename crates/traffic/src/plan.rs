//! The input of every traffic facility: what the kernel should do with each neighbor's traffic.
//!
//! The core computes a [`TrafficPlan`] from its neighbor states (bids, balances, enforcement
//! decisions); [`crate::Firewall`] and [`crate::Shaper`] make the kernel match it. A plan is
//! plain data: building one does no I/O, and applying the same plan twice changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv6Addr;
use tollway_core::{IfName, NodeId};

/// A rate in bits per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BitRate(pub u64);

impl BitRate {
    /// The smallest rate a plan may use (1 kbit/s): below it the kernel's byte-granular token
    /// buckets stop meaning anything.
    pub const MIN: BitRate = BitRate(1_000);

    pub const fn kbit(n: u64) -> BitRate {
        BitRate(n * 1_000)
    }

    pub const fn mbit(n: u64) -> BitRate {
        BitRate(n * 1_000_000)
    }

    pub const fn bits_per_sec(self) -> u64 {
        self.0
    }

    /// Whole bytes per second (rounded down): the unit the kernel keeps rates in.
    pub const fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}bit/s", self.0)
    }
}

/// A stable short name for one neighbor, used to name its kernel objects (`rx_<key>` counter,
/// `in_<key>`/`out_<key>` chains) and to report its counters: 1 to 24 characters of
/// `[0-9a-z_]`. [`NeighborKey::of`] derives it from the neighbor's id (12 hex digits).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighborKey(String);

impl NeighborKey {
    pub const MAX_LEN: usize = 24;

    pub fn new(s: impl Into<String>) -> Result<NeighborKey, PlanError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == b'_');
        if ok {
            Ok(NeighborKey(s))
        } else {
            Err(PlanError::BadKey(s))
        }
    }

    /// The key of a neighbor: the first 12 hex digits of its id.
    pub fn of(id: &NodeId) -> NeighborKey {
        NeighborKey(id.short())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NeighborKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NeighborKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Identifies a shaper group (a capacity domain) across plans. The shaper names the group's IFB
/// device after it (`<prefix><id>`), so keep it stable: a node-wide capacity is group 0;
/// per-physical-interface capacities could use the interface index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u16);

/// What to do with the traffic a neighbor sends us (and, for [`IngressPolicy::ControlOnly`],
/// the traffic we send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPolicy {
    /// Everything passes and is counted.
    Open,
    /// Throttled: inbound traffic beyond `bits_per_sec` is dropped (before it is counted),
    /// except control-session traffic, which always passes.
    Police { bits_per_sec: BitRate },
    /// Cut off: only control-session traffic passes, in both directions; everything else the
    /// neighbor sends or we send to it is dropped (and not counted).
    ControlOnly,
}

/// One neighbor's part of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborTraffic {
    pub key: NeighborKey,
    /// Its tunnel interface. Rules match it by name, so they survive the tunnel's re-creation.
    pub tunnel: IfName,
    /// Egress share: the rate guaranteed when every neighbor of the group is busy. The core sets
    /// `capacity × bid / Σ bids` for paying neighbors and the floor rate for throttled ones.
    pub rate: BitRate,
    /// Egress ceiling: what the neighbor may use when others leave capacity unused. The core
    /// sets the group capacity for paying neighbors and the floor rate for throttled ones.
    pub ceil: BitRate,
    pub ingress: IngressPolicy,
}

/// A capacity domain: the neighbors whose egress traffic shares one capacity. A node-wide
/// capacity is one group; per-physical-interface capacities give one group per interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShaperGroup {
    pub id: GroupId,
    /// What this node can send through the group's tunnels in total.
    pub capacity: BitRate,
    pub neighbors: Vec<NeighborTraffic>,
}

/// The neighbors' control sessions: TCP to or from `tcp_port` on this node. They always flow:
/// they are exempt from policing and cut-off, and on egress they get their own class with
/// `rate` guaranteed and the highest priority.
///
/// Only traffic that this node terminates (inbound to one of its own addresses) or originates
/// (outbound from one of its own addresses) is control traffic: a neighbor cannot escape its
/// throttle by routing bulk traffic through us with the control port as source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlTraffic {
    pub tcp_port: u16,
    pub rate: BitRate,
}

/// The transport protocol of a [`LocalService`] or an opened port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name nftables gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Where neighbors may reach a [`LocalService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceScope {
    /// Only over the neighbor's tunnel between link-local addresses: from an `fe80::/10` source
    /// to our link-local address on that tunnel, or to one of `groups` (link-local multicast
    /// groups such as Babel's `ff02::1:6`). IPv6 only.
    LinkLocal { groups: Vec<Ipv6Addr> },
    /// On any address of this node, IPv4 or IPv6, from any source the neighbor may use.
    AnyAddress,
}

/// A service of this node that every neighbor may reach through its tunnel. The control port
/// ([`ControlTraffic::tcp_port`], TCP between link-local addresses) always may and is not listed;
/// routing and measurement add theirs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// What it is, for errors and logs (`babel`).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub scope: ServiceScope,
}

impl LocalService {
    /// Babel's UDP port (RFC 8966).
    pub const BABEL_PORT: u16 = 6696;

    /// The Babel routing protocol: UDP 6696 between link-local addresses, and to `ff02::1:6`.
    pub fn babel() -> LocalService {
        LocalService {
            name: "babel".into(),
            protocol: Protocol::Udp,
            port: Self::BABEL_PORT,
            scope: ServiceScope::LinkLocal { groups: vec![Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 6)] },
        }
    }
}

/// What neighbors may send to this node, and through it. Whatever arrives from a neighbor's
/// tunnel is dropped unless its source is one that neighbor may use (routed back through its
/// tunnel) and it is one of:
/// - addressed to this node: part of a connection this node started (or one it accepted), an
///   ICMP error about one, the control port, one of `services`, a port in `open_tcp` /
///   `open_udp`, or an echo request within `echo_requests_per_sec`;
/// - to be forwarded: into another tunnel, out of an uplink, a reply to a connection started
///   from behind this node, or to a LAN when `lans_open`.
///
/// Every such drop is counted per neighbor and never billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Services besides the control port that neighbors may reach (default: Babel).
    pub services: Vec<LocalService>,
    /// Ports the operator opened to neighbors, on every address of this node.
    pub open_tcp: Vec<u16>,
    pub open_udp: Vec<u16>,
    /// Echo requests (ping) accepted from each neighbor per second (IPv4 and IPv6 together), with a burst
    /// of twice as many; the rest are unsolicited. 0: none.
    pub echo_requests_per_sec: u32,
    /// Interfaces towards the internet: neighbors' traffic may leave through them, new
    /// connections included.
    pub uplinks: Vec<IfName>,
    /// Interfaces towards the devices behind this router: from neighbors, only replies to
    /// connections those devices started reach them, unless `lans_open`.
    pub lans: Vec<IfName>,
    /// Neighbors may start connections to the devices on `lans`.
    pub lans_open: bool,
    /// The name prefix of this node's tunnel interfaces (`tw` and 6 hex digits of its id). A
    /// tunnel with this prefix that is not (yet) in the plan gets only the control port, pings
    /// to us and replies, uncounted, instead of no filtering at all. `None`: no such catch-all.
    pub tunnel_prefix: Option<String>,
}

impl Default for Admission {
    /// The built-in admission: the control port, Babel and 10 pings a second; nothing opened,
    /// no uplinks and no LANs.
    fn default() -> Self {
        Admission {
            services: vec![LocalService::babel()],
            open_tcp: Vec::new(),
            open_udp: Vec::new(),
            echo_requests_per_sec: 10,
            uplinks: Vec::new(),
            lans: Vec::new(),
            lans_open: false,
            tunnel_prefix: None,
        }
    }
}

/// Everything the traffic facilities need from the core, for the whole node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficPlan {
    pub control: ControlTraffic,
    /// Each neighbor appears in exactly one group.
    pub groups: Vec<ShaperGroup>,
    /// What neighbors may send to us and through us.
    pub admission: Admission,
}

/// Why a plan cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("neighbor key {0:?} must be 1 to 24 characters of [0-9a-z_]")]
    BadKey(String),
    #[error("neighbor key {0} appears more than once")]
    DuplicateKey(NeighborKey),
    #[error("tunnel {0} appears more than once")]
    DuplicateTunnel(IfName),
    #[error("group {0:?} appears more than once")]
    DuplicateGroup(GroupId),
    #[error("the control port must not be 0")]
    NoControlPort,
    #[error("group {group:?}: capacity {capacity} is below {min}", min = BitRate::MIN)]
    CapacityTooLow { group: GroupId, capacity: BitRate },
    #[error("group {group:?}: control rate {rate} must be between {min} and the capacity {capacity}", min = BitRate::MIN)]
    BadControlRate { group: GroupId, rate: BitRate, capacity: BitRate },
    #[error("neighbor {key}: need {min} ≤ rate ({rate}) ≤ ceil ({ceil}) ≤ group capacity ({capacity})", min = BitRate::MIN)]
    BadRates { key: NeighborKey, rate: BitRate, ceil: BitRate, capacity: BitRate },
    #[error("neighbor {key}: police rate {rate} is below {min}", min = BitRate::MIN)]
    BadPoliceRate { key: NeighborKey, rate: BitRate },
    #[error("group {group:?} has {count} neighbors; at most {max} fit in one HTB", max = MAX_NEIGHBORS_PER_GROUP)]
    TooManyNeighbors { group: GroupId, count: usize },
    #[error("service {name:?}: the port must not be 0")]
    ServicePort { name: String },
    #[error("service {name:?}: {group} is not a link-local multicast group (ff02::/16)")]
    ServiceGroup { name: String, group: Ipv6Addr },
    #[error("an opened {protocol} port must not be 0", protocol = .0.as_str())]
    OpenPortZero(Protocol),
    #[error("interface {ifname} is listed as {first} and as {second}")]
    InterfaceRoles { ifname: IfName, first: &'static str, second: &'static str },
    #[error("tunnel prefix {0:?} must be 1 to 14 characters of [A-Za-z0-9_.-]")]
    BadTunnelPrefix(String),
}

/// HTB minor class numbers are 16 bits; neighbors take `FIRST_NEIGHBOR_MINOR..=LAST_NEIGHBOR_MINOR`.
pub const MAX_NEIGHBORS_PER_GROUP: usize = (LAST_NEIGHBOR_MINOR - FIRST_NEIGHBOR_MINOR + 1) as usize;

/// The major number of every group's HTB (`1:`); each group has its own IFB device, so the same
/// major serves them all.
pub const HTB_MAJOR: u16 = 1;
/// `1:1`: the group's parent class at its capacity.
pub const PARENT_MINOR: u16 = 1;
/// `1:2`: control sessions.
pub const CONTROL_MINOR: u16 = 2;
/// `1:3`: anything not classified (the HTB default), e.g. while the firewall's rules are missing.
pub const DEFAULT_MINOR: u16 = 3;
pub const FIRST_NEIGHBOR_MINOR: u16 = 0x10;
pub const LAST_NEIGHBOR_MINOR: u16 = 0xffef;

/// An HTB class id `major:minor`; displayed in hexadecimal as tc and nft write it (`1:a3f0`).
/// It is also the value the firewall writes into `skb->priority` (`meta priority set 1:a3f0`):
/// HTB takes a packet whose priority names one of its classes straight into that class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId {
    pub major: u16,
    pub minor: u16,
}

impl ClassId {
    pub const fn htb(minor: u16) -> ClassId {
        ClassId { major: HTB_MAJOR, minor }
    }

    pub const fn control() -> ClassId {
        ClassId::htb(CONTROL_MINOR)
    }

    /// The kernel's 32-bit handle (`major << 16 | minor`).
    pub const fn raw(self) -> u32 {
        (self.major as u32) << 16 | self.minor as u32
    }
}

impl fmt::Display for ClassId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}", self.major, self.minor)
    }
}

impl TrafficPlan {
    /// A plan with no neighbors and no groups: applying it removes everything but leaves the
    /// (empty) table in place.
    pub fn empty(control: ControlTraffic) -> TrafficPlan {
        TrafficPlan { control, groups: Vec::new(), admission: Admission::default() }
    }

    /// Every neighbor with its group.
    pub fn neighbors(&self) -> impl Iterator<Item = (&ShaperGroup, &NeighborTraffic)> {
        self.groups.iter().flat_map(|g| g.neighbors.iter().map(move |n| (g, n)))
    }

    /// Check everything the kernel would otherwise reject halfway, or silently misapply.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.control.tcp_port == 0 {
            return Err(PlanError::NoControlPort);
        }
        let mut groups = BTreeSet::new();
        let mut keys = BTreeSet::new();
        let mut tunnels = BTreeSet::new();
        for g in &self.groups {
            if !groups.insert(g.id) {
                return Err(PlanError::DuplicateGroup(g.id));
            }
            if g.capacity < BitRate::MIN {
                return Err(PlanError::CapacityTooLow { group: g.id, capacity: g.capacity });
            }
            let c = self.control.rate;
            if c < BitRate::MIN || c > g.capacity {
                return Err(PlanError::BadControlRate { group: g.id, rate: c, capacity: g.capacity });
            }
            if g.neighbors.len() > MAX_NEIGHBORS_PER_GROUP {
                return Err(PlanError::TooManyNeighbors { group: g.id, count: g.neighbors.len() });
            }
            for n in &g.neighbors {
                if !keys.insert(&n.key) {
                    return Err(PlanError::DuplicateKey(n.key.clone()));
                }
                if !tunnels.insert(&n.tunnel) {
                    return Err(PlanError::DuplicateTunnel(n.tunnel.clone()));
                }
                if n.rate < BitRate::MIN || n.rate > n.ceil || n.ceil > g.capacity {
                    return Err(PlanError::BadRates {
                        key: n.key.clone(),
                        rate: n.rate,
                        ceil: n.ceil,
                        capacity: g.capacity,
                    });
                }
                if let IngressPolicy::Police { bits_per_sec } = n.ingress {
                    if bits_per_sec < BitRate::MIN {
                        return Err(PlanError::BadPoliceRate { key: n.key.clone(), rate: bits_per_sec });
                    }
                }
            }
        }
        self.admission.validate(&tunnels)
    }
}

impl Admission {
    fn validate(&self, tunnels: &BTreeSet<&IfName>) -> Result<(), PlanError> {
        for s in &self.services {
            if s.port == 0 {
                return Err(PlanError::ServicePort { name: s.name.clone() });
            }
            if let ServiceScope::LinkLocal { groups } = &s.scope {
                if let Some(g) = groups.iter().find(|g| g.segments()[0] != 0xff02) {
                    return Err(PlanError::ServiceGroup { name: s.name.clone(), group: *g });
                }
            }
        }
        for (ports, protocol) in [(&self.open_tcp, Protocol::Tcp), (&self.open_udp, Protocol::Udp)] {
            if ports.contains(&0) {
                return Err(PlanError::OpenPortZero(protocol));
            }
        }
        let mut roles: BTreeMap<&IfName, &'static str> = tunnels.iter().map(|t| (*t, "tunnel")).collect();
        for (list, role) in [(&self.uplinks, "uplink"), (&self.lans, "lan")] {
            for i in list {
                if let Some(first) = roles.insert(i, role) {
                    return Err(PlanError::InterfaceRoles { ifname: i.clone(), first, second: role });
                }
            }
        }
        if let Some(p) = &self.tunnel_prefix {
            let ok = !p.is_empty()
                && p.len() < IfName::MAX_LEN
                && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
            if !ok {
                return Err(PlanError::BadTunnelPrefix(p.clone()));
            }
        }
        Ok(())
    }
}

impl ShaperGroup {
    /// The HTB class of each neighbor of the group. Each key hashes to a preferred minor number,
    /// so a neighbor keeps its class while others come and go; on a collision (rare: 64
    /// neighbors collide with probability ~3 %) keys are served in order and the later one takes
    /// the next free number. The firewall (which writes the class into `skb->priority`) and the
    /// shaper (which creates the classes) both call this, so they agree.
    pub fn classes(&self) -> BTreeMap<NeighborKey, ClassId> {
        let mut keys: Vec<&NeighborKey> = self.neighbors.iter().map(|n| &n.key).collect();
        keys.sort();
        keys.dedup();
        let span = (LAST_NEIGHBOR_MINOR - FIRST_NEIGHBOR_MINOR) as u32 + 1;
        let mut taken = BTreeSet::new();
        let mut out = BTreeMap::new();
        for key in keys {
            let mut slot = fnv1a32(key.as_str().as_bytes()) % span;
            // validate() bounds the count below `span`, so a free slot exists; without it the
            // loop still ends because `taken` cannot hold more than `span` numbers.
            for _ in 0..span {
                if taken.insert(slot) {
                    break;
                }
                slot = (slot + 1) % span;
            }
            out.insert(key.clone(), ClassId::htb(FIRST_NEIGHBOR_MINOR + slot as u16));
        }
        out
    }
}

/// FNV-1a, 32 bits: small, stable across versions and platforms (unlike std's hasher).
pub(crate) fn fnv1a32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A plan for unit tests: one 10 Mbit/s group, neighbors `tw<key>` at 1 Mbit/s (ceil 10).
#[cfg(test)]
pub(crate) fn test_plan(keys: &[&str], ingress: IngressPolicy) -> TrafficPlan {
    TrafficPlan {
        control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(100) },
        groups: vec![ShaperGroup {
            id: GroupId(0),
            capacity: BitRate::mbit(10),
            neighbors: keys
                .iter()
                .map(|k| NeighborTraffic {
                    key: NeighborKey::new(*k).unwrap(),
                    tunnel: IfName::new(format!("tw{k}")).unwrap(),
                    rate: BitRate::mbit(1),
                    ceil: BitRate::mbit(10),
                    ingress,
                })
                .collect(),
        }],
        admission: Admission::default(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
