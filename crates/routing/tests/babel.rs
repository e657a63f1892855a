//! `BabelRouter` with the real babeld (Debian's /usr/sbin/babeld), one per network namespace
//! made by the test, nodes joined by veth pairs that carry only IPv6 link-local addresses (the
//! tunnels' situation). Each node has its mesh /128 and /32 on `lo`, forwarding on, and the
//! four mesh rules. Skipped when not root or without babeld.
//!
//! Run under the host-wide lock: `flock -o /tmp/tollway-netns.lock cargo test --release -p
//! tollway-routing --test babel`. `--nocapture` shows the measured times.

mod common;

use common::*;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tollway_core::IfName;
use tollway_kernel::{NetlinkRoutes, RouteTarget, Routes, PROTO_BABEL};
use tollway_routing::babel::control::ControlClient;
use tollway_routing::babel::BabelRouter;
use tollway_routing::{LinkCost, Router, RoutingPlan};

#[test]
fn chain_of_three_routes_both_families_restarts_after_kill_9_and_leaves_nothing() {
    if skip("chain_of_three_routes_both_families_restarts_after_kill_9_and_leaves_nothing") {
        return;
    }
    let mut nodes = mesh(3, &[(0, 1), (1, 2)]);
    let t0 = Instant::now();
    for n in nodes.iter_mut() {
        n.start();
    }
    let (c6, c4) = (IpAddr::V6(nodes[2].v6), IpAddr::V4(nodes[2].v4));
    let (a6, a4) = (IpAddr::V6(nodes[0].v6), IpAddr::V4(nodes[0].v4));
    let converged = wait_until(CONVERGE, || {
        nodes[0].route_to(c6).is_some()
            && nodes[0].route_to(c4).is_some()
            && nodes[2].route_to(a6).is_some()
            && nodes[2].route_to(a4).is_some()
    });
    assert!(converged.is_some(), "a and c learn each other through b: a has {:?}", nodes[0].table());
    eprintln!("chain converged {:?} after start", t0.elapsed());

    // Two hops, both families, through table 74 and the rules, sourced from the mesh address.
    assert!(nodes[0].ping(c6), "IPv6 a -> c");
    assert!(nodes[0].ping(c4), "IPv4 a -> c over links without IPv4 addresses");
    assert!(nodes[2].ping(a4), "IPv4 c -> a");
    let r = nodes[0].route_to(c4).unwrap();
    assert_eq!(r.protocol, PROTO_BABEL);
    assert_eq!(r.pref_src, Some(IpAddr::V4(nodes[0].v4)), "the node's mesh address is the source");
    assert_eq!(
        r.target,
        RouteTarget::Dev {
            dev: nodes[0].links[0].ifname.clone(),
            gateway: Some(IpAddr::V6(nodes[0].links[0].peer_ll))
        },
        "IPv4 through b's IPv6 link-local address"
    );
    assert_eq!(nodes[0].route_to(c6).unwrap().pref_src, Some(IpAddr::V6(nodes[0].v6)));

    // babeld's own view, parsed from its socket.
    let routes = nodes[0].with_router(|r| r.routes().unwrap());
    let to_c = routes.iter().find(|e| e.prefix.addr() == c6).expect("a knows c's /128");
    assert!(to_c.installed);
    assert_eq!(to_c.ifname.as_ref(), Some(&nodes[0].links[0].ifname));
    assert_eq!(to_c.next_hop, Some(IpAddr::V6(nodes[0].links[0].peer_ll)));
    assert_eq!(to_c.router_id.as_deref(), Some(nodes[2].id.to_string().as_str()));
    assert!(to_c.refmetric.unwrap() >= 256 && to_c.metric >= to_c.refmetric.unwrap() + 256, "{to_c:?}");
    let own: Vec<_> = routes.iter().filter(|e| e.ifname.is_none()).map(|e| e.prefix.addr()).collect();
    assert_eq!(own.len(), 2, "a announces its /128 and /32 and nothing else: {own:?}");
    assert!(own.contains(&a6) && own.contains(&a4));
    // Tunnel link-local addresses are not announced.
    assert!(routes.iter().all(|e| !matches!(e.prefix.addr(), IpAddr::V6(v) if v.segments()[0] == 0xfe80)));

    // Exports: a (an uplink node) announces defaults and a LAN prefix through its import table,
    // and b announces an IPv6 default too (a second uplink). c learns them; a does not install
    // b's default while it announces its own.
    let mut plan_a = nodes[0].plan();
    plan_a.exports = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap(), "10.99.0.0/24".parse().unwrap()];
    nodes[0].with_router(|r| r.apply(&plan_a).unwrap());
    let mut plan_b = nodes[1].plan();
    plan_b.exports = vec!["::/0".parse().unwrap()];
    nodes[1].with_router(|r| r.apply(&plan_b).unwrap());
    let route = |node: &Node, dst: &str| node.table().into_iter().find(|r| r.dst.to_string() == dst);
    let leads = |node: &Node, dst: &str| route(node, dst).is_some_and(|r| r.target != RouteTarget::Unreachable);
    let learned = wait_until(CONVERGE, || {
        leads(&nodes[2], "0.0.0.0/0") && leads(&nodes[2], "::/0") && leads(&nodes[2], "10.99.0.0/24")
    });
    assert!(learned.is_some(), "c learns the exports: {:?}", nodes[2].table());
    eprintln!("exports reached c in {:?}", learned.unwrap());
    assert!(route(&nodes[0], "::/0").is_none(), "a uses its own uplink, not b's: {:?}", nodes[0].table());

    // a's uplink fails: it withdraws its exports. Its neighbors stop using them at once (a
    // retracted prefix may stay a while as an "unreachable" route: babeld holds retractions,
    // never for defaults), and a falls back to b's IPv6 default.
    let withdrawn_at = Instant::now();
    nodes[0].with_router(|r| r.apply(&without_exports(&plan_a)).unwrap());
    let mut last_tick = Instant::now();
    let withdrawn = wait_until(CONVERGE, || {
        // The driver ticks once a second.
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            nodes[0].with_router(|r| r.tick()).unwrap();
        }
        !leads(&nodes[2], "0.0.0.0/0")
            && !leads(&nodes[2], "10.99.0.0/24")
            && !leads(&nodes[1], "0.0.0.0/0")
            && leads(&nodes[0], "::/0")
            && leads(&nodes[2], "::/0")
    });
    let withdrawn =
        withdrawn.unwrap_or_else(|| panic!("withdrawal reaches c: a {:?} c {:?}", nodes[0].table(), nodes[2].table()));
    eprintln!("withdrawn exports left c, and a uses b's default, {withdrawn:?} after the withdrawal");
    assert!(withdrawn < Duration::from_secs(5), "withdrawn within 5 s, took {withdrawn:?}");
    // After the hold, the withdrawn routes leave a's import table; the rest stays.
    let hold = nodes[0].router().withdraw_hold();
    let cleared = wait_until(hold + Duration::from_secs(10), || {
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            nodes[0].with_router(|r| r.tick()).unwrap();
        }
        let import = nodes[0].ns.run(|| NetlinkRoutes::new().list(75, None).unwrap()).unwrap();
        import.is_empty()
    });
    assert!(cleared.is_some(), "the import table is emptied after the hold");
    assert!(withdrawn_at.elapsed() >= hold, "not before the hold");
    assert!(leads(&nodes[0], "::/0") && leads(&nodes[2], "::/0"), "b's default stays in use");
    nodes[1].with_router(|r| r.apply(&without_exports(&plan_b)).unwrap());

    // kill -9 the middle babeld; the driver's ticks (once a second) restart it.
    let old_pid = nodes[1].router().pid().unwrap();
    nodes[1].with_router(|r| r.tick().unwrap());
    // SAFETY: kill(2) on the babeld this test's router started.
    assert_eq!(unsafe { libc::kill(old_pid as libc::pid_t, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let mut last_tick = Instant::now();
    let back = wait_until(CONVERGE, || {
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            nodes[1].with_router(|r| r.tick()).unwrap();
        }
        let b = &nodes[1];
        b.router.as_ref().unwrap().pid().is_some_and(|p| p != old_pid)
            && [a6, a4, c6, c4].iter().all(|d| b.route_to(*d).is_some())
            && nodes[0].route_to(c4).is_some()
            && nodes[2].route_to(a6).is_some()
    });
    let back = back.expect("routes come back after babeld is killed");
    eprintln!("kill -9 of b's babeld: restarted and its routes back {back:?} after the kill");
    assert!(back < Duration::from_secs(5), "routes back within 5 s of the kill, took {back:?}");
    assert!(nodes[0].ping(c4) && nodes[2].ping(a6), "traffic flows through the new babeld's routes");
    assert_eq!(nodes[1].router().starts(), 2);
    assert!(!pid_alive(old_pid));
    assert!(killed.elapsed() < CONVERGE);

    // A cost change on a's only link: flush and re-add; measure how long a has no route to c.
    nodes[0].links[0].cost = LinkCost(1024);
    let plan = nodes[0].plan();
    let applied = Instant::now();
    nodes[0].with_router(|r| r.apply(&plan).unwrap());
    let gone = wait_until(Duration::from_secs(5), || nodes[0].route_to(c6).is_none());
    let back = wait_until(CONVERGE, || nodes[0].route_to(c6).is_some() && nodes[0].route_to(c4).is_some());
    assert!(back.is_some(), "routes through a re-added interface come back");
    eprintln!(
        "cost change on the only link: routes gone after {:?}, back {:?} after the change",
        gone,
        applied.elapsed()
    );
    let cost = wait_until(CONVERGE, || {
        let d = nodes[0].with_router(|r| r.dump().unwrap());
        d.neighbours.iter().any(|n| n.cost >= 1024 && n.cost < 65535 && n.address == nodes[0].links[0].peer_ll)
    });
    assert!(cost.is_some(), "a's cost to b follows the plan");
    if !nodes[0].ping(c4) {
        let d = nodes[0].with_router(|r| r.dump().unwrap());
        panic!("a cannot ping c after the cost change: table {:?} dump {d:#?}", nodes[0].table());
    }

    shutdown_and_check(&mut nodes);
}

fn without_exports(plan: &RoutingPlan) -> RoutingPlan {
    RoutingPlan { exports: vec![], ..plan.clone() }
}

#[test]
fn diamond_a_cost_change_moves_the_route_and_a_neighbor_cannot_lower_our_cost() {
    if skip("diamond_a_cost_change_moves_the_route_and_a_neighbor_cannot_lower_our_cost") {
        return;
    }
    // a - b - d and a - c - d.
    let mut nodes = mesh(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
    for n in nodes.iter_mut() {
        n.start();
    }
    let d6 = IpAddr::V6(nodes[3].v6);
    let d4 = IpAddr::V4(nodes[3].v4);
    let mut first = None;
    wait_until(CONVERGE, || {
        first = nodes[0].dev_to(d6).filter(|_| nodes[0].route_to(d4).is_some());
        first.is_some()
    })
    .expect("a learns d's routes");
    let first = first.unwrap();
    let (i_first, i_other) = if first == nodes[0].links[0].ifname { (0, 1) } else { (1, 0) };
    let other = nodes[0].links[i_other].ifname.clone();
    eprintln!("a reaches d through {first}");

    // Make the link a uses expensive: the route moves to the other neighbor.
    nodes[0].links[i_first].cost = LinkCost(4096);
    let plan = nodes[0].plan();
    nodes[0].with_router(|r| r.apply(&plan).unwrap());
    let moved = wait_until(CONVERGE, || {
        nodes[0].dev_to(d6).as_ref() == Some(&other) && nodes[0].dev_to(d4).as_ref() == Some(&other)
    });
    let moved = moved.expect("the route to d moves to the cheaper link");
    eprintln!("cost change moved the route in {moved:?}");
    assert!(nodes[0].ping(d4) && nodes[0].ping(d6));
    // It stays there once the new link has settled (no flapping back).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(nodes[0].dev_to(d6).as_ref(), Some(&other));

    // And back when the other becomes the expensive one.
    nodes[0].links[i_first].cost = LinkCost::GOOD;
    nodes[0].links[i_other].cost = LinkCost(4096);
    let plan = nodes[0].plan();
    nodes[0].with_router(|r| r.apply(&plan).unwrap());
    assert!(
        wait_until(CONVERGE, || nodes[0].dev_to(d6).as_ref() == Some(&first)).is_some(),
        "back through {first}: {:?}",
        nodes[0].table()
    );

    // A neighbor that claims a cost of 1 for its side of the link cannot make a's cost to it
    // lower than a's own rxcost. Neighbor b (1) rewrites its interface towards a by hand.
    let (b_if, b_sock) = (nodes[1].links[0].ifname.clone(), nodes[1].settings().socket_path());
    let lie = |link_quality: bool, rxcost: u16, ifname: &IfName, sock: &Path| {
        let mut c = ControlClient::connect(sock, Duration::from_secs(5)).unwrap();
        c.request(&format!("flush interface {ifname}")).unwrap();
        c.request(&format!(
            "interface {ifname} type wired link-quality {link_quality} split-horizon true rxcost {rxcost} \
             hello-interval 1 update-interval 2 enable-timestamps false v4-via-v6 true"
        ))
        .unwrap();
    };
    lie(true, 1, &b_if, &b_sock);
    let a_to_b = nodes[0].links[0].peer_ll;
    nodes[0].links[0].cost = LinkCost(1024);
    let plan = nodes[0].plan();
    nodes[0].with_router(|r| r.apply(&plan).unwrap());
    let neighbour = |nodes: &mut [Node]| {
        let d = nodes[0].with_router(|r| r.dump().unwrap());
        d.neighbours.into_iter().find(|n| n.address == a_to_b && n.cost < 65535 && n.reach & 0xf000 == 0xf000)
    };
    let mut seen = None;
    wait_until(CONVERGE, || {
        seen = neighbour(&mut nodes).filter(|n| n.txcost < 256);
        seen.is_some()
    })
    .expect("b's low claim reaches a");
    let n = seen.unwrap();
    eprintln!("b claims txcost {}; a's cost to b is {} (a's rxcost {})", n.txcost, n.cost, n.rxcost);
    assert!(n.cost >= 1024, "a's cost to b stays at least a's own 1024: {n:?}");

    // Contrast: without link quality, the neighbor's claim alone is the cost.
    let a_if = nodes[0].links[0].ifname.clone();
    lie(false, 1024, &a_if, &nodes[0].settings().socket_path());
    let mut seen = None;
    wait_until(CONVERGE, || {
        seen = neighbour(&mut nodes).filter(|n| n.cost < 256);
        seen.is_some()
    })
    .expect("without link-quality b's claim decides");
    eprintln!("without link-quality: a's cost to b is {} (b's claim)", seen.unwrap().cost);

    shutdown_and_check(&mut nodes);
}

#[test]
fn a_babeld_left_by_a_killed_daemon_is_replaced_and_a_bad_program_is_reported() {
    if skip("a_babeld_left_by_a_killed_daemon_is_replaced_and_a_bad_program_is_reported") {
        return;
    }
    let mut nodes = mesh(1, &[]);
    nodes[0].start();
    let old = nodes[0].router().pid().unwrap();
    // The daemon dies without stopping its babeld: forget the router (no Drop).
    std::mem::forget(nodes[0].router.take());
    assert!(pid_alive(old));
    // The next run finds it by its pid file and command line, stops it, and starts its own.
    nodes[0].start();
    let new = nodes[0].router().pid().unwrap();
    assert_ne!(new, old);
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(old)).is_some(), "the leftover babeld {old} was stopped");
    shutdown_and_check(&mut nodes);

    // A program that is not babeld: a clear error naming what happened.
    let mut settings = nodes[0].settings();
    settings.program = "/bin/false".into();
    let err = nodes[0].ns.run(|| BabelRouter::start(settings, Box::new(NetlinkRoutes::new())).unwrap_err()).unwrap();
    assert!(err.to_string().contains("exited"), "{err}");
}
