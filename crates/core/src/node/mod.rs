//! The node: neighbor table, discovery, tunnel lifecycle and control sessions, driven entirely
//! by inputs (`handle_*`) and drained through outputs (`poll_action`, `poll_timeout`).

mod discovery;
mod market;
mod neighbor;
mod quality;
mod routing;
mod session;
#[cfg(test)]
mod tests;

pub use market::{CounterReading, CounterSample};
pub use neighbor::{Dropped, Neighbor, NeighborState, TunnelStats, Volume, HANDSHAKE_FRESH_SECS};
pub use quality::{destination_verdict, DestinationTests, LiveCheck, NeighborTests, TestOutcome, TEST_DEADLINE};

use crate::action::{Action, SessionId, TunnelSpec};
use crate::config::CoreConfig;
use crate::identity::Identity;
use crate::ids::{IfName, NodeId};
use crate::time::{LogLimit, Millis, Now};
use crate::timer::{Timer, TimerTable};
use neighbor::Session;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv6Addr;

/// The IPv6 link-local multicast group discovery Announces are sent to.
pub const DISCOVERY_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x7477, 0x6179);

/// Most penalized identities remembered at once (oldest forgotten first).
const MAX_PENALIZED: usize = 1024;
/// Most neighbors whose tunnel is not up yet that one source address (interface and link-local
/// address) may hold. A real node has one identity per link-local address, so this never holds
/// one back; it stops a single host announcing many identities from filling the table and
/// eating the admission budgets, which otherwise lets it lock new real neighbors out for as long
/// as it keeps flooding. (A flooder that forges many source addresses is not stopped by this.)
pub const MAX_PENDING_PER_ADDRESS: usize = 2;
/// Signature checks one known neighbor's id may cost per announce interval. A real neighbor
/// sends three messages per interval (its Announce, its periodic Hello to us and the Hello
/// answering our Announce), one more when its tunnel port changes: twice that leaves room, and a
/// forger claiming its id costs at most this many checks per interval.
pub const NEIGHBOR_VERIFY_PER_INTERVAL: u32 = 6;
/// Signature checks all known neighbors' ids together may cost per announce interval, per slot
/// of the neighbor table: above what real neighbors need (3 each), below the sum of the
/// per-neighbor budgets, so that forging every neighbor's id at once costs a bounded number.
pub const KNOWN_VERIFY_SHARE: u32 = 4;
/// How long after a failed tunnel operation it is retried.
const TUNNEL_RETRY: Millis = Millis(5000);

pub struct Node {
    config: CoreConfig,
    identity: Identity,
    rng: ChaCha20Rng,
    neighbors: BTreeMap<NodeId, Neighbor>,
    /// `slots[i]` holds the neighbor whose tunnel listens on `tunnel_port_base + i`.
    slots: Vec<Option<NodeId>>,
    /// Identities ignored until the given time. A `BTreeMap` so that which one is forgotten
    /// first when full (ties in time) does not depend on hashing: simulations stay reproducible.
    penalized: BTreeMap<NodeId, Millis>,
    actions: VecDeque<Action>,
    timers: TimerTable,
    next_session: u64,
    /// Signature checks of messages from unknown senders.
    verify_budget: TokenBucket,
    admit_budget: TokenBucket,
    /// Signature checks of messages claiming any known neighbor's id, all together (each
    /// neighbor also has its own, `Neighbor::verify_budget`).
    known_verify_budget: TokenBucket,
    rejects: RejectLog,
    last_now: Now,
    /// Timestamp of the last discovery message we sent (ours are strictly increasing).
    last_discovery_ms: u64,
    market: market::MarketState,
    /// The routing neighbors last sent to the driver.
    routed: Vec<crate::routing::RoutedNeighbor>,
    quality: quality::QualityState,
}

impl Node {
    /// A node with no neighbors. `seed` drives every random choice (session nonces), so a
    /// simulator with fixed seeds is deterministic.
    pub fn new(config: CoreConfig, identity: Identity, now: Now, seed: [u8; 32]) -> Node {
        let mut timers = TimerTable::default();
        timers.set(Timer::Announce, now.mono);
        timers.set(Timer::Sample, now.mono);
        if config.quality.testing {
            timers.set(Timer::Quality, now.mono);
        }
        let per_sec = config.max_new_neighbors_per_sec.max(1);
        let rail: Box<dyn crate::market::PaymentRail> = Box::new(crate::market::NotesRail::new(identity.clone()));
        Node {
            slots: vec![None; config.max_neighbors],
            verify_budget: TokenBucket::per_second(per_sec.saturating_mul(10), now.mono),
            admit_budget: TokenBucket::per_second(per_sec, now.mono),
            known_verify_budget: TokenBucket::new(
                KNOWN_VERIFY_SHARE.saturating_mul(config.max_neighbors.min(u32::MAX as usize) as u32),
                config.announce_interval,
                now.mono,
            ),
            config,
            identity,
            rng: ChaCha20Rng::from_seed(seed),
            neighbors: BTreeMap::new(),
            penalized: BTreeMap::new(),
            actions: VecDeque::new(),
            timers,
            next_session: 1,
            rejects: RejectLog::default(),
            last_now: now,
            last_discovery_ms: 0,
            market: market::MarketState::new(rail),
            routed: Vec::new(),
            quality: Default::default(),
        }
    }

