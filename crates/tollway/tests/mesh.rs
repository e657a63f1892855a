//! The multi-hop mesh with real daemons, real babeld, real tunnels and the lab's internet and
//! LAN hosts: a LAN device behind the last node downloads from the internet through every hop
//! and every hop is paid; failover; babeld killed; static and controller routing; nothing left
//! behind (but the mesh address on `lo`). Every test builds its own lab in namespaces and removes it.

mod common;

use common::mesh::*;
use common::*;
use std::time::{Duration, Instant};
use tollway_lab::Lab;

/// Settle both views of the link x–y and check they are exact opposites; returns (x's view, y's).
fn settled(lab: &Lab, x: &str, y: &str) -> (tollway_api::NeighborStatus, tollway_api::NeighborStatus) {
    wait_for(Duration::from_secs(60), &format!("the ledgers of {x}–{y} to settle"), || {
        let first = (nb(lab, x, y), nb(lab, y, x));
        std::thread::sleep(Duration::from_secs(2));
        let (a, b) = (nb(lab, x, y), nb(lab, y, x));
        let agree = a.billed_bytes_in == b.billed_bytes_out
            && a.billed_bytes_out == b.billed_bytes_in
            && a.paid_total == b.received_total
            && a.received_total == b.paid_total
            && units(&a.balance) == -units(&b.balance);
        let quiet = first.0.billed_bytes_in.abs_diff(a.billed_bytes_in) < 10_000
            && first.0.billed_bytes_out.abs_diff(a.billed_bytes_out) < 10_000;
        (agree && quiet).then_some((a, b))
    })
}

