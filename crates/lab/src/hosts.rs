//! Host namespaces: the lab's `internet` and each node's LAN host. They run no daemon; they
//! are the far ends of a node's uplink and LAN, for experiments with real traffic.
//!
//! ```text
//!   internet (tw-<lab>-internet)           lo: 2001:db8::1/128, 192.0.2.1/32
//!     v-<node> 198.51.100.<4k+1>/30, 2001:db8:ffff:<k>::1/64
//!        │
//!     v-internet 198.51.100.<4k+2>/30, 2001:db8:ffff:<k>::2/64    (in node #k, `uplink = true`;
//!   node #k                                                         default routes via ...1)
//!     v-lan 10.<100+i>.0.1/24, fd00:1ab:<i>::1/64                 (in node #i, `lan = true`)
//!        │
//!     lan0 10.<100+i>.0.2/24, fd00:1ab:<i>::2/64                  (default routes via ...1)
//!   <node>-lan (tw-<lab>-<node>-lan)
//! ```
//!
//! `k` and `i` are the node's position in the topology file (1 for the first `[[node]]`), so a
//! node's addresses do not change when another node gets an uplink or a LAN. Every address is
//! from the documentation prefixes (RFC 3849, RFC 5737) or lab-chosen private space, and
//! exists only inside the lab's namespaces. The internet host routes only to its directly
//! connected link subnets: uplink nodes masquerade what they send there, so the mesh's own
//! addresses are never routed to it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What `lab exec` and `lab link` call the internet host.
pub const INTERNET: &str = "internet";
/// The suffix of a LAN host's name: `<node>-lan`.
pub const LAN_SUFFIX: &str = "-lan";
/// The uplink veth inside an uplink node.
pub const UPLINK_INTERFACE: &str = "v-internet";
/// The LAN veth inside a node with a LAN.
pub const LAN_INTERFACE: &str = "v-lan";
/// The LAN host's veth toward its node.
pub const LAN_HOST_INTERFACE: &str = "lan0";
/// Where the internet host answers (on its `lo`).
pub const INTERNET_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const INTERNET_IPV4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Node positions that can have an uplink: 198.51.100.0/24 holds 64 /30s and the first is
/// not used, so the /30 of node #k is 198.51.100.<4k>/30.
pub const MAX_UPLINK_POSITION: usize = 63;
/// Node positions that can have a LAN: 10.<100+i>.0.0/24 must stay within 10.255.
pub const MAX_LAN_POSITION: usize = 155;

/// Node names a topology may not use: they would collide with the hosts' veths (`v-internet`,
/// `v-lan`) and the internet's `lab exec` name.
pub const RESERVED_NODE_NAMES: [&str; 2] = [INTERNET, "lan"];

/// An address with its prefix length, as `ip address add` takes it: `198.51.100.6/30`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn v4(addr: Ipv4Addr, len: u8) -> Cidr {
        assert!(len <= 32, "an IPv4 prefix length is at most 32");
        Cidr { addr: addr.into(), len }
    }

    pub fn v6(addr: Ipv6Addr, len: u8) -> Cidr {
        assert!(len <= 128, "an IPv6 prefix length is at most 128");
        Cidr { addr: addr.into(), len }
    }

    /// The prefix this address is in: host bits cleared (`198.51.100.4/30`).
    pub fn network(&self) -> Cidr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                Cidr::v4(Ipv4Addr::from(u32::from(a) & mask), self.len)
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                Cidr::v6(Ipv6Addr::from(u128::from(a) & mask), self.len)
            }
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not address/length"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(len) if len <= max => Ok(Cidr { addr, len }),
            _ => Err(format!("{s:?}: the prefix length must be 0 to {max}")),
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// The four addresses of one node–host veth, both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddresses {
    pub node_ipv4: Cidr,
    pub node_ipv6: Cidr,
    pub host_ipv4: Cidr,
    pub host_ipv6: Cidr,
}

/// The uplink of node #`position` (1-based): 198.51.100.<4k>/30 and 2001:db8:ffff:<k>::/64,
/// the internet side `.1`/`::1` (the node's gateway), the node `.2`/`::2`. `None` past
/// [`MAX_UPLINK_POSITION`].
pub fn uplink_addresses(position: usize) -> Option<LinkAddresses> {
    if !(1..=MAX_UPLINK_POSITION).contains(&position) {
        return None;
    }
    let base = 4 * position as u8;
    let v6 = |host: u16| Ipv6Addr::new(0x2001, 0xdb8, 0xffff, position as u16, 0, 0, 0, host);
    Some(LinkAddresses {
        node_ipv4: Cidr::v4(Ipv4Addr::new(198, 51, 100, base + 2), 30),
        node_ipv6: Cidr::v6(v6(2), 64),
        host_ipv4: Cidr::v4(Ipv4Addr::new(198, 51, 100, base + 1), 30),
        host_ipv6: Cidr::v6(v6(1), 64),
    })
}

