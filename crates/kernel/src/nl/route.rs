//! rtnetlink messages: links, IPv6 addresses and IPv6 routes, built as typed values.

use super::{is_errno, NlSocket};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use std::net::{IpAddr, Ipv6Addr};

/// What we need to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSummary {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "tun", "wireguard", "veth"…; `None` for physical devices and lo.
    pub kind: Option<String>,
    pub up: bool,
    pub mtu: Option<u32>,
    pub stats: Option<crate::LinkStats>,
}

impl LinkSummary {
    /// A device a tunnel backend may own: a TUN device (userspace WireGuard) or a kernel
    /// WireGuard device.
    pub fn is_tunnel(&self) -> bool {
        matches!(self.kind.as_deref(), Some("tun") | Some("wireguard"))
    }
}

pub(crate) fn parse_link(msg: &LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: None,
        stats: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::Stats64(st) => {
                s.stats = Some(crate::LinkStats {
                    ifindex: msg.header.index,
                    rx_bytes: st.rx_bytes,
                    tx_bytes: st.tx_bytes,
                    rx_packets: st.rx_packets,
                    tx_packets: st.tx_packets,
                })
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        s.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// `RTM_GETLINK` for one interface by name.
pub(crate) fn get_link_by_name(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    RouteNetlinkMessage::GetLink(m)
}

/// `RTM_GETLINK` dump of every interface.
pub(crate) fn dump_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// `RTM_DELLINK` by index.
pub(crate) fn del_link(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    RouteNetlinkMessage::DelLink(m)
}

/// `RTM_NEWLINK` creating a kernel WireGuard device (send with `NLM_F_CREATE | NLM_F_EXCL`).
pub(crate) fn new_wireguard_link(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Wireguard)]));
    RouteNetlinkMessage::NewLink(m)
}

/// `RTM_NEWLINK` on an existing interface: set the MTU (if given) and bring it up.
pub(crate) fn set_up(index: u32, mtu: Option<u32>) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    RouteNetlinkMessage::NewLink(m)
}

/// `RTM_NEWLINKPROP`: add an alternative name to interface `index`.
pub(crate) fn add_altname(index: u32, altname: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::PropList(vec![netlink_packet_route::link::Prop::AltIfName(altname.to_owned())]));
    RouteNetlinkMessage::NewLinkProp(m)
}

/// `RTM_DELLINKPROP`: remove an alternative name of interface `index`.
pub(crate) fn del_altname(index: u32, altname: &str) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewLinkProp(m) = add_altname(index, altname) else { unreachable!() };
    RouteNetlinkMessage::DelLinkProp(m)
}

/// Flags for adding an address so that an existing one is reported as `EEXIST`.
pub(crate) const NEW_ADDR_FLAGS: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// `RTM_NEWADDR` for an IPv6 address without duplicate address detection.
pub(crate) fn new_addr6(index: u32, addr: Ipv6Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.header.flags = AddressHeaderFlags::Nodad;
    m.attributes.push(AddressAttribute::Local(IpAddr::V6(addr)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V6(addr)));
    m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    RouteNetlinkMessage::NewAddress(m)
}

/// `RTM_DELADDR` for an IPv6 address (the kernel finds it by address and prefix length).
pub(crate) fn del_addr6(index: u32, addr: Ipv6Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V6(addr)));
    RouteNetlinkMessage::DelAddress(m)
}

pub(crate) fn new_addr4(index: u32, addr: std::net::Ipv4Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
    RouteNetlinkMessage::NewAddress(m)
}

/// Flags for installing a route, replacing one to the same destination.
pub(crate) const NEW_ROUTE_FLAGS: u16 = NLM_F_CREATE | NLM_F_REPLACE;

fn route6(index: u32, dst: Ipv6Addr, prefix_len: u8, src: Option<Ipv6Addr>) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.destination_prefix_length = prefix_len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet6(dst)));
    m.attributes.push(RouteAttribute::Oif(index));
    if let Some(src) = src {
        m.attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet6(src)));
    }
    m
}