#[test]
fn a_lan_host_behind_c_downloads_from_the_internet_through_b_and_a_and_every_hop_is_paid() {
    if skip("mesh: chain3 LAN to internet", &["ping", "iperf3", "babeld"]) {
        return;
    }
    let mut lab = lab_up("mc", &shipped("chain3.toml"));
    let took = reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(60));
    reachable(&lab, "c-lan", "192.0.2.1", Duration::from_secs(30));
    eprintln!("c's LAN host reached the internet host {took:?} after every tunnel was up");
    // c routes the internet through b; b through a.
    let c_routes = client(&lab, "c").routes().unwrap();
    let b_id = node_id(&lab, "b");
    let default_v6 = c_routes.routes.iter().find(|r| r.prefix == "::/0" && r.installed).expect("c has a default route");
    assert_eq!(default_v6.via.as_deref(), Some(b_id.as_str()), "{c_routes:?}");
    assert_eq!(c_routes.routing.kind, "babel");
    for node in ["a", "b", "c"] {
        assert!(status(&lab, node).routing.problems.is_empty(), "{node}: {:?}", status(&lab, node).routing.problems);
    }

    let _server = iperf_server(&lab, "internet", 5201);
    let before = [nb(&lab, "c", "b"), nb(&lab, "b", "a")];
    for dst in ["2001:db8::1", "192.0.2.1"] {
        let (bps, bytes) = iperf(&lab, "c-lan", dst, 5201, &["-R", "-n", "50M"]);
        eprintln!("c's LAN host downloaded {bytes} bytes from {dst} at {:.1} Mbit/s", bps / 1e6);
        assert!(bytes >= 50_000_000, "the whole download arrived: {bytes}");
    }
    // Each link: both sides' ledgers are exact opposites, and the money follows the prices.
    // chain3: a asks 0.002, b 0.0015, c nothing; everyone pays the ask. Per MB crossing a–b
    // (either way) b owes a 0.002 and a owes b 0.0015: b pays a 0.0005. Per MB crossing b–c,
    // c pays b 0.0015. b keeps 0.001 per MB it carries for c.
    let (cb, bc) = settled(&lab, "c", "b");
    let (ba, ab) = settled(&lab, "b", "a");
    for (what, view, price_diff, before) in [("c→b", &cb, 1500i128, &before[0]), ("b→a", &ba, 500i128, &before[1])]
    {
        let bytes = (view.billed_bytes_in + view.billed_bytes_out) as i128;
        let moved = bytes - (before.billed_bytes_in + before.billed_bytes_out) as i128;
        assert!(moved >= 100_000_000, "{what}: the 100 MB crossed this link: {moved}");
        // What the payer owes for service in all: its payments plus what is still open.
        let owed = units(&view.paid_total) - units(&view.balance) - units(&view.received_total);
        let expected = bytes * price_diff / 1_000_000;
        eprintln!("{what}: {bytes} bytes billed, owed {owed} (prices say {expected}), paid {}", view.paid_total);
        assert!((owed - expected).abs() <= 2, "{what}: owes {owed}, prices say {expected}");
        assert!(units(&view.paid_total) > 0, "{what}: paid");
        assert_eq!(view.disputed_bytes, 0);
    }
    assert_eq!(units(&bc.paid_total), 0, "b never owed c");
    assert_eq!(units(&ab.paid_total), 0, "a never owed b");
    // b's margin: what c paid it exceeds what it paid a.
    assert!(units(&bc.received_total) > units(&ba.paid_total), "b keeps a margin");

    // The internet host runs a speed-test server every node pins: c measures its path to the
    // internet (through b and a) with no set-up, as the node, and the receipt says so.
    let c_rec = lab.node("c").unwrap().clone();
    let pinned: toml::Table = toml::from_str(&std::fs::read_to_string(&c_rec.config_path).unwrap()).unwrap();
    let pinned_key = pinned["speedtest"]["servers"][0]["key"].as_str().unwrap().to_owned();
    let bin = tollway_bin();
    let argv = [
        bin.to_str().unwrap(),
        "speedtest",
        "--config",
        c_rec.config_path.to_str().unwrap(),
        "--up-secs",
        "2",
        "--down-secs",
        "2",
        "--json",
    ];
    let (ok, out) = run_in(&lab, "c", &argv);
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out[out.find('[').expect("JSON")..]).unwrap();
    assert_eq!(j[0]["server_key"].as_str(), Some(pinned_key.as_str()), "{j}");
    assert_eq!(j[0]["client"].as_str(), Some(node_id(&lab, "c").as_str()), "{j}");
    assert!(j[0]["down"]["mbit_s"].as_f64().unwrap() > 1.0, "{j}");

    // A stopped daemon leaves nothing routing installed; lab down leaves no babeld.
    let dir = lab.node("a").unwrap().dir.parent().unwrap().to_string_lossy().to_string();
    assert_eq!(babelds(&dir).len(), 3, "one babeld per node while up");
    // b tests through its two neighbors from probe addresses of its own (its probe /120 + slot).
    let b_id: tollway_core::NodeId = node_id(&lab, "b").parse().unwrap();
    let probes_on_lo = |lab: &Lab| {
        let (ok, out) = run_in(lab, "b", &["ip", "-6", "-j", "addr", "show", "dev", "lo"]);
        assert!(ok, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let on_lo: Vec<std::net::Ipv6Addr> = v[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["local"].as_str().unwrap().parse().unwrap())
            .collect();
        let probes = (0..256).filter_map(|slot| b_id.probe_ip(slot)).filter(|p| on_lo.contains(p)).count();
        (probes, on_lo.contains(&b_id.mesh_ip()))
    };
    assert_eq!(probes_on_lo(&lab), (2, true), "one probe address per neighbor, and the mesh address, on b's lo");
    lab.stop_daemon("b").unwrap();
    assert_eq!(probes_on_lo(&lab), (0, true), "the probe addresses go with the daemon; the mesh address stays");
    assert_eq!(babelds(&dir).len(), 2, "b's babeld stopped with it");
    for argv in [
        vec!["ip", "-6", "route", "show", "table", "all"],
        vec!["ip", "-4", "route", "show", "table", "all"],
        vec!["ip", "-6", "rule"],
        vec!["ip", "-4", "rule"],
    ] {
        let (ok, out) = run_in(&lab, "b", &argv);
        assert!(ok, "{out}");
        for bad in ["table 74", "table 75", "lookup 74", "proto babel", "proto 251", "7470:"] {
            assert!(!out.contains(bad), "{argv:?} still shows {bad:?} in b after its daemon stopped:\n{out}");
        }
    }
    drop(_server);
    let name = lab.name().clone();
    Lab::down_by_name(std::path::Path::new(tollway_lab::DEFAULT_ROOT), &name).unwrap();
    assert!(babelds(&dir).is_empty(), "no babeld left: {:?}", babelds(&dir));
}

