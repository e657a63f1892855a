//! Speed tests forced through one neighbor (issue 9). Each neighbor-table slot `k` has a probe
//! address, the node's probe prefix + k (on `lo`). Out: a policy rule sends packets from it to
//! table `PROBE_TABLE_BASE + k`, whose default route leaves through that neighbor's tunnel
//! (and whose unreachable default stops them falling through to the mesh's routes if the
//! tunnel is gone). Back: babeld announces the address only through that tunnel (its altname
//! `twprobe<k>` matches the `out` filters of the babeld configuration), so replies from anywhere
//! in the mesh come back through the same neighbor. A test from the probe address measures the
//! path through that neighbor and nothing else, whatever the routing table prefers.
//!
//! Static and controller routing announce nothing, so no reply can be brought back through
//! one chosen neighbor: there the test socket carries the mark `PROBE_MARK_BASE + k` instead,
//! a rule sends marked packets to the same table (out through that neighbor), the source is
//! the node's mesh address and the replies come back by the operator's routes. Only the
//! upload is forced, and only the upload judges (`Goals::upload_only`).

use super::{Driver, Input};
use crate::destinations::{Destination, Pin};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use tollway_core::node::TestOutcome;
use tollway_core::quality::Sample;
use tollway_core::{IfName, Millis, NodeId, Penalty, TunnelSpec};
use tollway_kernel::{Family, RouteTarget, Rule, TableRoute, PROTO_TOLLWAY};

/// Probe tables are `PROBE_TABLE_BASE + slot`.
pub const PROBE_TABLE_BASE: u32 = 7600;
/// The probe rules' priority: before the mesh rules (7470–7473).
pub const PROBE_RULE_PRIORITY: u32 = 7460;
/// Static and controller routing: the test socket of slot `k` carries the mark
/// `PROBE_MARK_BASE + k` ("tl" in the high half).
pub const PROBE_MARK_BASE: u32 = 0x746c_0000;
/// How long each direction of a test may run (the byte cap usually ends it first).
const TEST_SECS: u16 = 2;

/// One test to run from a probe address.
#[derive(Debug, Clone)]
pub struct ProbeTest {
    pub test: u64,
    pub server: SocketAddr,
    pub server_key: NodeId,
    pub source: Ipv6Addr,
    pub neighbor: NodeId,
    pub max_bytes: u64,
    /// The destination the server measures (`crate::destinations`).
    pub destination: u8,
    /// The socket's mark (upload-only tests, static and controller routing).
    pub mark: Option<u32>,
}

/// Runs speed tests off the driver's thread and reports `Input::SpeedTestDone`.
pub trait SpeedTester: Send {
    fn start(&mut self, t: ProbeTest);
}

/// The speed-test servers this node pins and what runs the tests.
pub struct SpeedTests {
    pub pins: Vec<Pin>,
    /// The tested destinations the pins make.
    pub destinations: Vec<Destination>,
    pub runner: Box<dyn SpeedTester>,
    /// The penalty each tunnel's altnames select now.
    penalties: std::collections::HashMap<IfName, Penalty>,
    /// Tunnels whose probe (altname, address, table, rule) was last set up completely: a test
    /// from a probe half set up could take another path, so none runs through the others.
    ready: std::collections::HashSet<IfName>,
    /// Tests started through each neighbor: it tests the servers it reaches in turn.
    turns: std::collections::HashMap<NodeId, usize>,
}

impl SpeedTests {
    /// `pins` as validated by the config (at most `MAX_MESH_DESTINATIONS` inside the mesh;
    /// past that, none is tested).
    pub fn new(pins: Vec<(SocketAddr, NodeId)>, runner: Box<dyn SpeedTester>) -> SpeedTests {
        let (pins, destinations) = crate::destinations::destinations(&pins).unwrap_or_else(|e| {
            tracing::error!(error = %e, "speed-test servers not used");
            Default::default()
        });
        SpeedTests {
            pins,
            destinations,
            runner,
            penalties: Default::default(),
            ready: Default::default(),
            turns: Default::default(),
        }
    }

    /// How a destination is shown (`internet` or the mesh server's address).
    pub fn destination_label(&self, number: u8) -> String {
        self.destinations
            .iter()
            .find(|d| d.number == number)
            .map_or_else(|| format!("destination {number}"), |d| d.label.clone())
    }
}

/// The real tester: `tollway_speedtest::run_test` on the I/O runtime.
pub struct TokioSpeedTests {
    pub runtime: tokio::runtime::Handle,
    pub to_driver: std::sync::mpsc::Sender<Input>,
    pub identity: tollway_core::Identity,
}

