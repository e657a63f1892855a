//! Generic netlink: resolving a family name to its id.

use super::NlSocket;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use std::io;

/// The id of generic netlink family `name`. A family that is not registered (its module is
/// not loaded or does not exist) gives `ENOENT`.
pub(crate) fn family_id(sock: &mut NlSocket, name: &str) -> io::Result<u16> {
    let req = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    });
    let replies = sock.request(req, 0)?;
    replies
        .iter()
        .flat_map(|r| r.payload.nlas.iter())
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| super::invalid_data(format!("generic netlink family {name}: reply without an id")))
}
