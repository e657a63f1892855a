//! Traffic and money: constant-rate data flows between neighbors through their tunnels, the
//! kernel counters a driver reads, the core's traffic policy honoured, and `Persist` kept as
//! each node's disk.
//!
//! - A flow from `a` to `b` (see [`Sim::start_flow`]) offers `rate_bps` into `a`'s tunnel to `b`.
//!   It moves only while that tunnel delivers (fresh handshake, link up). The data plane is a
//!   fluid model, integrated between every two simulation steps in exact integer bits.
//! - `a`'s egress: the policy `a` last applied puts `b` in a capacity group with a guaranteed
//!   rate and a ceiling. Competing flows of a group split its capacity in proportion to their
//!   neighbors' `rate_bps`, none above its demand, its ceiling or its link's capacity, what one
//!   leaves going to the others (weighted max-min, work-conserving). A neighbor cut off gets no
//!   data at all; a neighbor not in the policy is not shaped (only the link limits it).
//! - The link: its `capacity_bps` (per direction) and `loss_ppm` apply; lost bytes count in the
//!   sender's transmit counter and not in the receiver's.
//! - `b`'s ingress: a policed neighbor's bytes above the rate are dropped; a cut-off neighbor's
//!   data is dropped; what passes is counted by `b`'s receive counter for `a`, if `b`'s
//!   ruleset has one.
//!
//! Each node's kernel state ([`Ruleset`]): one receive counter per neighbor in its applied
//! policy, created with a new instance id when a policy first lists the neighbor, deleted when
//! one no longer does (as the real driver's reconcile does). It survives [`Sim::stop`] (a
//! kill -9 leaves the kernel's nftables table behind), is cleared by a clean shutdown (the driver
//! removes its rules) and by [`Sim::power_cut`], and [`Sim::flush_ruleset`] re-creates every
//! counter from zero under new instance ids. The transmit counter is the tunnel's own, whose
//! instance is the tunnel's serial: a re-created tunnel counts from zero.
//!
//! By default only data flows are counted (control traffic is not), so ledgers come to rest
//! once the flows stop; `Sim::count_control_bytes` counts control bytes too, as the real
//! firewall does, and then statements answer each other forever.

use crate::{NodeIdx, Sim};
use rand::Rng;
use std::collections::BTreeMap;
use tollway_core::action::PersistBatch;
use tollway_core::market::{Ingress, MarketRecord, NeighborMarket, ShapedNeighbor, TrafficPolicy};
use tollway_core::node::{CounterReading, CounterSample};
use tollway_core::wire::control::ControlMessage;
use tollway_core::{IfName, Millis, Node, NodeId, Now};

/// Changes (or drops, with `None`) a control message a node sends to a neighbor, with the
/// sending node's core at hand (a lying or misbehaving neighbor).
pub type Tamper = Box<dyn FnMut(&Node, &NodeId, ControlMessage) -> Option<ControlMessage>>;

/// What a flow from one node to a neighbor has done so far (bytes), and its current rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Offered rate, bit/s (0: stopped).
    pub demand_bps: u64,
    /// Rate the sender's shaping and the link allowed at the last step, bit/s.
    pub rate_bps: u64,
    /// Into the sender's tunnel (its transmit counter counts these).
    pub sent: u64,
    /// Lost on the link.
    pub lost: u64,
    /// Dropped by the receiver's policing.
    pub policed: u64,
    /// Accepted by the receiver.
    pub delivered: u64,
    /// Accepted and counted by a receive counter (a neighbor not in the receiver's policy yet
    /// has none).
    pub counted: u64,
}

/// One kernel counter of received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxCounter {
    pub instance: u64,
    pub value: u64,
}

/// A node's kernel traffic state: counters and the applied policy.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub counters: BTreeMap<NodeId, RxCounter>,
    pub policy: Option<TrafficPolicy>,
}

/// A flow's claim on its sender's shaping group: (flow, weight, cap).
type Claim = ((NodeIdx, NodeIdx), u64, u64);

#[derive(Default)]
pub(crate) struct DataPlane {
    /// Offered rate per (from, to).
    demand: BTreeMap<(NodeIdx, NodeIdx), u64>,
    stats: BTreeMap<(NodeIdx, NodeIdx), FlowStats>,
    /// Bit-milliseconds not yet a whole byte: sent, and allowed by the receiver's policer.
    carry: BTreeMap<(NodeIdx, NodeIdx), (u128, u128)>,
    /// Integrated up to here.
    at: Millis,
    next_instance: u64,
}

impl Sim {
    // ----- flows -----

