//! Routing and the uplink, as the driver runs them: at start the node's mesh IPv4 address, the
//! forwarding switches and the policy rules; the core's routing neighbors and the node's
//! announcements (LAN prefixes, and a default route per family while the uplink has one)
//! handed to the router whenever they change; the uplink checked and the router supervised at
//! every sample; everything withdrawn at stop.

use super::Driver;
use crate::mesh_config::{MeshSettings, RoutingKind};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tollway_core::{IfName, RoutedNeighbor};
use tollway_kernel::{Family, RouteTarget, Routes, TableRoute, PROTO_TOLLWAY};
use tollway_routing::{RouteEntry, Router, RoutingPlan};
use tollway_traffic::nat::{Nat, UplinkNat};

/// The kernel's main table.
const MAIN_TABLE: u32 = 254;
/// The metric of the driver's own route to a neighbor across its tunnel when babel routes:
/// above babeld's (it installs with metric 0, which the kernel keeps as 1024 on IPv6).
const NEIGHBOR_FALLBACK_METRIC: u32 = 65_000;

/// The node's routing: its settings, the router (none with `kind = "none"`), and the kernel's
/// routes and rules.
pub struct Mesh {
    pub settings: MeshSettings,
    pub router: Option<Box<dyn Router>>,
    pub routes: Box<dyn Routes>,
    /// Masquerading at the uplink.
    pub nat: Box<dyn Nat>,
    neighbors: Vec<RoutedNeighbor>,
    /// Whether the uplink has a default route, per family (IPv4, IPv6).
    uplink_default: (bool, bool),
    /// The plan last applied successfully.
    applied: Option<RoutingPlan>,
    /// The last router error logged (the same one is not logged again every second).
    last_error: Option<String>,
    ticks: u32,
    /// Our prefixes another router announces too (found in the router's routes), with who.
    collisions: Vec<String>,
    /// A LAN IPv4 prefix withdrawn because another router announces it.
    lan_v4_withdrawn: bool,
}

impl Mesh {
    pub fn new(
        settings: MeshSettings,
        router: Option<Box<dyn Router>>,
        routes: Box<dyn Routes>,
        nat: Box<dyn Nat>,
    ) -> Mesh {
        Mesh {
            settings,
            router,
            routes,
            nat,
            neighbors: Vec::new(),
            uplink_default: (false, false),
            applied: None,
            last_error: None,
            ticks: 0,
            collisions: Vec::new(),
            lan_v4_withdrawn: false,
        }
    }

    /// What the node announces beyond its own addresses: its LAN prefixes, and a default route
    /// of each family its uplink has one of.
    fn exports(&self) -> Vec<IpNet> {
        let mut e = Vec::new();
        if let Some(lan) = &self.settings.lan {
            e.push(IpNet::V6(lan.ipv6));
            if !self.lan_v4_withdrawn {
                e.extend(lan.ipv4.map(IpNet::V4));
            }
        }
        if self.uplink_default.0 {
            e.push(IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("valid"));
        }
        if self.uplink_default.1 {
            e.push(IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("valid"));
        }
        e
    }

