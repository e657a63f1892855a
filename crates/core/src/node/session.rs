//! The control session with each neighbor: who connects, the authenticated handshake, keepalives
//! and reconnects.

use super::neighbor::{Neighbor, Session};
use super::Node;
use crate::action::{Action, SessionId};
use crate::identity::verify;
use crate::ids::{IfName, NodeId};
use crate::time::{Millis, Now};
use crate::wire::control::{transcript, ControlMessage, VERSION_MAX, VERSION_MIN};
use rand_core::RngCore;
use std::net::SocketAddrV6;

const MAX_BACKOFF: Millis = Millis(30_000);

impl Node {
    /// The node with the smaller id opens the session; the other accepts.
    pub fn is_connector_for(&self, neighbor: &NodeId) -> bool {
        self.node_id() < *neighbor
    }

    /// The driver accepted a control connection on tunnel `ifname` from `peer`.
    pub fn handle_control_accepted(&mut self, now: Now, session: SessionId, ifname: &IfName, peer: SocketAddrV6) {
        self.last_now = now;
        let Some(id) = self.neighbor_by_ifname(ifname).map(|n| n.id) else {
            tracing::warn!(%ifname, %peer, "control connection on an interface that is not a neighbor's tunnel; closed");
            return self.actions.push_back(Action::CloseControl { session });
        };
        // The tunnel authenticates the sender (WireGuard pins one peer per interface); the
        // address only has to be on-link. (The kernel may give a tunnel a second, random
        // link-local address, so the neighbor's derived one is not required.)
        if peer.ip().segments()[0] & 0xffc0 != 0xfe80 {
            tracing::warn!(neighbor = %id.short(), %peer, "control connection from a non-link-local address; closed");
            return self.actions.push_back(Action::CloseControl { session });
        }
        if self.is_connector_for(&id) {
            tracing::warn!(neighbor = %id.short(), "neighbor connected although we are the connector; closed");
            return self.actions.push_back(Action::CloseControl { session });
        }
        let deadline = now.mono + self.config.handshake_timeout;
        let old = std::mem::replace(
            &mut self.neighbors.get_mut(&id).expect("exists").session,
            Session::AwaitClientHello { id: session, deadline },
        );
        if let Some(old_id) = old.id() {
            tracing::info!(neighbor = %id.short(), "new control connection replaces the previous one");
            self.actions.push_back(Action::CloseControl { session: old_id });
        }
    }

    /// A connection the core asked for (`OpenControl`) is established.
    pub fn handle_control_opened(&mut self, now: Now, session: SessionId) {
        self.last_now = now;
        let Some(id) = self.neighbor_by_session(session) else {
            return self.actions.push_back(Action::CloseControl { session });
        };
        let mut nonce_c = [0u8; 32];
        self.rng.fill_bytes(&mut nonce_c);
        let deadline = now.mono + self.config.handshake_timeout;
        let n = self.neighbors.get_mut(&id).expect("exists");
        if !matches!(n.session, Session::Connecting { id, .. } if id == session) {
            return self.actions.push_back(Action::CloseControl { session });
        }
        n.session = Session::AwaitServerHello { id: session, nonce_c, deadline };
        let msg = ControlMessage::ClientHello {
            version_min: VERSION_MIN,
            version_max: VERSION_MAX,
            node: self.node_id(),
            nonce: nonce_c,
        };
        self.actions.push_back(Action::SendControl { session, msg });
    }

    /// The connection ended (peer closed, I/O error, decode error: `reason` says which).
    pub fn handle_control_closed(&mut self, now: Now, session: SessionId, reason: &str) {
        self.last_now = now;
        let Some(id) = self.neighbor_by_session(session) else { return };
        self.session_ended(now, &id, reason, false);
    }

    /// A decoded message arrived on a session.
    pub fn handle_control_message(&mut self, now: Now, session: SessionId, msg: ControlMessage) {
        self.last_now = now;
        let Some(id) = self.neighbor_by_session(session) else {
            return self.actions.push_back(Action::CloseControl { session });
        };
        if let Err(why) = self.on_message(now, &id, session, msg) {
            self.session_ended(now, &id, &why, true);
        }
    }

