//! Measurements over real userspace WireGuard tunnels (wireguard-go), in throw-away namespaces:
//!
//! - `cost`: iperf3 throughput through one tunnel without the plan, with the firewall only
//!   (sender and receiver), and with firewall and shaper (the shaper's capacity does not
//!   limit), in alternating runs;
//! - `shares`: two buyers downloading at once from a 20 Mbit/s seller at several rate ratios;
//! - `throttle`: throughput of a throttled neighbor at several floor rates, egress (HTB) and
//!   ingress (policer);
//! - `conntrack`: what the firewall's connection tracking costs: iperf3 into a router over a
//!   veth and over a tunnel, and through it from tunnel to tunnel, with no table, with the table
//!   as it was before the firewall (a counter at prerouting, no conntrack) and with the firewall,
//!   in alternating runs.
//!
//! `cargo run --release -p tollway-traffic --example bench_traffic -- [cost|shares|throttle|conntrack]...`
//! (as root; all four without arguments).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use tollway_traffic::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn cost() {
    let mut lab = Lab::new("bc");
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    let t = lab.wg(&a, &b);
    lab.iperf_server(&b, 5201);
    let cap = BitRate::mbit(10_000);
    let mut p = plan(7000, cap, &[("peer", &t.a_if, cap, cap, IngressPolicy::Open)]);
    p.admission.open_tcp = vec![5201];
    let (mut fa, mut fb) = (NftFirewall::new(), NftFirewall::new());
    let mut sa = TcShaper::new("bci").unwrap();
    let server = t.b_ip.to_string();
    const MODES: [&str; 3] = ["no plan", "firewall only", "firewall + shaper"];
    for window in [None, Some("64K")] {
        let mut results: [Vec<f64>; 3] = Default::default();
        for round in 0..9 {
            let mode = round % 3;
            in_ns(&a, || sa.remove_all()).unwrap();
            in_ns(&a, || fa.remove_all()).unwrap();
            in_ns(&b, || fb.remove_all()).unwrap();
            if mode >= 1 {
                in_ns(&a, || fa.apply(&p)).unwrap();
                in_ns(&b, || fb.apply(&p)).unwrap();
            }
            if mode == 2 {
                in_ns(&a, || sa.apply(&p)).unwrap();
            }
            let mut args = vec!["-c", server.as_str(), "-p", "5201", "-t", "5", "-O", "1"];
            if let Some(w) = window {
                args.extend(["-w", w]);
            }
            let r = iperf(&a, &args);
            let mbps = received_bps(&r) / 1e6;
            let retr = r["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
            let w = window.unwrap_or("default");
            println!("  window {w:<8} {:<18} {mbps:7.1} Mbit/s  {retr} retransmits", MODES[mode]);
            results[mode].push(mbps);
        }
        let m: Vec<f64> = results.into_iter().map(median).collect();
        println!(
            "cost, window {}: median {:.1} Mbit/s without plan, {:.1} ({:+.1} %) with the firewall, {:.1} ({:+.1} %) with firewall and shaper",
            window.unwrap_or("default"),
            m[0],
            m[1],
            (m[1] - m[0]) / m[0] * 100.0,
            m[2],
            (m[2] - m[0]) / m[0] * 100.0
        );
    }
    in_ns(&a, || sa.remove_all()).unwrap();
    in_ns(&a, || fa.remove_all()).unwrap();
    in_ns(&b, || fb.remove_all()).unwrap();
}

fn shares() {
    let mut lab = Lab::new("bs");
    let (s, b1, b2) = (lab.netns("s"), lab.netns("b1"), lab.netns("b2"));
    let (t1, t2) = (lab.wg(&s, &b1), lab.wg(&s, &b2));
    lab.iperf_server(&s, 5201);
    lab.iperf_server(&s, 5202);
    let mut fw = NftFirewall::new();
    let mut sh = TcShaper::new("bsi").unwrap();
    let download = |ns: &str, ip: std::net::Ipv4Addr, port: &str| {
        received_bps(&iperf(ns, &["-c", &ip.to_string(), "-p", port, "-R", "-t", "7", "-O", "1"]))
    };
    for (cap_mbit, r1, r2) in [(20, 15, 5), (20, 10, 10), (20, 18, 2), (100, 75, 25)] {
        let cap = BitRate::mbit(cap_mbit);
        let open = IngressPolicy::Open;
        let mut p = plan(
            7000,
            cap,
            &[("b1", &t1.a_if, BitRate::mbit(r1), cap, open), ("b2", &t2.a_if, BitRate::mbit(r2), cap, open)],
        );
        p.admission.open_tcp = vec![5201, 5202];
        in_ns(&s, || fw.apply(&p)).unwrap();
        in_ns(&s, || sh.apply(&p)).unwrap();
        let (g1, g2) = std::thread::scope(|sc| {
            let h1 = sc.spawn(|| download(&b1, t1.a_ip, "5201"));
            let h2 = sc.spawn(|| download(&b2, t2.a_ip, "5202"));
            (h1.join().unwrap(), h2.join().unwrap())
        });
        let want = r1 as f64 / r2 as f64;
        let got = g1 / g2;
        println!(
            "shares, capacity {cap_mbit} Mbit/s, rates {r1}:{r2}: got {:.2} + {:.2} = {:.2} Mbit/s, ratio {got:.3} (want {want:.3}, error {:+.1} %)",
            g1 / 1e6,
            g2 / 1e6,
            (g1 + g2) / 1e6,
            (got - want) / want * 100.0
        );
    }
    let alone = download(&b2, t2.a_ip, "5202");
    println!("shares, capacity 100 Mbit/s, buyer with rate 25 alone: {:.2} Mbit/s", alone / 1e6);
    in_ns(&s, || sh.remove_all()).unwrap();
    in_ns(&s, || fw.remove_all()).unwrap();
}

