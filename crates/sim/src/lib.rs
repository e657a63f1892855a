//! # tollway-sim
//!
//! A seeded, deterministic simulator of many tollway nodes. It owns N [`Node`]s (the pure core,
//! unchanged), a virtual clock, and a topology of physical links, and executes every [`Action`]
//! the way a real driver would: discovery datagrams cross links, tunnels handshake when
//! WireGuard would, control connections carry real encoded frames through those tunnels. Links
//! can be cut and restored, nodes stopped and restarted. Nothing reads a real clock, spawns a
//! thread or touches the network, and every random choice comes from the seed, so a run is
//! reproducible: [`Sim::trace_hash`] is the same for the same seed and script.
//!
//! Time advances event by event, always to the earliest of the next delivery and any node's
//! `poll_timeout`.
//!
//! ```
//! use tollway_sim::{Millis, Sim};
//! let mut sim = Sim::new(7);
//! let a = sim.add_node("a", |_| {});
//! let b = sim.add_node("b", |_| {});
//! sim.link(a, b);
//! let took = sim.run_until(|s| s.all_links_connected(), Millis::from_secs(60));
//! assert!(took.is_some());
//! ```
//!
//! Traffic and money: [`Sim::start_flow`] offers a constant rate of data from a node to a
//! neighbor through their tunnel; the cores' `ApplyTraffic` shapes and polices it, the link's
//! `capacity_bps` and `loss_ppm` limit it, and the kernel counters it moves are fed to the cores
//! at every `SampleTunnels`. [`Sim::flow`] tells what a flow sent, lost and delivered;
//! [`Sim::market`] shows a core's market with a neighbor, [`Sim::shaping`] and
//! [`Sim::restricts`] what its kernel applies, [`Sim::disk`] what it persisted (restored when it
//! starts again). [`Sim::command`] runs an operator command (`set_ask`, `set_payments_paused`,
//! ...), [`Sim::set_tamper`] makes a node lie, [`Sim::power_cut`] and [`Sim::flush_ruleset`]
//! lose or re-create its counters. See the `market` module for the model.
//!
//! The pieces: `net` (links, addresses, per-link byte flows), `tunnel` (simulated WireGuard),
//! `control` (simulated TCP inside tunnels), `driver` (actions in, events out), `market` (data
//! flows, shaping and policing as the cores ask, kernel counters, each node's disk), `flood` (an
//! adversary announcing many fake identities), [`topology`] (ready-made graphs), `trace`.

mod control;
mod driver;
mod flood;
mod market;
mod net;
mod quality;
pub mod topology;
mod trace;
mod tunnel;

pub use flood::FloodSpec;
pub use market::{FlowStats, Ruleset, RxCounter, Tamper};
pub use net::{Flow, Link, LinkEnd, LinkId, LinkOptions};
pub use quality::{PathModel, TEST_TIME};
pub use trace::TraceEntry;
pub use tunnel::{SimTunnel, REKEY_AFTER};

pub use tollway_core::node::MAX_PENDING_PER_ADDRESS;
pub use tollway_core::{Action, CoreConfig, IfName, Millis, NeighborState, Node, NodeId, Now};

use control::{Conn, ConnId};
use driver::Event;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use tollway_core::{Identity, SessionId};

/// The wall clock (Unix milliseconds) when the simulated monotonic clock reads zero.
pub const UNIX_AT_ZERO: u64 = 1_700_000_000_000;

/// A node of the simulation, by the order it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeIdx(pub usize);