#[test]
fn in_diamond4_taking_down_the_link_in_use_moves_d_lans_traffic_to_the_other_path_both_ways() {
    if skip("mesh: diamond4 failover", &["ping", "iperf3", "babeld"]) {
        return;
    }
    let mut lab = lab_up("mf", &shipped("diamond4.toml"));
    reachable(&lab, "d-lan", "2001:db8::1", Duration::from_secs(60));
    let _server = iperf_server(&lab, "internet", 5201);
    let mut used = Vec::new();
    for round in 0..2 {
        let first = wait_for(Duration::from_secs(30), "d's default route", || default_via(&lab, "d", &["b", "c"]));
        let other = if first == "b" { "c" } else { "b" };
        // Traffic from d's LAN to the internet (a download), and pings every 50 ms to see the gap.
        let iperf = lab
            .command_in("d-lan", &["iperf3", "-J", "-c", "2001:db8::1", "-p", "5201", "-R", "-t", "20", "-i", "1"])
            .unwrap()
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let count = 360;
        let pings = ping_series(&lab, "d-lan", "2001:db8::1", 50, count);
        std::thread::sleep(Duration::from_secs(4));
        let (_, before_other) = link_bytes(&lab, "d", &nb(&lab, "d", other).interface);
        lab.set_link("d", &first, false).unwrap();
        let moved = Instant::now();
        wait_for(Duration::from_secs(30), "d's default route to move", || {
            (default_via(&lab, "d", &["b", "c"]).as_deref() == Some(other)).then_some(())
        });
        let route_moved = moved.elapsed();
        let out = iperf.wait_with_output().unwrap();
        let pinged = pings.wait_with_output().unwrap();
        let (gap, lost) = longest_gap(&String::from_utf8_lossy(&pinged.stdout), count);
        let (rx_other, _) = link_bytes(&lab, "d", &nb(&lab, "d", other).interface);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let intervals: Vec<f64> =
            v["intervals"].as_array().unwrap().iter().map(|i| i["sum"]["bytes"].as_f64().unwrap_or(0.0)).collect();
        eprintln!(
            "round {round}: link d–{first} down: d's route moved to {other} after {route_moved:?}; \
             longest ping gap {} ms ({lost} of {count} lost); download per second {:?} MB; \
             {} MB came through {other} afterwards",
            gap * 50,
            intervals.iter().map(|b| (b / 1e6).round()).collect::<Vec<_>>(),
            (rx_other - before_other) / 1_000_000
        );
        assert!(intervals.last().copied().unwrap_or(0.0) > 100_000.0, "the download goes on after the failover");
        assert!(rx_other - before_other > 5_000_000, "the traffic now comes through {other}");
        assert!(lost < count, "pings answered");
        used.push(first.clone());
        lab.set_link("d", &first, true).unwrap();
        // Both tunnels and sessions back before the next round.
        wait_for(Duration::from_secs(60), "d's neighbors both connected again", || {
            let s = status(&lab, "d");
            (s.neighbors.iter().filter(|n| n.state == "connected").count() == 2 && s.routing.links.len() == 2)
                .then_some(())
        });
        if round == 0 {
            // Make the other path the one in use for the second round: take it down from the
            // other side next.
            wait_for(Duration::from_secs(30), "routes to settle", || default_via(&lab, "d", &["b", "c"]));
        }
    }
    eprintln!("failed over away from {used:?}");
}