    /// Whether the main table has a default route of each family out of the uplink.
    fn check_uplink(&mut self) -> (bool, bool) {
        let Some(up) = &self.settings.uplink else { return (false, false) };
        let routes = match self.routes.list(MAIN_TABLE, None) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the main table to check the uplink failed");
                return self.uplink_default;
            }
        };
        let has = |family: Family| {
            routes.iter().any(|r| {
                r.family() == family
                    && r.dst.prefix_len() == 0
                    && matches!(&r.target, RouteTarget::Dev { dev, .. } if *dev == up.ifname)
            })
        };
        (has(Family::V4), has(Family::V6))
    }

    /// Find our own prefixes (mesh IPv4 address, LAN prefixes) that another router announces
    /// too: routes to them learned through a neighbor. Reported as problems; a colliding LAN
    /// IPv4 prefix is no longer announced (the operator must renumber one of the LANs); the mesh
    /// IPv4 address is still used (set `mesh_ipv4` to fix it).
    fn check_collisions(&mut self, id: &tollway_core::NodeId) {
        let Some(router) = self.router.as_mut() else { return };
        let Ok(routes) = router.routes() else { return };
        let own: Vec<IpNet> = self
            .settings
            .own_prefixes(id)
            .into_iter()
            .filter(|p| !matches!(p, IpNet::V6(v) if v.prefix_len() == 128))
            .collect();
        let mut found = Vec::new();
        let mut lan_v4 = false;
        for r in routes.iter().filter(|r| r.ifname.is_some() && r.metric < 65535) {
            for p in own.iter().filter(|p| p.contains(&r.prefix) || r.prefix.contains(*p)) {
                if r.prefix.prefix_len() == 0 {
                    continue;
                }
                let who = r.router_id.clone().unwrap_or_else(|| "another router".into());
                found.push(format!(
                    "address collision: {} (ours: {p}) is also announced by {who} (via {}); set mesh_ipv4 or renumber the LAN",
                    r.prefix,
                    r.ifname.as_ref().map(|i| i.to_string()).unwrap_or_default()
                ));
                lan_v4 |= matches!((&self.settings.lan, p), (Some(l), IpNet::V4(v)) if l.ipv4 == Some(*v));
            }
        }
        // Others' collisions we can see: one prefix (not a default route) from two originators.
        let mut origins: std::collections::BTreeMap<IpNet, std::collections::BTreeSet<String>> = Default::default();
        for r in routes.iter().filter(|r| r.ifname.is_some() && r.metric < 65535 && r.prefix.prefix_len() > 0) {
            if let Some(id) = &r.router_id {
                origins.entry(r.prefix).or_default().insert(id.clone());
            }
        }
        for (prefix, ids) in origins.into_iter().filter(|(_, ids)| ids.len() > 1) {
            let ids: Vec<String> = ids.into_iter().collect();
            found.push(format!("address collision: {prefix} is announced by several routers ({})", ids.join(", ")));
        }
        found.sort();
        found.dedup();
        if found != self.collisions {
            for c in found.iter().filter(|c| !self.collisions.contains(c)) {
                tracing::error!(problem = %c, "address collision in the mesh");
            }
            self.collisions = found;
        }
        if lan_v4 && !self.lan_v4_withdrawn {
            tracing::error!("the LAN's IPv4 prefix is announced by another router too: no longer announcing ours");
        }
        self.lan_v4_withdrawn = lan_v4;
    }

    fn log_error(&mut self, what: &str, e: impl std::fmt::Display) {
        let text = format!("{what}: {e}");
        if self.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(error = %e, "{what}; tried again at the next sample");
            self.last_error = Some(text);
        }
    }

    fn uplink_nat(&self) -> Option<UplinkNat> {
        self.settings.uplink.as_ref().map(|u| UplinkNat {
            uplink: u.ifname.clone(),
            ipv6: u.ipv6_nat == crate::mesh_config::Ipv6Nat::Masquerade,
        })
    }

    /// Keep the uplink's masquerading in place (put back if someone removed it).
    fn ensure_nat(&mut self) {
        if let Some(nat) = self.uplink_nat() {
            if let Err(e) = self.nat.apply(&nat) {
                self.log_error("masquerading at the uplink failed", e);
            }
        }
    }

    /// Hand the router the current plan if it differs from the one last applied.
    fn apply(&mut self) {
        let plan = RoutingPlan { neighbors: self.neighbors.clone(), exports: self.exports() };
        if self.applied.as_ref() == Some(&plan) {
            return;
        }
        let Some(router) = self.router.as_mut() else { return };
        match router.apply(&plan) {
            Ok(()) => {
                self.applied = Some(plan);
                self.last_error = None;
            }
            Err(e) => self.log_error("applying the routing plan failed", e),
        }
    }
}

impl Driver {
    /// Set up what routing needs before any neighbor: the mesh IPv4 address on `lo`, packet
    /// forwarding (and router advertisements still accepted on a SLAAC uplink), the policy
    /// rules.
    pub(super) fn prepare_mesh(&mut self) -> Result<(), String> {
        let Some(mesh) = self.mesh.as_mut() else { return Ok(()) };
        let lo = IfName::new("lo").expect("valid");
        self.k.links.ensure_address_v4(&lo, mesh.settings.mesh_ipv4, 32).map_err(|e| e.to_string())?;
        if mesh.settings.kind == RoutingKind::None {
            return Ok(());
        }
        if let Some(up) = &mesh.settings.uplink {
            keep_accepting_router_advertisements(&up.ifname);
        }
        tollway_kernel::sysctl::set_forwarding(tollway_kernel::sysctl::Forwarding { ipv4: true, ipv6: true })
            .map_err(|e| format!("turning on packet forwarding: {e}"))?;
        tollway_routing::rules::install(mesh.routes.as_mut(), mesh.settings.table)
            .map_err(|e| format!("installing the mesh routing rules: {e}"))?;
        if let Some(nat) = mesh.uplink_nat() {
            mesh.nat.apply(&nat).map_err(|e| format!("masquerading at the uplink {}: {e}", nat.uplink))?;
        }
        tracing::info!(
            router = mesh.settings.kind.as_str(),
            table = mesh.settings.table,
            mesh_ipv4 = %mesh.settings.mesh_ipv4,
            uplink = mesh.settings.uplink.as_ref().map(|u| u.ifname.to_string()),
            lan = mesh.settings.lan.as_ref().map(|l| l.ifname.to_string()),
            "routing ready"
        );
        Ok(())
    }

    /// The core's new routing neighbors.
    pub(super) fn set_routing_neighbors(&mut self, neighbors: Vec<RoutedNeighbor>) {
        self.apply_penalties(&neighbors);
        let Some(mesh) = self.mesh.as_mut() else { return };
        mesh.neighbors = neighbors;
        mesh.apply();
    }

