//! Interfaces through rtnetlink: the counters of one link (the sender's cross-check of what its
//! neighbor counts), and the listing, creation and removal of the shaper's IFB devices.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use tollway_core::IfName;
use tollway_kernel::nl::{is_errno, NlSocket};

/// The kernel's 64-bit counters of one interface (`IFLA_STATS64`, what `ip -s link` shows).
/// For a tunnel they count inner packets after segmentation, so `tx_bytes` is exact where
/// nftables egress counters see GSO super-packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// The interface's index: its identity. A re-created tunnel gets a new index and counters
    /// starting from zero, so a changed index means a counter reset.
    pub ifindex: u32,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("reading the counters of {ifname}: {source}")]
pub struct LinkStatsError {
    pub ifname: IfName,
    pub source: io::Error,
}

/// The counters of interface `ifname` in the calling thread's network namespace, or `None` if
/// there is no such interface.
pub fn link_counters(ifname: &IfName) -> Result<Option<LinkCounters>, LinkStatsError> {
    let err = |source| LinkStatsError { ifname: ifname.clone(), source };
    let mut sock = NlSocket::route().map_err(err)?;
    Ok(link_by_name(&mut sock, ifname.as_str()).map_err(err)?.and_then(|l| l.counters))
}

/// What the shaper needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkSummary {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("ifb", "tun", "veth"…), `None` for physical devices and lo.
    pub kind: Option<String>,
    pub up: bool,
    pub counters: Option<LinkCounters>,
}

fn parse_link(msg: &LinkMessage) -> LinkSummary {
    let mut s = LinkSummary {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        counters: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Stats64(st) => {
                s.counters = Some(LinkCounters {
                    ifindex: msg.header.index,
                    rx_bytes: st.rx_bytes,
                    rx_packets: st.rx_packets,
                    tx_bytes: st.tx_bytes,
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

pub(crate) fn link_by_name(sock: &mut NlSocket, name: &str) -> io::Result<Option<LinkSummary>> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match sock.request(RouteNetlinkMessage::GetLink(m), 0) {
        Ok(replies) => Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
            _ => None,
        })),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn all_links(sock: &mut NlSocket) -> io::Result<Vec<LinkSummary>> {
    let replies = sock.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    Ok(replies
        .iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
            _ => None,
        })
        .collect())
}

/// Create an IFB device with the given transmit queue length (the default leaf queue of
/// qdiscs on it), fail if it exists.
pub(crate) fn create_ifb(sock: &mut NlSocket, name: &str, txqueuelen: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::TxQueueLen(txqueuelen));
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    sock.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
}

pub(crate) fn set_up(sock: &mut NlSocket, index: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    sock.request(RouteNetlinkMessage::NewLink(m), 0).map(drop)
}

/// Delete an interface; a missing one is not an error.
pub(crate) fn delete_link(sock: &mut NlSocket, index: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match sock.request(RouteNetlinkMessage::DelLink(m), 0) {
        Ok(_) => Ok(()),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        Err(e) => Err(e),
    }
}
