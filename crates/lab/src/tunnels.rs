//! Whether each link's tunnel is up, judged from both ends' status.
//!
//! A link a–b is up when a's status lists b's node id as a neighbor with `tunnel_up` and b's
//! status lists a's likewise.

use crate::names::NodeName;
use crate::state::LinkRecord;
use serde::Serialize;
use std::fmt;
use tollway_api::Status;

/// What one end of a link sees of the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "view", rename_all = "snake_case")]
pub enum EndView {
    /// The peer is a neighbor and its tunnel is up.
    Up { state: String, interface: String },
    /// The peer is a neighbor but the tunnel is not up yet.
    NotUp { state: String, last_error: Option<String> },
    /// The peer's id is known but this end has no neighbor entry for it.
    NoNeighbor,
    /// The peer's daemon has not reported its node id yet, so it cannot be looked for.
    PeerUnknown,
    /// This end's daemon gave no status.
    NoStatus { reason: String },
}

impl EndView {
    pub fn is_up(&self) -> bool {
        matches!(self, EndView::Up { .. })
    }

    /// Judge one end: `own` is this end's status (or why there is none), `peer_id` the other
    /// end's node id if known.
    pub fn judge(own: Result<&Status, &str>, peer_id: Option<&str>) -> EndView {
        let status = match own {
            Ok(s) => s,
            Err(reason) => return EndView::NoStatus { reason: reason.to_owned() },
        };
        let Some(peer_id) = peer_id else { return EndView::PeerUnknown };
        match status.neighbors.iter().find(|n| n.id == peer_id) {
            None => EndView::NoNeighbor,
            Some(n) if n.tunnel_up => EndView::Up { state: n.state.clone(), interface: n.interface.clone() },
            Some(n) => EndView::NotUp { state: n.state.clone(), last_error: n.last_error.clone() },
        }
    }
}

impl fmt::Display for EndView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndView::Up { state, interface } => write!(f, "up ({state}, {interface})"),
            EndView::NotUp { state, last_error: None } => write!(f, "{state}, tunnel down"),
            EndView::NotUp { state, last_error: Some(e) } => write!(f, "{state}, tunnel down: {e}"),
            EndView::NoNeighbor => f.write_str("not a neighbor"),
            EndView::PeerUnknown => f.write_str("peer id unknown"),
            // The reason is per node, not per link: callers show it once per node.
            EndView::NoStatus { .. } => f.write_str("no status"),
        }
    }
}

/// One link as both ends see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkReport {
    pub a: NodeName,
    pub b: NodeName,
    pub a_sees_b: EndView,
    pub b_sees_a: EndView,
}

impl LinkReport {
    pub fn is_up(&self) -> bool {
        self.a_sees_b.is_up() && self.b_sees_a.is_up()
    }

    /// Judge `link` from the statuses of its ends and their node ids.
    pub fn judge(
        link: &LinkRecord,
        a: (Result<&Status, &str>, Option<&str>),
        b: (Result<&Status, &str>, Option<&str>),
    ) -> LinkReport {
        LinkReport {
            a: link.a.clone(),
            b: link.b.clone(),
            a_sees_b: EndView::judge(a.0, b.1),
            b_sees_a: EndView::judge(b.0, a.1),
        }
    }
}

impl fmt::Display for LinkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (&self.a, &self.b);
        write!(f, "{a}–{b}: {a} sees {b}: {}; {b} sees {a}: {}", self.a_sees_b, self.b_sees_a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_api::{NeighborStatus, NodeStatus};

    fn status(id: &str, neighbors: &[(&str, &str, bool)]) -> Status {
        Status {
            node: NodeStatus {
                id: id.into(),
                mesh_ip: "fd00::1".into(),
                wg_public_key: String::new(),
                tunnel_backend: "userspace".into(),
                interfaces: vec![],
                uptime_secs: 1,
                ..Default::default()
            },
            neighbors: neighbors
                .iter()
                .map(|(nid, state, up)| NeighborStatus {
                    id: (*nid).into(),
                    mesh_ip: String::new(),
                    interface: format!("tw{}", &nid[..6]),
                    state: (*state).into(),
                    tunnel_up: *up,
                    last_handshake_secs: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    underlay: String::new(),
                    listen_port: 0,
                    peer_port: None,
                    last_heard_secs: 0,
                    session_secs: None,
                    last_error: None,
                    ..Default::default()
                })
                .collect(),
            discovery_rejected: Default::default(),
            routing: Default::default(),
            routes: Vec::new(),
            test_bytes_last_hour: 0,
            test_budget_per_hour: 0,
            test_bytes_total: 0,
            tests_upload_only: false,
        }
    }

    fn link() -> LinkRecord {
        LinkRecord {
            a: "a".parse().unwrap(),
            b: "b".parse().unwrap(),
            a_interface: "v-b".into(),
            b_interface: "v-a".into(),
            mtu: 1500,
            rate_mbit: None,
            loss_permille: None,
            down: false,
        }
    }

    #[test]
    fn a_link_is_up_only_when_both_ends_see_the_tunnel_up() {
        let (ida, idb, idc) = ("aaaaaa11", "bbbbbb22", "cccccc33");
        let sa = status(ida, &[(idb, "connected", true)]);
        let sb = status(idb, &[(ida, "tunnel_up", true), (idc, "pending", false)]);
        let r = LinkReport::judge(&link(), (Ok(&sa), Some(ida)), (Ok(&sb), Some(idb)));
        assert!(r.is_up(), "{r}");

        let sb_pending = status(idb, &[(ida, "pending", false)]);
        let r = LinkReport::judge(&link(), (Ok(&sa), Some(ida)), (Ok(&sb_pending), Some(idb)));
        assert!(!r.is_up());
        assert_eq!(r.to_string(), "a–b: a sees b: up (connected, twbbbbbb); b sees a: pending, tunnel down");

        let sb_other = status(idb, &[(idc, "connected", true)]);
        let r = LinkReport::judge(&link(), (Ok(&sa), Some(ida)), (Ok(&sb_other), Some(idb)));
        assert_eq!(r.b_sees_a, EndView::NoNeighbor);

        let r = LinkReport::judge(&link(), (Ok(&sa), Some(ida)), (Err("daemon not running"), None));
        assert_eq!(r.a_sees_b, EndView::PeerUnknown);
        assert_eq!(r.b_sees_a, EndView::NoStatus { reason: "daemon not running".into() });
        assert_eq!(r.to_string(), "a–b: a sees b: peer id unknown; b sees a: no status");
        assert!(!r.is_up());
    }
}
