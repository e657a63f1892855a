//! Handling discovery datagrams: admission, replay and freshness checks, and tunnel requests.
//!
//! Every signature check is under a budget: messages from unknown senders share
//! `verify_budget`; messages claiming a known neighbor's id spend that neighbor's own budget
//! (`NEIGHBOR_VERIFY_PER_INTERVAL`) and then the budget all known ids share
//! (`KNOWN_VERIFY_SHARE` per table slot per announce interval). The cheap checks (freshness,
//! replay, source address) come before any of them.

use super::neighbor::{Neighbor, Session, TunnelStats};
use super::{Node, TokenBucket, DISCOVERY_GROUP, MAX_PENDING_PER_ADDRESS, NEIGHBOR_VERIFY_PER_INTERVAL};
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
        let known = self.neighbors.contains_key(&sender);
        if known {
            // Cheap checks first, then the neighbor's own budget, then the one all known ids
            // share: a flood claiming a neighbor's id costs a bounded number of signature checks
            // however it is sent, and its real messages still get checked unless the flood also
            // comes from its own address (its session, not discovery, keeps it alive then).
            let silent_after = self.silent_after();
            let n = self.neighbors.get_mut(&sender).expect("known");
            if msg.unix_ms() <= *n.last_accepted_ms(msg) {
                return self.rejects.record(
                    t,
                    "replayed",
                    format_args!("{} from {} not newer than the last accepted", msg.kind_name(), sender.short()),
                );
            }
            if (&n.underlay, n.underlay_addr) != (iface, src) && t.since(n.last_heard).0 < silent_after {
                let (at, via) = (n.underlay_addr, n.underlay.clone());
                return self.rejects.record(
                    t,
                    "heard elsewhere",
                    format_args!("{} also heard at {src}%{iface}; keeping {at}%{via}", sender.short()),
                );
            }
            if !n.verify_budget.take(t) {
                return self.rejects.record(
                    t,
                    "rate limited (one neighbor's id)",
                    format_args!(
                        "more than {NEIGHBOR_VERIFY_PER_INTERVAL} messages per announce interval claim to be {} ({src}%{iface})",
                        sender.short()
                    ),
                );
            }
            if !self.known_verify_budget.take(t) {
                return self.rejects.record(
                    t,
                    "rate limited (all neighbors' ids)",
                    format_args!("too many messages claiming known neighbors' ids"),
                );
            }
        } else {
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
                    format_args!("{} ignored: {from_there} pending neighbors already at {src}%{iface}", sender.short()),
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
                return self.rejects.record(t, "rate limited", format_args!("too many messages from unknown nodes"));
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
        if !known {
            if !self.admit_budget.take(t) {
                return self.rejects.record(t, "rate limited", format_args!("too many new neighbors per second"));
            }
            self.admit(now, iface, src, &msg);
        } else {
            self.update_known(now, iface, src, &msg);
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
            verify_budget: TokenBucket::new(NEIGHBOR_VERIFY_PER_INTERVAL, self.config.announce_interval, now.mono),
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
            passive: Default::default(),
            tests: Default::default(),
        };
        n.set_last_accepted_ms(msg);
        tracing::info!(
            neighbor = %id.short(), %ifname, via = %format_args!("{src}%{iface}"), listen_port = n.listen_port,
            "new neighbor discovered ({})", msg.kind_name()
        );
        self.slots[slot] = Some(id);
        self.neighbors.insert(id, n);
    }

    /// After `silent_after` without a word from its address, a neighbor heard at another
    /// address is taken to have moved there.
    fn silent_after(&self) -> u64 {
        self.config.announce_interval.0.saturating_mul(3)
    }

    /// A verified message from a known neighbor, from its address or from a new one it moved to
    /// (`handle_discovery` refused it if the old address is still in use).
    fn update_known(&mut self, now: Now, iface: &IfName, src: Ipv6Addr, msg: &Discovery) {
        let n = self.neighbors.get_mut(msg.sender()).expect("known");
        if (&n.underlay, n.underlay_addr) != (iface, src) {
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
