//! Timing of the babel router with the real babeld, repeated, printed as `BENCH` lines (see
//! BENCHMARKS.md). Ignored by default; run as root under the lock:
//!
//! ```sh
//! flock -o /tmp/tollway-netns.lock cargo test --release -p tollway-routing --test bench_babel -- --ignored --nocapture --test-threads=1
//! ```

mod common;

use common::*;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollway_routing::{LinkCost, Router, RoutingPlan};

const RUNS: usize = 5;

/// A delay in 0..1 s that differs between calls (where a kill falls between two ticks).
fn phase() -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    Duration::from_millis(u64::from(nanos % 1000))
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms: Vec<String> = times.iter().map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0)).collect();
    println!(
        "BENCH {what}: median {:.2} s, min {:.2} s, max {:.2} s ({} runs: {} ms)",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        times.len(),
        ms.join(", ")
    );
}

#[test]
#[ignore]
fn bench_routes_back_after_kill_9() {
    if skip("bench_routes_back_after_kill_9") {
        return;
    }
    let mut nodes = mesh(3, &[(0, 1), (1, 2)]);
    for n in nodes.iter_mut() {
        n.start();
    }
    let dsts = [IpAddr::V6(nodes[0].v6), IpAddr::V4(nodes[0].v4), IpAddr::V6(nodes[2].v6), IpAddr::V4(nodes[2].v4)];
    let converged = |nodes: &[Node]| {
        dsts.iter().all(|d| nodes[1].route_to(*d).is_some())
            && nodes[0].route_to(dsts[3]).is_some()
            && nodes[2].route_to(dsts[0]).is_some()
    };
    assert!(wait_until(Duration::from_secs(30), || converged(&nodes)).is_some());
    let mut times = Vec::new();
    for _ in 0..RUNS {
        std::thread::sleep(Duration::from_secs(3));
        // The driver ticks once a second; the kill falls somewhere between two ticks.
        nodes[1].with_router(|r| r.tick().unwrap());
        let ticked = Instant::now();
        std::thread::sleep(phase());
        let pid = nodes[1].router().pid().unwrap();
        // SAFETY: kill(2) on the babeld this test's router started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let killed = Instant::now();
        let mut next_tick = ticked + Duration::from_secs(1);
        let t = wait_until(Duration::from_secs(30), || {
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                nodes[1].with_router(|r| r.tick()).unwrap();
            }
            nodes[1].router().pid().is_some_and(|p| p != pid) && converged(&nodes)
        })
        .expect("routes come back");
        assert!(killed.elapsed() >= t);
        times.push(t);
    }
    report("babeld kill -9 -> restarted by tick() and routes back (middle of a chain of 3, ticks every 1 s)", times);
    for n in nodes.iter_mut() {
        n.with_router(|r| r.shutdown().unwrap());
    }
}

#[test]
#[ignore]
fn bench_cost_change_moves_the_route() {
    if skip("bench_cost_change_moves_the_route") {
        return;
    }
    let mut nodes = mesh(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
    for n in nodes.iter_mut() {
        n.start();
    }
    let (d6, d4) = (IpAddr::V6(nodes[3].v6), IpAddr::V4(nodes[3].v4));
    assert!(wait_until(Duration::from_secs(30), || nodes[0].dev_to(d6).is_some()).is_some());
    let mut times = Vec::new();
    for run in 0..RUNS {
        std::thread::sleep(Duration::from_secs(3));
        // Make the link in use expensive and the other cheap.
        let using = nodes[0].dev_to(d6).unwrap();
        let (expensive, cheap) = if nodes[0].links[0].ifname == using { (0, 1) } else { (1, 0) };
        nodes[0].links[expensive].cost = LinkCost(4096 + run as u16);
        nodes[0].links[cheap].cost = LinkCost::GOOD;
        let target = nodes[0].links[cheap].ifname.clone();
        let plan = nodes[0].plan();
        let start = Instant::now();
        nodes[0].with_router(|r| r.apply(&plan).unwrap());
        wait_until(Duration::from_secs(30), || {
            nodes[0].dev_to(d6).as_ref() == Some(&target) && nodes[0].dev_to(d4).as_ref() == Some(&target)
        })
        .expect("the route moves");
        times.push(start.elapsed());
    }
    report("cost change -> route to the far node moves to the other neighbor (diamond of 4)", times);
    for n in nodes.iter_mut() {
        n.with_router(|r| r.shutdown().unwrap());
    }
}

#[test]
#[ignore]
fn bench_export_withdrawal_and_fallback() {
    if skip("bench_export_withdrawal_and_fallback") {
        return;
    }
    let mut nodes = mesh(3, &[(0, 1), (1, 2)]);
    for n in nodes.iter_mut() {
        n.start();
    }
    let mut plan_b = nodes[1].plan();
    plan_b.exports = vec!["::/0".parse().unwrap()];
    nodes[1].with_router(|r| r.apply(&plan_b).unwrap());
    let mut plan_a = nodes[0].plan();
    plan_a.exports = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    let without = RoutingPlan { exports: vec![], ..plan_a.clone() };
    let has = |node: &Node, dst: &str| node.table().iter().any(|r| r.dst.to_string() == dst);
    let (mut announce, mut withdraw) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        nodes[0].with_router(|r| r.apply(&plan_a).unwrap());
        wait_until(Duration::from_secs(30), || has(&nodes[2], "0.0.0.0/0")).expect("announced");
        announce.push(start.elapsed());
        std::thread::sleep(Duration::from_secs(3));
        let start = Instant::now();
        nodes[0].with_router(|r| r.apply(&without).unwrap());
        let mut next_tick = start + phase();
        wait_until(Duration::from_secs(30), || {
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                nodes[0].with_router(|r| r.tick()).unwrap();
            }
            !has(&nodes[2], "0.0.0.0/0") && !has(&nodes[1], "0.0.0.0/0") && has(&nodes[0], "::/0")
        })
        .expect("withdrawn");
        withdraw.push(start.elapsed());
        std::thread::sleep(Duration::from_secs(2));
    }
    report("export of a default route -> in the table of the node 2 hops away", announce);
    report(
        "withdrawal -> gone 1 and 2 hops away, and the node uses its neighbor's default (ticks every 1 s)",
        withdraw,
    );
    for n in nodes.iter_mut() {
        n.with_router(|r| r.shutdown().unwrap());
    }
}
