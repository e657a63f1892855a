//! Identifiers that cross boundaries, each a newtype parsed once: node ids, WireGuard keys,
//! interface names, and the addresses derived from a node's key.

use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A node's identity: its Ed25519 public key. Displayed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The first 12 hex digits: enough to tell neighbors apart in a table.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// The node's stable mesh address: a ULA (fd00::/8) derived from its key. It is what
    /// routing announces and what neighbors talk to.
    pub fn mesh_ip(&self) -> Ipv6Addr {
        let h = tagged_hash(b"tollway mesh ip v1", &self.0);
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..].copy_from_slice(&h[..15]);
        Ipv6Addr::from(b)
    }

    /// The node's default mesh IPv4 address: in 100.64.0.0/10 (shared address space, RFC 6598),
    /// 22 bits from its key. Two nodes of a large mesh may derive the same one (about 12
    /// pairs among 10,000 nodes): routing reports a collision and the operator then sets
    /// `mesh_ipv4` in the config.
    pub fn mesh_ipv4(&self) -> Ipv4Addr {
        let h = tagged_hash(b"tollway mesh ipv4 v1", &self.0);
        let bits = u32::from_be_bytes([0, h[0], h[1], h[2]]) & 0x3f_ffff;
        // Neither the first nor the last address of the /10.
        let bits = bits.clamp(1, 0x3f_fffe);
        Ipv4Addr::from(0x6440_0000 | bits)
    }

    /// The node's default LAN IPv6 prefix, a /64 in fd00::/8 (a ULA global id of 40 bits from
    /// its key, subnet 1).
    pub fn lan_prefix_v6(&self) -> Ipv6Addr {
        let h = tagged_hash(b"tollway lan prefix v1", &self.0);
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..6].copy_from_slice(&h[..5]);
        b[7] = 1;
        Ipv6Addr::from(b)
    }

    /// The node's probe prefix, a /120 in fd00::/8 derived from its key: address `slot` of it
    /// ([`NodeId::probe_ip`]) is the source of speed tests forced through the neighbor in that
    /// slot of the neighbor table, announced only through that neighbor's tunnel.
    pub fn probe_prefix(&self) -> Ipv6Addr {
        let h = tagged_hash(b"tollway probe prefix v1", &self.0);
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..15].copy_from_slice(&h[..14]);
        Ipv6Addr::from(b)
    }

    /// The probe address of neighbor-table slot `slot` (none above 255: a /120 has 256).
    pub fn probe_ip(&self, slot: usize) -> Option<Ipv6Addr> {
        let slot = u8::try_from(slot).ok()?;
        let mut b = self.probe_prefix().octets();
        b[15] = slot;
        Some(Ipv6Addr::from(b))
    }

    /// The link-local address the node puts on each of its tunnel interfaces (fe80::/64 with an
    /// interface id derived from its key), so that each side knows the other's without asking.
    pub fn tunnel_link_local(&self) -> Ipv6Addr {
        let h = tagged_hash(b"tollway tunnel link-local v1", &self.0);
        let mut b = [0u8; 16];
        b[0] = 0xfe;
        b[1] = 0x80;
        b[8..].copy_from_slice(&h[..8]);
        Ipv6Addr::from(b)
    }
}

fn tagged_hash(tag: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((tag.len() as u32).to_be_bytes());
    h.update(tag);
    h.update(data);
    h.finalize().into()
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    #[error("expected 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("not hexadecimal")]
    NotHex,
}

impl FromStr for NodeId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseIdError::Length(s.len()));
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| ParseIdError::NotHex)?;
        Ok(NodeId(b))
    }
}

/// A WireGuard (Curve25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgPublicKey(pub [u8; 32]);

impl WgPublicKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({})", &hex::encode(self.0)[..12])
    }
}

/// A Linux interface name: 1 to 15 bytes of `[A-Za-z0-9_.-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than 15 characters")]
    TooLong(String),
    #[error("interface name {0:?} may only contain letters, digits, '_', '.' and '-'")]
    BadChar(String),
}

impl IfName {
    pub const MAX_LEN: usize = 15;