    /// Offer `rate_bps` of data from `from` to its neighbor `to` (replacing any earlier rate).
    pub fn start_flow(&mut self, from: NodeIdx, to: NodeIdx, rate_bps: u64) {
        self.trace.note(self.now, format_args!("flow {from}->{to} {rate_bps} bit/s"));
        self.data.demand.insert((from, to), rate_bps);
        self.data.stats.entry((from, to)).or_default().demand_bps = rate_bps;
    }

    pub fn stop_flow(&mut self, from: NodeIdx, to: NodeIdx) {
        self.start_flow(from, to, 0);
        self.data.demand.remove(&(from, to));
    }

    pub fn stop_all_flows(&mut self) {
        let all: Vec<_> = self.data.demand.keys().copied().collect();
        for (a, b) in all {
            self.stop_flow(a, b);
        }
    }

    /// What the flow from `from` to `to` has done so far.
    pub fn flow(&self, from: NodeIdx, to: NodeIdx) -> FlowStats {
        self.data.stats.get(&(from, to)).copied().unwrap_or_default()
    }

    // ----- market state -----

    /// Run `f` on `n`'s core (an operator command), then execute what it asked for.
    pub fn command<R>(&mut self, n: NodeIdx, f: impl FnOnce(&mut Node, Now) -> R) -> R {
        self.boot_pending();
        let now = self.now_for(n);
        let core = self.nodes[n.0].core.as_mut().unwrap_or_else(|| panic!("{n} is not running"));
        let r = f(core, now);
        self.drain_actions();
        r
    }

    /// How `a` holds its market with `b` (prices, ledger, payments, enforcement).
    pub fn market(&self, a: NodeIdx, b: NodeIdx) -> Option<&NeighborMarket> {
        Some(&self.try_node(a)?.neighbor(&self.node_id(b))?.market)
    }

    /// How `a`'s kernel currently shapes and polices `b` (from the last policy `a` applied).
    pub fn shaping(&self, a: NodeIdx, b: NodeIdx) -> Option<&ShapedNeighbor> {
        let id = self.node_id(b);
        self.nodes[a.0].ruleset.policy.as_ref()?.groups.iter().flat_map(|g| &g.members).find(|m| m.neighbor == id)
    }

    /// Whether `a`'s kernel restricts `b` (policed or cut off).
    pub fn restricts(&self, a: NodeIdx, b: NodeIdx) -> bool {
        self.shaping(a, b).is_some_and(|m| m.ingress != Ingress::Open)
    }

    pub fn ruleset(&self, n: NodeIdx) -> &Ruleset {
        &self.nodes[n.0].ruleset
    }

    /// `n`'s stored market records (what a restart restores).
    pub fn disk(&self, n: NodeIdx) -> &BTreeMap<NodeId, MarketRecord> {
        &self.nodes[n.0].disk
    }

    /// Re-create every receive counter of `n` from zero under new instance ids (`nft flush
    /// ruleset` followed by the driver's reconcile).
    pub fn flush_ruleset(&mut self, n: NodeIdx) {
        self.trace.note(self.now, format_args!("flush ruleset {n}"));
        let ids: Vec<NodeId> = self.nodes[n.0].ruleset.counters.keys().copied().collect();
        for id in ids {
            let instance = self.new_instance();
            self.nodes[n.0].ruleset.counters.insert(id, RxCounter { instance, value: 0 });
        }
    }

    /// Stop `n` like [`Sim::stop`], and lose its kernel state too (counters, policy): its
    /// restarted core finds new counters. Its disk survives.
    pub fn power_cut(&mut self, n: NodeIdx) {
        self.trace.note(self.now, format_args!("power cut {n}"));
        self.halt(n);
        self.nodes[n.0].ruleset = Ruleset::default();
    }

    /// Make `n` change or drop the control messages it sends (`None`: honest again).
    pub fn set_tamper(&mut self, n: NodeIdx, tamper: Option<Tamper>) {
        match tamper {
            Some(t) => self.tampers.insert(n, t),
            None => self.tampers.remove(&n),
        };
    }

    // ----- actions -----

    pub(crate) fn apply_traffic(&mut self, n: NodeIdx, policy: TrafficPolicy) {
        let wanted: Vec<NodeId> = policy.groups.iter().flat_map(|g| &g.members).map(|m| m.neighbor).collect();
        let mut added = Vec::new();
        let rs = &mut self.nodes[n.0].ruleset;
        rs.counters.retain(|id, _| wanted.contains(id));
        for id in wanted {
            if !rs.counters.contains_key(&id) {
                added.push(id);
            }
        }
        rs.policy = Some(policy);
        for id in added {
            let instance = self.new_instance();
            self.nodes[n.0].ruleset.counters.insert(id, RxCounter { instance, value: 0 });
        }
    }

    pub(crate) fn persist(&mut self, n: NodeIdx, batch: PersistBatch) {
        for (id, record) in batch.records {
            self.nodes[n.0].disk.insert(id, record);
        }
    }