impl SpeedTester for TokioSpeedTests {
    fn start(&mut self, t: ProbeTest) {
        let (to_driver, identity) = (self.to_driver.clone(), self.identity.clone());
        self.runtime.spawn(async move {
            // Upload only (static and controller routing): a download would come back by the
            // operator's routes whichever neighbor is tested; not worth its bytes.
            let upload_only = t.mark.is_some();
            let spec = tollway_speedtest::TestSpec {
                server: t.server,
                server_key: t.server_key,
                bind: Some(IpAddr::V6(t.source)),
                mark: t.mark,
                identity,
                path_label: t.neighbor.0,
                up_secs: TEST_SECS,
                down_secs: if upload_only { 0 } else { TEST_SECS },
                max_bytes: t.max_bytes,
            };
            let outcome =
                match tollway_speedtest::run_test(spec).await {
                    Ok(receipt) => {
                        let m = receipt.measurement();
                        TestOutcome::Measured {
                            sample: Sample {
                                at: Millis(0), // set by the driver
                                down_kbit: (m.down_bps() / 1000.0) as u64,
                                up_kbit: (m.up_bps() / 1000.0) as u64,
                                rtt_us: m.rtt_idle_us,
                                loss_ppm: if upload_only { m.up_loss_ppm } else { m.up_loss_ppm.max(m.down_loss_ppm) },
                            },
                            bytes: m.up_bytes.saturating_add(m.down_bytes),
                            destination: t.destination,
                        }
                    }
                    // No answer: with operator routes, most likely no route back to the source.
                    Err(
                        e @ (tollway_speedtest::TestError::Timeout { .. } | tollway_speedtest::TestError::Io { .. }),
                    ) if upload_only => TestOutcome::Failed {
                        error: format!(
                            "{e} (static/controller routing: the operator's routes must bring replies to {} back)",
                            t.source
                        ),
                        bytes: 0,
                    },
                    Err(e) => TestOutcome::Failed { error: e.to_string(), bytes: 0 },
                };
            let _ = to_driver.send(Input::SpeedTestDone { test: t.test, outcome });
        });
    }
}

impl Driver {
    /// Whether tests are forced through neighbors (the core tests, and babel routes).
    pub(super) fn probes_enabled(&self) -> bool {
        self.node.config().quality.testing && self.speed_tests.is_some()
    }

    /// Static and controller routing: the source of upload-only tests (the node's mesh
    /// address); `None` with babel, whose probes have their own addresses.
    fn upload_only_source(&self) -> Option<Ipv6Addr> {
        use crate::mesh_config::RoutingKind;
        let kind = self.mesh.as_ref().map(|m| m.settings.kind)?;
        matches!(kind, RoutingKind::Static | RoutingKind::Controller).then(|| self.node.node_id().mesh_ip())
    }

    /// Give a tunnel its probe: altname (before babeld is given the tunnel, so its filters
    /// match), probe address on `lo`, probe table and rule.
    pub(super) fn ensure_probe(&mut self, spec: &TunnelSpec) -> Result<(), String> {
        if !self.probes_enabled() {
            return Ok(());
        }
        if let Some(st) = self.speed_tests.as_mut() {
            st.ready.remove(&spec.ifname);
        }
        self.set_up_probe(spec)?;
        if let Some(st) = self.speed_tests.as_mut() {
            st.ready.insert(spec.ifname.clone());
        }
        Ok(())
    }

    /// Forget a removed tunnel's probe.
    pub(super) fn probe_removed(&mut self, ifname: &IfName) {
        if let Some(st) = self.speed_tests.as_mut() {
            st.ready.remove(ifname);
            st.penalties.remove(ifname);
        }
    }

