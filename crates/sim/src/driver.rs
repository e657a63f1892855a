//! The simulated driver: executes each node's actions and delivers the resulting events.
//!
//! Everything that crosses between nodes goes through the event queue with the link's latency;
//! what a real driver answers locally (tunnel stats, tunnel errors) is answered at once.

use crate::control::ConnId;
use crate::{LinkId, NodeIdx, Sim};
use std::net::Ipv6Addr;
use tollway_core::{Action, IfName, SessionId, DISCOVERY_GROUP};

pub(crate) enum Event {
    Discovery {
        to: NodeIdx,
        generation: u64,
        link: LinkId,
        iface: IfName,
        src: Ipv6Addr,
        bytes: Vec<u8>,
    },
    Syn {
        conn: ConnId,
        link: LinkId,
    },
    SynAck {
        conn: ConnId,
        link: LinkId,
    },
    Data {
        conn: ConnId,
        link: LinkId,
        to: usize,
        bytes: Vec<u8>,
    },
    Fin {
        conn: ConnId,
        link: LinkId,
        to: usize,
        why: &'static str,
    },
    /// A connect or connection that failed locally (no interface, refused, reset).
    ConnFailed {
        node: NodeIdx,
        generation: u64,
        session: SessionId,
        why: &'static str,
    },
    FloodTick {
        flooder: usize,
    },
    SpeedTestDone {
        node: NodeIdx,
        generation: u64,
        test: u64,
        outcome: tollway_core::node::TestOutcome,
    },
}

impl Sim {
    /// Execute every node's pending actions until none is left.
    pub(crate) fn drain_actions(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                let n = NodeIdx(i);
                while let Some(action) = self.nodes[i].core.as_mut().and_then(|c| c.poll_action()) {
                    busy = true;
                    self.trace.record(self.now, n, format_args!("{action:?}"));
                    self.execute(n, action);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn execute(&mut self, n: NodeIdx, action: Action) {
        match action {
            Action::SendDiscovery { iface, dst, payload } => self.send_discovery(n, &iface, dst, payload),
            Action::EnsureTunnel(spec) => self.ensure_tunnel(n, spec),
            Action::RemoveTunnel { ifname, .. } => self.remove_tunnel(n, &ifname),
            Action::SampleTunnels => self.sample_tunnels(n),
            Action::OpenControl { session, ifname, peer, .. } => self.open_control(n, session, &ifname, peer),
            Action::SendControl { session, msg } => self.send_control(n, session, &msg),
            Action::CloseControl { session } => self.close_control(n, session),
            Action::ApplyTraffic(policy) => self.apply_traffic(n, policy),
            Action::Persist(batch) => self.persist(n, batch),
            Action::SetRoutingNeighbors(routed) => self.nodes[n.0].routing = routed,
            Action::RunSpeedTest { test, neighbor, max_bytes, .. } => self.run_speed_test(n, test, neighbor, max_bytes),
        }
    }

    /// A datagram out of `n`'s interface `iface`: to the far end of its link if `dst` is the
    /// discovery group or the far end's address.
    fn send_discovery(&mut self, n: NodeIdx, iface: &IfName, dst: Ipv6Addr, payload: Vec<u8>) {
        let Some((link, far)) = self.link_at(n, iface).map(|(l, far)| (l, far.clone())) else { return };
        let src = self.nodes[n.0].addr(iface).expect("own interface");
        let up = self.links[link.0].up;
        let flow = self.links[link.0].flow_from_mut(n);
        flow.discovery_packets += 1;
        flow.discovery_bytes += payload.len() as u64;
        if !up {
            flow.dropped += 1;
            return;
        }
        if dst != DISCOVERY_GROUP && Some(dst) != self.nodes[far.node.0].addr(&far.iface) {
            return;
        }
        self.send_datagram(link, far.node, far.iface, src, payload);
    }

    /// Put a datagram on `link` towards `to`'s interface `iface` (loss and latency apply).
    pub(crate) fn send_datagram(&mut self, link: LinkId, to: NodeIdx, iface: IfName, src: Ipv6Addr, bytes: Vec<u8>) {
        if self.lost(link) {
            let from = self.links[link.0].ends.iter().find(|e| e.node != to).expect("two ends").node;
            self.links[link.0].flow_from_mut(from).dropped += 1;
            return;
        }
        let at = self.now + self.delay(link);
        let generation = self.nodes[to.0].generation;
        self.schedule(at, Event::Discovery { to, generation, link, iface, src, bytes });
    }

    pub(crate) fn deliver(&mut self, ev: Event) {
        match ev {
            Event::Discovery { to, generation, link, iface, src, bytes } => {
                let node = &self.nodes[to.0];
                if node.generation != generation || !self.links[link.0].up {
                    return;
                }
                self.trace.record(
                    self.now,
                    to,
                    format_args!("discovery in {iface} from {src} ({} bytes)", bytes.len()),
                );
                let now = self.now_for(to);
                if let Some(core) = self.nodes[to.0].core.as_mut() {
                    core.handle_discovery(now, &iface, src, &bytes);
                }
            }
            Event::Syn { conn, link } => self.on_syn(conn, link),
            Event::SynAck { conn, link } => self.on_syn_ack(conn, link),
            Event::Data { conn, link, to, bytes } => self.on_data(conn, link, to, bytes),
            Event::Fin { conn, link, to, why } => self.on_fin(conn, link, to, why),
            Event::ConnFailed { node, generation, session, why } => {
                self.trace.record(self.now, node, format_args!("conn {session:?} failed: {why}"));
                self.on_conn_failed(node, generation, session, why);
            }
            Event::FloodTick { flooder } => self.flood_tick(flooder),
            Event::SpeedTestDone { node, generation, test, outcome } => {
                self.on_speed_test_done(node, generation, test, outcome)
            }
        }
    }
}