/// The LAN of node #`position` (1-based): 10.<100+i>.0.0/24 and fd00:1ab:<i>::/64 (the
/// position's decimal digits as the third group, so node #12 has 10.112.0.0/24 and
/// fd00:1ab:12::/64), the node `.1`/`::1` (the LAN's gateway), the LAN host `.2`/`::2`.
/// `None` past [`MAX_LAN_POSITION`].
pub fn lan_addresses(position: usize) -> Option<LinkAddresses> {
    if !(1..=MAX_LAN_POSITION).contains(&position) {
        return None;
    }
    let group = u16::from_str_radix(&position.to_string(), 16).expect("decimal digits are hex digits");
    let v6 = |host: u16| Ipv6Addr::new(0xfd00, 0x1ab, group, 0, 0, 0, 0, host);
    let v4 = |host: u8| Ipv4Addr::new(10, 100 + position as u8, 0, host);
    Some(LinkAddresses {
        node_ipv4: Cidr::v4(v4(1), 24),
        node_ipv6: Cidr::v6(v6(1), 64),
        host_ipv4: Cidr::v4(v4(2), 24),
        host_ipv6: Cidr::v6(v6(2), 64),
    })
}

/// The LAN host's name for `node`: `<node>-lan`.
pub fn lan_host_name(node: &str) -> String {
    format!("{node}{LAN_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_subnets_are_disjoint_documentation_slash_30s() {
        let first = uplink_addresses(1).unwrap();
        assert_eq!(first.node_ipv4.to_string(), "198.51.100.6/30");
        assert_eq!(first.host_ipv4.to_string(), "198.51.100.5/30");
        assert_eq!(first.node_ipv4.network().to_string(), "198.51.100.4/30");
        assert_eq!(first.node_ipv6.to_string(), "2001:db8:ffff:1::2/64");
        assert_eq!(first.host_ipv6.to_string(), "2001:db8:ffff:1::1/64");
        assert_eq!(first.node_ipv6.network().to_string(), "2001:db8:ffff:1::/64");
        let last = uplink_addresses(MAX_UPLINK_POSITION).unwrap();
        assert_eq!(last.node_ipv4.to_string(), "198.51.100.254/30");
        assert_eq!(last.node_ipv4.network().to_string(), "198.51.100.252/30");
        assert_eq!(uplink_addresses(0), None);
        assert_eq!(uplink_addresses(MAX_UPLINK_POSITION + 1), None);
        let nets: std::collections::BTreeSet<Cidr> =
            (1..=MAX_UPLINK_POSITION).map(|k| uplink_addresses(k).unwrap().node_ipv4.network()).collect();
        assert_eq!(nets.len(), MAX_UPLINK_POSITION);
    }

    #[test]
    fn lan_prefixes_follow_the_node_position() {
        let third = lan_addresses(3).unwrap();
        assert_eq!(third.node_ipv4.to_string(), "10.103.0.1/24");
        assert_eq!(third.host_ipv4.to_string(), "10.103.0.2/24");
        assert_eq!(third.node_ipv4.network().to_string(), "10.103.0.0/24");
        assert_eq!(third.node_ipv6.to_string(), "fd00:1ab:3::1/64");
        assert_eq!(third.host_ipv6.network().to_string(), "fd00:1ab:3::/64");
        assert_eq!(lan_addresses(12).unwrap().node_ipv6.network().to_string(), "fd00:1ab:12::/64");
        assert_eq!(lan_addresses(155).unwrap().node_ipv4.to_string(), "10.255.0.1/24");
        assert_eq!(lan_addresses(156), None);
        assert_eq!(lan_addresses(0), None);
    }

    #[test]
    fn cidrs_parse_and_print() {
        for ok in ["10.0.0.1/8", "2001:db8::1/128", "0.0.0.0/0"] {
            assert_eq!(ok.parse::<Cidr>().unwrap().to_string(), ok);
        }
        for bad in ["10.0.0.1", "10.0.0.1/33", "x/3", "::1/129", "::1/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!("10.1.2.3/0".parse::<Cidr>().unwrap().network().to_string(), "0.0.0.0/0");
        assert_eq!(serde_json::to_string(&Cidr::v4(INTERNET_IPV4, 32)).unwrap(), "\"192.0.2.1/32\"");
    }
}