/// `RTM_NEWROUTE` for `dst/prefix_len` out of interface `index` (send with [`NEW_ROUTE_FLAGS`]).
pub(crate) fn new_route6(index: u32, dst: Ipv6Addr, prefix_len: u8, src: Option<Ipv6Addr>) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRoute(route6(index, dst, prefix_len, src))
}

/// `RTM_DELROUTE` for `dst/prefix_len` out of interface `index`.
pub(crate) fn del_route6(index: u32, dst: Ipv6Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut m = route6(index, dst, prefix_len, None);
    // Match any protocol and scope when deleting.
    m.header.protocol = RouteProtocol::Unspec;
    m.header.scope = RouteScope::NoWhere;
    RouteNetlinkMessage::DelRoute(m)
}

/// Look an interface up by name in the socket's namespace; `None` if there is none.
pub fn link_by_name(sock: &mut NlSocket, name: &str) -> io::Result<Option<LinkSummary>> {
    match sock.request(get_link_by_name(name), 0) {
        Ok(replies) => Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
            _ => None,
        })),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every interface in the socket's namespace.
pub fn all_links(sock: &mut NlSocket) -> io::Result<Vec<LinkSummary>> {
    let replies = sock.dump(dump_links())?;
    Ok(replies
        .iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
            _ => None,
        })
        .collect())
}

