use super::*;
use tollway_core::IfName;
use tollway_kernel::fake::FakeRoutes;

fn id(b: u8) -> NodeId {
    NodeId([b; 32])
}

fn nb(b: u8, cost: u16) -> RoutedNeighbor {
    RoutedNeighbor {
        neighbor: id(b),
        ifname: IfName::new(format!("tw{b}")).unwrap(),
        peer_link_local: format!("fe80::{b}").parse().unwrap(),
        cost: LinkCost(cost),
        penalty: Default::default(),
        slot: b as usize,
    }
}

fn plan(ns: &[RoutedNeighbor]) -> RoutingPlan {
    RoutingPlan { neighbors: ns.to_vec(), exports: Vec::new() }
}

fn cand(prefix: &str, via: u8, metric: u32) -> Candidate {
    Candidate { prefix: prefix.parse().unwrap(), via: id(via), metric }
}

fn kernel() -> FakeRoutes {
    let k = FakeRoutes::new();
    for b in 1..=3 {
        k.add_link(&IfName::new(format!("tw{b}")).unwrap());
    }
    k
}

fn installed(k: &FakeRoutes) -> Vec<String> {
    let mut v: Vec<String> = k.routes().iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xa);
const V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);

#[test]
fn static_routes_follow_their_neighbors_and_the_lowest_metric_wins() {
    let k = kernel();
    let mut r = TableRouter::new_static(
        74,
        V6,
        V4,
        Box::new(k.clone()),
        vec![cand("0.0.0.0/0", 1, 10), cand("0.0.0.0/0", 2, 5), cand("fd12::/48", 1, 0)],
    );
    r.tick().unwrap();
    assert!(installed(&k).is_empty(), "no neighbor connected yet");
    r.apply(&plan(&[nb(1, 256)])).unwrap();
    assert_eq!(
        installed(&k),
        vec![
            "0.0.0.0/0 via fe80::1 dev tw1 table 74 proto 251 src 100.64.0.10",
            "fd12::/48 via fe80::1 dev tw1 table 74 proto 251 src fd00::a"
        ]
    );
    // Neighbor 2 comes: its lower metric takes the default route.
    r.apply(&plan(&[nb(1, 256), nb(2, 1024)])).unwrap();
    assert!(installed(&k).contains(&"0.0.0.0/0 via fe80::2 dev tw2 table 74 proto 251 src 100.64.0.10".to_string()));
    let shown = r.routes().unwrap();
    assert_eq!(shown.iter().filter(|e| e.installed).count(), 2);
    assert!(shown.iter().any(|e| e.prefix.to_string() == "0.0.0.0/0" && !e.installed && e.metric == 10));
    // Neighbor 2 goes: back to neighbor 1; neighbor 1 goes too: nothing.
    r.apply(&plan(&[nb(1, 256)])).unwrap();
    assert!(installed(&k).contains(&"0.0.0.0/0 via fe80::1 dev tw1 table 74 proto 251 src 100.64.0.10".to_string()));
    r.apply(&plan(&[])).unwrap();
    assert!(installed(&k).is_empty());
}

#[test]
fn equal_metrics_prefer_the_cheaper_link_and_unusable_links_carry_nothing() {
    let k = kernel();
    let mut r = TableRouter::new_static(74, V6, V4, Box::new(k.clone()), vec![cand("::/0", 1, 0), cand("::/0", 2, 0)]);
    r.apply(&plan(&[nb(1, 768), nb(2, 256)])).unwrap();
    assert_eq!(installed(&k), vec!["::/0 via fe80::2 dev tw2 table 74 proto 251 src fd00::a"]);
    r.apply(&plan(&[nb(1, 768), nb(2, 65535)])).unwrap();
    assert_eq!(installed(&k), vec!["::/0 via fe80::1 dev tw1 table 74 proto 251 src fd00::a"]);
}

#[test]
fn the_kernel_is_reconciled_at_every_tick_and_shutdown_removes_everything_ours() {
    let k = kernel();
    let mut r = TableRouter::new_static(74, V6, V4, Box::new(k.clone()), vec![cand("fd12::/48", 1, 0)]);
    r.apply(&plan(&[nb(1, 256)])).unwrap();
    let ours = k.routes();
    // Someone deletes our route, and adds one under our protocol number.
    let mut k2: Box<dyn Routes> = Box::new(k.clone());
    k2.delete(&ours[0]).unwrap();
    let mut stray = ours[0].clone();
    stray.dst = "fd99::/16".parse().unwrap();
    k2.add(&stray).unwrap();
    // And one that is not ours (another protocol) must stay.
    let mut other = ours[0].clone();
    other.dst = "fd77::/16".parse().unwrap();
    other.protocol = 4;
    k2.add(&other).unwrap();
    r.tick().unwrap();
    assert_eq!(
        installed(&k),
        vec![
            "fd12::/48 via fe80::1 dev tw1 table 74 proto 251 src fd00::a",
            "fd77::/16 via fe80::1 dev tw1 table 74 proto 4 src fd00::a",
        ]
    );
    // A failed kernel call is an error now and is made again at the next tick.
    k2.delete(&ours[0]).unwrap();
    k.fail_next(1);
    assert!(r.tick().is_err());
    r.tick().unwrap();
    assert!(installed(&k).contains(&"fd12::/48 via fe80::1 dev tw1 table 74 proto 251 src fd00::a".to_string()));
    r.shutdown().unwrap();
    assert_eq!(installed(&k), vec!["fd77::/16 via fe80::1 dev tw1 table 74 proto 4 src fd00::a"]);
}

