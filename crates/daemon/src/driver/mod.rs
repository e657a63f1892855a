//! The driver: one OS thread that owns the core `Node` and the kernel facilities. It drains
//! inputs from the I/O tasks and the API, runs the core, executes the core's actions, and
//! sleeps until the core's next timeout. Kernel calls are made here, synchronously, with no lock
//! held; nothing else touches the core.

mod market;
mod requests;
mod tunnels;

use crate::net::control::{self, Outbound};
use crate::net::discovery::Outgoing;
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tollway_api::{Reply, Request};
use tollway_core::market::Currency;
use tollway_core::wire::control::ControlMessage;
use tollway_core::{Action, IfName, Millis, Node, Now, SessionId, TunnelSpec};
use tollway_kernel::{Links, Tunnels};
use tollway_store::Store;
use tollway_traffic::{Admission, Firewall, Shaper, TrafficPlan};

/// Everything that can wake the driver.
pub enum Input {
    Discovery { iface: IfName, src: Ipv6Addr, bytes: Vec<u8> },
    ControlAccepted { session: SessionId, ifname: IfName, peer: SocketAddrV6, outbound: UnboundedSender<Outbound> },
    ControlOpened { session: SessionId },
    ControlMessage { session: SessionId, msg: ControlMessage },
    ControlClosed { session: SessionId, reason: String },
    Api { req: Request, reply: oneshot::Sender<Reply> },
    Shutdown,
}

/// Monotonic and wall clocks, as the core wants them.
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { origin: Instant::now() }
    }

    pub fn now(&self) -> Now {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Now::new(Millis(self.origin.elapsed().as_millis() as u64), unix_ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
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
    pub store: Store,
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
    sessions: HashMap<SessionId, UnboundedSender<Outbound>>,
    /// The spec last applied per tunnel: the desired state reconciled against the kernel.
    desired: HashMap<IfName, TunnelSpec>,
    /// The traffic plan last asked for by the core.
    plan: Option<TrafficPlan>,
    to_self: Sender<Input>,
    runtime: tokio::runtime::Handle,
    samples: u32,
    /// Set when the driver cannot go on safely (the store refuses writes): it stops.
    fatal: Option<String>,
    pub(crate) started: Instant,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Node,
        clock: Clock,
        backends: Backends,
        currency: Currency,
        control_port: u16,
        admission: Admission,
        discovery: HashMap<IfName, UnboundedSender<Outgoing>>,
        to_self: Sender<Input>,
        runtime: tokio::runtime::Handle,
    ) -> Driver {
        Driver {
            node,
            clock,
            k: backends,
            currency,
            control_port,
            admission,
            discovery,
            sessions: HashMap::new(),
            desired: HashMap::new(),
            plan: None,
            to_self,
            runtime,
            samples: 0,
            fatal: None,
            started: Instant::now(),
        }
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
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
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
        Ok(())
    }

    /// Run until `Shutdown` arrives, every input sender is gone, or a fatal error; then tear down.
    pub fn run(&mut self, inputs: Receiver<Input>) {
        while self.fatal.is_none() {
            let now = self.clock.now();
            if self.node.poll_timeout().is_some_and(|t| t <= now.mono) {
                self.node.handle_timeout(now);
            }
            self.execute_actions();
            let wait = match self.node.poll_timeout() {
                Some(t) => Duration::from_millis(t.since(self.clock.now().mono).0),
                None => Duration::from_secs(1),
            };
            match inputs.recv_timeout(wait.min(Duration::from_secs(1))) {
                Ok(Input::Shutdown) => break,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::info!("stopping: final count, closing sessions, removing tunnels and traffic rules");
        if self.fatal.is_none() {
            self.sample();
        }
        self.node.shutdown();
        self.execute_actions();
        self.remove_traffic_rules();
    }

    pub fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            Input::Discovery { iface, src, bytes } => self.node.handle_discovery(now, &iface, src, &bytes),
            Input::ControlAccepted { session, ifname, peer, outbound } => {
                self.sessions.insert(session, outbound);
                self.node.handle_control_accepted(now, session, &ifname, peer);
            }
            Input::ControlOpened { session } => self.node.handle_control_opened(now, session),
            Input::ControlMessage { session, msg } => self.node.handle_control_message(now, session, msg),
            Input::ControlClosed { session, reason } => {
                self.sessions.remove(&session);
                self.node.handle_control_closed(now, session, &reason);
            }
            Input::Api { req, reply } => {
                let r = self.request(req);
                let _ = reply.send(r);
            }
            Input::Shutdown => {}
        }
        self.execute_actions();
    }

    pub fn execute_actions(&mut self) {
        while let Some(action) = self.node.poll_action() {
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
                if let Err(e) = self.k.tunnels.remove(&ifname) {
                    tracing::warn!(%ifname, error = %e, "removing tunnel failed");
                }
            }
            Action::SampleTunnels => self.sample(),
            Action::OpenControl { session, ifname, peer, .. } => {
                let (tx, rx) = unbounded_channel();
                self.sessions.insert(session, tx);
                let _guard = self.runtime.enter();
                let local = self.node.node_id().tunnel_link_local();
                control::connect(session, ifname, local, peer, self.to_self.clone(), rx);
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
    }
}

#[cfg(test)]
mod tests;
