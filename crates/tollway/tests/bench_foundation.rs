//! Foundation benchmarks. Not run by `cargo test` (they take minutes and their numbers are
//! figures, not pass/fail): run them with
//! `cargo test --release -p tollway --test bench_foundation -- --ignored --nocapture --test-threads=1`
//! and see BENCHMARKS.md.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tollway_kernel::netns::{veth_pair, NetNs};
use tollway_lab::{DaemonCommand, Lab, Topology, UpOptions};

fn example(name: &str) -> Topology {
    Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab").join(name)).unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore]
fn bench_time_from_lab_up_to_all_tunnels_up() {
    if skip("bench_time_from_lab_up_to_all_tunnels_up", &[]) {
        return;
    }
    for (file, runs) in [("chain3.toml", 5), ("mesh10.toml", 3)] {
        let topology = example(file);
        let (mut total, mut tunnels) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let name = lab_name(&format!("bu{i}"));
            let _ = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name);
            let opts = UpOptions {
                wait: Some(Duration::from_secs(90)),
                ..UpOptions::new(DaemonCommand::tollway(&tollway_bin()))
            };
            let t = Instant::now();
            let lab = TestLab { lab: Lab::up(&name, &topology, &opts).unwrap_or_else(|e| panic!("{e}")) };
            total.push(t.elapsed().as_secs_f64());
            tunnels.push(lab.up_timings().unwrap().tunnels.unwrap().as_secs_f64());
            drop(lab);
        }
        println!(
            "BENCH lab-up {file}: {} links; lab up → all tunnels up: median {:.2} s (runs {:?}); of which waiting for tunnels {:.2} s",
            topology.links.len(),
            median(&mut total.clone()),
            total.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>(),
            median(&mut tunnels)
        );
    }
}

/// iperf3 TCP for `secs` from `client` (a command prefix) to `server_ip`; returns Mbit/s received.
fn iperf(client: &mut Command, server_ip: &str, secs: u32) -> f64 {
    let out = client.args(["iperf3", "-J", "-t", &secs.to_string(), "-c", server_ip]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("iperf3 result: {v}")) / 1e6
}

fn ns_cmd(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c
}

/// Two namespaces joined by a veth with a bare WireGuard tunnel over it, made by `wg` and a
/// userspace implementation started in each namespace. Returns the namespaces (deleted on drop)
/// and the server's tunnel address.
struct BareTunnel {
    a: NetNs,
    b: NetNs,
    _devices: Option<(Box<dyn tollway_kernel::Tunnels>, Box<dyn tollway_kernel::Tunnels>)>,
}

fn setup_ns_pair() -> (NetNs, NetNs) {
    let a = NetNs::new().unwrap();
    let b = NetNs::new().unwrap();
    veth_pair(&a, "va", &b, "vb").unwrap();
    a.exec("ip", &["addr", "add", "10.77.0.1/24", "dev", "va"]).unwrap();
    b.exec("ip", &["addr", "add", "10.77.0.2/24", "dev", "vb"]).unwrap();
    a.exec("ip", &["link", "set", "va", "up"]).unwrap();
    b.exec("ip", &["link", "set", "vb", "up"]).unwrap();
    (a, b)
}

fn wg_keys() -> [(String, String); 2] {
    let key = || {
        let private = Command::new("wg").arg("genkey").output().unwrap().stdout;
        let private = String::from_utf8(private).unwrap().trim().to_owned();
        let mut p = Command::new("wg")
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        p.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
        let public = String::from_utf8(p.wait_with_output().unwrap().stdout).unwrap().trim().to_owned();
        (private, public)
    };
    [key(), key()]
}

fn configure_wg(ns: &NetNs, ifname: &str, private: &str, port: u16, peer_public: &str, peer_ep: &str, addr: &str) {
    let keyfile = format!("/tmp/{ifname}.key");
    std::fs::write(&keyfile, private).unwrap();
    ns.exec(
        "wg",
        &[
            "set",
            ifname,
            "private-key",
            &keyfile,
            "listen-port",
            &port.to_string(),
            "peer",
            peer_public,
            "allowed-ips",
            "0.0.0.0/0",
            "endpoint",
            peer_ep,
        ],
    )
    .unwrap();
    std::fs::remove_file(&keyfile).unwrap();
    ns.exec("ip", &["addr", "add", addr, "dev", ifname]).unwrap();
    ns.exec("ip", &["link", "set", ifname, "mtu", "1420", "up"]).unwrap();
}