    /// After `SampleTunnels` reported the tunnels: the counters, as the driver reads them.
    pub(crate) fn sample_counters(&mut self, n: NodeIdx) {
        let node = &self.nodes[n.0];
        let samples: Vec<CounterSample> = node
            .tunnels
            .iter()
            .map(|(ifname, t)| CounterSample {
                ifname: ifname.clone(),
                rx: node
                    .ruleset
                    .counters
                    .get(&t.spec.neighbor)
                    .map(|c| CounterReading { instance: c.instance, value: c.value }),
                tx: Some(CounterReading { instance: t.serial, value: t.counted_tx }),
                dropped: None,
            })
            .collect();
        if samples.is_empty() {
            return;
        }
        for s in &samples {
            let (rx, tx) = (s.rx.map(|r| (r.instance, r.value)), s.tx.map(|r| r.value));
            self.trace.record(self.now, n, format_args!("counters {} rx {rx:?} tx {tx:?}", s.ifname));
        }
        let now = self.now_for(n);
        if let Some(core) = self.nodes[n.0].core.as_mut() {
            core.handle_counters(now, &samples);
        }
    }

    /// Control bytes `bytes` went from `a`'s tunnel `ifname` to `b`: counted if so configured.
    pub(crate) fn count_control(&mut self, a: NodeIdx, ifname: &IfName, b: NodeIdx, bytes: u64) {
        if !self.count_control_bytes {
            return;
        }
        self.nodes[a.0].tunnels.get_mut(ifname).expect("carried").counted_tx += bytes;
        let id = self.node_id(a);
        if let Some(c) = self.nodes[b.0].ruleset.counters.get_mut(&id) {
            c.value += bytes;
        }
    }

    pub(crate) fn tamper(&mut self, n: NodeIdx, peer: NodeIdx, msg: ControlMessage) -> Option<ControlMessage> {
        let peer = self.node_id(peer);
        let Sim { tampers, nodes, .. } = self;
        match (tampers.get_mut(&n), nodes[n.0].core.as_ref()) {
            (Some(t), Some(core)) => t(core, &peer, msg),
            _ => Some(msg),
        }
    }

    fn new_instance(&mut self) -> u64 {
        self.data.next_instance += 1;
        self.data.next_instance
    }

    // ----- the data plane -----

    /// Move the flows' bytes from the last step to `to` at the rates the state allows now.
    pub(crate) fn advance_flows(&mut self, to: Millis) {
        let dt = to.since(self.data.at).0 as u128;
        self.data.at = self.data.at.max(to);
        if dt == 0 || self.data.demand.is_empty() {
            return;
        }
        for ((a, b), bps) in self.allocate() {
            self.data.stats.entry((a, b)).or_default().rate_bps = bps;
            if bps == 0 {
                continue;
            }
            self.move_bytes(a, b, bps, dt);
        }
    }

    /// The rate each flow gets now: the sender's shaping, then the link's capacity.
    fn allocate(&self) -> Vec<((NodeIdx, NodeIdx), u64)> {
        // Per sender and shaping group: (flow, weight, cap).
        let mut groups: BTreeMap<(NodeIdx, u16), (u64, Vec<Claim>)> = BTreeMap::new();
        let mut out = Vec::new();
        for (&(a, b), &demand) in &self.data.demand {
            let Some(link_cap) = self.deliverable(a, b) else {
                out.push(((a, b), 0));
                continue;
            };
            let cap = demand.min(link_cap);
            let id = self.node_id(b);
            let policy = self.nodes[a.0].ruleset.policy.as_ref();
            let shaped = policy.and_then(|p| {
                p.groups.iter().find_map(|g| g.members.iter().find(|m| m.neighbor == id).map(|m| (g, m)))
            });
            match shaped {
                None => out.push(((a, b), cap)),
                Some((_, m)) if m.ingress == Ingress::ControlOnly => out.push(((a, b), 0)),
                Some((g, m)) => {
                    let e = groups.entry((a, g.id)).or_insert((g.capacity_bps, Vec::new()));
                    e.1.push(((a, b), m.rate_bps.max(1), cap.min(m.ceil_bps)));
                }
            }
        }
        for (_, (capacity, claims)) in groups {
            let shares = water_fill(capacity, &claims.iter().map(|c| (c.1, c.2)).collect::<Vec<_>>());
            out.extend(claims.iter().zip(shares).map(|(c, s)| (c.0, s)));
        }
        out
    }

    /// If `a`'s tunnel to `b` delivers now, the capacity of its link (u64::MAX: unlimited).
    fn deliverable(&self, a: NodeIdx, b: NodeIdx) -> Option<u64> {
        let id = self.node_id(b);
        let ifname = self.nodes[a.0].tunnels.iter().find(|(_, t)| t.spec.neighbor == id)?.0;
        let (peer, _, link) = self.tunnel_path(a, ifname)?;
        (peer == b).then(|| self.links[link.0].opts.capacity_bps.unwrap_or(u64::MAX))
    }