#[test]
fn a_babeld_killed_with_sigkill_is_restarted_and_the_routes_come_back_and_a_lost_uplink_is_withdrawn() {
    if skip("mesh: babeld kill -9", &["ping", "iperf3", "babeld"]) {
        return;
    }
    let mut lab = lab_up("mk", &shipped("chain3.toml"));
    reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(60));
    let b_dir = lab.node("b").unwrap().dir.to_string_lossy().to_string();
    let old = babelds(&b_dir);
    assert_eq!(old.len(), 1, "{old:?}");
    // SAFETY: kill(2) on a pid we just found running babeld for this lab's node b.
    assert_eq!(unsafe { libc::kill(old[0] as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let new =
        wait_for(Duration::from_secs(15), "a new babeld for b", || babelds(&b_dir).into_iter().find(|p| *p != old[0]));
    let back = reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(30));
    eprintln!(
        "babeld {} killed; {new} running after {:?}; c's LAN reaches the internet again {:?} after the kill",
        old[0],
        killed.elapsed() - back,
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(7),
        "routes back within the 5 s budget (plus 1 s pings): {:?}",
        killed.elapsed()
    );
    let log = std::fs::read_to_string(&lab.node("b").unwrap().log_path).unwrap();
    assert!(log.contains("babeld"), "the restart is logged");

    // a's uplink goes down: a withdraws its default routes, and c (two hops away) loses the
    // ones it had through b within 5 s; back when the uplink returns.
    let has_default = |lab: &Lab, node: &str| {
        client(lab, node).routes().unwrap().routes.iter().any(|r| r.prefix == "::/0" && r.installed)
    };
    assert!(has_default(&lab, "c"));
    lab.set_link("a", "internet", false).unwrap();
    let down = Instant::now();
    wait_for(Duration::from_secs(15), "c's default route to go", || (!has_default(&lab, "c")).then_some(()));
    let withdrawn = down.elapsed();
    eprintln!("a's uplink down: c's default route gone after {withdrawn:?}");
    assert!(withdrawn < Duration::from_secs(6), "withdrawn within 5 s (plus a status poll): {withdrawn:?}");
    assert!(!has_default(&lab, "b"), "b has no default either");
    lab.set_link("a", "internet", true).unwrap();
    reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(30));
}

/// chain3 with routes from a controller's file per node (nothing at first).
fn chain3_controlled(dir: &std::path::Path) -> String {
    let mut t = shipped("chain3.toml");
    for node in ["a", "b", "c"] {
        let file = dir.join(format!("routes-{node}.json"));
        t = t.replacen(
            &format!("name = \"{node}\"\n"),
            &format!(
                "name = \"{node}\"\nconfig.routing.kind = \"controller\"\nconfig.routing.controller_file = \"{}\"\n",
                file.display()
            ),
            1,
        );
    }
    t
}