    fn set_up_probe(&mut self, spec: &TunnelSpec) -> Result<(), String> {
        let Some(slot) = self.node.neighbor_by_ifname(&spec.ifname).map(|n| n.slot) else { return Ok(()) };
        let (Some(source), Ok(slot8)) = (self.node.node_id().probe_ip(slot), u8::try_from(slot)) else {
            return Ok(()); // slots past 255 are not tested
        };
        let err = |e: tollway_kernel::LinkError| e.to_string();
        if let Some(mesh_source) = self.upload_only_source() {
            // Marked sockets out through this tunnel; the source stays the mesh address.
            let table = PROBE_TABLE_BASE + slot as u32;
            let rule = Rule { fwmark: Some(PROBE_MARK_BASE + slot as u32), from: None, ..probe_rule(source, table) };
            return self.set_up_probe_table(spec, table, mesh_source, rule);
        }
        self.k.links.ensure_altname(&spec.ifname, &tollway_routing::babel::probe_altname(slot8)).map_err(err)?;
        // A re-made tunnel gets its penalty names back.
        let penalty = self.speed_tests.as_ref().and_then(|s| s.penalties.get(&spec.ifname)).cloned();
        let numbers: Vec<u8> =
            self.speed_tests.as_ref().map(|s| s.destinations.iter().map(|d| d.number).collect()).unwrap_or_default();
        for destination in numbers {
            let level = penalty.as_ref().map_or(0, |p| level_of(p.of(destination)));
            if level > 0 {
                let name = tollway_routing::babel::penalty_altname(slot8, destination, level);
                self.k.links.ensure_altname(&spec.ifname, &name).map_err(err)?;
            }
        }
        self.k.links.ensure_address(&IfName::new("lo").expect("valid"), source, 128).map_err(err)?;
        let table = PROBE_TABLE_BASE + slot as u32;
        self.set_up_probe_table(spec, table, source, probe_rule(source, table))
    }

    /// The probe table (default out through the tunnel, unreachable behind it) and its rule.
    fn set_up_probe_table(
        &mut self,
        spec: &TunnelSpec,
        table: u32,
        source: Ipv6Addr,
        rule: Rule,
    ) -> Result<(), String> {
        let default = |target, metric| TableRoute {
            dst: IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("valid"),
            table,
            protocol: PROTO_TOLLWAY,
            target,
            pref_src: Some(IpAddr::V6(source)),
            metric,
        };
        let through = RouteTarget::Dev { dev: spec.ifname.clone(), gateway: Some(IpAddr::V6(spec.peer_link_local)) };
        let Some(mesh) = self.mesh.as_mut() else { return Ok(()) };
        let rerr = |e: tollway_kernel::RouteError| e.to_string();
        mesh.routes.replace(&default(through, 1)).map_err(rerr)?;
        mesh.routes.replace(&TableRoute { pref_src: None, ..default(RouteTarget::Unreachable, 4096) }).map_err(rerr)?;
        mesh.routes.add_rule(&rule).map_err(rerr)?;
        Ok(())
    }

    /// Give each routed tunnel the altnames of its penalty for each destination (before the
    /// router re-adds it to babeld, which then applies the matching filters); drop the
    /// altnames of other levels.
    pub(super) fn apply_penalties(&mut self, neighbors: &[tollway_core::RoutedNeighbor]) {
        if !self.probes_enabled() {
            return;
        }
        // Static and controller routing rank by the plan's penalties (`TableRouter`): no names.
        let names = self.upload_only_source().is_none();
        let Some(st) = self.speed_tests.as_mut() else { return };
        st.penalties.retain(|ifname, _| neighbors.iter().any(|n| &n.ifname == ifname));
        st.turns.retain(|id, _| neighbors.iter().any(|n| n.neighbor == *id));
        let numbers: Vec<u8> = st.destinations.iter().map(|d| d.number).collect();
        for n in neighbors {
            let Ok(slot) = u8::try_from(n.slot) else { continue };
            if st.penalties.get(&n.ifname) == Some(&n.penalty) {
                continue;
            }
            let mut ok = true;
            for &destination in numbers.iter().filter(|_| names) {
                let want = level_of(n.penalty.of(destination));
                for level in 1..tollway_core::quality::PENALTY_LEVELS.len() {
                    let name = tollway_routing::babel::penalty_altname(slot, destination, level);
                    let r = if level == want {
                        self.k.links.ensure_altname(&n.ifname, &name)
                    } else {
                        self.k.links.remove_altname(&n.ifname, &name)
                    };
                    if let Err(e) = r {
                        tracing::warn!(ifname = %n.ifname, altname = name, error = %e, "setting the tunnel's penalty name failed");
                        ok = false;
                    }
                }
            }
            if ok {
                tracing::info!(neighbor = %n.neighbor.short(), ifname = %n.ifname, penalty = %n.penalty, "quality penalty for tested destinations");
                st.penalties.insert(n.ifname.clone(), n.penalty.clone());
            }
        }
    }