    fn on_message(&mut self, now: Now, id: &NodeId, session: SessionId, msg: ControlMessage) -> Result<(), String> {
        let own = self.node_id();
        let n = self.neighbors.get(id).expect("exists");
        let state = n.session.clone();
        match (state, msg) {
            (_, ControlMessage::Close { reason }) => Err(format!("closed by neighbor: {reason}")),
            (
                Session::AwaitClientHello { .. },
                ControlMessage::ClientHello { version_min, version_max, node, nonce },
            ) => {
                if node != *id {
                    return Err("client hello from a node key other than the tunnel's".into());
                }
                let version = version_max.min(VERSION_MAX);
                if version < version_min.max(VERSION_MIN) {
                    return Err(format!("no common protocol version (they speak {version_min}..={version_max})"));
                }
                let mut nonce_s = [0u8; 32];
                self.rng.fill_bytes(&mut nonce_s);
                let sig = self.identity.sign(&transcript(b"server", id, &own, &nonce, &nonce_s, version));
                let deadline = now.mono + self.config.handshake_timeout;
                self.neighbors.get_mut(id).expect("exists").session =
                    Session::AwaitClientAuth { id: session, nonce_c: nonce, nonce_s, version, deadline };
                let msg = ControlMessage::ServerHello { version, node: own, nonce: nonce_s, sig };
                self.actions.push_back(Action::SendControl { session, msg });
                Ok(())
            }
            (Session::AwaitServerHello { nonce_c, .. }, ControlMessage::ServerHello { version, node, nonce, sig }) => {
                if node != *id {
                    return Err("server hello from a node key other than the tunnel's".into());
                }
                if !(VERSION_MIN..=VERSION_MAX).contains(&version) {
                    return Err(format!("neighbor chose protocol version {version}, which we did not offer"));
                }
                verify(id, &transcript(b"server", &own, id, &nonce_c, &nonce, version), &sig)
                    .map_err(|e| format!("server hello signature: {e}"))?;
                let sig = self.identity.sign(&transcript(b"client", &own, id, &nonce_c, &nonce, version));
                self.actions.push_back(Action::SendControl { session, msg: ControlMessage::ClientAuth { sig } });
                self.established(now, id, session, version);
                Ok(())
            }
            (Session::AwaitClientAuth { nonce_c, nonce_s, version, .. }, ControlMessage::ClientAuth { sig }) => {
                verify(id, &transcript(b"client", id, &own, &nonce_c, &nonce_s, version), &sig)
                    .map_err(|e| format!("client auth signature: {e}"))?;
                self.established(now, id, session, version);
                Ok(())
            }
            (Session::Established { .. }, m) => {
                let n = self.neighbors.get_mut(id).expect("exists");
                n.last_heard = now.mono;
                if let Session::Established { last_rx, .. } = &mut n.session {
                    *last_rx = now.mono;
                }
                match m {
                    ControlMessage::Ping { nonce } => {
                        self.actions.push_back(Action::SendControl { session, msg: ControlMessage::Pong { nonce } });
                        Ok(())
                    }
                    ControlMessage::Pong { nonce } => {
                        if let Session::Established { ping: ping @ Some(_), .. } = &mut n.session {
                            if let Some((sent_nonce, at)) = *ping {
                                if sent_nonce == nonce {
                                    *ping = None;
                                    n.passive.record_rtt(now.mono, now.mono.since(at));
                                }
                            }
                        }
                        Ok(())
                    }
                    ControlMessage::Market(m) => self.on_market_message(now, id, session, m),
                    other => Err(format!("unexpected {} after the handshake", other.name())),
                }
            }
            (s, m) => Err(format!("unexpected {} in handshake state {}", m.name(), session_state_name(&s))),
        }
    }

    fn established(&mut self, now: Now, id: &NodeId, session: SessionId, version: u16) {
        let keepalive = self.config.keepalive_interval;
        let n = self.neighbors.get_mut(id).expect("exists");
        n.session = Session::Established {
            id: session,
            version,
            since: now.mono,
            last_rx: now.mono,
            next_ping: now.mono + keepalive,
            ping: None,
        };
        n.last_heard = now.mono;
        n.last_session_close = None;
        n.backoff = Millis(1000);
        tracing::info!(neighbor = %id.short(), version, "control session established");
        self.market_session_up(now, id, session);
    }

