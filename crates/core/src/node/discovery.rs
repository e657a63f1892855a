//! Handling discovery datagrams: admission, replay and freshness checks, and tunnel requests.

use super::neighbor::{Neighbor, Session, TunnelStats};
use super::{Node, DISCOVERY_GROUP, MAX_PENDING_PER_ADDRESS};
use crate::action::Action;
use crate::ids::{IfName, NodeId};
use crate::time::{Millis, Now};
use crate::wire::discovery::{self, Announce, Discovery, Hello};
use std::net::Ipv6Addr;

impl Node {
    /// A datagram received on physical interface `iface` from link-local address `src`.
    pub fn handle_discovery(&mut self, now: Now, iface: &IfName, src: Ipv6Addr, bytes: &[u8]) {
        self.last_now = now;
        let t = now.mono;
        if !self.config.interfaces.contains(iface) {
            return self.rejects.record(t, "not a discovery interface", format_args!("{iface}"));
        }
        let parsed = match discovery::parse(bytes) {
            Ok(p) => p,
            Err(e) => return self.rejects.record(t, "malformed", format_args!("from {src}%{iface}: {e}")),
        };
        let msg = &parsed.msg;
        let sender = *msg.sender();
        if sender == self.node_id() {
            self.rejects.counts.entry("own message").and_modify(|c| *c += 1).or_insert(1);
            return;
        }
        let skew = msg.unix_ms().abs_diff(now.unix_ms);
        if skew > self.config.max_clock_skew.0 {
            return self.rejects.record(
                t,
                "stale",
                format_args!(
                    "{} from {} ({src}%{iface}) is {} s off our clock",
                    msg.kind_name(),
                    sender.short(),
                    skew / 1000
                ),
            );
        }
        if let Discovery::Hello(h) = msg {
            if h.to != self.node_id() {
                return self.rejects.record(
                    t,
                    "addressed to another node",
                    format_args!("hello from {}", sender.short()),
                );
            }
        }
        let known = self.neighbors.get(&sender);
        match known {
            Some(n) => {
                if msg.unix_ms() <= *n.last_accepted_ms(msg) {
                    return self.rejects.record(
                        t,
                        "replayed",
                        format_args!("{} from {} not newer than the last accepted", msg.kind_name(), sender.short()),
                    );
                }
            }
            None => {
                if let Some(until) = self.penalized.get(&sender) {
                    if *until > t {
                        return self.rejects.record(
                            t,
                            "penalized",
                            format_args!("{} never completed a tunnel", sender.short()),
                        );
                    }
                }
                // Before the table-full check and the budgets: a flooding address must not
                // consume what other senders need.
                let from_there = self
                    .neighbors
                    .values()
                    .filter(|n| !n.tunnel_seen_up && n.underlay_addr == src && &n.underlay == iface)
                    .count();
                if from_there >= MAX_PENDING_PER_ADDRESS {
                    return self.rejects.record(
                        t,
                        "too many pending from one address",
                        format_args!(
                            "{} ignored: {from_there} pending neighbors already at {src}%{iface}",
                            sender.short()
                        ),
                    );
                }
                if self.neighbors.len() >= self.config.max_neighbors {
                    return self.rejects.record(
                        t,
                        "neighbor table full",
                        format_args!("{} ignored: {} neighbors already", sender.short(), self.neighbors.len()),
                    );
                }
                if !self.verify_budget.take(t) {
                    return self.rejects.record(
                        t,
                        "rate limited",
                        format_args!("too many messages from unknown nodes"),
                    );
                }
            }
        }
        let msg = match parsed.verify() {
            Ok(m) => m,
            Err(e) => {
                return self.rejects.record(
                    t,
                    "bad signature",
                    format_args!("{} claiming {}: {e}", src, sender.short()),
                )
            }
        };
        if known.is_none() {
            if !self.admit_budget.take(t) {
                return self.rejects.record(t, "rate limited", format_args!("too many new neighbors per second"));
            }
            self.admit(now, iface, src, &msg);
        } else if !self.update_known(now, iface, src, &msg) {
            return;
        }
        let reply = match &msg {
            Discovery::Announce(_) => true,
            Discovery::Hello(h) => self.neighbors.get_mut(&sender).is_some_and(|n| {
                let changed = n.peer_port != Some(h.listen_port);
                n.peer_port = Some(h.listen_port);
                changed
            }),
        };
        if reply {
            self.send_hello(now, &sender);
        }
        self.ensure_tunnel(&sender);
    }