    /// Remove every probe rule, probe table route and probe address (at start, what a previous
    /// run left; at stop). The tunnels' own routes go with them; the unreachable defaults do
    /// not. The mesh address stays on `lo`: it is the node's own.
    pub(super) fn remove_probes(&mut self) {
        let slots = self.node.config().max_neighbors.min(256) as u32;
        let lo = IfName::new("lo").expect("valid");
        for slot in 0..slots as usize {
            let Some(probe) = self.node.node_id().probe_ip(slot) else { break };
            if let Err(e) = self.k.links.remove_address(&lo, probe, 128) {
                tracing::warn!(address = %probe, error = %e, "removing a probe address failed");
                break;
            }
        }
        let Some(mesh) = self.mesh.as_mut() else { return };
        match mesh.routes.list_rules() {
            Ok(rules) => {
                for r in rules
                    .into_iter()
                    .filter(|r| r.priority == PROBE_RULE_PRIORITY && (r.from.is_some() || r.fwmark.is_some()))
                {
                    if let Err(e) = mesh.routes.delete_rule(&r) {
                        tracing::warn!(rule = %r, error = %e, "removing a probe rule failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing policy rules failed"),
        }
        for table in PROBE_TABLE_BASE..PROBE_TABLE_BASE + slots {
            let routes = match mesh.routes.list(table, Some(PROTO_TOLLWAY)) {
                Ok(r) => r,
                Err(e) => return tracing::warn!(table, error = %e, "listing a probe table failed"),
            };
            for r in routes {
                if let Err(e) = mesh.routes.delete(&r) {
                    tracing::warn!(route = %r, error = %e, "removing a probe route failed");
                }
            }
        }
    }

    /// The core's `RunSpeedTest`: pick a pinned server the neighbor offers a route to and run
    /// the test from its slot's probe address; or report that there is none.
    pub(super) fn run_speed_test(&mut self, test: u64, neighbor: NodeId, ifname: IfName, slot: usize, max_bytes: u64) {
        let now = self.clock.now();
        let no_route = |why: String| TestOutcome::NoRoute(why);
        let upload_only = self.upload_only_source();
        let Some(probe) = self.node.node_id().probe_ip(slot).filter(|_| self.probes_enabled()) else {
            let why = "speed tests through neighbors need mesh routing and a probe slot (0-255)".to_owned();
            return self.node.handle_speed_test(now, test, no_route(why));
        };
        let (routes, _) = self.routing_view();
        let pins = self.speed_tests.as_ref().map(|s| s.pins.clone()).unwrap_or_default();
        let reachable: Vec<Pin> = pins
            .into_iter()
            .filter(|p| {
                p.server.is_ipv6()
                    && routes.iter().any(|r| {
                        // (babeld's metric 0xffff is a retracted route; a static metric is the operator's)
                        let live = r.source != tollway_routing::RouterKind::Babel || r.metric < 0xffff;
                        r.ifname.as_ref() == Some(&ifname) && live && r.prefix.contains(&p.server.ip())
                    })
            })
            .collect();
        if !self.speed_tests.as_ref().is_some_and(|s| s.ready.contains(&ifname)) {
            let why = format!("the speed-test probe through {ifname} is not set up (see the log)");
            return self.node.handle_speed_test(now, test, TestOutcome::Failed { error: why, bytes: 0 });
        }
        if reachable.is_empty() {
            let why = format!("no route to a pinned IPv6 speed-test server through {ifname}");
            return self.node.handle_speed_test(now, test, no_route(why));
        }
        let Some(st) = self.speed_tests.as_mut() else { return };
        let turn = st.turns.entry(neighbor).or_default();
        let pin = reachable[*turn % reachable.len()];
        *turn = turn.wrapping_add(1);
        let (server, server_key, destination) = (pin.server, pin.key, pin.destination);
        let (source, mark) = match upload_only {
            Some(mesh_source) => (mesh_source, Some(PROBE_MARK_BASE + slot as u32)),
            None => (probe, None),
        };
        tracing::debug!(neighbor = %neighbor.short(), %server, destination, %source, ?mark, "speed test through neighbor");
        st.runner.start(ProbeTest { test, server, server_key, source, neighbor, max_bytes, destination, mark });
    }
}

/// The index in `PENALTY_LEVELS` of a penalty (0 for one that is not a level).
fn level_of(penalty: u16) -> usize {
    tollway_core::quality::PENALTY_LEVELS.iter().position(|l| *l == penalty).unwrap_or(0)
}

fn probe_rule(source: Ipv6Addr, table: u32) -> Rule {
    Rule {
        family: Family::V6,
        priority: PROBE_RULE_PRIORITY,
        table,
        suppress_prefixlength: None,
        from: Some(IpNet::new(IpAddr::V6(source), 128).expect("valid")),
        fwmark: None,
    }
}
