//! Simulated control connections: TCP between two nodes' tunnel link-local addresses, carried
//! through their tunnel.
//!
//! - A connect succeeds only if the connector's tunnel delivers to the peer (fresh handshake,
//!   link up), the address and port are the peer's, and the peer accepts. A connect into a
//!   tunnel that does not deliver is silently lost (the core's handshake timeout ends it); one
//!   to a peer that does not listen is refused.
//! - Messages are encoded into frames by the real codec and decoded by the receiver through a
//!   `FrameDecoder`, in order, after the link's latency (plus retransmission delays on loss).
//! - A message sent while the tunnel does not deliver, or arriving when the receiver's tunnel or
//!   the link is gone, breaks that direction of the connection for good (TCP does not skip
//!   data): nothing more reaches that end, and nobody is told. The other direction is not
//!   affected: what is already on its way still arrives (a clean shutdown's Close, sent just
//!   before its tunnel was removed, reaches the neighbor even if the neighbor's own data to the
//!   stopped node is lost).
//! - A message for an end that is closed, while its node and tunnel are still there, is answered
//!   by a reset, which reaches the sender after whatever was already on its way to it.
//! - Closing an end tells the other (after the data already in flight) if the tunnel delivers.

use crate::driver::Event;
use crate::{LinkId, Millis, NodeIdx, Sim};
use std::net::SocketAddrV6;
use tollway_core::wire::control::{ControlMessage, FrameDecoder};
use tollway_core::{IfName, SessionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ConnId(pub u64);

/// Retransmission timeout floor for a lost TCP segment.
const MIN_RTO: Millis = Millis(200);
/// Consecutive losses after which a segment gives up and the connection breaks.
const MAX_RETRANSMITS: u32 = 8;

pub(crate) struct End {
    pub node: NodeIdx,
    pub generation: u64,
    pub ifname: IfName,
    pub tunnel_serial: u64,
    /// The acceptor's session id is assigned when the connection reaches it.
    pub session: Option<SessionId>,
    pub open: bool,
}

/// `ends[0]` connected, `ends[1]` accepted.
pub(crate) struct Conn {
    pub ends: [End; 2],
    /// Per receiving end: nothing more can reach it.
    broken: [bool; 2],
    /// Per end: a reset is on its way to it.
    reset: [bool; 2],
    /// Per receiving end: when its last segment arrives (arrivals never reorder).
    last_arrival: [Millis; 2],
    decoders: [FrameDecoder; 2],
}

impl Sim {
    pub(crate) fn open_control(&mut self, a: NodeIdx, session: SessionId, ifname: &IfName, peer: SocketAddrV6) {
        let Some(ta) = self.nodes[a.0].tunnels.get(ifname) else {
            let ev = Event::ConnFailed {
                node: a,
                generation: self.nodes[a.0].generation,
                session,
                why: "no such interface",
            };
            return self.schedule(self.now, ev);
        };
        let serial_a = ta.serial;
        let Some((b, bif, link)) = self.tunnel_path(a, ifname) else { return };
        let tb = &self.nodes[b.0].tunnels[&bif];
        if *peer.ip() != tb.spec.local_link_local || peer.port() != self.nodes[b.0].config.control_port {
            return; // nobody has that address: the SYN goes unanswered
        }
        let serial_b = tb.serial;
        let latency = self.links[link.0].opts.latency;
        if !self.nodes[b.0].accepting {
            let ev = Event::ConnFailed {
                node: a,
                generation: self.nodes[a.0].generation,
                session,
                why: "connection refused",
            };
            return self.schedule(self.now + latency + latency, ev);
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let end = |sim: &Sim, node: NodeIdx, ifname: IfName, tunnel_serial, session| End {
            node,
            generation: sim.nodes[node.0].generation,
            ifname,
            tunnel_serial,
            session,
            open: true,
        };
        let ends = [end(self, a, ifname.clone(), serial_a, Some(session)), end(self, b, bif, serial_b, None)];
        let arrive = self.now + self.delay(link);
        let conn = Conn {
            ends,
            broken: [false; 2],
            reset: [false; 2],
            last_arrival: [arrive, arrive],
            decoders: Default::default(),
        };
        self.conns.insert(id, conn);
        self.sessions.insert((a, session), id);
        self.schedule(arrive, Event::Syn { conn: id, link });
    }

    /// The link a connection runs over, if both ends' tunnels (the same instances as when it was
    /// opened) deliver to each other now.
    fn conn_path(&self, id: ConnId) -> Option<LinkId> {
        let c = self.conns.get(&id)?;
        let [e0, e1] = &c.ends;
        for e in [e0, e1] {
            let node = &self.nodes[e.node.0];
            let same = node.generation == e.generation
                && node.tunnels.get(&e.ifname).map(|t| t.serial) == Some(e.tunnel_serial);
            if !node.is_running() || !same {
                return None;
            }
        }
        let (b, bif, link) = self.tunnel_path(e0.node, &e0.ifname)?;
        (b == e1.node && bif == e1.ifname).then_some(link)
    }

    /// The link for a segment towards end `to`; if the path is gone, that direction breaks.
    fn path_or_break(&mut self, id: ConnId, to: usize) -> Option<LinkId> {
        if !matches!(self.conns.get(&id), Some(c) if !c.broken[to]) {
            return None;
        }
        let path = self.conn_path(id);
        if path.is_none() {
            self.conns.get_mut(&id).expect("exists").broken[to] = true;
            self.trace.note(self.now, format_args!("conn {} broken towards end {to}", id.0));
        }
        path
    }

    /// Whether end `to` can receive a segment that crossed `link`: that direction is not
    /// broken, the receiver is the same incarnation with the same tunnel, and the link is up.
    /// Breaks that direction if not (the other one carries on).
    fn receivable(&mut self, id: ConnId, link: LinkId, to: usize) -> bool {
        let Some(c) = self.conns.get(&id) else { return false };
        if c.broken[to] {
            return false;
        }
        let e = &c.ends[to];
        let node = &self.nodes[e.node.0];
        let ok = node.is_running()
            && node.generation == e.generation
            && node.tunnels.get(&e.ifname).map(|t| t.serial) == Some(e.tunnel_serial)
            && self.links[link.0].up;
        if !ok {
            self.conns.get_mut(&id).expect("exists").broken[to] = true;
            self.trace.note(self.now, format_args!("conn {} broken on arrival at end {to}", id.0));
        }
        ok
    }

    /// End `dead` is closed but its host is there: it answers with a reset, which reaches the
    /// other end `delay` from now but after everything already on its way to it.
    fn reset_other_end(&mut self, id: ConnId, dead: usize, delay: Millis) {
        let live = 1 - dead;
        let c = self.conns.get_mut(&id).expect("exists");
        let e = &c.ends[live];
        let Some(session) = e.session.filter(|_| e.open && !c.reset[live]) else { return };
        let (node, generation) = (e.node, e.generation);
        c.reset[live] = true;
        let at = (self.now + delay).max(c.last_arrival[live]);
        c.last_arrival[live] = at;
        self.schedule(at, Event::ConnFailed { node, generation, session, why: "connection reset by peer" });
    }

    pub(crate) fn on_syn(&mut self, id: ConnId, link: LinkId) {
        if !self.receivable(id, link, 1) {
            return;
        }
        let c = &self.conns[&id];
        let (a, b) = (c.ends[0].node, c.ends[1].node);
        let peer_ll = self.nodes[a.0].tunnels[&c.ends[0].ifname].spec.local_link_local;
        let bif = c.ends[1].ifname.clone();
        let node = &mut self.nodes[b.0];
        node.next_accept += 1;
        let session = SessionId(SessionId::ACCEPTED_BIT | node.next_accept);
        self.conns.get_mut(&id).expect("exists").ends[1].session = Some(session);
        self.sessions.insert((b, session), id);
        let now = self.now_for(b);
        let peer = SocketAddrV6::new(peer_ll, 40_000 + (id.0 % 20_000) as u16, 0, 0);
        if let Some(core) = self.nodes[b.0].core.as_mut() {
            core.handle_control_accepted(now, session, &bif, peer);
        }
        let at = self.now + self.delay(link);
        self.schedule(at, Event::SynAck { conn: id, link });
    }

    pub(crate) fn on_syn_ack(&mut self, id: ConnId, link: LinkId) {
        if !self.receivable(id, link, 0) {
            return;
        }
        let e = &self.conns[&id].ends[0];
        let (a, session, open) = (e.node, e.session.expect("connector's"), e.open);
        if !open {
            return;
        }
        let now = self.now_for(a);
        if let Some(core) = self.nodes[a.0].core.as_mut() {
            core.handle_control_opened(now, session);
        }
    }

    /// `SendControl`: encode the message and send its frame to the other end.
    pub(crate) fn send_control(&mut self, n: NodeIdx, session: SessionId, msg: &ControlMessage) {
        let Some(&id) = self.sessions.get(&(n, session)) else { return };
        let from = self.conns[&id].ends.iter().position(|e| e.node == n && e.session == Some(session)).expect("mapped");
        let tampered;
        let msg = if self.tampers.contains_key(&n) {
            let peer = self.conns[&id].ends[1 - from].node;
            match self.tamper(n, peer, msg.clone()) {
                Some(m) => {
                    tampered = m;
                    &tampered
                }
                None => return,
            }
        } else {
            msg
        };
        let bytes = msg.encode_frame();
        self.transmit(id, from, Segment::Data(bytes));
    }

    /// `CloseControl`: close our end and tell the other one.
    pub(crate) fn close_control(&mut self, n: NodeIdx, session: SessionId) {
        let Some(id) = self.sessions.remove(&(n, session)) else { return };
        let c = self.conns.get_mut(&id).expect("mapped");
        let side = c.ends.iter().position(|e| e.node == n && e.session == Some(session)).expect("mapped");
        c.ends[side].open = false;
        self.transmit(id, side, Segment::Fin("closed by peer"));
        self.forget_if_done(id);
    }

    fn transmit(&mut self, id: ConnId, from: usize, seg: Segment) {
        let to = 1 - from;
        let Some(link) = self.path_or_break(id, to) else { return };
        let latency = self.links[link.0].opts.latency;
        let c = &self.conns[&id];
        if !c.ends[to].open {
            if matches!(seg, Segment::Data(_)) && c.ends[to].session.is_some() {
                // The other end is closed but the tunnel works: its kernel answers with a reset.
                self.conns.get_mut(&id).expect("exists").broken[to] = true;
                self.reset_other_end(id, to, latency + latency);
            }
            return;
        }
        let mut delay = self.delay(link);
        let mut tries = 0;
        while self.lost(link) {
            tries += 1;
            self.links[link.0].flow_from_mut(self.conns[&id].ends[from].node).dropped += 1;
            if tries > MAX_RETRANSMITS {
                self.conns.get_mut(&id).expect("exists").broken[to] = true;
                return;
            }
            delay = delay + MIN_RTO.max(Millis(latency.0 * 3)) + Millis(latency.0 * tries as u64);
        }
        if let Segment::Data(bytes) = &seg {
            let e = &self.conns[&id].ends[from];
            let (node, ifname) = (e.node, e.ifname.clone());
            self.carry(node, &ifname, bytes.len() as u64);
        }
        let c = self.conns.get_mut(&id).expect("exists");
        let at = (self.now + delay).max(c.last_arrival[to]);
        c.last_arrival[to] = at;
        let ev = match seg {
            Segment::Data(bytes) => Event::Data { conn: id, link, to, bytes },
            Segment::Fin(why) => Event::Fin { conn: id, link, to, why },
        };
        self.schedule(at, ev);
    }

    pub(crate) fn on_data(&mut self, id: ConnId, link: LinkId, to: usize, bytes: Vec<u8>) {
        if !self.receivable(id, link, to) {
            return;
        }
        let c = self.conns.get_mut(&id).expect("exists");
        let e = &c.ends[to];
        if e.session.is_some() && !e.open {
            // Data for a socket closed while it was on its way: the receiver's kernel resets.
            let latency = self.links[link.0].opts.latency;
            return self.reset_other_end(id, to, latency);
        }
        let (Some(session), true) = (e.session, e.open) else { return };
        let n = e.node;
        c.decoders[to].push(&bytes);
        loop {
            let c = self.conns.get_mut(&id).expect("exists");
            if !c.ends[to].open {
                return;
            }
            let frame = match c.decoders[to].next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => return self.abort(id, to, format!("bad frame: {e}")),
            };
            match ControlMessage::decode(&frame) {
                Ok(msg) => {
                    let now = self.now_for(n);
                    if let Some(core) = self.nodes[n.0].core.as_mut() {
                        core.handle_control_message(now, session, msg);
                    }
                }
                Err(e) => return self.abort(id, to, format!("bad message: {e}")),
            }
        }
    }

    pub(crate) fn on_fin(&mut self, id: ConnId, link: LinkId, to: usize, why: &str) {
        if !self.receivable(id, link, to) {
            return;
        }
        let e = &mut self.conns.get_mut(&id).expect("exists").ends[to];
        let (Some(session), true) = (e.session, e.open) else { return };
        e.open = false;
        let n = e.node;
        self.sessions.remove(&(n, session));
        let now = self.now_for(n);
        if let Some(core) = self.nodes[n.0].core.as_mut() {
            core.handle_control_closed(now, session, why);
        }
        self.forget_if_done(id);
    }

    /// The driver drops a connection that sent garbage, tells its core, and closes it.
    fn abort(&mut self, id: ConnId, side: usize, why: String) {
        let e = &mut self.conns.get_mut(&id).expect("exists").ends[side];
        let (n, session) = (e.node, e.session.expect("receiving"));
        e.open = false;
        self.sessions.remove(&(n, session));
        let now = self.now_for(n);
        if let Some(core) = self.nodes[n.0].core.as_mut() {
            core.handle_control_closed(now, session, &why);
        }
        self.transmit(id, side, Segment::Fin("closed by peer"));
        self.forget_if_done(id);
    }

    pub(crate) fn on_conn_failed(&mut self, n: NodeIdx, generation: u64, session: SessionId, why: &str) {
        if self.nodes[n.0].generation != generation {
            return;
        }
        if let Some(id) = self.sessions.remove(&(n, session)) {
            if let Some(c) = self.conns.get_mut(&id) {
                c.ends.iter_mut().filter(|e| e.node == n).for_each(|e| e.open = false);
            }
            self.forget_if_done(id);
        }
        let now = self.now_for(n);
        if let Some(core) = self.nodes[n.0].core.as_mut() {
            core.handle_control_closed(now, session, why);
        }
    }

    /// A stopped node's connections end silently on its side (including any still on their way
    /// to it).
    pub(crate) fn drop_connections_of(&mut self, n: NodeIdx) {
        self.sessions.retain(|(node, _), _| *node != n);
        let mine: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.ends.iter().any(|e| e.node == n)).map(|(id, _)| *id).collect();
        for id in mine {
            let c = self.conns.get_mut(&id).expect("listed");
            c.ends.iter_mut().filter(|e| e.node == n).for_each(|e| e.open = false);
            self.forget_if_done(id);
        }
    }

    fn forget_if_done(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(|c| c.ends.iter().all(|e| !e.open)) {
            self.conns.remove(&id);
        }
    }
}

enum Segment {
    Data(Vec<u8>),
    Fin(&'static str),
}
