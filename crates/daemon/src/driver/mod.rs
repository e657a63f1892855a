//! The driver: one OS thread that owns the core `Node` and the kernel facilities. It drains
//! inputs from the I/O tasks and the API, runs the core, executes the core's actions, and
//! sleeps until the core's next timeout. Kernel calls are made here, synchronously, with no lock
//! held; nothing else touches the core.

mod market;
mod mesh;
mod probes;
mod requests;
mod tunnels;

pub use mesh::Mesh;
pub use probes::{ProbeTest, SpeedTester, SpeedTests, TokioSpeedTests, PROBE_RULE_PRIORITY, PROBE_TABLE_BASE};

use crate::net::control::Outbound;
use crate::net::discovery::{DiscoveryQueue, Outgoing};
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tollway_api::{Reply, Request};
use tollway_core::market::Currency;
use tollway_core::wire::control::ControlMessage;
use tollway_core::{Action, IfName, Millis, Node, Now, SessionId, TunnelSpec};
use tollway_kernel::{Links, Tunnels};
use tollway_store::{LedgerStore, StoreError};
use tollway_traffic::{Admission, Firewall, Shaper, TrafficPlan};

/// Everything that can wake the driver.
pub enum Input {
    Discovery {
        iface: IfName,
        src: Ipv6Addr,
        bytes: Vec<u8>,
    },
    ControlAccepted {
        session: SessionId,
        ifname: IfName,
        peer: SocketAddrV6,
        outbound: UnboundedSender<Outbound>,
    },
    ControlOpened {
        session: SessionId,
    },
    ControlMessage {
        session: SessionId,
        msg: ControlMessage,
    },
    ControlClosed {
        session: SessionId,
        reason: String,
    },
    Api {
        req: Request,
        reply: oneshot::Sender<Reply>,
    },
    /// A speed test started for `Action::RunSpeedTest` ended.
    SpeedTestDone {
        test: u64,
        outcome: tollway_core::node::TestOutcome,
    },
    Shutdown,
}

/// The least time between two publications of the status between samples.
pub const VIEW_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// Monotonic and wall clocks, as the core wants them: the system's, or a manual one that only
/// moves when a test advances it.
pub struct Clock {
    source: ClockSource,
}

enum ClockSource {
    System { origin: Instant },
    Manual(ManualClock),
}

impl Clock {
    pub fn new() -> Clock {
        Clock { source: ClockSource::System { origin: Instant::now() } }
    }

    /// A clock standing at `start` until the returned handle advances it (for tests).
    pub fn manual(start: Now) -> (Clock, ManualClock) {
        let handle = ManualClock(Arc::new(Mutex::new(start)));
        (Clock { source: ClockSource::Manual(handle.clone()) }, handle)
    }

    pub fn now(&self) -> Now {
        match &self.source {
            ClockSource::System { origin } => {
                let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                Now::new(Millis(origin.elapsed().as_millis() as u64), unix_ms)
            }
            ClockSource::Manual(m) => m.now(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The hand of a [`Clock::manual`]: both of its clocks move together.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<Now>>);

impl ManualClock {
    pub fn now(&self) -> Now {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn advance(&self, ms: u64) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now = Now::new(Millis(now.mono.0 + ms), now.unix_ms + ms);
    }
}

/// Every this many samples, the driver re-applies the desired kernel state (tunnels, addresses,
/// routes, firewall, shaping) so that objects someone else removed come back.
const RECONCILE_EVERY: u32 = 10;

/// The kernel facilities and the store the driver works with.
pub struct Backends {
    pub tunnels: Box<dyn Tunnels>,
    pub links: Box<dyn Links>,
    pub firewall: Box<dyn Firewall>,
    pub shaper: Box<dyn Shaper>,
    pub store: Box<dyn LedgerStore>,
}

/// Opens the control sessions the core asks for. The session reads what to send from
/// `outbound` and reports `ControlOpened`, `ControlMessage` and `ControlClosed` to the driver.
pub trait SessionOpener: Send {
    fn open(
        &mut self,
        session: SessionId,
        ifname: IfName,
        local: Ipv6Addr,
        peer: SocketAddrV6,
        outbound: UnboundedReceiver<Outbound>,
    );
}

/// The driver's side of the network I/O tasks.
pub struct Io {
    /// What to send on each physical interface, to its discovery task.
    pub discovery: HashMap<IfName, UnboundedSender<Outgoing>>,
    /// The bound on discovery datagrams waiting for the driver (it frees a place per datagram
    /// it takes, and reports the datagrams dropped because the queue was full).
    pub discovery_queue: Arc<DiscoveryQueue>,
    pub sessions: Box<dyn SessionOpener>,
}

/// Why the driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The store refused a write: nothing queued after it was executed. (Every store error
    /// names the database file, `path`.)
    #[error(
        "cannot write the ledger: {source}; nothing queued after the last stored change was sent \
         (free space or repair the file, then restart)"
    )]
    StoreWrite { path: std::path::PathBuf, source: StoreError },
}