fn throttle() {
    let mut lab = Lab::new("bt");
    let (s, b) = (lab.netns("s"), lab.netns("b"));
    let t = lab.wg(&s, &b);
    lab.iperf_server(&s, 5201);
    let mut fw = NftFirewall::new();
    let mut sh = TcShaper::new("bti").unwrap();
    let server = t.a_ip.to_string();
    for kbit in [64, 256, 1024] {
        let floor = BitRate::kbit(kbit);
        let police = IngressPolicy::Police { bits_per_sec: floor };
        let mut p = plan(7000, BitRate::mbit(20), &[("debtor", &t.a_if, floor, floor, police)]);
        p.admission.open_tcp = vec![5201];
        in_ns(&s, || fw.apply(&p)).unwrap();
        in_ns(&s, || sh.apply(&p)).unwrap();
        // A socket buffer of ~2 s of the floor: larger ones only delay iperf3's ending.
        let w = format!("{}K", (kbit / 4).max(16));
        for (what, reverse) in [("egress (HTB)", true), ("ingress (police)", false)] {
            let mut args = vec!["-c", server.as_str(), "-p", "5201", "-t", "10", "-w", w.as_str()];
            if reverse {
                args.push("-R");
            }
            let class = p.groups[0].classes()[&NeighborKey::new("debtor").unwrap()];
            let drops = || in_ns(&s, || sh.inspect()).unwrap()[0].classes.iter().find(|c| c.id == class).unwrap().drops;
            let d0 = drops();
            let got = received_bps(&iperf(&b, &args));
            println!(
                "throttle, floor {kbit} kbit/s, {what:<16}: {:.1} kbit/s TCP goodput ({:.0} % of the floor), {} drops in the class",
                got / 1e3,
                got / floor.bits_per_sec() as f64 * 100.0,
                drops() - d0
            );
        }
    }
    in_ns(&s, || sh.remove_all()).unwrap();
    in_ns(&s, || fw.remove_all()).unwrap();
}

/// The table before the firewall (issue 7): one counter per neighbor at prerouting, priority
/// raw, and no connection tracking.
fn install_old_table(ns: &str, tunnels: &[&tollway_core::IfName]) {
    let mut text = String::from("table inet twold {\n");
    for i in 0..tunnels.len() {
        text += &format!("  counter rx_{i} {{ }}\n  chain in_{i} {{\n    counter name rx_{i}\n  }}\n");
    }
    text += "  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n";
    for (i, t) in tunnels.iter().enumerate() {
        text += &format!("    iifname \"{t}\" jump in_{i}\n");
    }
    text += "  }\n}\n";
    let file = std::env::temp_dir().join(format!("twold-{}.nft", std::process::id()));
    std::fs::write(&file, text).unwrap();
    must(&ns_exec(ns, &["nft", "-f", file.to_str().unwrap()]));
    let _ = std::fs::remove_file(file);
}

