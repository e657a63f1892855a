//! A two-node driver for tests: executes each node's actions against the other the way a real
//! driver would (discovery over one link, tunnels that handshake when both sides are configured,
//! control connections carried through the real codec), with an optional one-way `latency`.
//!
//! Switches let a test break one thing at a time: discovery, control messages, connects, or the
//! WireGuard handshake.
//!
//! The market's effects are modelled too: each side has the two kernel counters of its tunnel
//! (`counters`: bytes received from the other side, bytes sent to it), moved by
//! [`Pair::transfer`] and fed to the node through `handle_counters` whenever it asks to sample
//! its tunnels; every `Persist` updates the side's `disk` (the latest record per neighbor), from
//! which [`Pair::crash`] rebuilds a node; `ApplyTraffic` is kept in the log (see
//! [`Pair::policy`]). A `tamper` hook can change or drop any control message in flight.

use super::{at, eth0, ordered_identities};
use crate::action::{Action, SessionId, TunnelSpec};
use crate::config::CoreConfig;
use crate::identity::Identity;
use crate::ids::{IfName, NodeId};
use crate::market::{MarketRecord, TrafficPolicy};
use crate::node::market::{CounterReading, CounterSample};
use crate::node::{NeighborState, Node, TunnelStats, DISCOVERY_GROUP};
use crate::time::{Millis, Now};
use crate::wire::control::ControlMessage;
use crate::wire::market::MarketMessage;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddrV6};

enum Input {
    Discovery { src: Ipv6Addr, bytes: Vec<u8> },
    Accepted { session: SessionId, ifname: IfName, peer: SocketAddrV6 },
    Opened(SessionId),
    Message(SessionId, ControlMessage),
    Closed(SessionId, String),
}

/// The kernel counters of one side's tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Bytes accepted from the other side (the firewall's counter).
    pub rx: CounterReading,
    /// Bytes sent to the other side (the tunnel's counter).
    pub tx: CounterReading,
    /// Whether the driver reads them (false: `handle_counters` is not called).
    pub read: bool,
    /// What the firewall dropped from the other side.
    pub dropped: Option<crate::node::Dropped>,
}

/// Changes or drops a control message leaving side `from`.
pub(crate) type Tamper = Box<dyn FnMut(usize, ControlMessage) -> Option<ControlMessage>>;

