//! Static and controller routing ([`TableRouter`]): the candidate routes come from the config
//! (`[[routing.static]]`) or from a file a central controller writes (see [`file`]). For each
//! prefix, the candidate through a neighbor the core lets routing use with the least quality
//! penalty for it, then the lowest metric, then the cheapest link, is installed in the mesh
//! table; the others wait. A prefix carries a penalty when it is the route the speed tests to a
//! tested destination take (the most specific candidate prefix holding a pinned server's
//! address; both defaults for the internet's): the ranking picks among the routes the
//! operator allowed, and the operator's metric decides among equally ranked neighbors. Routes through a
//! neighbor are withdrawn as soon as the core drops it from the plan, and installed again when
//! it comes back. The kernel is reconciled at every tick: a route someone deleted comes back,
//! one someone added under our protocol number goes.

pub mod file;

use crate::{RouteEntry, Router, RouterKind, RoutingError, RoutingPlan};
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tollway_core::routing::{LinkCost, RoutedNeighbor};
use tollway_core::NodeId;
use tollway_kernel::{RouteTarget, Routes, TableRoute, PROTO_TOLLWAY};

/// A route the operator or the controller allows: `prefix` through neighbor `via`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate {
    pub prefix: IpNet,
    pub via: NodeId,
    pub metric: u32,
}

/// Where the candidates come from.
enum Source {
    Static,
    Controller(Controller),
}

/// The controller's file and what we made of it.
struct Controller {
    path: PathBuf,
    /// (modified, length, inode) of the file last read: read again when it changes.
    seen: Option<(Option<SystemTime>, u64, u64)>,
    /// The version of the routes in force.
    version: Option<u64>,
    /// Why the file is not in force (a problem with it), until a valid one replaces it.
    problem: Option<String>,
}

pub struct TableRouter {
    kind: RouterKind,
    table: u32,
    src_v6: Ipv6Addr,
    src_v4: Ipv4Addr,
    kernel: Box<dyn Routes>,
    source: Source,
    candidates: Vec<Candidate>,
    neighbors: Vec<RoutedNeighbor>,
    /// The routes last put in the kernel successfully.
    installed: Vec<TableRoute>,
    /// The pinned speed-test servers' addresses, each with its tested destination.
    tested: Vec<(IpAddr, u8)>,
}

impl TableRouter {
    /// A static router: `candidates` from the config. `src_v6`/`src_v4` are the node's mesh
    /// addresses, the source of what it sends along the routes.
    pub fn new_static(
        table: u32,
        src_v6: Ipv6Addr,
        src_v4: Ipv4Addr,
        kernel: Box<dyn Routes>,
        candidates: Vec<Candidate>,
    ) -> TableRouter {
        TableRouter {
            kind: RouterKind::Static,
            table,
            src_v6,
            src_v4,
            kernel,
            source: Source::Static,
            candidates,
            neighbors: Vec::new(),
            installed: Vec::new(),
            tested: Vec::new(),
        }
    }

    /// A controller router: candidates from the routes file at `path`, read at every change.
    pub fn new_controller(
        table: u32,
        src_v6: Ipv6Addr,
        src_v4: Ipv4Addr,
        kernel: Box<dyn Routes>,
        path: PathBuf,
    ) -> TableRouter {
        let controller = Controller { path, seen: None, version: None, problem: None };
        let mut r = TableRouter {
            kind: RouterKind::Controller,
            table,
            src_v6,
            src_v4,
            kernel,
            source: Source::Controller(controller),
            candidates: Vec::new(),
            neighbors: Vec::new(),
            installed: Vec::new(),
            tested: Vec::new(),
        };
        r.reload();
        r
    }

    /// The version of the controller's routes in force, if any.
    pub fn version(&self) -> Option<u64> {
        match &self.source {
            Source::Controller(c) => c.version,
            Source::Static => None,
        }
    }

    /// Rank the routes to the speed tests' destinations by the neighbors' quality penalties:
    /// `tested` holds each pinned server's address and its destination number.
    pub fn with_tested(mut self, tested: Vec<(IpAddr, u8)>) -> TableRouter {
        self.tested = tested;
        self
    }

    /// The prefixes the speed tests take, each with its tested destinations: for each pinned
    /// server, the most specific candidate prefix holding its address; and both default routes
    /// for the internet's (destination 0).
    fn tested_prefixes(&self) -> BTreeMap<IpNet, Vec<u8>> {
        let mut out: BTreeMap<IpNet, Vec<u8>> = BTreeMap::new();
        for (addr, d) in &self.tested {
            let most_specific =
                self.candidates.iter().map(|c| c.prefix).filter(|p| p.contains(addr)).max_by_key(|p| p.prefix_len());
            if let Some(p) = most_specific {
                out.entry(p).or_default().push(*d);
            }
        }
        // The internet's tests rank both default routes (as with babel), whatever more specific
        // prefix the server is in.
        if self.tested.iter().any(|(_, d)| *d == 0) {
            for default in [IpNet::V6(Default::default()), IpNet::V4(Default::default())] {
                if self.candidates.iter().any(|c| c.prefix == default) {
                    let ds = out.entry(default).or_default();
                    if !ds.contains(&0) {
                        ds.push(0);
                    }
                }
            }
        }
        out
    }