    fn admit(&mut self, now: Now, iface: &IfName, src: Ipv6Addr, msg: &Discovery) {
        let Some(slot) = self.slots.iter().position(Option::is_none) else { return };
        let id = *msg.sender();
        let ifname = IfName::for_tunnel(&self.node_id(), &id);
        let mut n = Neighbor {
            id,
            wg_key: *msg.wg_key(),
            ifname: ifname.clone(),
            slot,
            listen_port: self.config.tunnel_port_base.saturating_add(slot as u16),
            underlay: iface.clone(),
            underlay_addr: src,
            peer_port: None,
            first_seen: now.mono,
            last_heard: now.mono,
            pending_since: now.mono,
            last_announce_ms: 0,
            last_hello_ms: 0,
            tunnel: TunnelStats::default(),
            dropped: Default::default(),
            tunnel_seen_up: false,
            applied: None,
            tunnel_retry_at: None,
            last_tunnel_error: None,
            session: Session::Idle { retry_at: now.mono },
            backoff: Millis(1000),
            last_session_close: None,
            market: self.market_for(now.mono, &id),
        };
        n.set_last_accepted_ms(msg);
        tracing::info!(
            neighbor = %id.short(), %ifname, via = %format_args!("{src}%{iface}"), listen_port = n.listen_port,
            "new neighbor discovered ({})", msg.kind_name()
        );
        self.slots[slot] = Some(id);
        self.neighbors.insert(id, n);
    }

    /// Returns false (and records why) if the message must be ignored.
    fn update_known(&mut self, now: Now, iface: &IfName, src: Ipv6Addr, msg: &Discovery) -> bool {
        let silent_after = self.config.announce_interval.0.saturating_mul(3);
        let n = self.neighbors.get_mut(msg.sender()).expect("known");
        if (&n.underlay, n.underlay_addr) != (iface, src) {
            if now.mono.since(n.last_heard).0 < silent_after {
                self.rejects.record(
                    now.mono,
                    "heard elsewhere",
                    format_args!(
                        "{} also heard at {src}%{iface}; keeping {}%{}",
                        n.id.short(),
                        n.underlay_addr,
                        n.underlay
                    ),
                );
                return false;
            }
            tracing::info!(neighbor = %n.id.short(), from = %format_args!("{}%{}", n.underlay_addr, n.underlay),
                to = %format_args!("{src}%{iface}"), "neighbor moved");
            n.underlay = iface.clone();
            n.underlay_addr = src;
        }
        if n.wg_key != *msg.wg_key() {
            tracing::warn!(neighbor = %n.id.short(), "neighbor's WireGuard key changed; updating its tunnel");
            n.wg_key = *msg.wg_key();
        }
        n.last_heard = now.mono;
        n.set_last_accepted_ms(msg);
        true
    }

    /// The timestamp for our next discovery message: the wall clock, but always later than the
    /// last one we sent, so that two messages sent within one millisecond (a reply and a
    /// periodic Hello) are not taken for a replay of each other.
    fn discovery_stamp(&mut self, now: Now) -> u64 {
        let t = now.unix_ms.max(self.last_discovery_ms.saturating_add(1));
        self.last_discovery_ms = t;
        t
    }

    pub(super) fn send_hello(&mut self, now: Now, id: &NodeId) {
        if !self.neighbors.contains_key(id) {
            return;
        }
        let unix_ms = self.discovery_stamp(now);
        let n = &self.neighbors[id];
        let hello = Discovery::Hello(Hello {
            node: self.node_id(),
            wg_key: self.identity.wg_public(),
            to: n.id,
            listen_port: n.listen_port,
            unix_ms,
        });
        let (iface, dst) = (n.underlay.clone(), n.underlay_addr);
        let payload = hello.encode_signed(&self.identity);
        self.actions.push_back(Action::SendDiscovery { iface, dst, payload });
    }

    pub(super) fn send_announcements(&mut self, now: Now) {
        let ann = Discovery::Announce(Announce {
            node: self.node_id(),
            wg_key: self.identity.wg_public(),
            unix_ms: self.discovery_stamp(now),
        })
        .encode_signed(&self.identity);
        for iface in self.config.interfaces.clone() {
            self.actions.push_back(Action::SendDiscovery { iface, dst: DISCOVERY_GROUP, payload: ann.clone() });
        }
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in ids {
            self.send_hello(now, &id);
        }
    }
}