fn bare_wireguard_go() -> (BareTunnel, Vec<u32>) {
    let (a, b) = setup_ns_pair();
    let [ka, kb] = wg_keys();
    let (ia, ib) = (format!("wgo{}a", std::process::id() % 100000), format!("wgo{}b", std::process::id() % 100000));
    let pa = a.spawn("wireguard-go", &["-f", &ia]).unwrap();
    let pb = b.spawn("wireguard-go", &["-f", &ib]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    configure_wg(&a, &ia, &ka.0, 41001, &kb.1, "10.77.0.2:41002", "10.78.0.1/24");
    configure_wg(&b, &ib, &kb.0, 41002, &ka.1, "10.77.0.1:41001", "10.78.0.2/24");
    (BareTunnel { a, b, _devices: None }, vec![pa, pb])
}

/// The same embedded boringtun devices tollway uses, configured directly (no daemon, no
/// discovery, no accounting): the bare-tunnel baseline for tollway's overhead.
fn bare_boringtun() -> BareTunnel {
    use std::net::{Ipv6Addr, SocketAddrV6};
    use tollway_core::{IfName, WgPublicKey};
    use tollway_kernel::{UserspaceOptions, UserspaceTunnels, WgConfig};
    let (a, b) = setup_ns_pair();
    a.exec("ip", &["addr", "add", "fe80::a/64", "dev", "va", "nodad"]).unwrap();
    b.exec("ip", &["addr", "add", "fe80::b/64", "dev", "vb", "nodad"]).unwrap();
    let ia = Identity::from_seed(&[0xa1; 32]);
    let ib = Identity::from_seed(&[0xb1; 32]);
    let index = |ns: &NetNs, ifname: &'static str| {
        ns.run(move || {
            let c = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        })
        .unwrap()
    };
    let mk = |ns: &NetNs, name: String, me: &Identity, peer: WgPublicKey, port: u16, ep: SocketAddrV6, addr: &str| {
        let cfg = WgConfig {
            ifname: IfName::new(name.clone()).unwrap(),
            private_key: me.wg_private(),
            listen_port: port,
            peer_key: peer,
            endpoint: Some(ep),
            keepalive_secs: 0,
        };
        let dev = ns
            .run(move || {
                let mut t: Box<dyn tollway_kernel::Tunnels> =
                    Box::new(UserspaceTunnels::new(UserspaceOptions::default()));
                t.ensure(&cfg).unwrap();
                t
            })
            .unwrap();
        ns.exec("ip", &["addr", "add", addr, "dev", &name]).unwrap();
        ns.exec("ip", &["link", "set", &name, "mtu", "1420", "up"]).unwrap();
        dev
    };
    let (na, nb) = (format!("btb{}a", std::process::id() % 100000), format!("btb{}b", std::process::id() % 100000));
    let ep_b = SocketAddrV6::new("fe80::b".parse::<Ipv6Addr>().unwrap(), 41012, 0, index(&a, "va"));
    let ep_a = SocketAddrV6::new("fe80::a".parse::<Ipv6Addr>().unwrap(), 41011, 0, index(&b, "vb"));
    let da = mk(&a, na, &ia, ib.wg_public(), 41011, ep_b, "10.79.0.1/24");
    let db = mk(&b, nb, &ib, ia.wg_public(), 41012, ep_a, "10.79.0.2/24");
    BareTunnel { a, b, _devices: Some((da, db)) }
}

use tollway_core::Identity;

/// A pair of free nodes (no prices) selling `capacity_mbit`.
fn pair_with_capacity(capacity_mbit: u64) -> Topology {
    let toml = format!(
        "[defaults.config.market]\ncapacity_mbit = {capacity_mbit}\n\
         [[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[link]]\na = \"a\"\nb = \"b\"\n"
    );
    Topology::parse(&toml, "pair").unwrap()
}