    /// For each prefix, the chosen candidate and the neighbor it goes through.
    fn select(&self) -> BTreeMap<IpNet, (&Candidate, &RoutedNeighbor)> {
        let mut best: BTreeMap<IpNet, (&Candidate, &RoutedNeighbor)> = BTreeMap::new();
        let tested = self.tested_prefixes();
        // The quality penalty of a prefix's routes through `n`: the worst among the tested
        // destinations they lead to; none for an untested prefix.
        let penalty = |prefix: &IpNet, n: &RoutedNeighbor| {
            tested.get(prefix).map_or(0, |ds| ds.iter().map(|d| n.penalty.of(*d)).max().unwrap_or(0))
        };
        for c in &self.candidates {
            let Some(n) = self.neighbors.iter().find(|n| n.neighbor == c.via && n.cost != LinkCost::UNUSABLE) else {
                continue;
            };
            let key = |c: &Candidate, n: &RoutedNeighbor| (penalty(&c.prefix, n), c.metric, n.cost, c.via);
            match best.get(&c.prefix) {
                Some((bc, bn)) if key(bc, bn) <= key(c, n) => {}
                _ => {
                    best.insert(c.prefix, (c, n));
                }
            }
        }
        best
    }

    fn desired(&self) -> Vec<TableRoute> {
        self.select()
            .into_iter()
            .map(|(prefix, (_, n))| TableRoute {
                dst: prefix,
                table: self.table,
                protocol: PROTO_TOLLWAY,
                target: RouteTarget::Dev { dev: n.ifname.clone(), gateway: Some(IpAddr::V6(n.peer_link_local)) },
                pref_src: Some(match prefix {
                    IpNet::V4(_) => IpAddr::V4(self.src_v4),
                    IpNet::V6(_) => IpAddr::V6(self.src_v6),
                }),
                metric: 0,
            })
            .collect()
    }

    /// Make the mesh table hold exactly the desired routes of ours (protocol 251).
    fn reconcile(&mut self) -> Result<(), RoutingError> {
        let desired = self.desired();
        let present = self.kernel.list(self.table, Some(PROTO_TOLLWAY))?;
        let mut errors = Vec::new();
        for r in present.iter().filter(|r| !desired.iter().any(|d| same(d, r))) {
            if let Err(e) = self.kernel.delete(r) {
                errors.push(RoutingError::from(e));
            }
        }
        for d in desired.iter().filter(|d| !present.iter().any(|r| same(d, r))) {
            match self.kernel.replace(d) {
                Ok(()) => tracing::info!(route = %d, router = %self.kind, "route installed"),
                Err(e) => errors.push(RoutingError::from(e)),
            }
        }
        self.installed = desired;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(RoutingError::Several(errors)),
        }
    }

    /// Controller: read the file again if it changed; put a valid one in force, keep the
    /// routes in force when it is not.
    fn reload(&mut self) {
        let Source::Controller(c) = &mut self.source else { return };
        let meta = match std::fs::metadata(&c.path) {
            Ok(m) => m,
            Err(e) => {
                let problem = format!("cannot read the routes file {}: {e}", c.path.display());
                if c.problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(%problem, "keeping the routes in force");
                    c.problem = Some(problem);
                }
                c.seen = None;
                return;
            }
        };
        use std::os::unix::fs::MetadataExt;
        let stamp = (meta.modified().ok(), meta.len(), meta.ino());
        if c.seen == Some(stamp) {
            return;
        }
        c.seen = Some(stamp);
        match read_routes_file(&c.path) {
            Ok(f) => {
                tracing::info!(path = %c.path.display(), version = f.version, routes = f.routes.len(), "routes file applied");
                c.version = Some(f.version);
                c.problem = None;
                self.candidates = f.routes;
            }
            Err(e) => {
                let problem = format!("routes file {} rejected: {e}", c.path.display());
                tracing::error!(%problem, version_in_force = ?c.version, "keeping the routes in force");
                c.problem = Some(problem);
            }
        }
    }
}

/// Read and parse the routes file at `path` (at most [`file::MAX_FILE_BYTES`]).
pub fn read_routes_file(path: &Path) -> Result<file::RoutesFile, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    f.take(file::MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > file::MAX_FILE_BYTES {
        return Err(format!("larger than {} bytes", file::MAX_FILE_BYTES));
    }
    file::parse(&text)
}

/// The same route as far as we are concerned (the kernel reports IPv6 metric 0 as 1024).
fn same(a: &TableRoute, b: &TableRoute) -> bool {
    a.dst == b.dst && a.table == b.table && a.target == b.target && a.pref_src == b.pref_src
}

impl Router for TableRouter {
    fn kind(&self) -> RouterKind {
        self.kind
    }

    fn apply(&mut self, plan: &RoutingPlan) -> Result<(), RoutingError> {
        if self.neighbors == plan.neighbors {
            return Ok(());
        }
        self.neighbors = plan.neighbors.clone();
        self.reconcile()
    }

    fn tick(&mut self) -> Result<(), RoutingError> {
        self.reload();
        self.reconcile()
    }

    fn routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError> {
        let chosen = self.select();
        Ok(self
            .candidates
            .iter()
            .map(|c| {
                let n = self.neighbors.iter().find(|n| n.neighbor == c.via);
                let installed = chosen.get(&c.prefix).is_some_and(|(cc, _)| *cc == c)
                    && self.installed.iter().any(|r| r.dst == c.prefix);
                RouteEntry {
                    prefix: c.prefix,
                    ifname: n.map(|n| n.ifname.clone()),
                    next_hop: n.map(|n| IpAddr::V6(n.peer_link_local)),
                    metric: c.metric,
                    refmetric: None,
                    installed,
                    router_id: Some(c.via.to_string()),
                    source: self.kind,
                }
            })
            .collect())
    }

    fn problems(&self) -> Vec<String> {
        match &self.source {
            Source::Controller(c) => c.problem.iter().cloned().collect(),
            Source::Static => Vec::new(),
        }
    }

    fn shutdown(&mut self) -> Result<(), RoutingError> {
        self.neighbors.clear();
        self.candidates.clear();
        self.reconcile()
    }
}

#[cfg(test)]
mod tests;