/// The routes a central controller would give chain3 for c's LAN to reach the internet behind a.
fn chain3_routes(lab: &Lab, version: u64) -> [(String, String); 3] {
    let (a, b, c) = (node_id(lab, "a"), node_id(lab, "b"), node_id(lab, "c"));
    let route = |p: &str, via: &str| format!(r#"{{"prefix": "{p}", "via": "{via}"}}"#);
    let file =
        |routes: Vec<String>| format!("{{\"version\": {version}, \"routes\": [\n  {}\n]}}\n", routes.join(",\n  "));
    [
        ("a".into(), file(vec![route("fd00:1ab:3::/64", &b), route("10.103.0.0/24", &b)])),
        (
            "b".into(),
            file(vec![
                route("fd00:1ab:3::/64", &c),
                route("10.103.0.0/24", &c),
                route("::/0", &a),
                route("0.0.0.0/0", &a),
            ]),
        ),
        ("c".into(), file(vec![route("::/0", &b), route("0.0.0.0/0", &b)])),
    ]
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn controller_and_static_routes_carry_traffic_across_chain3_without_babeld() {
    if skip("mesh: controller and static routing", &["ping", "iperf3", "babeld"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = lab_up("ms", &chain3_controlled(dir.path()));
    let lab_dir = lab.node("a").unwrap().dir.parent().unwrap().to_string_lossy().to_string();
    assert!(babelds(&lab_dir).is_empty(), "no babeld with controller routing");
    let s = status(&lab, "c");
    assert_eq!(s.routing.kind, "controller");
    assert!(s.routing.problems.iter().any(|p| p.contains("cannot read the routes file")), "{:?}", s.routing.problems);

    // The controller writes each node's routes: c's LAN reaches the internet, both families.
    for (node, text) in chain3_routes(&lab, 1) {
        write_atomically(&dir.path().join(format!("routes-{node}.json")), &text);
    }
    reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(30));
    reachable(&lab, "c-lan", "192.0.2.1", Duration::from_secs(30));
    let r = client(&lab, "b").routes().unwrap();
    assert_eq!(r.routes.iter().filter(|r| r.installed && r.source == "controller").count(), 4, "{r:?}");
    let _server = iperf_server(&lab, "internet", 5201);
    let (_, bytes) = iperf(&lab, "c-lan", "192.0.2.1", 5201, &["-R", "-n", "10M"]);
    assert!(bytes >= 10_000_000);

    // A broken version 2 for b: rejected with the line and the problem; version 1 stays.
    let broken = "{\"version\": 2,\n\"routes\": [\n{\"prefix\": \"fd00:1ab:3::1/64\", \"via\": \"00\"}]}\n";
    write_atomically(&dir.path().join("routes-b.json"), broken);
    let problem = wait_for(Duration::from_secs(10), "b to reject the file", || {
        status(&lab, "b").routing.problems.into_iter().find(|p| p.contains("rejected"))
    });
    assert!(problem.contains("line 3") && problem.contains("host bits"), "{problem}");
    let log = std::fs::read_to_string(&lab.node("b").unwrap().log_path).unwrap();
    assert!(log.contains("rejected"), "logged");
    reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(5));
    let r = client(&lab, "b").routes().unwrap();
    assert_eq!(r.routes.iter().filter(|r| r.installed).count(), 4, "the routes in force stay");

    // Static routes: the same routes in each node's config file, daemons restarted.
    for (node, _) in chain3_routes(&lab, 1) {
        let routes: Vec<(&str, &str)> = match node.as_str() {
            "a" => vec![("fd00:1ab:3::/64", "b"), ("10.103.0.0/24", "b")],
            "b" => vec![("fd00:1ab:3::/64", "c"), ("10.103.0.0/24", "c"), ("::/0", "a"), ("0.0.0.0/0", "a")],
            _ => vec![("::/0", "b"), ("0.0.0.0/0", "b")],
        };
        let routes: Vec<(String, &str, u32)> = routes.into_iter().map(|(p, via)| (p.to_string(), via, 0)).collect();
        set_static_routes(&lab, &node, &routes);
    }
    for node in ["a", "b", "c"] {
        lab.restart_daemon(node, false).unwrap();
    }
    wait_for(Duration::from_secs(60), "static routes on b", || {
        let r = client(&lab, "b").routes().ok()?;
        (r.routing.kind == "static" && r.routes.iter().filter(|r| r.installed).count() == 4).then_some(())
    });
    reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(30));
    let (_, bytes) = iperf(&lab, "c-lan", "2001:db8::1", 5201, &["-R", "-n", "10M"]);
    assert!(bytes >= 10_000_000);
}

#[test]
fn two_nodes_with_the_same_mesh_ipv4_address_are_told_so() {
    if skip("mesh: address collision", &["ping", "iperf3", "babeld"]) {
        return;
    }
    let mut t = shipped("chain3.toml");
    for node in ["a", "c"] {
        t = t.replacen(
            &format!("name = \"{node}\"\n"),
            &format!("name = \"{node}\"\nconfig.mesh_ipv4 = \"100.64.9.9\"\n"),
            1,
        );
    }
    let lab = lab_up("mx", &t);
    // b, between them, hears both announcements; of a and c, at least the one whose route b
    // does not prefer hears the other's (babel does not send c's own prefix back to c).
    let problem = wait_for(Duration::from_secs(40), "b to report the collision", || {
        status(&lab, "b").routing.problems.into_iter().find(|p| p.contains("address collision"))
    });
    assert!(problem.contains("100.64.9.9/32") && problem.contains("several routers"), "{problem}");
    let (node, problem) = wait_for(Duration::from_secs(40), "a or c to report the collision", || {
        ["a", "c"].into_iter().find_map(|n| {
            status(&lab, n).routing.problems.into_iter().find(|p| p.contains("address collision")).map(|p| (n, p))
        })
    });
    assert!(problem.contains("100.64.9.9") && problem.contains("set mesh_ipv4"), "{node}: {problem}");
    let log = std::fs::read_to_string(&lab.node(node).unwrap().log_path).unwrap();
    assert!(log.contains("address collision"), "logged");
}