/// Throughput of one tollway tunnel against the same tunnel without the daemon. The daemon
/// shapes everything a node sends to its `capacity_mbit` (default 1000), which is below what a
/// tunnel carries here: the overhead figure comes from nodes whose capacity is far above line
/// rate (10 Gbit/s, as in `bench_market`), and the default-capacity figure, capped by the
/// shaper, is reported apart.
#[test]
#[ignore]
fn bench_throughput_tollway_tunnel_vs_bare_userspace_wireguard() {
    if skip("bench_throughput_tollway_tunnel_vs_bare_userspace_wireguard", &["iperf3", "wg", "wireguard-go"]) {
        return;
    }
    let labs: Vec<(TestLab, String, std::process::Child)> = [("bt", 10_000), ("bd", 1_000)]
        .into_iter()
        .map(|(prefix, capacity)| {
            let name = lab_name(prefix);
            let _ = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name);
            let opts = UpOptions {
                wait: Some(Duration::from_secs(60)),
                ..UpOptions::new(DaemonCommand::tollway(&tollway_bin()))
            };
            let lab = TestLab { lab: Lab::up(&name, &pair_with_capacity(capacity), &opts).unwrap() };
            let config = std::fs::read_to_string(&lab.node("a").unwrap().config_path).unwrap();
            assert!(config.contains(&format!("capacity_mbit = {capacity}")), "the daemon's config: {config}");
            let b_ip = status(&lab, "b").node.mesh_ip;
            let server =
                lab.command_in("b", &["iperf3", "-s"]).unwrap().stdout(std::process::Stdio::null()).spawn().unwrap();
            (lab, b_ip, server)
        })
        .collect();

    let (bare, pids) = bare_wireguard_go();
    let bare_server = bare.b.spawn("iperf3", &["-s"]).unwrap();
    let bt = bare_boringtun();
    let bt_server = bt.b.spawn("iperf3", &["-s"]).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let (mut tw, mut capped, mut wg, mut bo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        tw.push(iperf(&mut labs[0].0.command_in("a", &[] as &[&str]).unwrap(), &labs[0].1, 10));
        bo.push(iperf(&mut ns_cmd(bt.a.name()), "10.79.0.2", 10));
        capped.push(iperf(&mut labs[1].0.command_in("a", &[] as &[&str]).unwrap(), &labs[1].1, 10));
        wg.push(iperf(&mut ns_cmd(bare.a.name()), "10.78.0.2", 10));
    }
    let show = |v: &Vec<f64>| v.iter().map(|x| x.round()).collect::<Vec<_>>();
    println!(
        "BENCH throughput (iperf3 TCP, 10 s x 3, interleaved): tollway tunnel (capacity_mbit = 10000, above line \
         rate) median {:.0} Mbit/s {:?}; bare boringtun (same library, no daemon) median {:.0} Mbit/s {:?}; \
         tollway/bare boringtun = {:.2}; tollway at the default capacity_mbit = 1000 (shaper-capped) median {:.0} \
         Mbit/s {:?}; bare wireguard-go median {:.0} Mbit/s {:?}",
        median(&mut tw.clone()),
        show(&tw),
        median(&mut bo.clone()),
        show(&bo),
        median(&mut tw.clone()) / median(&mut bo.clone()),
        median(&mut capped.clone()),
        show(&capped),
        median(&mut wg.clone()),
        show(&wg),
    );
    bt.b.kill(bt_server);
    for (_, _, mut server) in labs {
        let _ = server.kill();
        let _ = server.wait();
    }
    bare.b.kill(bare_server);
    for p in pids {
        bare.a.kill(p);
        bare.b.kill(p);
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
#[ignore]
fn bench_daemon_memory_and_idle_cpu_with_10_neighbors() {
    if skip("bench_daemon_memory_and_idle_cpu_with_10_neighbors", &[]) {
        return;
    }
    let topology = example("star11.toml");
    let name = lab_name("bs");
    let _ = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name);
    let opts =
        UpOptions { wait: Some(Duration::from_secs(90)), ..UpOptions::new(DaemonCommand::tollway(&tollway_bin())) };
    let lab = TestLab { lab: Lab::up(&name, &topology, &opts).unwrap() };
    wait_for(Duration::from_secs(30), "all 10 sessions connected", || {
        let s = status(&lab, "hub");
        (s.neighbors.len() == 10 && s.neighbors.iter().all(|n| n.state == "connected")).then_some(())
    });
    let pid = lab.node("hub").unwrap().pid.unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let hz = 100.0; // USER_HZ
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(30));
    let cpu = (cpu_ticks(pid) - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    println!(
        "BENCH footprint: daemon with 10 connected neighbors (lab announce interval 1 s): RSS {} kB, idle CPU {:.2} % of one core over 30 s, {} threads",
        rss_kb(pid),
        cpu,
        threads
    );
}