    // ----- getters -----

    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn neighbors(&self) -> impl Iterator<Item = &Neighbor> {
        self.neighbors.values()
    }

    pub fn neighbor(&self, id: &NodeId) -> Option<&Neighbor> {
        self.neighbors.get(id)
    }

    pub fn neighbor_by_ifname(&self, ifname: &IfName) -> Option<&Neighbor> {
        self.neighbors.values().find(|n| &n.ifname == ifname)
    }

    /// How many discovery messages were rejected, by reason.
    pub fn reject_counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejects.counts
    }

    // ----- outputs -----

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let neighbor_deadline = self.neighbors.values().filter_map(|n| self.neighbor_deadline(n)).min();
        [self.timers.next(), neighbor_deadline].into_iter().flatten().min()
    }

    // ----- inputs -----

    /// Call when `poll_timeout` has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Now) {
        self.last_now = now;
        for t in self.timers.expire(now.mono) {
            match t {
                Timer::Announce => {
                    self.send_announcements(now);
                    self.timers.set(Timer::Announce, now.mono + self.config.announce_interval);
                }
                Timer::Sample => {
                    if !self.neighbors.is_empty() {
                        self.actions.push_back(Action::SampleTunnels);
                    }
                    self.timers.set(Timer::Sample, now.mono + self.config.sample_interval);
                }
                Timer::Quality => self.quality_tick(now),
            }
        }
        self.housekeeping(now);
    }

    /// The driver's report of a tunnel's kernel state.
    pub fn handle_tunnel_stats(&mut self, now: Now, ifname: &IfName, stats: TunnelStats) {
        let Some(id) = self.neighbor_by_ifname(ifname).map(|n| n.id) else { return };
        let n = self.neighbors.get_mut(&id).expect("found above");
        n.tunnel = stats;
        let up = n.tunnel_up();
        if up && !n.tunnel_seen_up {
            tracing::info!(neighbor = %id.short(), %ifname, "tunnel up (WireGuard handshake completed)");
            n.tunnel_seen_up = true;
            n.last_tunnel_error = None;
            if let Session::Idle { retry_at, .. } = &mut n.session {
                *retry_at = now.mono;
            }
        } else if !up && n.tunnel_seen_up {
            tracing::warn!(neighbor = %id.short(), %ifname, "tunnel down (no recent WireGuard handshake)");
            n.tunnel_seen_up = false;
            // It gets `pending_timeout` from now to come back, as a new neighbor would.
            n.pending_since = now.mono;
        }
        self.drive_session(now, &id);
    }

    /// The driver could not apply a tunnel spec or its addresses; retried after a pause.
    pub fn handle_tunnel_error(&mut self, now: Now, ifname: &IfName, error: &str) {
        let Some(id) = self.neighbor_by_ifname(ifname).map(|n| n.id) else { return };
        let n = self.neighbors.get_mut(&id).expect("found above");
        tracing::warn!(neighbor = %id.short(), %ifname, %error, "tunnel operation failed; retrying in 5 s");
        n.applied = None;
        n.tunnel_retry_at = Some(now.mono + TUNNEL_RETRY);
        n.last_tunnel_error = Some(error.to_owned());
    }

    /// Stop: tear down every tunnel and session (for a clean shutdown).
    pub fn shutdown(&mut self) {
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in ids {
            self.remove_neighbor(&id, "daemon stopping", false);
        }
        self.persist(self.last_now);
    }

    // ----- internals shared by the submodules -----

    fn next_session_id(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    fn tunnel_spec(&self, n: &Neighbor) -> TunnelSpec {
        TunnelSpec {
            ifname: n.ifname.clone(),
            neighbor: n.id,
            listen_port: n.listen_port,
            peer_key: n.wg_key,
            endpoint: n.endpoint(),
            local_link_local: self.node_id().tunnel_link_local(),
            peer_link_local: n.id.tunnel_link_local(),
            peer_mesh_ip: n.id.mesh_ip(),
            mtu: self.config.tunnel_mtu,
            keepalive_secs: self.config.tunnel_keepalive_secs,
        }
    }

    /// Hand the driver the neighbor's tunnel spec if it differs from the one last applied.
    fn ensure_tunnel(&mut self, id: &NodeId) {
        let Some(n) = self.neighbors.get(id) else { return };
        let spec = self.tunnel_spec(n);
        let n = self.neighbors.get_mut(id).expect("exists");
        if n.applied.as_ref() != Some(&spec) && n.tunnel_retry_at.is_none() {
            n.applied = Some(spec.clone());
            self.actions.push_back(Action::EnsureTunnel(spec));
        }
    }

    fn remove_neighbor(&mut self, id: &NodeId, why: &str, penalize: bool) {
        let Some(n) = self.neighbors.remove(id) else { return };
        tracing::info!(neighbor = %id.short(), ifname = %n.ifname, reason = why, "neighbor removed");
        if let Some(s) = n.session.id() {
            self.actions.push_back(Action::SendControl {
                session: s,
                msg: crate::wire::control::ControlMessage::Close { reason: why.to_owned() },
            });
            self.actions.push_back(Action::CloseControl { session: s });
        }
        self.actions.push_back(Action::RemoveTunnel { ifname: n.ifname.clone(), neighbor: n.id });
        self.slots[n.slot] = None;
        self.market_neighbor_removed(n);
        self.update_routing();
        if penalize {
            if self.penalized.len() >= MAX_PENALIZED {
                if let Some(oldest) = self.penalized.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    self.penalized.remove(&oldest);
                }
            }
            self.penalized.insert(*id, self.last_now.mono + self.config.penalty);
        }
    }

    fn neighbor_deadline(&self, n: &Neighbor) -> Option<Millis> {
        let mut d = n.last_heard + self.config.neighbor_timeout;
        if !n.tunnel_seen_up {
            d = d.min(n.pending_since + self.config.pending_timeout);
        }
        if let Some(r) = n.tunnel_retry_at {
            d = d.min(r);
        }
        if let Some(s) = self.session_deadline(n) {
            d = d.min(s);
        }
        Some(d)
    }

    fn housekeeping(&mut self, now: Now) {
        self.penalized.retain(|_, until| *until > now.mono);
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in ids {
            let n = &self.neighbors[&id];
            // Checked before silence: an identity heard only once is both silent and pending
            // when `neighbor_timeout == pending_timeout` (the default), and must still be
            // penalized, or a flood that announces each identity once is never held back.
            if !n.tunnel_seen_up && now.mono.since(n.pending_since) >= self.config.pending_timeout {
                let why = if n.pending_since == n.first_seen {
                    format!(
                        "tunnel not up {} s after discovery; ignored for {} s",
                        now.mono.since(n.first_seen).as_secs(),
                        self.config.penalty.as_secs()
                    )
                } else {
                    format!(
                        "tunnel down for {} s; ignored for {} s",
                        now.mono.since(n.pending_since).as_secs(),
                        self.config.penalty.as_secs()
                    )
                };
                self.remove_neighbor(&id, &why, true);
                continue;
            }
            if now.mono.since(n.last_heard) >= self.config.neighbor_timeout {
                let why = format!("silent for {} s", now.mono.since(n.last_heard).as_secs());
                self.remove_neighbor(&id, &why, false);
                continue;
            }
            if matches!(n.tunnel_retry_at, Some(r) if r <= now.mono) {
                self.neighbors.get_mut(&id).expect("exists").tunnel_retry_at = None;
                self.ensure_tunnel(&id);
            }
            self.drive_session(now, &id);
        }
    }
}

