//! A two-node driver for tests: executes each node's actions against the other with zero
//! latency, the way a real driver would (discovery over one link, tunnels that handshake when
//! both sides are configured, control connections carried through the real codec).
//!
//! Switches let a test break one thing at a time: discovery, control messages, connects, or the
//! WireGuard handshake.

use super::{at, eth0, ordered_identities};
use crate::action::{Action, SessionId, TunnelSpec};
use crate::identity::Identity;
use crate::ids::IfName;
use crate::node::{NeighborState, Node, TunnelStats, DISCOVERY_GROUP};
use crate::time::{Millis, Now};
use crate::wire::control::ControlMessage;
use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddrV6};

enum Input {
    Discovery { src: Ipv6Addr, bytes: Vec<u8> },
    Accepted { session: SessionId, ifname: IfName, peer: SocketAddrV6 },
    Opened(SessionId),
    Message(SessionId, ControlMessage),
    Closed(SessionId, String),
}

pub(crate) struct Pair {
    /// `nodes[0]` has the smaller id: it is the connector.
    pub nodes: [Node; 2],
    pub ids: [Identity; 2],
    pub now: Now,
    addrs: [Ipv6Addr; 2],
    tunnels: [BTreeMap<IfName, TunnelSpec>; 2],
    conns: BTreeMap<(usize, SessionId), (usize, SessionId)>,
    queue: VecDeque<(usize, Input)>,
    next_accept: u64,
    /// Everything each node asked for, with the time.
    pub log: Vec<(Millis, usize, Action)>,
    pub drop_discovery: bool,
    pub drop_control: bool,
    pub refuse_connect: bool,
    pub handshakes_fail: bool,
}