/// Delete the interface `index`; a missing one is not an error.
pub fn delete_link(sock: &mut NlSocket, index: u32) -> io::Result<()> {
    match sock.request(del_link(index), 0) {
        Ok(_) => Ok(()),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Bring interface `index` up.
pub fn set_link_up(sock: &mut NlSocket, index: u32) -> io::Result<()> {
    sock.request(set_up(index, None), 0).map(drop)
}

/// The index of interface `name` in the calling thread's namespace, through `if_nametoindex`
/// (one ioctl: cheaper than a netlink round trip).
pub(crate) fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::encode;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};

    fn round_trip(msg: RouteNetlinkMessage, flags: u16) -> (u16, u16, RouteNetlinkMessage) {
        let bytes = encode(msg, flags, 7);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(parsed.header.sequence_number, 7);
        assert_eq!(parsed.header.length as usize, bytes.len());
        let NetlinkPayload::InnerMessage(inner) = parsed.payload else { panic!("not an inner message") };
        (parsed.header.message_type, parsed.header.flags, inner)
    }

    #[test]
    fn wireguard_link_carries_the_kind_and_name() {
        let bytes = encode(new_wireguard_link("twabc"), NLM_F_REQUEST | NLM_F_ACK | NEW_ADDR_FLAGS, 1);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), libc::RTM_NEWLINK);
        let hay = String::from_utf8_lossy(&bytes);
        assert!(hay.contains("wireguard"), "{bytes:?}");
        assert!(hay.contains("twabc\0"));
        let (ty, flags, inner) = round_trip(new_wireguard_link("twabc"), NLM_F_REQUEST | NEW_ADDR_FLAGS);
        assert_eq!(ty, libc::RTM_NEWLINK);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
        let RouteNetlinkMessage::NewLink(m) = inner else { panic!() };
        let s = parse_link(&m);
        assert_eq!(s.name, "twabc");
        assert_eq!(s.kind.as_deref(), Some("wireguard"));
        assert!(s.is_tunnel());
    }

    #[test]
    fn set_up_sets_flag_mask_and_mtu() {
        let (ty, _, inner) = round_trip(set_up(12, Some(1420)), NLM_F_REQUEST);
        assert_eq!(ty, libc::RTM_NEWLINK);
        let RouteNetlinkMessage::NewLink(m) = inner else { panic!() };
        assert_eq!(m.header.index, 12);
        assert!(m.header.flags.contains(LinkFlags::Up));
        assert!(m.header.change_mask.contains(LinkFlags::Up));
        assert_eq!(m.attributes, vec![LinkAttribute::Mtu(1420)]);
        let (_, _, inner) = round_trip(set_up(12, None), NLM_F_REQUEST);
        let RouteNetlinkMessage::NewLink(m) = inner else { panic!() };
        assert!(m.attributes.is_empty());
    }

    #[test]
    fn ipv6_address_has_nodad_in_header_and_attribute() {
        let a: Ipv6Addr = "fe80::1:2".parse().unwrap();
        let (ty, _, inner) = round_trip(new_addr6(3, a, 64), NLM_F_REQUEST | NEW_ADDR_FLAGS);
        assert_eq!(ty, libc::RTM_NEWADDR);
        let RouteNetlinkMessage::NewAddress(m) = inner else { panic!() };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.prefix_len, 64);
        assert_eq!(m.header.index, 3);
        assert!(m.header.flags.contains(AddressHeaderFlags::Nodad));
        assert!(m.attributes.contains(&AddressAttribute::Local(IpAddr::V6(a))));
        assert!(m.attributes.contains(&AddressAttribute::Flags(AddressFlags::Nodad)));

        let (ty, _, inner) = round_trip(del_addr6(3, a, 128), NLM_F_REQUEST);
        assert_eq!(ty, libc::RTM_DELADDR);
        let RouteNetlinkMessage::DelAddress(m) = inner else { panic!() };
        assert_eq!((m.header.family, m.header.prefix_len, m.header.index), (AddressFamily::Inet6, 128, 3));
        assert!(m.attributes.contains(&AddressAttribute::Local(IpAddr::V6(a))));
    }

    #[test]
    fn routes_carry_destination_device_and_optional_source() {
        let dst: Ipv6Addr = "fd00::1".parse().unwrap();
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let (ty, flags, inner) = round_trip(new_route6(9, dst, 128, Some(src)), NLM_F_REQUEST | NEW_ROUTE_FLAGS);
        assert_eq!(ty, libc::RTM_NEWROUTE);
        assert_eq!(flags & NLM_F_REPLACE, NLM_F_REPLACE);
        let RouteNetlinkMessage::NewRoute(m) = inner else { panic!() };
        assert_eq!(m.header.destination_prefix_length, 128);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert!(m.attributes.contains(&RouteAttribute::Destination(RouteAddress::Inet6(dst))));
        assert!(m.attributes.contains(&RouteAttribute::Oif(9)));
        assert!(m.attributes.contains(&RouteAttribute::PrefSource(RouteAddress::Inet6(src))));

        let (ty, _, inner) = round_trip(del_route6(9, dst, 128), NLM_F_REQUEST);
        assert_eq!(ty, libc::RTM_DELROUTE);
        let RouteNetlinkMessage::DelRoute(m) = inner else { panic!() };
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::PrefSource(_))));
    }

    #[test]
    fn link_summary_reads_stats_and_state() {
        let mut m = LinkMessage::default();
        m.header.index = 4;
        m.header.flags = LinkFlags::Up | LinkFlags::Running;
        m.attributes.push(LinkAttribute::IfName("tw1".into()));
        m.attributes.push(LinkAttribute::Mtu(1400));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Tun)]));
        let mut st = netlink_packet_route::link::Stats64::default();
        st.rx_bytes = 10;
        st.tx_bytes = 20;
        st.rx_packets = 1;
        st.tx_packets = 2;
        m.attributes.push(LinkAttribute::Stats64(st));
        let s = parse_link(&m);
        assert_eq!(
            s,
            LinkSummary {
                index: 4,
                name: "tw1".into(),
                kind: Some("tun".into()),
                up: true,
                mtu: Some(1400),
                stats: Some(crate::LinkStats { ifindex: 4, rx_bytes: 10, tx_bytes: 20, rx_packets: 1, tx_packets: 2 }),
            }
        );
        assert!(s.is_tunnel());
    }
}