impl std::fmt::Display for NodeIdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// One simulated router: its identity, configuration and disk survive restarts; its core,
/// tunnels and connections do not; its kernel's traffic rules survive a crash but not a clean
/// shutdown or a power cut.
pub struct SimNode {
    pub name: String,
    identity: Identity,
    config: CoreConfig,
    core: Option<Node>,
    /// Added but not started yet: started at the next step, so that links made right after
    /// `add_node` already carry its first announcement.
    start_pending: bool,
    /// Bumped at each start; in-flight events for an older incarnation are dropped.
    generation: u64,
    /// Each physical interface's link-local address.
    addrs: BTreeMap<IfName, Ipv6Addr>,
    tunnels: BTreeMap<IfName, SimTunnel>,
    next_accept: u64,
    /// Whether something listens on the control port (connects are refused otherwise).
    accepting: bool,
    /// Make every `EnsureTunnel` fail (reported through `handle_tunnel_error`).
    tunnel_faults: bool,
    /// Added to the shared wall clock for this node (clock skew).
    clock_offset_ms: i64,
    /// Tunnel interfaces created over the node's life (across restarts).
    tunnels_created: u64,
    /// Receive counters and the applied traffic policy.
    ruleset: Ruleset,
    /// The neighbors the core last told routing to use, with their link costs.
    routing: Vec<tollway_core::RoutedNeighbor>,
    /// The latest persisted market record per neighbor.
    disk: BTreeMap<NodeId, tollway_core::market::MarketRecord>,
}

impl SimNode {
    pub fn is_running(&self) -> bool {
        self.core.is_some()
    }

    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The link-local address of physical interface `iface`.
    pub fn addr(&self, iface: &IfName) -> Option<Ipv6Addr> {
        self.addrs.get(iface).copied()
    }

    pub fn tunnels(&self) -> impl Iterator<Item = &SimTunnel> {
        self.tunnels.values()
    }

    /// Tunnel interfaces created over the node's life (across restarts).
    pub fn tunnels_created(&self) -> u64 {
        self.tunnels_created
    }
}