/// A token bucket: `capacity` tokens, refilled continuously at `capacity` per `period`.
///
/// Exact in integers: the level is kept in token-milliseconds scaled by the period (one token
/// is `period` units, and every millisecond adds `capacity` units), so refills as small as a
/// fraction of a token per call are never rounded away.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: u64,
    period_ms: u64,
    level: u64,
    at: Millis,
}

impl TokenBucket {
    /// `per_sec` tokens a second, at most `per_sec` saved up.
    pub(crate) fn per_second(per_sec: u32, now: Millis) -> Self {
        TokenBucket::new(per_sec, Millis(1000), now)
    }

    /// `capacity` tokens per `period`, at most `capacity` saved up; starts full.
    pub(crate) fn new(capacity: u32, period: Millis, now: Millis) -> Self {
        let (capacity, period_ms) = (capacity as u64, period.0.max(1));
        TokenBucket { capacity, period_ms, level: capacity.saturating_mul(period_ms), at: now }
    }

    pub(crate) fn take(&mut self, now: Millis) -> bool {
        let cap = self.capacity.saturating_mul(self.period_ms);
        let refill = now.since(self.at).0.saturating_mul(self.capacity);
        self.level = self.level.saturating_add(refill).min(cap);
        self.at = self.at.max(now);
        if self.level >= self.period_ms {
            self.level -= self.period_ms;
            true
        } else {
            false
        }
    }
}

/// Counts rejected discovery messages by reason and logs each reason at most every 10 s.
#[derive(Debug, Default)]
struct RejectLog {
    counts: BTreeMap<&'static str, u64>,
    logs: HashMap<&'static str, LogLimit>,
}

impl RejectLog {
    fn record(&mut self, now: Millis, reason: &'static str, detail: std::fmt::Arguments<'_>) {
        *self.counts.entry(reason).or_default() += 1;
        if let Some(held) = self.logs.entry(reason).or_default().admit(now, 1, Millis::from_secs(10)) {
            tracing::warn!(reason, %detail, count_since_last_log = held + 1, "discovery message ignored");
        }
    }
}