    /// Close the neighbor's session (telling the peer why if `tell_peer`) and go back to idle.
    fn session_ended(&mut self, now: Now, id: &NodeId, reason: &str, tell_peer: bool) {
        let connector = self.is_connector_for(id);
        let n = self.neighbors.get_mut(id).expect("exists");
        let Some(session) = n.session.id() else { return };
        let was_established = matches!(n.session, Session::Established { .. });
        let retry_in = if was_established { Millis(1000) } else { n.backoff };
        if !was_established {
            n.backoff = Millis(n.backoff.0 * 2).min(MAX_BACKOFF);
        }
        n.session = Session::Idle { retry_at: now.mono + retry_in };
        n.last_session_close = Some(reason.to_owned());
        if was_established {
            tracing::warn!(neighbor = %id.short(), reason, "control session closed");
        } else {
            tracing::warn!(neighbor = %id.short(), reason, retry_in_ms = if connector { retry_in.0 } else { 0 },
                "control session failed");
        }
        if tell_peer {
            let msg = ControlMessage::Close { reason: reason.to_owned() };
            self.actions.push_back(Action::SendControl { session, msg });
        }
        self.actions.push_back(Action::CloseControl { session });
        self.update_routing();
    }

    fn neighbor_by_session(&self, session: SessionId) -> Option<NodeId> {
        self.neighbors.values().find(|n| n.session.id() == Some(session)).map(|n| n.id)
    }

    /// When the neighbor's session needs attention, if ever.
    pub(super) fn session_deadline(&self, n: &Neighbor) -> Option<Millis> {
        match n.session {
            Session::Idle { retry_at, .. } => (self.is_connector_for(&n.id) && n.tunnel_up()).then_some(retry_at),
            _ => Some(n.session.deadline(self.config.session_timeout)),
        }
    }

    /// Open, time out or keep alive the neighbor's session as its state and the clock require.
    pub(super) fn drive_session(&mut self, now: Now, id: &NodeId) {
        let Some(n) = self.neighbors.get(id) else { return };
        let Some(deadline) = self.session_deadline(n) else { return };
        if deadline > now.mono {
            return;
        }
        match n.session.clone() {
            Session::Idle { .. } => {
                let session = self.next_session_id();
                let n = self.neighbors.get_mut(id).expect("exists");
                n.session = Session::Connecting { id: session, deadline: now.mono + self.config.handshake_timeout };
                let peer = SocketAddrV6::new(id.tunnel_link_local(), self.config.control_port, 0, 0);
                let ifname = n.ifname.clone();
                self.actions.push_back(Action::OpenControl { session, neighbor: *id, ifname, peer });
            }
            Session::Established { id: session, last_rx, .. } => {
                if now.mono.since(last_rx) >= self.config.session_timeout {
                    let why = format!("nothing received for {} s", now.mono.since(last_rx).as_secs());
                    self.session_ended(now, id, &why, true);
                } else {
                    let keepalive = self.config.keepalive_interval;
                    let nonce = self.rng.next_u64();
                    if let Session::Established { next_ping, ping, .. } =
                        &mut self.neighbors.get_mut(id).expect("exists").session
                    {
                        *next_ping = now.mono + keepalive;
                        *ping = Some((nonce, now.mono));
                    }
                    self.actions.push_back(Action::SendControl { session, msg: ControlMessage::Ping { nonce } });
                }
            }
            s => {
                let why = format!("handshake timed out in state {}", session_state_name(&s));
                self.session_ended(now, id, &why, false);
            }
        }
    }
}

fn session_state_name(s: &Session) -> &'static str {
    match s {
        Session::Idle { .. } => "idle",
        Session::Connecting { .. } => "connecting",
        Session::AwaitServerHello { .. } => "awaiting server hello",
        Session::AwaitClientHello { .. } => "awaiting client hello",
        Session::AwaitClientAuth { .. } => "awaiting client auth",
        Session::Established { .. } => "established",
    }
}