fn conntrack() {
    let mut lab = Lab::new("bk");
    let (a, r, b) = (lab.netns("a"), lab.netns("r"), lab.netns("b"));
    for s in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        must(&ns_exec(&r, &["sysctl", "-qw", s]));
    }
    let (va, vb) = (lab.veth(&a, &r), lab.veth(&r, &b));
    let (ta, tb) = (lab.wg(&a, &r), lab.wg(&r, &b));
    // a reaches b through r: veth to veth, tunnel to tunnel.
    must(&["ip", "-n", &a, "route", "add", &format!("{}/32", vb.b_ip), "via", &va.b_ip.to_string()]);
    must(&["ip", "-n", &b, "route", "add", &format!("{}/32", va.a_ip), "via", &vb.a_ip.to_string()]);
    must(&["ip", "-n", &a, "route", "add", &format!("{}/32", tb.b_ip), "dev", ta.a_if.as_str()]);
    must(&["ip", "-n", &b, "route", "add", &format!("{}/32", ta.a_ip), "dev", tb.b_if.as_str()]);
    lab.iperf_server(&r, 5201);
    lab.iperf_server(&b, 5201);
    let cap = BitRate::mbit(100_000);
    let open = IngressPolicy::Open;
    // Every interface of r is a neighbor's "tunnel".
    let ifs = [&va.b_if, &vb.a_if, &ta.b_if, &tb.a_if];
    let neighbors: Vec<_> =
        ["va", "vb", "ta", "tb"].into_iter().zip(ifs).map(|(k, i)| (k, i, cap, cap, open)).collect();
    let mut p = plan(7000, cap, &neighbors);
    p.admission.open_tcp = vec![5201];
    let mut fw = NftFirewall::new();
    const MODES: [&str; 3] = ["no table", "counter only (before)", "firewall (after)"];
    const ROUNDS: usize = 5;
    let paths = [
        ("veth into the router", va.b_ip.to_string()),
        ("veth to veth through it", vb.b_ip.to_string()),
        ("tunnel into the router", ta.b_ip.to_string()),
        ("tunnel to tunnel through it", tb.b_ip.to_string()),
    ];
    for (what, server) in &paths {
        let mut results: [Vec<f64>; 3] = Default::default();
        let mut cpu_costs: [Vec<f64>; 3] = Default::default();
        for round in 0..3 * ROUNDS {
            let mode = round % 3;
            in_ns(&r, || fw.remove_all()).unwrap();
            let _ = sh(&ns_exec(&r, &["nft", "delete", "table", "inet", "twold"]));
            match mode {
                1 => install_old_table(&r, &ifs),
                2 => in_ns(&r, || fw.apply(&p)).map(|_| ()).unwrap(),
                _ => {}
            }
            let rep = iperf(&a, &["-c", server, "-p", "5201", "-t", "4", "-O", "1"]);
            let mbps = received_bps(&rep) / 1e6;
            // CPU time of both iperf3 processes per GB: the stack's work for a packet (the
            // router's hooks included) mostly runs in their context; less sensitive than the
            // rate to what else the machine is doing.
            let cpu = &rep["end"]["cpu_utilization_percent"];
            let secs = rep["end"]["sum_received"]["seconds"].as_f64().unwrap_or(0.0);
            let bytes = rep["end"]["sum_received"]["bytes"].as_f64().unwrap_or(1.0);
            let busy =
                (cpu["host_total"].as_f64().unwrap_or(0.0) + cpu["remote_total"].as_f64().unwrap_or(0.0)) / 100.0;
            let cpu_ms_per_gb = busy * secs * 1e3 / (bytes / 1e9);
            println!("  {what:<28} {:<22} {mbps:8.1} Mbit/s  {cpu_ms_per_gb:6.0} CPU ms/GB", MODES[mode]);
            results[mode].push(mbps);
            cpu_costs[mode].push(cpu_ms_per_gb);
        }
        let c: Vec<f64> = cpu_costs.into_iter().map(median).collect();
        println!(
            "conntrack, {what}: median CPU per GB {:.0} ms with no table, {:.0} ({:+.1} %) with the counter only, {:.0} ({:+.1} %) with the firewall",
            c[0],
            c[1],
            (c[1] - c[0]) / c[0] * 100.0,
            c[2],
            (c[2] - c[0]) / c[0] * 100.0
        );
        let range = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(l, h), x| (l.min(*x), h.max(*x)));
            format!("{lo:.0}–{hi:.0}")
        };
        let ranges: Vec<String> = results.iter().map(|v| range(v)).collect();
        let m: Vec<f64> = results.into_iter().map(median).collect();
        println!(
            "conntrack, {what}: median of {ROUNDS} {:.0} Mbit/s ({}) with no table, {:.0} ({}, {:+.1} %) with the counter only, {:.0} ({}, {:+.1} %) with the firewall; firewall/counter only {:.3}",
            m[0],
            ranges[0],
            m[1],
            ranges[1],
            (m[1] - m[0]) / m[0] * 100.0,
            m[2],
            ranges[2],
            (m[2] - m[0]) / m[0] * 100.0,
            m[2] / m[1]
        );
    }
    in_ns(&r, || fw.remove_all()).unwrap();
    let _ = sh(&ns_exec(&r, &["nft", "delete", "table", "inet", "twold"]));
}

fn main() {
    if skip("bench_traffic", &["wireguard-go", "wg", "iperf3"]) {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |what: &str| args.is_empty() || args.iter().any(|a| a == what);
    if want("cost") {
        cost();
    }
    if want("shares") {
        shares();
    }
    if want("throttle") {
        throttle();
    }
    if want("conntrack") {
        conntrack();
    }
}