#[test]
fn a_controller_file_is_applied_whole_and_an_invalid_one_keeps_the_routes_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    let write = |text: &str| {
        // As a controller should: write a temporary file, then rename it into place.
        let tmp = dir.path().join("routes.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let k = kernel();
    let mut r = TableRouter::new_controller(74, V6, V4, Box::new(k.clone()), path.clone());
    assert!(r.problems()[0].contains("cannot read the routes file"), "{:?}", r.problems());
    r.apply(&plan(&[nb(1, 256), nb(2, 256)])).unwrap();
    write(&format!(
        r#"{{"version": 1, "routes": [{{"prefix": "fd12::/48", "via": "{}"}}, {{"prefix": "10.9.0.0/16", "via": "{}"}}]}}"#,
        id(1),
        id(2)
    ));
    r.tick().unwrap();
    assert_eq!(r.version(), Some(1));
    assert!(r.problems().is_empty());
    assert_eq!(installed(&k).len(), 2);
    // Version 2 is broken: rejected with the line and the problem, version 1 stays.
    write(&format!("{{\"version\": 2,\n\"routes\": [\n{{\"prefix\": \"fd12::1/48\", \"via\": \"{}\"}}]}}", id(1)));
    r.tick().unwrap();
    assert_eq!(r.version(), Some(1));
    let p = r.problems();
    assert!(p[0].contains("rejected") && p[0].contains("line 3") && p[0].contains("host bits"), "{p:?}");
    assert_eq!(installed(&k).len(), 2, "the routes in force stay");
    // Version 3 moves everything: applied whole.
    write(&format!(r#"{{"version": 3, "routes": [{{"prefix": "fd34::/48", "via": "{}"}}]}}"#, id(2)));
    r.tick().unwrap();
    assert_eq!(r.version(), Some(3));
    assert!(r.problems().is_empty());
    assert_eq!(installed(&k), vec!["fd34::/48 via fe80::2 dev tw2 table 74 proto 251 src fd00::a"]);
}

#[test]
fn quality_penalties_rank_the_routes_to_tested_destinations_among_those_allowed() {
    use tollway_core::Penalty;
    let k = kernel();
    // The internet's server is 2001:db8::1 (destination 0); a mesh server fd12::5 (destination
    // 1). Neighbor 1 is the operator's choice (lower metrics) for everything.
    let mut r = TableRouter::new_static(
        74,
        V6,
        V4,
        Box::new(k.clone()),
        vec![
            cand("::/0", 1, 1),
            cand("::/0", 2, 2),
            cand("0.0.0.0/0", 1, 1),
            cand("0.0.0.0/0", 2, 2),
            cand("fd12::/48", 1, 1),
            cand("fd12::/48", 2, 2),
            cand("fd34::/48", 1, 1),
            cand("fd34::/48", 2, 2),
            cand("2000::/3", 1, 1),
            cand("2000::/3", 2, 2),
        ],
    )
    .with_tested(vec![("2001:db8::1".parse().unwrap(), 0), ("fd12::5".parse().unwrap(), 1)]);
    let via = |k: &FakeRoutes, prefix: &str| {
        k.routes().iter().find(|r| r.dst.to_string() == prefix).map(|r| r.to_string().contains("dev tw2"))
    };
    r.apply(&plan(&[nb(1, 256), nb(2, 256)])).unwrap();
    assert_eq!(via(&k, "::/0"), Some(false), "no ranking yet: the operator's metric");
    // Neighbor 1 is slow to the internet only: both defaults move to neighbor 2; the mesh
    // server's route and the untested prefix stay.
    let slow_to_internet =
        RoutedNeighbor { penalty: Penalty { global: 0, destinations: vec![(0, 2048)] }, ..nb(1, 256) };
    r.apply(&plan(&[slow_to_internet, nb(2, 256)])).unwrap();
    assert_eq!(via(&k, "2000::/3"), Some(true), "the route the internet's tests take");
    assert_eq!(via(&k, "::/0"), Some(true), "the defaults follow the internet's tests");
    assert_eq!(via(&k, "0.0.0.0/0"), Some(true));
    assert_eq!(via(&k, "fd12::/48"), Some(false));
    assert_eq!(via(&k, "fd34::/48"), Some(false), "untested: the operator's metric");
    // Neighbor 1 slow everywhere (its global penalty), neighbor 2 to the mesh server only a
    // little: fd12::/48 still moves (less penalty wins before any metric).
    let slow = RoutedNeighbor { penalty: Penalty::uniform(2048), ..nb(1, 256) };
    let a_bit = RoutedNeighbor { penalty: Penalty { global: 0, destinations: vec![(1, 256)] }, ..nb(2, 256) };
    r.apply(&plan(&[slow, a_bit.clone()])).unwrap();
    assert_eq!(via(&k, "fd12::/48"), Some(true));
    assert_eq!(via(&k, "fd34::/48"), Some(false));
    // Equal penalties: the metric decides again. A route the operator did not allow is never
    // used, however well ranked its neighbor: neighbor 3 has none.
    r.apply(&plan(&[RoutedNeighbor { penalty: Penalty::uniform(256), ..nb(1, 256) }, a_bit, nb(3, 256)])).unwrap();
    assert_eq!(via(&k, "fd12::/48"), Some(false));
    assert!(!installed(&k).iter().any(|r| r.contains("dev tw3")), "{:?}", installed(&k));
}
