//! Shared set-up of the babel integration tests and benchmarks: nodes in network namespaces
//! joined by veth pairs with only IPv6 link-local addresses, each with its mesh addresses on
//! `lo`, forwarding on and the mesh rules, and a `BabelRouter`.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tollway_core::{IfName, NodeId};
use tollway_kernel::netns::{self, NetNs};
use tollway_kernel::sysctl::{self, Forwarding};
use tollway_kernel::{Links, NetlinkLinks, NetlinkRoutes, RouteTarget, Routes, TableRoute};
use tollway_routing::babel::{BabelRouter, BabelSettings, RouterId};
use tollway_routing::{rules, LinkCost, RoutedNeighbor, Router, RoutingPlan};

pub const BABELD: &str = "/usr/sbin/babeld";
pub const MESH_TABLE: u32 = 74;
pub const CONVERGE: Duration = Duration::from_secs(30);

/// Whether the test cannot run here (not root, babeld or ip missing): it then says why and
/// passes, or fails under the test command (`TOLLWAY_REQUIRE_ALL_TESTS`).
pub fn skip(test: &str) -> bool {
    tollway_testkit::skip_unless(test, &["ip", "babeld", "ping"])
}

pub fn unique(tag: &str) -> IfName {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    IfName::new(format!("{tag}{:x}{:x}", std::process::id(), n & 0xff)).unwrap()
}

/// One end of a link: our interface, the peer's link-local address, and our cost for it.
pub struct Link {
    pub ifname: IfName,
    pub peer: usize,
    pub peer_ll: Ipv6Addr,
    pub cost: LinkCost,
}

pub struct Node {
    pub ns: NetNs,
    pub v6: Ipv6Addr,
    pub v4: Ipv4Addr,
    pub id: RouterId,
    pub dir: tempfile::TempDir,
    pub links: Vec<Link>,
    pub router: Option<BabelRouter>,
}

impl Node {
    pub fn settings(&self) -> BabelSettings {
        BabelSettings::new(self.dir.path().join("run"), self.id, self.v6, Some(self.v4))
    }

    pub fn plan(&self) -> RoutingPlan {
        RoutingPlan {
            neighbors: self
                .links
                .iter()
                .map(|l| RoutedNeighbor {
                    neighbor: NodeId([l.peer as u8; 32]),
                    ifname: l.ifname.clone(),
                    peer_link_local: l.peer_ll,
                    cost: l.cost,
                    penalty: Default::default(),
                    slot: 0,
                })
                .collect(),
            exports: vec![],
        }
    }

    pub fn router(&mut self) -> &mut BabelRouter {
        self.router.as_mut().expect("started")
    }

    /// Run a router call inside the node's namespace.
    pub fn with_router<T: Send>(&mut self, f: impl FnOnce(&mut BabelRouter) -> T + Send) -> T {
        let router = self.router.as_mut().expect("started");
        self.ns.run(|| f(router)).unwrap()
    }

    pub fn start(&mut self) {
        let settings = self.settings();
        let router = self.ns.run(|| BabelRouter::start(settings, Box::new(NetlinkRoutes::new())).unwrap()).unwrap();
        self.router = Some(router);
        let plan = self.plan();
        self.with_router(|r| r.apply(&plan).unwrap());
    }

    pub fn table(&self) -> Vec<TableRoute> {
        self.ns.run(|| NetlinkRoutes::new().list(MESH_TABLE, None).unwrap()).unwrap()
    }

    /// The usable route to `dst` in the mesh table, if any (babeld keeps a retracted prefix
    /// as an "unreachable" route for a while).
    pub fn route_to(&self, dst: IpAddr) -> Option<TableRoute> {
        let len = if dst.is_ipv4() { 32 } else { 128 };
        self.table()
            .into_iter()
            .find(|r| r.dst.addr() == dst && r.dst.prefix_len() == len && matches!(r.target, RouteTarget::Dev { .. }))
    }

