//! Mesh benchmarks: real daemons, babeld, tunnels, and the lab's internet and LAN hosts. Not
//! run by `cargo test` (they take minutes, and their numbers are figures, not pass/fail): run
//! them as root with
//! `flock -o /tmp/tollway-netns.lock cargo test --release -p tollway --test bench_mesh -- --ignored --nocapture --test-threads=1`
//! and see BENCHMARKS.md.

mod common;

use common::mesh::*;
use common::*;
use std::time::{Duration, Instant};

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
}

/// `lab up` of a shipped topology until its LAN host first reaches the internet host.
#[test]
#[ignore]
fn bench_lab_up_to_lan_reaching_the_internet() {
    if skip("bench_lab_up_to_lan_reaching_the_internet", &["ping", "babeld"]) {
        return;
    }
    for (file, lan, runs) in [("chain3.toml", "c-lan", 5), ("mesh10.toml", "d-lan", 3)] {
        let (mut up, mut routed) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let t = Instant::now();
            let lab = lab_up(&format!("bm{i}"), &shipped(file));
            let tunnels = t.elapsed();
            // Pings every 100 ms from the moment every tunnel is up.
            wait_for(Duration::from_secs(90), &format!("{lan} to reach the internet"), || {
                let ok = lab
                    .command_in(lan, &["ping", "-n", "-c", "1", "-W", "0.1", "2001:db8::1"])
                    .unwrap()
                    .output()
                    .unwrap()
                    .status
                    .success();
                ok.then_some(())
            });
            up.push(tunnels.as_secs_f64());
            routed.push(t.elapsed().as_secs_f64());
        }
        println!(
            "BENCH mesh lab-up {file}: lab up → every tunnel up median {:.2} s ({}); → {lan} reaches 2001:db8::1 median {:.2} s ({})",
            median(&up),
            list(&up),
            median(&routed),
            list(&routed)
        );
    }
}

/// A chain of five nodes, a–b–c–d–e, free and with capacity above line rate: a has the uplink;
/// b, c and e each a LAN host, 1, 2 and 4 tunnel hops from the uplink.
const CHAIN5: &str = r#"
name = "chain5"
[defaults.config.market]
capacity_mbit = 10000
[[node]]
name = "a"
uplink = true
[[node]]
name = "b"
lan = true
[[node]]
name = "c"
lan = true
[[node]]
name = "d"
[[node]]
name = "e"
lan = true
[[link]]
a = "a"
b = "b"
[[link]]
a = "b"
b = "c"
[[link]]
a = "c"
b = "d"
[[link]]
a = "d"
b = "e"
"#;

/// Download from the internet host to a LAN host 1, 2 and 4 hops away, interleaved.
#[test]
#[ignore]
fn bench_lan_download_throughput_over_1_2_and_4_hops() {
    if skip("bench_lan_download_throughput_over_1_2_and_4_hops", &["ping", "iperf3", "babeld"]) {
        return;
    }
    let lab = lab_up("bh", CHAIN5);
    let hosts = [("b-lan", 1), ("c-lan", 2), ("e-lan", 4)];
    for (host, _) in hosts {
        reachable(&lab, host, "2001:db8::1", Duration::from_secs(90));
    }
    let _server = iperf_server(&lab, "internet", 5201);
    let mut mbit: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
    for _ in 0..3 {
        for (i, (host, _)) in hosts.iter().enumerate() {
            let (bps, _) = iperf(&lab, host, "2001:db8::1", 5201, &["-R", "-t", "6", "-O", "1"]);
            mbit[i].push(bps / 1e6);
        }
    }
    let one = median(&mbit[0]);
    for (i, (host, hops)) in hosts.iter().enumerate() {
        let m = median(&mbit[i]);
        println!(
            "BENCH mesh throughput: internet → {host} over {hops} tunnel hop(s): median {m:.0} Mbit/s ({}), {:.2} of 1 hop",
            list(&mbit[i]),
            m / one
        );
    }
}