pub struct Sim {
    seed: u64,
    rng: ChaCha20Rng,
    now: Millis,
    nodes: Vec<SimNode>,
    by_id: BTreeMap<NodeId, NodeIdx>,
    links: Vec<Link>,
    /// Pending deliveries by (time, sequence): ties resolve in the order they were scheduled.
    events: BTreeMap<(Millis, u64), Event>,
    seq: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    sessions: BTreeMap<(NodeIdx, SessionId), ConnId>,
    flooders: Vec<flood::Flooder>,
    next_tunnel_serial: u64,
    trace: trace::Trace,
    /// Physical interfaces each new node gets (`eth0`, `eth1`, ...) unless its tweak says
    /// otherwise; `link` uses them in order.
    pub ifaces_per_node: usize,
    /// Consecutive steps without the clock moving (livelock detector).
    steps_at_same_time: u32,
    data: market::DataPlane,
    tampers: BTreeMap<NodeIdx, Tamper>,
    /// Count control traffic in the market's counters too, as a real firewall does (then
    /// statements never come to rest). Off by default.
    pub count_control_bytes: bool,
    /// What speed tests through each (node, neighbor) measure.
    paths: BTreeMap<(NodeIdx, NodeIdx), PathModel>,
    /// Paths to destinations other than the internet: (node, neighbor, destination).
    destination_paths: BTreeMap<(NodeIdx, NodeIdx, u8), PathModel>,
    /// Tests run through each (node, neighbor): it tests its destinations in turn.
    test_turns: BTreeMap<(NodeIdx, NodeIdx), usize>,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim {
            seed,
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: Millis::ZERO,
            nodes: Vec::new(),
            by_id: BTreeMap::new(),
            links: Vec::new(),
            events: BTreeMap::new(),
            seq: 0,
            conns: BTreeMap::new(),
            next_conn: 0,
            sessions: BTreeMap::new(),
            flooders: Vec::new(),
            next_tunnel_serial: 0,
            trace: trace::Trace::default(),
            ifaces_per_node: 8,
            steps_at_same_time: 0,
            data: market::DataPlane::default(),
            tampers: BTreeMap::new(),
            count_control_bytes: false,
            paths: BTreeMap::new(),
            destination_paths: BTreeMap::new(),
            test_turns: BTreeMap::new(),
        }
    }

    // ----- building the world -----

    /// Add a node named `name` (its identity derives from the seed and the name). `tweak` edits
    /// its configuration, which starts as the core's default with `ifaces_per_node` physical
    /// interfaces. The node starts at the next step.
    pub fn add_node(&mut self, name: &str, tweak: impl FnOnce(&mut CoreConfig)) -> NodeIdx {
        assert!(self.nodes.iter().all(|n| n.name != name), "two nodes named {name:?}");
        let idx = NodeIdx(self.nodes.len());
        let mut config = CoreConfig {
            interfaces: (0..self.ifaces_per_node).map(|i| IfName::new(format!("eth{i}")).expect("valid")).collect(),
            ..CoreConfig::default()
        };
        tweak(&mut config);
        let identity = Identity::from_seed(&self.derive_seed(b"identity", name.as_bytes()));
        let addrs =
            config.interfaces.iter().enumerate().map(|(j, ifname)| (ifname.clone(), net::link_local(idx, j))).collect();
        self.by_id.insert(identity.node_id(), idx);
        self.nodes.push(SimNode {
            name: name.to_owned(),
            identity,
            config,
            core: None,
            start_pending: true,
            generation: 0,
            addrs,
            tunnels: BTreeMap::new(),
            next_accept: 0,
            accepting: true,
            tunnel_faults: false,
            clock_offset_ms: 0,
            tunnels_created: 0,
            ruleset: Ruleset::default(),
            routing: Vec::new(),
            disk: BTreeMap::new(),
        });
        idx
    }

    /// Join the next free interfaces of `a` and `b` with a link (1 ms latency, no loss).
    pub fn link(&mut self, a: NodeIdx, b: NodeIdx) -> LinkId {
        self.link_with(a, b, LinkOptions::default())
    }

    pub fn link_with(&mut self, a: NodeIdx, b: NodeIdx, opts: LinkOptions) -> LinkId {
        let (ia, ib) = (self.free_iface(a), self.free_iface(b));
        self.link_ifaces(a, ia, b, ib, opts)
    }

    /// Join two named interfaces. Panics if either is unknown or already linked.
    pub fn link_ifaces(&mut self, a: NodeIdx, ia: IfName, b: NodeIdx, ib: IfName, opts: LinkOptions) -> LinkId {
        assert_ne!(a, b, "a link joins two different nodes");
        for (n, i) in [(a, &ia), (b, &ib)] {
            assert!(self.nodes[n.0].addrs.contains_key(i), "{} has no interface {i}", self.nodes[n.0].name);
            assert!(self.link_at(n, i).is_none(), "{}'s {i} is already linked", self.nodes[n.0].name);
        }
        let id = LinkId(self.links.len());
        self.links.push(Link::new([LinkEnd { node: a, iface: ia }, LinkEnd { node: b, iface: ib }], opts));
        self.trace.note(self.now, format_args!("link {id:?} {a}-{b} {opts:?}"));
        id
    }

    /// Cut every link between `a` and `b`: nothing crosses them until restored.
    pub fn cut(&mut self, a: NodeIdx, b: NodeIdx) {
        for l in self.links_between(a, b) {
            self.set_link_up(l, false);
        }
    }

    pub fn restore(&mut self, a: NodeIdx, b: NodeIdx) {
        for l in self.links_between(a, b) {
            self.set_link_up(l, true);
        }
    }

    pub fn set_link_up(&mut self, link: LinkId, up: bool) {
        self.trace.note(self.now, format_args!("link {link:?} up={up}"));
        self.links[link.0].up = up;
    }

    pub fn set_link_options(&mut self, link: LinkId, opts: LinkOptions) {
        self.trace.note(self.now, format_args!("link {link:?} {opts:?}"));
        self.links[link.0].opts = opts;
    }

    /// Stop a node abruptly (kill -9, a crash): its core, tunnels and connections vanish
    /// without a word to anyone; its neighbors find out by timeouts. Its kernel's traffic rules
    /// and counters stay (see [`Sim::power_cut`]), its disk too: a restart restores from it.
    pub fn stop(&mut self, n: NodeIdx) {
        self.trace.note(self.now, format_args!("stop {n}"));
        self.halt(n);
    }

    /// Stop a node cleanly, as the daemon does: a last count of its counters, then
    /// `Node::shutdown` and its actions (Close messages, tunnel removals, a last persist), then
    /// its traffic rules removed.
    pub fn shutdown(&mut self, n: NodeIdx) {
        self.trace.note(self.now, format_args!("shutdown {n}"));
        if self.nodes[n.0].core.is_some() {
            self.sample_counters(n);
            self.drain_actions();
            self.nodes[n.0].core.as_mut().expect("running").shutdown();
            self.drain_actions();
            self.nodes[n.0].ruleset = Ruleset::default();
        }
        self.halt(n);
    }

    /// Start (or restart) a stopped node: a fresh core with the same identity and configuration.
    pub fn start(&mut self, n: NodeIdx) {
        if self.nodes[n.0].core.is_none() {
            self.boot(n);
        }
    }

    /// Refuse (or accept again) control connections to `n`.
    pub fn set_accepting(&mut self, n: NodeIdx, accepting: bool) {
        self.nodes[n.0].accepting = accepting;
    }

    /// Make `n`'s tunnel operations fail (or succeed again).
    pub fn set_tunnel_faults(&mut self, n: NodeIdx, fail: bool) {
        self.nodes[n.0].tunnel_faults = fail;
    }

    /// Skew `n`'s wall clock by `offset_ms` (its monotonic clock is unaffected).
    pub fn set_clock_offset(&mut self, n: NodeIdx, offset_ms: i64) {
        self.nodes[n.0].clock_offset_ms = offset_ms;
    }

    /// Start an adversary announcing many fake identities on a link (see [`FloodSpec`]).
    pub fn add_flooder(&mut self, spec: FloodSpec) -> usize {
        let i = self.flooders.len();
        let ids = (0..spec.identities)
            .map(|k| {
                Identity::from_seed(
                    &self.derive_seed(b"flood", &[i.to_be_bytes(), (k as usize).to_be_bytes()].concat()),
                )
            })
            .collect();
        let start = spec.start.max(self.now);
        self.flooders.push(flood::Flooder::new(spec, ids));
        self.schedule(start, Event::FloodTick { flooder: i });
        i
    }

    // ----- running -----

    /// Run for `d` of simulated time.
    pub fn run_for(&mut self, d: Millis) {
        let end = self.now + d;
        while self.step(end) {}
    }

    /// Run until `pred` holds (checked after every step) or `max` has passed. Returns how long
    /// it took, or `None` if `pred` never held.
    pub fn run_until(&mut self, mut pred: impl FnMut(&Sim) -> bool, max: Millis) -> Option<Millis> {
        let start = self.now;
        let end = start + max;
        self.boot_pending();
        loop {
            if pred(self) {
                return Some(self.now.since(start));
            }
            if !self.step(end) {
                return pred(self).then(|| self.now.since(start));
            }
        }
    }

    // ----- getters -----

    pub fn now(&self) -> Millis {
        self.now
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeIdx, &SimNode)> {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeIdx(i), n))
    }

    pub fn sim_node(&self, n: NodeIdx) -> &SimNode {
        &self.nodes[n.0]
    }

    /// The running core of `n`. Panics if it is stopped.
    pub fn node(&self, n: NodeIdx) -> &Node {
        self.try_node(n).unwrap_or_else(|| panic!("{} is not running", self.nodes[n.0].name))
    }

    pub fn try_node(&self, n: NodeIdx) -> Option<&Node> {
        self.nodes[n.0].core.as_ref()
    }

    /// The neighbors `n`'s core last told routing to use, with their link costs.
    pub fn routing(&self, n: NodeIdx) -> &[tollway_core::RoutedNeighbor] {
        &self.nodes[n.0].routing
    }

    pub fn idx(&self, name: &str) -> NodeIdx {
        NodeIdx(self.nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name:?}")))
    }

    pub fn idx_of(&self, id: &NodeId) -> Option<NodeIdx> {
        self.by_id.get(id).copied()
    }

    pub fn node_id(&self, n: NodeIdx) -> NodeId {
        self.nodes[n.0].node_id()
    }

    pub fn name(&self, n: NodeIdx) -> &str {
        &self.nodes[n.0].name
    }

    /// How `a` sees `b`, if `a` is running and has `b` as a neighbor.
    pub fn neighbor_state(&self, a: NodeIdx, b: NodeIdx) -> Option<NeighborState> {
        self.try_node(a)?.neighbor(&self.node_id(b)).map(|n| n.state())
    }

    /// The simulated nodes `a` has as neighbors (fake identities are left out).
    pub fn neighbors_of(&self, a: NodeIdx) -> BTreeSet<NodeIdx> {
        self.try_node(a).into_iter().flat_map(|n| n.neighbors()).filter_map(|nb| self.idx_of(&nb.id)).collect()
    }

    /// Every neighbor `a` has, simulated or not.
    pub fn neighbor_count(&self, a: NodeIdx) -> usize {
        self.try_node(a).map_or(0, |n| n.neighbors().count())
    }

    pub fn links(&self) -> impl Iterator<Item = (LinkId, &Link)> {
        self.links.iter().enumerate().map(|(i, l)| (LinkId(i), l))
    }

    pub fn link_info(&self, l: LinkId) -> &Link {
        &self.links[l.0]
    }

    pub fn links_between(&self, a: NodeIdx, b: NodeIdx) -> Vec<LinkId> {
        self.links().filter(|(_, l)| l.joins(a, b)).map(|(id, _)| id).collect()
    }

    /// Both ends see each other as Connected.
    pub fn pair_connected(&self, a: NodeIdx, b: NodeIdx) -> bool {
        self.neighbor_state(a, b) == Some(NeighborState::Connected)
            && self.neighbor_state(b, a) == Some(NeighborState::Connected)
    }

    /// Every link that is up between two running nodes has both ends Connected.
    pub fn all_links_connected(&self) -> bool {
        self.links.iter().filter(|l| l.up).all(|l| {
            let (a, b) = (l.ends[0].node, l.ends[1].node);
            !(self.nodes[a.0].is_running() && self.nodes[b.0].is_running()) || self.pair_connected(a, b)
        })
    }

    /// `a`'s tunnel to `b`, if it has one.
    pub fn tunnel(&self, a: NodeIdx, b: NodeIdx) -> Option<&SimTunnel> {
        let id = self.node_id(b);
        self.nodes[a.0].tunnels.values().find(|t| t.spec.neighbor == id)
    }

    /// How many control connections are open at either end.
    pub fn open_connections(&self) -> usize {
        self.conns.values().filter(|c| c.ends.iter().any(|e| e.open)).count()
    }

    /// Discovery datagrams a flooder has sent so far.
    pub fn flooder_sent(&self, flooder: usize) -> u64 {
        self.flooders[flooder].sent
    }

    /// SHA-256 over every event and action so far, in order (hex).
    pub fn trace_hash(&self) -> String {
        self.trace.hash_hex()
    }

    pub fn trace_len(&self) -> u64 {
        self.trace.len()
    }

    /// Keep the trace's entries (not just its hash) from now on, for debugging.
    pub fn keep_trace(&mut self, keep: bool) {
        self.trace.keep(keep);
    }

    pub fn trace(&self) -> &[TraceEntry] {
        self.trace.entries()
    }

    // ----- internals -----

    fn derive_seed(&self, tag: &[u8], data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tollway-sim ");
        h.update(tag);
        h.update(self.seed.to_be_bytes());
        h.update(data);
        h.finalize().into()
    }

    fn free_iface(&self, n: NodeIdx) -> IfName {
        let node = &self.nodes[n.0];
        node.config.interfaces.iter().find(|i| self.link_at(n, i).is_none()).cloned().unwrap_or_else(|| {
            panic!("{} has no free interface (raise ifaces_per_node)", node.name);
        })
    }

    /// The link plugged into `n`'s interface `iface`, and its far end.
    fn link_at(&self, n: NodeIdx, iface: &IfName) -> Option<(LinkId, &LinkEnd)> {
        self.links().find_map(|(id, l)| l.far_end(n, iface).map(|far| (id, far)))
    }

    fn now_for(&self, n: NodeIdx) -> Now {
        let unix = (UNIX_AT_ZERO + self.now.0) as i64 + self.nodes[n.0].clock_offset_ms;
        Now::new(self.now, unix.max(0) as u64)
    }

    fn boot(&mut self, n: NodeIdx) {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut self.rng, &mut seed);
        let now = self.now_for(n);
        let node = &mut self.nodes[n.0];
        node.generation += 1;
        node.start_pending = false;
        let mut core = Node::new(node.config.clone(), node.identity.clone(), now, seed);
        if !node.disk.is_empty() {
            core.restore(node.disk.iter().map(|(id, r)| (*id, r.clone())).collect());
        }
        node.core = Some(core);
        self.trace.note(self.now, format_args!("start {n} gen {}", node.generation));
    }

    fn halt(&mut self, n: NodeIdx) {
        let node = &mut self.nodes[n.0];
        node.core = None;
        node.start_pending = false;
        node.tunnels.clear();
        node.routing.clear();
        self.drop_connections_of(n);
    }

    /// Start the nodes added since the last step, and run what they ask for at once.
    fn boot_pending(&mut self) {
        let pending: Vec<NodeIdx> = self.nodes().filter(|(_, n)| n.start_pending).map(|(i, _)| i).collect();
        for n in pending {
            self.boot(n);
        }
        self.drain_actions();
    }

    fn schedule(&mut self, at: Millis, ev: Event) {
        self.seq += 1;
        self.events.insert((at.max(self.now), self.seq), ev);
    }

    /// Move the clock forward to `t` (never back), the data flows with it.
    fn advance_to(&mut self, t: Millis) {
        let t = t.max(self.now);
        self.advance_flows(t);
        self.now = t;
    }

    /// Process the earliest pending instant, if it is no later than `end`. Returns false (with
    /// the clock moved to `end`) when nothing is left to do before `end`.
    fn step(&mut self, end: Millis) -> bool {
        self.boot_pending();
        let next_event = self.events.first_key_value().map(|((t, _), _)| *t);
        let next_timer = self.nodes.iter().filter_map(|n| n.core.as_ref()?.poll_timeout()).min();
        let next = match (next_event, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => {
                    self.advance_to(end);
                    return false;
                }
            },
        };
        if next > end {
            self.advance_to(end);
            return false;
        }
        let t = next.max(self.now);
        self.steps_at_same_time = if t == self.now { self.steps_at_same_time + 1 } else { 0 };
        assert!(self.steps_at_same_time < 100_000, "livelock: time stuck at {t:?}");
        self.advance_to(t);
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ev = entry.remove();
            self.deliver(ev);
            self.drain_actions();
        }
        for i in 0..self.nodes.len() {
            let n = NodeIdx(i);
            let now = self.now_for(n);
            if let Some(core) = self.nodes[i].core.as_mut() {
                if core.poll_timeout().is_some_and(|d| d <= t) {
                    core.handle_timeout(now);
                    self.drain_actions();
                }
            }
        }
        true
    }
}