    /// The interface the route to `dst` goes out of.
    pub fn dev_to(&self, dst: IpAddr) -> Option<IfName> {
        match self.route_to(dst)?.target {
            RouteTarget::Dev { dev, .. } => Some(dev),
            _ => None,
        }
    }

    /// One ping gets an answer within 2 s.
    pub fn ping_once(&self, dst: IpAddr) -> bool {
        let out = self.ns.exec_unchecked("ping", &["-c1", "-W2", &dst.to_string()]).unwrap();
        out.status.success()
    }

    /// Pings get answers within 10 s (routes settle for a moment after they first appear:
    /// babeld's link-quality estimate starts high and falls as hellos arrive).
    pub fn ping(&self, dst: IpAddr) -> bool {
        wait_until(Duration::from_secs(10), || self.ping_once(dst)).is_some()
    }
}

/// `n` nodes, joined by veth pairs along `edges`; each with its addresses, forwarding and the
/// mesh rules. Routers are not started yet.
pub fn mesh(n: usize, edges: &[(usize, usize)]) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let ns = NetNs::new().unwrap();
            let k = i as u16 + 1;
            let node = Node {
                ns,
                v6: Ipv6Addr::new(0xfd00, 0x74, 0, 0, 0, 0, 0, k),
                v4: Ipv4Addr::new(100, 64, 74, k as u8),
                id: RouterId([0x02, 0, 0, 0, 0, 0, 0x74, k as u8]),
                dir: tempfile::tempdir().unwrap(),
                links: vec![],
                router: None,
            };
            node.ns.exec("ip", &["addr", "add", &format!("{}/128", node.v6), "dev", "lo"]).unwrap();
            node.ns.exec("ip", &["addr", "add", &format!("{}/32", node.v4), "dev", "lo"]).unwrap();
            node.ns
                .run(|| {
                    sysctl::set_forwarding(Forwarding { ipv4: true, ipv6: true }).unwrap();
                    rules::install(&mut NetlinkRoutes::new(), MESH_TABLE).unwrap();
                })
                .unwrap();
            node
        })
        .collect();
    for (e, &(a, b)) in edges.iter().enumerate() {
        let (a_if, b_if) = (unique("ba"), unique("bb"));
        netns::veth_pair(&nodes[a].ns, a_if.as_str(), &nodes[b].ns, b_if.as_str()).unwrap();
        let ll = |node: usize| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, node as u16 + 1, e as u16 + 1);
        for (me, ifname, peer) in [(a, a_if, b), (b, b_if, a)] {
            let my_ll = ll(me);
            let name = ifname.clone();
            nodes[me]
                .ns
                .run(move || {
                    let mut l = NetlinkLinks::new();
                    l.disable_ipv6_autoconf(&name).unwrap();
                    l.ensure_address(&name, my_ll, 64).unwrap();
                    l.set_up(&name, None).unwrap();
                })
                .unwrap();
            nodes[me].links.push(Link { ifname, peer, peer_ll: ll(peer), cost: LinkCost::GOOD });
        }
    }
    nodes
}

/// Poll `f` every 20 ms until it holds; the time it took, or `None` after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

/// Shut every router down and check that nothing is left: no route in the mesh table, no
/// babeld, no socket, pid file or config; the state file stays for the next start.
pub fn shutdown_and_check(nodes: &mut [Node]) {
    for node in nodes.iter_mut() {
        let pid = node.router().pid().expect("running");
        let settings = node.settings();
        node.with_router(|r| r.shutdown().unwrap());
        node.with_router(|r| r.shutdown().unwrap()); // idempotent
        assert!(!pid_alive(pid), "babeld {pid} is gone");
        assert!(node.table().is_empty(), "nothing left in table {MESH_TABLE}: {:?}", node.table());
        for p in [settings.socket_path(), settings.pid_path(), settings.config_path()] {
            assert!(!p.exists(), "{} removed", p.display());
        }
        assert!(settings.state_path().exists(), "the state file keeps babeld's seqno");
    }
}
