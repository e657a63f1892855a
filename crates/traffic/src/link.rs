//! Interfaces through rtnetlink: the listing, creation and removal of the shaper's IFB devices
//! (the generic link calls are the kernel crate's).

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use tollway_kernel::nl::NlSocket;
pub(crate) use tollway_kernel::nl::{all_links, delete_link, link_by_name, set_link_up, LinkSummary};

/// Create an IFB device with the given transmit queue length (the default leaf queue of
/// qdiscs on it), fail if it exists.
pub(crate) fn create_ifb(sock: &mut NlSocket, name: &str, txqueuelen: u32) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::TxQueueLen(txqueuelen));
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    sock.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map(drop)
}