    fn move_bytes(&mut self, a: NodeIdx, b: NodeIdx, bps: u64, dt_ms: u128) {
        let id_b = self.node_id(b);
        let ifname = self.nodes[a.0].tunnels.iter().find(|(_, t)| t.spec.neighbor == id_b).expect("on path").0.clone();
        let (_, bif, link) = self.tunnel_path(a, &ifname).expect("deliverable");
        let carry = self.data.carry.entry((a, b)).or_default();
        let bits_ms = bps as u128 * dt_ms + carry.0;
        let sent = (bits_ms / 8000) as u64;
        carry.0 = bits_ms % 8000;
        // Loss: exact in expectation, the fraction of a byte drawn at random.
        let ppm = self.links[link.0].opts.loss_ppm as u128;
        let lost_micro = sent as u128 * ppm;
        let mut lost = (lost_micro / 1_000_000) as u64;
        if self.rng.gen_range(0..1_000_000u128) < lost_micro % 1_000_000 {
            lost += 1;
        }
        let lost = lost.min(sent);
        let arrived = sent - lost;
        // The receiver's policing of `a`.
        let id_a = self.node_id(a);
        let ingress = self.nodes[b.0]
            .ruleset
            .policy
            .as_ref()
            .and_then(|p| p.groups.iter().flat_map(|g| &g.members).find(|m| m.neighbor == id_a))
            .map(|m| m.ingress)
            .unwrap_or(Ingress::Open);
        let accepted = match ingress {
            Ingress::Open => arrived,
            Ingress::ControlOnly => 0,
            Ingress::Police(limit) => {
                let carry = self.data.carry.get_mut(&(a, b)).expect("made above");
                let allowed = limit as u128 * dt_ms + carry.1;
                let take = (allowed / 8000).min(arrived as u128);
                // Unused allowance does not pile up beyond one byte's worth (no burst credit).
                carry.1 = (allowed - take * 8000).min(8000);
                take as u64
            }
        };
        let ta = self.nodes[a.0].tunnels.get_mut(&ifname).expect("on path");
        ta.tx_bytes += sent;
        ta.counted_tx += sent;
        self.nodes[b.0].tunnels.get_mut(&bif).expect("on path").rx_bytes += arrived;
        let counted = match self.nodes[b.0].ruleset.counters.get_mut(&id_a) {
            Some(c) => {
                c.value += accepted;
                accepted
            }
            None => 0,
        };
        let f = self.links[link.0].flow_from_mut(a);
        f.data_sent += sent;
        f.data_lost += lost;
        let s = self.data.stats.entry((a, b)).or_default();
        s.sent += sent;
        s.lost += lost;
        s.policed += arrived - accepted;
        s.delivered += accepted;
        s.counted += counted;
    }
}

/// Split `capacity` among claims `(weight, cap)` in proportion to their weights, none above its
/// cap, what a capped claim leaves going to the others.
pub(crate) fn water_fill(capacity: u64, claims: &[(u64, u64)]) -> Vec<u64> {
    let mut alloc = vec![0u64; claims.len()];
    let mut open: Vec<usize> = (0..claims.len()).filter(|&i| claims[i].1 > 0).collect();
    let mut left = capacity as u128;
    while !open.is_empty() && left > 0 {
        let total: u128 = open.iter().map(|&i| claims[i].0 as u128).sum();
        let capped: Vec<usize> =
            open.iter().copied().filter(|&i| claims[i].1 as u128 * total <= left * claims[i].0 as u128).collect();
        if capped.is_empty() {
            for &i in &open {
                alloc[i] = (left * claims[i].0 as u128 / total) as u64;
            }
            break;
        }
        for &i in &capped {
            alloc[i] = claims[i].1;
            left -= claims[i].1 as u128;
        }
        open.retain(|i| !capped.contains(i));
    }
    alloc
}

#[cfg(test)]
mod tests {
    use super::water_fill;

    #[test]
    fn capacity_is_split_by_weight_and_what_one_leaves_goes_to_the_others() {
        assert_eq!(water_fill(100, &[(3, 1000), (1, 1000)]), vec![75, 25]);
        assert_eq!(water_fill(100, &[(3, 10), (1, 1000)]), vec![10, 90], "work-conserving");
        assert_eq!(water_fill(100, &[(3, 10), (1, 20)]), vec![10, 20], "demand below capacity");
        assert_eq!(water_fill(100, &[(3, 0), (1, 1000)]), vec![0, 100], "an idle flow takes nothing");
        assert_eq!(water_fill(0, &[(1, 10)]), vec![0]);
    }
}