pub struct Driver {
    node: Node,
    clock: Clock,
    k: Backends,
    currency: Currency,
    control_port: u16,
    /// What neighbors may send us and through us: part of every traffic plan.
    admission: Admission,
    discovery: HashMap<IfName, UnboundedSender<Outgoing>>,
    discovery_queue: Arc<DiscoveryQueue>,
    opener: Box<dyn SessionOpener>,
    sessions: HashMap<SessionId, UnboundedSender<Outbound>>,
    /// The spec last applied per tunnel: the desired state reconciled against the kernel.
    desired: HashMap<IfName, TunnelSpec>,
    /// The traffic plan last asked for by the core.
    plan: Option<TrafficPlan>,
    samples: u32,
    /// Set when the driver cannot go on safely (the store refuses writes): from then on no
    /// action is executed, and it stops.
    fatal: Option<Stop>,
    pub(crate) started: Instant,
    /// Routing and the uplink (none: only direct neighbors, as in the driver's unit tests).
    mesh: Option<Mesh>,
    /// The market settings of the config file, before any run-time change.
    config_market: tollway_core::market::MarketConfig,
    /// The operator's run-time changes (stored; they override `config_market`).
    overrides: tollway_store::OperatorSettings,
    /// Where the status is published after each sample for readers off this thread (HTTP).
    view: Option<tokio::sync::watch::Sender<Option<Arc<tollway_api::Status>>>>,
    /// The routing part of the status as of the last sample (a router dump is not free: it is
    /// taken once a sample; the rest of the status is rebuilt whenever it changed).
    routing_view: (tollway_api::RoutingStatus, Vec<tollway_api::RouteStatus>),
    /// The core changed since the status was last published, and when that was.
    view_dirty: bool,
    view_published: Instant,
    /// The daemon's own figures for `/metrics` (commit latency, control sessions).
    pub(crate) health: crate::health::Health,
    /// Pinned servers and the runner of tests through each neighbor (none: not tested).
    speed_tests: Option<SpeedTests>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Node,
        clock: Clock,
        backends: Backends,
        io: Io,
        currency: Currency,
        control_port: u16,
        admission: Admission,
    ) -> Driver {
        Driver {
            config_market: node.market_config().clone(),
            overrides: Default::default(),
            view: None,
            routing_view: Default::default(),
            view_dirty: false,
            view_published: Instant::now(),
            health: Default::default(),
            speed_tests: None,
            node,
            clock,
            k: backends,
            currency,
            control_port,
            discovery: io.discovery,
            discovery_queue: io.discovery_queue,
            opener: io.sessions,
            admission,
            sessions: HashMap::new(),
            desired: HashMap::new(),
            plan: None,
            samples: 0,
            fatal: None,
            started: Instant::now(),
            mesh: None,
        }
    }

    /// Publish the status to `view`: after every sample (with the routes), and whenever the
    /// core has changed and the driver has nothing else waiting (at most every
    /// [`VIEW_MIN_INTERVAL`]), so readers see a change within milliseconds.
    pub fn with_view(mut self, view: tokio::sync::watch::Sender<Option<Arc<tollway_api::Status>>>) -> Driver {
        self.view = Some(view);
        self
    }

    /// Record the daemon's health figures into `health` (shared with `/metrics`).
    pub fn with_health(mut self, health: crate::health::Health) -> Driver {
        self.health = health;
        self
    }

    /// Test through each neighbor against these pinned servers (before `prepare`).
    pub fn with_speed_tests(mut self, tests: SpeedTests) -> Driver {
        self.speed_tests = Some(tests);
        self
    }

    /// How a tested destination is shown (`internet`, or a mesh server's address).
    pub fn destination_label(&self, number: u8) -> String {
        self.speed_tests.as_ref().map_or_else(|| format!("destination {number}"), |s| s.destination_label(number))
    }

    /// Give the driver its routing (before `prepare`).
    pub fn with_mesh(mut self, mesh: Mesh) -> Driver {
        self.mesh = Some(mesh);
        self
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn now(&self) -> Now {
        self.clock.now()
    }

    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    pub fn tunnel_backend(&self) -> &'static str {
        self.k.tunnels.backend()
    }

    /// Why the driver stopped on its own, if it did.
    pub fn fatal(&self) -> Option<&Stop> {
        self.fatal.as_ref()
    }

    /// Discovery datagrams dropped since start because the driver's queue was full.
    pub fn discovery_dropped(&self) -> u64 {
        self.discovery_queue.dropped()
    }

    /// Restore the ledgers from the store; remove what a previous run of this node left behind
    /// (tunnel devices after kill -9 with kernel WireGuard), then put the node's mesh address on
    /// the loopback interface; install the firewall. Firewall counters are kept: they still hold
    /// bytes not yet billed.
    pub fn prepare(&mut self) -> Result<(), String> {
        self.restore()?;
        self.remove_leftover_tunnels()?;
        let lo = IfName::new("lo").expect("valid");
        self.k.links.set_up(&lo, None).map_err(|e| e.to_string())?;
        self.k.links.ensure_address(&lo, self.node.node_id().mesh_ip(), 128).map_err(|e| e.to_string())?;
        self.install_firewall();
        self.prepare_mesh()?;
        self.remove_probes();
        Ok(())
    }

    /// Run until `Shutdown` arrives, every input sender is gone, or a fatal error; then tear down.
    pub fn run(&mut self, inputs: Receiver<Input>) {
        while self.fatal.is_none() {
            self.poll();
            if self.fatal.is_some() {
                break;
            }
            let mut wait = match self.node.poll_timeout() {
                Some(t) => Duration::from_millis(t.since(self.clock.now().mono).0),
                None => Duration::from_secs(1),
            };
            let input = match inputs.try_recv() {
                Ok(input) => Ok(input),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    // Nothing waiting: publish what changed (or wake up when it may be).
                    if self.view_dirty {
                        let since = self.view_published.elapsed();
                        if since >= VIEW_MIN_INTERVAL {
                            self.publish(false);
                        } else {
                            wait = wait.min(VIEW_MIN_INTERVAL - since);
                        }
                    }
                    inputs.recv_timeout(wait.min(Duration::from_secs(1)))
                }
            };
            match input {
                Ok(Input::Shutdown) => break,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if self.fatal.is_none() {
            tracing::info!("stopping: final count, closing sessions, removing tunnels and traffic rules");
            self.sample();
            self.node.shutdown();
            self.execute_actions();
        }
        self.stop_mesh();
        self.remove_probes();
        if self.fatal.is_some() {
            self.abandon();
        } else {
            self.remove_traffic_rules();
        }
    }

    /// Run the core's timers if they are due, and execute what it asks.
    pub fn poll(&mut self) {
        let now = self.clock.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.node.handle_timeout(now);
            self.view_dirty = true;
        }
        self.execute_actions();
    }

    /// Publish the status for readers (with a fresh router dump if `with_routes`, else the last
    /// sample's).
    fn publish(&mut self, with_routes: bool) {
        let Some(view) = self.view.take() else { return };
        if with_routes {
            self.routing_view = crate::status::routing(self);
        }
        let mut s = crate::status::build(self);
        (s.routing, s.routes) = self.routing_view.clone();
        view.send_replace(Some(Arc::new(s)));
        self.view = Some(view);
        self.view_dirty = false;
        self.view_published = Instant::now();
    }

    /// After the store refused a write: execute nothing the core still has queued (payments,
    /// acknowledgements, statements: whatever came after the refused write), close the
    /// sessions without another word, and remove the tunnels so that no traffic flows that
    /// could not be billed. The firewall's counters are kept, as after kill -9: they hold the
    /// bytes since the last stored baseline, which the restarted daemon bills once.
    fn abandon(&mut self) {
        let mut discarded = 0;
        let mut messages = 0;
        while let Some(a) = self.node.poll_action() {
            discarded += 1;
            messages += usize::from(matches!(a, Action::SendControl { .. } | Action::SendDiscovery { .. }));
        }
        tracing::error!(
            path = %self.k.store.path().display(),
            discarded,
            messages,
            "stopping without executing the actions queued after the refused write; firewall counters kept for the restart"
        );
        // Dropping the senders ends each session once what was queued before is written.
        self.sessions.clear();
        self.desired.clear();
        if let Err(e) = self.remove_own_tunnels("(stopping: the ledger cannot be written)") {
            tracing::warn!(error = %e, "removing tunnels failed");
        }
        if let Err(e) = self.k.shaper.remove_all() {
            tracing::warn!(error = %e, "removing shaping failed");
        }
    }

    pub fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        self.view_dirty = true;
        match input {
            Input::Discovery { iface, src, bytes } => {
                self.discovery_queue.release();
                self.node.handle_discovery(now, &iface, src, &bytes)
            }
            Input::ControlAccepted { session, ifname, peer, outbound } => {
                self.health.session_opened();
                self.sessions.insert(session, outbound);
                self.node.handle_control_accepted(now, session, &ifname, peer);
            }
            Input::ControlOpened { session } => {
                self.health.session_opened();
                self.node.handle_control_opened(now, session)
            }
            Input::ControlMessage { session, msg } => self.node.handle_control_message(now, session, msg),
            Input::ControlClosed { session, reason } => {
                self.health.session_closed();
                self.sessions.remove(&session);
                self.node.handle_control_closed(now, session, &reason);
            }
            Input::Api { req, reply } => {
                let r = self.request(req);
                // What the operator changed is visible to readers before the reply.
                self.publish(false);
                let _ = reply.send(r);
            }
            Input::SpeedTestDone { test, mut outcome } => {
                if let tollway_core::node::TestOutcome::Measured { sample, .. } = &mut outcome {
                    sample.at = now.mono;
                }
                self.node.handle_speed_test(now, test, outcome);
            }
            Input::Shutdown => {}
        }
        self.execute_actions();
    }

    /// Execute the core's actions in order. Once one fails fatally (the store refused a write)
    /// nothing after it is executed: a payment or an acknowledgement queued behind a refused
    /// write never reaches the wire.
    pub fn execute_actions(&mut self) {
        while self.fatal.is_none() {
            let Some(action) = self.node.poll_action() else { break };
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::SendDiscovery { iface, dst, payload } => {
                if let Some(tx) = self.discovery.get(&iface) {
                    let _ = tx.send(Outgoing { dst, payload });
                }
            }
            Action::EnsureTunnel(spec) => self.ensure_tunnel(spec),
            Action::RemoveTunnel { ifname, .. } => {
                self.desired.remove(&ifname);
                self.probe_removed(&ifname);
                if let Err(e) = self.k.tunnels.remove(&ifname) {
                    tracing::warn!(%ifname, error = %e, "removing tunnel failed");
                }
            }
            Action::SampleTunnels => self.sample(),
            Action::OpenControl { session, ifname, peer, .. } => {
                let (tx, rx) = unbounded_channel();
                self.sessions.insert(session, tx);
                let local = self.node.node_id().tunnel_link_local();
                self.opener.open(session, ifname, local, peer, rx);
            }
            Action::SendControl { session, msg } => {
                if let Some(tx) = self.sessions.get(&session) {
                    let _ = tx.send(Outbound::Message(msg));
                }
            }
            Action::CloseControl { session } => {
                if let Some(tx) = self.sessions.remove(&session) {
                    let _ = tx.send(Outbound::Close);
                }
            }
            Action::ApplyTraffic(policy) => self.apply_traffic(policy),
            Action::Persist(batch) => self.persist(batch),
            Action::SetRoutingNeighbors(neighbors) => self.set_routing_neighbors(neighbors),
            Action::RunSpeedTest { test, neighbor, ifname, slot, max_bytes } => {
                self.run_speed_test(test, neighbor, ifname, slot, max_bytes)
            }
        }
    }

    /// Read the tunnels' state and byte counters and hand them to the core; every
    /// `RECONCILE_EVERY` samples, re-apply the desired kernel state first.
    fn sample(&mut self) {
        self.samples = self.samples.wrapping_add(1);
        if self.samples.is_multiple_of(RECONCILE_EVERY) {
            self.reconcile_tunnels();
            self.reconcile_traffic();
        }
        self.sample_tunnels();
        self.sample_counters();
        self.tick_mesh();
        self.publish(true);
    }
}

#[cfg(test)]
mod tests;