    /// Once a sample: check the uplink, re-apply the plan if the announcements changed, and let
    /// the router supervise and reconcile.
    pub(super) fn tick_mesh(&mut self) {
        let Some(mesh) = self.mesh.as_mut() else { return };
        let uplink = mesh.check_uplink();
        if uplink != mesh.uplink_default {
            if let Some(up) = &mesh.settings.uplink {
                tracing::info!(
                    uplink = %up.ifname,
                    ipv4_default = uplink.0,
                    ipv6_default = uplink.1,
                    "uplink changed: announcing a default route for each family it has"
                );
            }
            mesh.uplink_default = uplink;
        }
        mesh.apply();
        mesh.ticks = mesh.ticks.wrapping_add(1);
        // Every 10 s: masquerading someone removed comes back; collisions are looked for.
        if mesh.settings.kind != RoutingKind::None && mesh.ticks.is_multiple_of(10) {
            mesh.ensure_nat();
            let id = self.node.node_id();
            let mesh = self.mesh.as_mut().expect("checked above");
            mesh.check_collisions(&id);
            mesh.apply();
        }
        let Some(mesh) = self.mesh.as_mut() else { return };
        if let Some(router) = mesh.router.as_mut() {
            if let Err(e) = router.tick() {
                mesh.log_error("routing", e);
            }
        }
    }

    /// Withdraw everything routing installed (on stop).
    pub(super) fn stop_mesh(&mut self) {
        let Some(mesh) = self.mesh.as_mut() else { return };
        if let Some(router) = mesh.router.as_mut() {
            if let Err(e) = router.shutdown() {
                tracing::warn!(error = %e, "stopping routing failed");
            }
        }
        if mesh.settings.kind != RoutingKind::None {
            if let Err(e) = tollway_routing::rules::remove(mesh.routes.as_mut()) {
                tracing::warn!(error = %e, "removing the mesh routing rules failed");
            }
            if let Err(e) = mesh.nat.remove() {
                tracing::warn!(error = %e, "removing the uplink's masquerading failed");
            }
        }
    }

    /// With babel, the route to a neighbor's mesh address across its own tunnel, in the mesh
    /// table with a metric babeld's routes always beat.
    pub(super) fn babel_neighbor_fallback(&self, spec: &tollway_core::TunnelSpec) -> Option<TableRoute> {
        let mesh = self.mesh.as_ref().filter(|m| m.settings.kind == RoutingKind::Babel)?;
        Some(TableRoute {
            dst: IpNet::new(IpAddr::V6(spec.peer_mesh_ip), 128).expect("a valid /128"),
            table: mesh.settings.table,
            protocol: PROTO_TOLLWAY,
            target: RouteTarget::Dev { dev: spec.ifname.clone(), gateway: None },
            pref_src: Some(IpAddr::V6(self.node.node_id().mesh_ip())),
            metric: NEIGHBOR_FALLBACK_METRIC,
        })
    }

    pub(super) fn mesh_routes_replace(&mut self, route: &TableRoute) -> Result<(), String> {
        match self.mesh.as_mut() {
            Some(mesh) => mesh.routes.replace(route).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Whether the driver installs a route to each neighbor's mesh address itself (it does not
    /// with babel, whose routes it must never fight).
    pub(super) fn routes_neighbors_itself(&self) -> bool {
        self.mesh.as_ref().is_none_or(|m| m.settings.kind != RoutingKind::Babel)
    }

    /// Every route the router knows, and what is wrong with routing now.
    pub fn routing_view(&mut self) -> (Vec<RouteEntry>, Vec<String>) {
        let Some(mesh) = self.mesh.as_mut() else { return (Vec::new(), Vec::new()) };
        let Some(router) = mesh.router.as_mut() else { return (Vec::new(), Vec::new()) };
        let mut problems = router.problems();
        problems.extend(mesh.collisions.iter().cloned());
        let routes = match router.routes() {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("reading the routes: {e}"));
                Vec::new()
            }
        };
        (routes, problems)
    }

    pub fn mesh_settings(&self) -> Option<&MeshSettings> {
        self.mesh.as_ref().map(|m| &m.settings)
    }

    /// Whether the uplink has a default route now (IPv4, IPv6).
    pub fn uplink_defaults(&self) -> (bool, bool) {
        self.mesh.as_ref().map(|m| m.uplink_default).unwrap_or_default()
    }
}

/// With forwarding on, Linux ignores router advertisements on an interface whose `accept_ra`
/// is 1: an uplink configured by SLAAC would lose its IPv6 default route. Make it 2.
fn keep_accepting_router_advertisements(ifname: &IfName) {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_ra");
    match std::fs::read_to_string(&path) {
        Ok(v) if v.trim() == "1" => match std::fs::write(&path, "2") {
            Ok(()) => {
                tracing::info!(uplink = %ifname, "accept_ra set to 2, so the uplink keeps its router advertisements with forwarding on")
            }
            Err(e) => {
                tracing::warn!(uplink = %ifname, error = %e, "could not set accept_ra to 2; with forwarding on, the uplink may lose its IPv6 default route")
            }
        },
        _ => {}
    }
}