impl Pair {
    pub fn new() -> Pair {
        let (a, b) = ordered_identities();
        let mk = |id: &Identity, seed| Node::new(super::config(), id.clone(), at(0), [seed; 32]);
        Pair {
            nodes: [mk(&a, 1), mk(&b, 2)],
            ids: [a, b],
            now: at(0),
            addrs: [Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb)],
            tunnels: Default::default(),
            conns: BTreeMap::new(),
            queue: VecDeque::new(),
            next_accept: 0,
            log: Vec::new(),
            drop_discovery: false,
            drop_control: false,
            refuse_connect: false,
            handshakes_fail: false,
        }
    }

    /// The state `side` sees for the other node, if it is a neighbor.
    pub fn state(&self, side: usize) -> Option<NeighborState> {
        self.nodes[side].neighbor(&self.ids[1 - side].node_id()).map(|n| n.state())
    }

    pub fn both_connected(&self) -> bool {
        (0..2).all(|s| self.state(s) == Some(NeighborState::Connected))
    }

    pub fn has_tunnel(&self, side: usize) -> bool {
        !self.tunnels[side].is_empty()
    }

    /// Actions logged since index `from` for which `f` holds, with their time and side.
    pub fn logged(&self, from: usize, f: impl Fn(&Action) -> bool) -> Vec<(Millis, usize, Action)> {
        self.log[from..].iter().filter(|(_, _, a)| f(a)).cloned().collect()
    }

    /// Run both nodes until `end_ms` (absolute), stepping from timeout to timeout.
    pub fn run_until(&mut self, end_ms: u64) {
        let mut same = 0;
        loop {
            self.pump();
            let Some(next) = self.nodes.iter().filter_map(Node::poll_timeout).min() else { break };
            let next = next.max(self.now.mono);
            if next.0 > end_ms {
                break;
            }
            same = if next == self.now.mono { same + 1 } else { 0 };
            assert!(same < 1000, "livelock at {next:?}");
            self.now = at(next.0);
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= next) {
                    n.handle_timeout(self.now);
                }
            }
        }
        self.now = at(end_ms.max(self.now.mono.0));
    }

    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now.mono.0 + ms);
    }

    /// Execute actions and deliver inputs until nothing is left to do at this instant.
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut busy = false;
            for side in 0..2 {
                while let Some(a) = self.nodes[side].poll_action() {
                    busy = true;
                    self.log.push((self.now.mono, side, a.clone()));
                    self.execute(side, a);
                }
            }
            while let Some((side, input)) = self.queue.pop_front() {
                busy = true;
                self.deliver(side, input);
            }
            if !busy {
                return;
            }
        }
        panic!("actions never settle");
    }

    fn tunnel_for(&self, side: usize) -> Option<&TunnelSpec> {
        let other = self.ids[1 - side].node_id();
        self.tunnels[side].values().find(|s| s.neighbor == other)
    }

    /// Both sides have a tunnel with the other's key and at least one knows the other's endpoint.
    fn handshake_possible(&self) -> bool {
        match (self.tunnel_for(0), self.tunnel_for(1)) {
            (Some(t0), Some(t1)) => {
                !self.handshakes_fail
                    && t0.peer_key == self.ids[1].wg_public()
                    && t1.peer_key == self.ids[0].wg_public()
                    && (t0.endpoint.is_some() || t1.endpoint.is_some())
            }
            _ => false,
        }
    }

    fn execute(&mut self, side: usize, action: Action) {
        let other = 1 - side;
        match action {
            Action::SendDiscovery { dst, payload, iface } => {
                assert_eq!(iface, eth0());
                if !self.drop_discovery && (dst == DISCOVERY_GROUP || dst == self.addrs[other]) {
                    let src = self.addrs[side];
                    self.queue.push_back((other, Input::Discovery { src, bytes: payload }));
                }
            }
            Action::EnsureTunnel(spec) => {
                self.tunnels[side].insert(spec.ifname.clone(), spec);
            }
            Action::RemoveTunnel { ifname, .. } => {
                self.tunnels[side].remove(&ifname);
            }
            Action::SampleTunnels => {
                let up = self.handshake_possible();
                let names: Vec<IfName> = self.tunnels[side].keys().cloned().collect();
                for ifname in names {
                    let stats = TunnelStats { last_handshake_secs: up.then_some(0), ..TunnelStats::default() };
                    self.nodes[side].handle_tunnel_stats(self.now, &ifname, stats);
                }
            }
            Action::OpenControl { session, ifname, peer, .. } => {
                assert_eq!(self.tunnel_for(side).map(|t| &t.ifname), Some(&ifname));
                assert_eq!(*peer.ip(), self.ids[other].node_id().tunnel_link_local());
                if self.refuse_connect || !self.handshake_possible() {
                    return; // the SYN goes nowhere; the core's handshake timeout handles it
                }
                self.next_accept += 1;
                let accepted = SessionId(SessionId::ACCEPTED_BIT | self.next_accept);
                self.conns.insert((side, session), (other, accepted));
                self.conns.insert((other, accepted), (side, session));
                let ifname = self.tunnel_for(other).expect("handshake needs it").ifname.clone();
                let peer = SocketAddrV6::new(self.ids[side].node_id().tunnel_link_local(), 40000, 0, 0);
                self.queue.push_back((other, Input::Accepted { session: accepted, ifname, peer }));
                self.queue.push_back((side, Input::Opened(session)));
            }
            Action::SendControl { session, msg } => {
                if let Some(&(o, s)) = self.conns.get(&(side, session)) {
                    if !self.drop_control {
                        let bytes = msg.encode_frame();
                        let msg = ControlMessage::decode(&bytes[4..]).expect("own encoding decodes");
                        self.queue.push_back((o, Input::Message(s, msg)));
                    }
                }
            }
            // Market effects are not modelled by the pair driver (see the simulator).
            Action::ApplyTraffic(_) | Action::Persist(_) => {}
            Action::CloseControl { session } => {
                if let Some((o, s)) = self.conns.remove(&(side, session)) {
                    self.conns.remove(&(o, s));
                    self.queue.push_back((o, Input::Closed(s, "closed by peer".into())));
                }
            }
        }
    }

    fn deliver(&mut self, side: usize, input: Input) {
        let (now, node) = (self.now, &mut self.nodes[side]);
        match input {
            Input::Discovery { src, bytes } => node.handle_discovery(now, &eth0(), src, &bytes),
            Input::Accepted { session, ifname, peer } => node.handle_control_accepted(now, session, &ifname, peer),
            Input::Opened(s) => node.handle_control_opened(now, s),
            Input::Message(s, m) => node.handle_control_message(now, s, m),
            Input::Closed(s, why) => node.handle_control_closed(now, s, &why),
        }
    }
}