pub(crate) struct Pair {
    /// `nodes[0]` has the smaller id: it is the connector.
    pub nodes: [Node; 2],
    pub ids: [Identity; 2],
    pub configs: [CoreConfig; 2],
    pub now: Now,
    /// One-way delay of everything crossing between the two nodes, in ms.
    pub latency: u64,
    addrs: [Ipv6Addr; 2],
    tunnels: [BTreeMap<IfName, TunnelSpec>; 2],
    conns: BTreeMap<(usize, SessionId), (usize, SessionId)>,
    /// Inputs by (delivery time, sequence).
    queue: BTreeMap<(u64, u64), (usize, Input)>,
    seq: u64,
    next_accept: u64,
    /// Everything each node asked for, with the time.
    pub log: Vec<(Millis, usize, Action)>,
    pub drop_discovery: bool,
    pub drop_control: bool,
    pub refuse_connect: bool,
    pub handshakes_fail: bool,
    pub counters: [Counters; 2],
    pub tamper: Option<Tamper>,
    /// Each side's store: the latest persisted record per neighbor.
    pub disk: [BTreeMap<NodeId, MarketRecord>; 2],
    /// Connection ends whose other end crashed: sending on them draws a reset.
    orphaned: BTreeSet<(usize, SessionId)>,
    /// Incarnations of each side (bumped by `crash`), for the seeds.
    restarts: [u8; 2],
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with(|_, _| {})
    }

    /// A pair whose configurations `tweak(side, config)` edits.
    pub fn with(tweak: impl Fn(usize, &mut CoreConfig)) -> Pair {
        let (a, b) = ordered_identities();
        let configs = [0, 1].map(|side| {
            let mut c = super::config();
            tweak(side, &mut c);
            c
        });
        let mk = |id: &Identity, side: usize| Node::new(configs[side].clone(), id.clone(), at(0), [side as u8 + 1; 32]);
        let counter = |instance| CounterReading { instance, value: 0 };
        Pair {
            nodes: [mk(&a, 0), mk(&b, 1)],
            ids: [a, b],
            configs: configs.clone(),
            now: at(0),
            latency: 0,
            addrs: [Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb)],
            tunnels: Default::default(),
            conns: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_accept: 0,
            log: Vec::new(),
            drop_discovery: false,
            drop_control: false,
            refuse_connect: false,
            handshakes_fail: false,
            counters: [0, 1].map(|s| Counters {
                rx: counter(100 + s),
                tx: counter(200 + s),
                read: true,
                dropped: None,
            }),
            tamper: None,
            disk: Default::default(),
            orphaned: BTreeSet::new(),
            restarts: [0; 2],
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

    /// The market messages `side` sent since log index `from`, with their time.
    pub fn market_sent(&self, from: usize, side: usize) -> Vec<(Millis, MarketMessage)> {
        self.log[from..]
            .iter()
            .filter(|(_, s, _)| *s == side)
            .filter_map(|(t, _, a)| match a {
                Action::SendControl { msg: ControlMessage::Market(m), .. } => Some((*t, m.clone())),
                _ => None,
            })
            .collect()
    }

    /// The last traffic policy `side` asked for.
    pub fn policy(&self, side: usize) -> Option<TrafficPolicy> {
        self.log.iter().rev().find_map(|(_, s, a)| match a {
            Action::ApplyTraffic(p) if *s == side => Some(p.clone()),
            _ => None,
        })
    }

    /// Run until both sides are connected (at most `max_ms` from now).
    pub fn connect(&mut self, max_ms: u64) {
        let end = self.now.mono.0 + max_ms;
        while !self.both_connected() {
            assert!(self.now.mono.0 < end, "not connected within {max_ms} ms");
            self.run_for(50);
        }
    }

    /// `bytes` leave `from` through its tunnel, of which `lost` never arrive: the sender's
    /// transmit counter and the receiver's receive counter move.
    pub fn transfer(&mut self, from: usize, bytes: u64, lost: u64) {
        self.counters[from].tx.value += bytes;
        self.counters[1 - from].rx.value += bytes - lost;
    }

    /// Kill `side` (no shutdown) and start it again from its disk: a fresh node with the same
    /// identity and configuration, restored from the last persisted records. Its tunnels and
    /// connections are gone (the peer's end of a connection answers with a reset when used);
    /// its kernel counters kept counting.
    pub fn crash(&mut self, side: usize) {
        self.restarts[side] += 1;
        let seed = [side as u8 + 1 + 16 * self.restarts[side]; 32];
        let mut node = Node::new(self.configs[side].clone(), self.ids[side].clone(), self.now, seed);
        node.restore(self.disk[side].iter().map(|(id, r)| (*id, r.clone())).collect());
        self.nodes[side] = node;
        self.tunnels[side].clear();
        let orphaned: Vec<(usize, SessionId)> =
            self.conns.iter().filter(|(_, (s, _))| *s == side).map(|(k, _)| *k).collect();
        self.orphaned.extend(orphaned);
        self.conns.retain(|(s, _), (o, _)| *s != side && *o != side);
        self.queue.retain(|_, (s, _)| *s != side);
    }

    /// Deliver `msg` to `side` on its current session as if the other side had sent it.
    pub fn inject(&mut self, side: usize, msg: ControlMessage) {
        let session = self.nodes[side].neighbor(&self.ids[1 - side].node_id()).and_then(|n| n.session.id());
        let session = session.expect("a session to inject into");
        self.nodes[side].handle_control_message(self.now, session, msg);
        self.pump();
    }

    /// Run both nodes until `end_ms` (absolute), stepping from event to event.
    pub fn run_until(&mut self, end_ms: u64) {
        let mut same = 0;
        loop {
            self.pump();
            let timers = self.nodes.iter().filter_map(Node::poll_timeout).min();
            let queued = self.queue.keys().next().map(|(t, _)| Millis(*t));
            let Some(next) = timers.into_iter().chain(queued).min() else { break };
            let next = next.max(self.now.mono);
            if next.0 > end_ms {
                break;
            }
            same = if next == self.now.mono { same + 1 } else { 0 };
            assert!(same < 1000, "livelock at {next:?}");
            self.now = at(next.0);
            self.pump();
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
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now.mono.0 {
                    break;
                }
                let (side, input) = entry.remove();
                busy = true;
                self.deliver(side, input);
            }
            if !busy {
                return;
            }
        }
        panic!("actions never settle");
    }

    fn send(&mut self, to: usize, input: Input) {
        self.seq += 1;
        self.queue.insert((self.now.mono.0 + self.latency, self.seq), (to, input));
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
                    self.send(other, Input::Discovery { src, bytes: payload });
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
                for ifname in &names {
                    let stats = TunnelStats { last_handshake_secs: up.then_some(0), ..TunnelStats::default() };
                    self.nodes[side].handle_tunnel_stats(self.now, ifname, stats);
                }
                let c = self.counters[side];
                if c.read {
                    let samples: Vec<CounterSample> = names
                        .into_iter()
                        .map(|ifname| CounterSample { ifname, rx: Some(c.rx), tx: Some(c.tx), dropped: c.dropped })
                        .collect();
                    self.nodes[side].handle_counters(self.now, &samples);
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
                self.send(other, Input::Accepted { session: accepted, ifname, peer });
                self.send(side, Input::Opened(session));
            }
            Action::SendControl { session, msg } => {
                let Some(&(o, s)) = self.conns.get(&(side, session)) else {
                    if self.orphaned.contains(&(side, session)) && self.handshake_possible() {
                        // The other end crashed: its new incarnation answers with a reset.
                        self.orphaned.remove(&(side, session));
                        self.send(side, Input::Closed(session, "connection reset by peer".into()));
                    }
                    return;
                };
                if self.drop_control {
                    return;
                }
                let msg = match self.tamper.as_mut() {
                    Some(f) => match f(side, msg) {
                        Some(m) => m,
                        None => return,
                    },
                    None => msg,
                };
                let bytes = msg.encode_frame();
                let msg = ControlMessage::decode(&bytes[4..]).expect("own encoding decodes");
                self.send(o, Input::Message(s, msg));
            }
            // Testing is off in these pairs (the simulator runs speed tests).
            Action::ApplyTraffic(_) | Action::SetRoutingNeighbors(_) | Action::RunSpeedTest { .. } => {}
            Action::Persist(batch) => {
                for (id, r) in batch.records {
                    self.disk[side].insert(id, r);
                }
            }
            Action::CloseControl { session } => {
                if let Some((o, s)) = self.conns.remove(&(side, session)) {
                    self.conns.remove(&(o, s));
                    self.send(o, Input::Closed(s, "closed by peer".into()));
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
