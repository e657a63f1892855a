//! The driver: one OS thread that owns the core `Node` and the kernel facilities. It drains
//! inputs from the I/O tasks and the API, runs the core, executes the core's actions, and
//! sleeps until the core's next timeout. Kernel calls are made here, synchronously, with no lock
//! held; nothing else touches the core.

use crate::net::control::{self, Outbound};
use crate::net::discovery::Outgoing;
use crate::status;
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tollway_api::{Reply, Request};
use tollway_core::wire::control::ControlMessage;
use tollway_core::{Action, IfName, Millis, Node, Now, SessionId, TunnelSpec};
use tollway_kernel::{Links, Route6, TunnelError, Tunnels, WgConfig};

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

/// Every this many samples, the driver re-applies the desired state of each tunnel (device,
/// addresses, route) so that objects someone else removed come back.
const RECONCILE_EVERY: u32 = 10;

pub struct Driver {
    node: Node,
    clock: Clock,
    tunnels: Box<dyn Tunnels>,
    links: Box<dyn Links>,
    discovery: HashMap<IfName, UnboundedSender<Outgoing>>,
    sessions: HashMap<SessionId, UnboundedSender<Outbound>>,
    /// The spec last applied per tunnel: the desired state reconciled against the kernel.
    desired: HashMap<IfName, TunnelSpec>,
    to_self: Sender<Input>,
    runtime: tokio::runtime::Handle,
    samples: u32,
    pub(crate) started: Instant,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Node,
        clock: Clock,
        tunnels: Box<dyn Tunnels>,
        links: Box<dyn Links>,
        discovery: HashMap<IfName, UnboundedSender<Outgoing>>,
        to_self: Sender<Input>,
        runtime: tokio::runtime::Handle,
    ) -> Driver {
        Driver {
            node,
            clock,
            tunnels,
            links,
            discovery,
            sessions: HashMap::new(),
            desired: HashMap::new(),
            to_self,
            runtime,
            samples: 0,
            started: Instant::now(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn now(&self) -> Now {
        self.clock.now()
    }

    pub fn tunnel_backend(&self) -> &'static str {
        self.tunnels.backend()
    }

    /// Remove what a previous run of this node left behind (tunnel devices after kill -9 with
    /// kernel WireGuard), then put the node's mesh address on the loopback interface.
    pub fn prepare(&mut self) -> Result<(), String> {
        let prefix = IfName::tunnel_prefix(&self.node.node_id());
        let leftovers = self.tunnels.list(&prefix).map_err(|e| e.to_string())?;
        for ifname in leftovers {
            tracing::info!(%ifname, "removing tunnel left by a previous run");
            if let Err(e) = self.tunnels.remove(&ifname) {
                tracing::warn!(%ifname, error = %e, "could not remove leftover tunnel");
            }
        }
        for ifname in self.links.list(&prefix).map_err(|e| e.to_string())? {
            tracing::info!(%ifname, "removing interface left by a previous run");
            self.links.delete(&ifname).map_err(|e| e.to_string())?;
        }
        let lo = IfName::new("lo").expect("valid");
        self.links.set_up(&lo, None).map_err(|e| e.to_string())?;
        self.links.ensure_address(&lo, self.node.node_id().mesh_ip(), 128).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Run until `Shutdown` arrives or every input sender is gone, then tear down.
    pub fn run(&mut self, inputs: Receiver<Input>) {
        loop {
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
        tracing::info!("stopping: closing sessions and removing tunnels");
        self.node.shutdown();
        self.execute_actions();
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
                let _ = reply.send(self.api(req));
            }
            Input::Shutdown => {}
        }
        self.execute_actions();
    }

    fn api(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => {
                let s = status::build(self);
                Reply { ok: true, result: Some(serde_json::to_value(s).expect("status serializes")), error: None }
            }
        }
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
            Action::EnsureTunnel(spec) => {
                let ifname = spec.ifname.clone();
                match self.apply_tunnel(&spec) {
                    Ok(()) => {
                        self.desired.insert(ifname, spec);
                    }
                    Err(e) => {
                        self.desired.remove(&ifname);
                        self.node.handle_tunnel_error(self.clock.now(), &ifname, &e);
                    }
                }
            }
            Action::RemoveTunnel { ifname, .. } => {
                self.desired.remove(&ifname);
                if let Err(e) = self.tunnels.remove(&ifname) {
                    tracing::warn!(%ifname, error = %e, "removing tunnel failed");
                }
            }
            Action::SampleTunnels => self.sample(),
            Action::OpenControl { session, ifname, peer, .. } => {
                let (tx, rx) = unbounded_channel();
                self.sessions.insert(session, tx);
                let _guard = self.runtime.enter();
                control::connect(session, ifname, peer, self.to_self.clone(), rx);
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
            Action::ApplyTraffic(_) | Action::Persist(_) => {}
        }
    }

    fn apply_tunnel(&mut self, spec: &TunnelSpec) -> Result<(), String> {
        let endpoint = match &spec.endpoint {
            Some(e) => {
                let scope = self
                    .links
                    .index_of(&e.via)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("physical interface {} is gone", e.via))?;
                Some(SocketAddrV6::new(e.addr, e.port, 0, scope))
            }
            None => None,
        };
        let cfg = WgConfig {
            ifname: spec.ifname.clone(),
            private_key: self.node.identity().wg_private(),
            listen_port: spec.listen_port,
            peer_key: spec.peer_key,
            endpoint,
            keepalive_secs: spec.keepalive_secs,
        };
        self.tunnels.ensure(&cfg).map_err(|e| e.to_string())?;
        let err = |e: tollway_kernel::LinkError| e.to_string();
        self.links.set_up(&spec.ifname, Some(spec.mtu)).map_err(err)?;
        self.links.ensure_address(&spec.ifname, spec.local_link_local, 64).map_err(err)?;
        self.links.ensure_route(&self.route_for(spec)).map_err(err)?;
        Ok(())
    }

    fn route_for(&self, spec: &TunnelSpec) -> Route6 {
        Route6 {
            dst: spec.peer_mesh_ip,
            prefix_len: 128,
            dev: spec.ifname.clone(),
            src: Some(self.node.node_id().mesh_ip()),
        }
    }

    fn sample(&mut self) {
        self.samples = self.samples.wrapping_add(1);
        if self.samples % RECONCILE_EVERY == 0 {
            self.reconcile();
        }
        let ifnames: Vec<(IfName, bool)> =
            self.node.neighbors().map(|n| (n.ifname.clone(), n.last_tunnel_error.is_none())).collect();
        for (ifname, healthy) in ifnames {
            if !self.desired.contains_key(&ifname) {
                continue;
            }
            match self.tunnels.stats(&ifname) {
                Ok(stats) => self.node.handle_tunnel_stats(self.clock.now(), &ifname, stats),
                Err(e @ TunnelError::Missing(_)) if healthy => {
                    self.desired.remove(&ifname);
                    self.node.handle_tunnel_error(self.clock.now(), &ifname, &e.to_string());
                }
                Err(e) => tracing::debug!(%ifname, error = %e, "reading tunnel state failed"),
            }
        }
    }

    /// Re-apply the desired state of every tunnel; cheap when nothing changed.
    fn reconcile(&mut self) {
        let specs: Vec<TunnelSpec> = self.desired.values().cloned().collect();
        for spec in specs {
            if let Err(e) = self.apply_tunnel(&spec) {
                tracing::warn!(ifname = %spec.ifname, error = %e, "reconciling tunnel failed");
                self.desired.remove(&spec.ifname);
                self.node.handle_tunnel_error(self.clock.now(), &spec.ifname, &e);
            }
        }
    }
}
