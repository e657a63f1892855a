//! The status the API reports, built from the core's getters.

use crate::driver::Driver;
use tollway_api::{NeighborStatus, NodeStatus, Status};

pub fn build(d: &Driver) -> Status {
    let node = d.node();
    let uptime = d.started.elapsed();
    let now_ms = d.now().mono;
    let id = node.node_id();
    Status {
        node: NodeStatus {
            id: id.to_string(),
            mesh_ip: id.mesh_ip().to_string(),
            wg_public_key: node.identity().wg_public().to_hex(),
            tunnel_backend: d.tunnel_backend().to_string(),
            interfaces: node.config().interfaces.iter().map(|i| i.to_string()).collect(),
            uptime_secs: uptime.as_secs(),
        },
        neighbors: node
            .neighbors()
            .map(|n| NeighborStatus {
                id: n.id.to_string(),
                mesh_ip: n.id.mesh_ip().to_string(),
                interface: n.ifname.to_string(),
                state: n.state().as_str().to_string(),
                tunnel_up: n.tunnel_up(),
                last_handshake_secs: n.tunnel.last_handshake_secs,
                bytes_in: n.tunnel.rx_bytes,
                bytes_out: n.tunnel.tx_bytes,
                underlay: format!("{}%{}", n.underlay_addr, n.underlay),
                listen_port: n.listen_port,
                peer_port: n.peer_port,
                last_heard_secs: now_ms.since(n.last_heard).as_secs(),
                session_secs: n.session_established_since().map(|s| now_ms.since(s).as_secs()),
                last_error: n.last_tunnel_error.clone().or_else(|| n.last_session_close.clone()),
            })
            .collect(),
        discovery_rejected: node.reject_counts().iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}