/// diamond4: the link in use by d goes down; the longest gap in pings every 20 ms from d's LAN
/// to the internet host, over 5 rounds (alternating which path is in use).
#[test]
#[ignore]
fn bench_failover_interruption_in_diamond4() {
    if skip("bench_failover_interruption_in_diamond4", &["ping", "babeld"]) {
        return;
    }
    let mut lab = lab_up("bf", &shipped("diamond4.toml"));
    reachable(&lab, "d-lan", "2001:db8::1", Duration::from_secs(90));
    let (mut gaps, mut moved) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let first = wait_for(Duration::from_secs(30), "d's default route", || default_via(&lab, "d", &["b", "c"]));
        let other = if first == "b" { "c" } else { "b" };
        let count = 600;
        let pings = ping_series(&lab, "d-lan", "2001:db8::1", 20, count);
        std::thread::sleep(Duration::from_secs(2));
        lab.set_link("d", &first, false).unwrap();
        let t = Instant::now();
        wait_for(Duration::from_secs(30), "d's default route to move", || {
            (default_via(&lab, "d", &["b", "c"]).as_deref() == Some(other)).then_some(())
        });
        moved.push(t.elapsed().as_secs_f64());
        let out = pings.wait_with_output().unwrap();
        let (gap, _) = longest_gap(&String::from_utf8_lossy(&out.stdout), count);
        gaps.push(gap as f64 * 0.02);
        lab.set_link("d", &first, true).unwrap();
        wait_for(Duration::from_secs(60), "d's neighbors both connected again", || {
            let s = status(&lab, "d");
            (s.neighbors.iter().filter(|n| n.state == "connected").count() == 2 && s.routing.links.len() == 2)
                .then_some(())
        });
        std::thread::sleep(Duration::from_secs(5));
    }
    println!(
        "BENCH mesh failover diamond4: link in use down → d's route on the other neighbor median {:.2} s ({}); longest ping gap (20 ms pings) median {:.2} s ({})",
        median(&moved),
        list(&moved),
        median(&gaps),
        list(&gaps)
    );
}

/// chain3: b's babeld killed with SIGKILL while c's LAN host pings the internet host every
/// 20 ms: how long until a new babeld runs, and the longest gap in the pings.
#[test]
#[ignore]
fn bench_babeld_kill_9_in_the_middle_of_chain3() {
    if skip("bench_babeld_kill_9_in_the_middle_of_chain3", &["ping", "babeld"]) {
        return;
    }
    let lab = lab_up("bk", &shipped("chain3.toml"));
    reachable(&lab, "c-lan", "2001:db8::1", Duration::from_secs(90));
    let b_dir = lab.node("b").unwrap().dir.to_string_lossy().to_string();
    let (mut restarted, mut gaps) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let old = wait_for(Duration::from_secs(15), "b's babeld", || babelds(&b_dir).first().copied());
        let count = 500;
        let pings = ping_series(&lab, "c-lan", "2001:db8::1", 20, count);
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: kill(2) on a pid we just found running babeld for this lab's node b.
        assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
        let t = Instant::now();
        wait_for(Duration::from_secs(15), "a new babeld for b", || babelds(&b_dir).into_iter().find(|p| *p != old));
        restarted.push(t.elapsed().as_secs_f64());
        let out = pings.wait_with_output().unwrap();
        let (gap, _) = longest_gap(&String::from_utf8_lossy(&out.stdout), count);
        gaps.push(gap as f64 * 0.02);
        std::thread::sleep(Duration::from_secs(3));
    }
    println!(
        "BENCH mesh babeld kill -9 (b of chain3): new babeld running median {:.2} s ({}); longest gap in c-lan's pings (20 ms) median {:.2} s ({})",
        median(&restarted),
        list(&restarted),
        median(&gaps),
        list(&gaps)
    );
}