    pub fn new(s: impl Into<String>) -> Result<IfName, IfNameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(IfNameError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(IfNameError::TooLong(s));
        }
        if s == "." || s == ".." || !s.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)) {
            return Err(IfNameError::BadChar(s));
        }
        Ok(IfName(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix of every tunnel interface a node creates: `tw` and the first 6 hex digits of
    /// its id. Interface names must be unique host-wide (userspace WireGuard control sockets are
    /// not per namespace), and this prefix also lets a restarted daemon find its own leftovers.
    pub fn tunnel_prefix(own: &NodeId) -> String {
        format!("tw{}", &hex::encode(own.0)[..6])
    }

    /// The tunnel interface a node uses for one neighbor: its prefix then 6 hex digits of the
    /// neighbor's id (14 characters).
    pub fn for_tunnel(own: &NodeId, neighbor: &NodeId) -> IfName {
        IfName(format!("{}{}", Self::tunnel_prefix(own), &hex::encode(neighbor.0)[..6]))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for IfName {
    type Err = IfNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IfName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_hex() {
        let id = NodeId([7u8; 32]);
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<NodeId>().unwrap(), id);
        assert_eq!("abc".parse::<NodeId>(), Err(ParseIdError::Length(3)));
        assert_eq!("z".repeat(64).parse::<NodeId>(), Err(ParseIdError::NotHex));
    }

    #[test]
    fn derived_addresses_are_in_their_ranges_and_distinct() {
        let a = NodeId([1u8; 32]);
        let b = NodeId([2u8; 32]);
        assert_eq!(a.mesh_ip().octets()[0], 0xfd);
        assert_ne!(a.mesh_ip(), b.mesh_ip());
        let ll = a.tunnel_link_local().segments();
        assert_eq!(&ll[..4], &[0xfe80, 0, 0, 0]);
        assert_ne!(a.tunnel_link_local(), b.tunnel_link_local());
        // Stable: the same key always gives the same address.
        assert_eq!(a.mesh_ip(), NodeId([1u8; 32]).mesh_ip());
        // Probe addresses: slot k is the /120's address k; none past 255; apart from the mesh ip.
        let p = a.probe_prefix().octets();
        assert_eq!((p[0], p[15]), (0xfd, 0));
        assert_eq!(a.probe_ip(7).unwrap().octets()[..15], p[..15]);
        assert_eq!(a.probe_ip(7).unwrap().octets()[15], 7);
        assert_eq!(a.probe_ip(256), None);
        assert_ne!(a.probe_prefix(), b.probe_prefix());
        assert_ne!(a.probe_ip(0), Some(a.mesh_ip()));
        for i in 0..=255u8 {
            let n = NodeId([i; 32]);
            let v4 = u32::from(n.mesh_ipv4());
            assert!((0x6440_0001..=0x647f_fffe).contains(&v4), "{}", n.mesh_ipv4());
            let lan = n.lan_prefix_v6().segments();
            assert_eq!(lan[0] >> 8, 0xfd);
            assert_eq!(lan[3], 1);
            assert_eq!(&lan[4..], &[0; 4]);
        }
        assert_ne!(a.mesh_ipv4(), b.mesh_ipv4());
        assert_ne!(a.lan_prefix_v6(), b.lan_prefix_v6());
    }

    #[test]
    fn interface_names_are_validated() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new("veth-a.b_c").is_ok());
        assert_eq!(IfName::new(""), Err(IfNameError::Empty));
        assert!(matches!(IfName::new("a".repeat(16)), Err(IfNameError::TooLong(_))));
        assert!(matches!(IfName::new("a b"), Err(IfNameError::BadChar(_))));
        assert!(matches!(IfName::new("a/b"), Err(IfNameError::BadChar(_))));
        assert!(matches!(IfName::new(".."), Err(IfNameError::BadChar(_))));
    }

    #[test]
    fn tunnel_names_fit_and_start_with_the_prefix() {
        let own = NodeId([0xab; 32]);
        let n = IfName::for_tunnel(&own, &NodeId([0xcd; 32]));
        assert_eq!(n.as_str(), "twabababcdcdcd");
        assert!(n.as_str().starts_with(&IfName::tunnel_prefix(&own)));
        assert!(IfName::new(n.as_str()).is_ok());
    }
}
