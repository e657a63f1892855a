//! Userspace tunnels under load: removal while traffic flows must be prompt and must not make
//! boringtun panic. In its own test binary because it installs a panic hook that counts panics
//! on every thread. Also an ignored throughput measurement (`cargo test --release -p
//! tollway-kernel --test userspace_stress -- --ignored --nocapture`). Skipped when not root.

mod common;

use common::{skip, two_sides, wait_for};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollway_kernel::{Links, NetlinkLinks, Tunnels, UserspaceOptions, UserspaceTunnels};

fn count_panics() -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    n
}

#[test]
fn removal_under_flood_is_prompt_and_panic_free() {
    if skip("removal_under_flood_is_prompt_and_panic_free", &["ping"]) {
        return;
    }
    let panics = count_panics();
    let (a, b) = two_sides();
    for threads in [1, 2] {
        let opts = UserspaceOptions { threads, ..UserspaceOptions::default() };
        let mut ta = UserspaceTunnels::new(opts.clone());
        let mut tb = UserspaceTunnels::new(opts);
        let (ca, cb) = (a.config_to(&b, 0), b.config_to(&a, 0));
        a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
        b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
        a.configure_tunnel_link();
        b.configure_tunnel_link();
        assert!(a.ping(b.tun_ll, &a.tun));

        // Flood both ways, then pull the tunnels out from under the traffic.
        let target_b = format!("{}%{}", b.tun_ll, a.tun);
        let target_a = format!("{}%{}", a.tun_ll, b.tun);
        let pa = a.ns.spawn("ping", &["-6", "-f", "-s", "1200", &target_b]).unwrap();
        let pb = b.ns.spawn("ping", &["-6", "-f", "-s", "1200", &target_a]).unwrap();
        let tun = a.tun.clone();
        wait_for(Duration::from_secs(5), || {
            let s = a.ns.run(|| NetlinkLinks::new().stats(&tun).unwrap().unwrap()).unwrap();
            (s.tx_packets > 2000).then_some(())
        })
        .expect("flood traffic through the tunnel");

        // The control socket answers promptly under load.
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            let s = a.ns.run(|| ta.stats(&a.tun)).unwrap().unwrap();
            slowest = slowest.max(t.elapsed());
            assert!(s.last_handshake_secs.is_some());
        }
        eprintln!("{threads} thread(s): slowest of 20 stats() under a ping flood: {slowest:?}");

        // Reconfigure under load too (peer replaced), then remove.
        let mut cb2 = cb.clone();
        cb2.keepalive_secs = 5;
        b.ns.run(|| tb.ensure(&cb2)).unwrap().unwrap();
        let t = Instant::now();
        a.ns.run(|| ta.remove(&a.tun)).unwrap().unwrap();
        let took_a = t.elapsed();
        let t = Instant::now();
        b.ns.run(|| tb.remove(&b.tun)).unwrap().unwrap();
        let took_b = t.elapsed();
        eprintln!("{threads} thread(s): remove under a ping flood took {took_a:?} and {took_b:?}");
        assert!(took_a < Duration::from_secs(1) && took_b < Duration::from_secs(1));
        let (ta_name, tb_name) = (a.tun.clone(), b.tun.clone());
        assert_eq!(a.ns.run(move || NetlinkLinks::new().index_of(&ta_name).unwrap()).unwrap(), None);
        assert_eq!(b.ns.run(move || NetlinkLinks::new().index_of(&tb_name).unwrap()).unwrap(), None);
        a.ns.kill(pa);
        b.ns.kill(pb);
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a thread panicked (see stderr)");
}

/// iperf3 through one tunnel hop, with and without boringtun's connected UDP sockets.
#[test]
#[ignore = "a measurement, not a check: run with --release --ignored --nocapture"]
fn throughput_one_hop() {
    if skip("throughput_one_hop", &["ping", "iperf3"]) {
        return;
    }
    let (a, b) = two_sides();
    let iperf = |over: &tollway_core::IfName, to: std::net::Ipv6Addr| {
        let server = b.ns.spawn("iperf3", &["-s", "-1"]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let target = format!("{to}%{over}");
        let out = a.ns.exec("iperf3", &["-c", &target, "-t", "5", "-J"]).unwrap();
        b.ns.kill(server);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e6
    };
    eprintln!("veth baseline (same machine load): {:.0} Mbit/s", iperf(&a.veth, b.veth_ll));
    for connected in [true, false] {
        let opts = UserspaceOptions { use_connected_socket: connected, ..UserspaceOptions::default() };
        let mut ta = UserspaceTunnels::new(opts.clone());
        let mut tb = UserspaceTunnels::new(opts);
        a.ns.run(|| ta.ensure(&a.config_to(&b, 0))).unwrap().unwrap();
        b.ns.run(|| tb.ensure(&b.config_to(&a, 0))).unwrap().unwrap();
        a.configure_tunnel_link();
        b.configure_tunnel_link();
        assert!(a.ping(b.tun_ll, &a.tun));
        eprintln!("use_connected_socket={connected}: {:.0} Mbit/s", iperf(&a.tun, b.tun_ll));
        a.ns.run(|| ta.remove(&a.tun)).unwrap().unwrap();
        b.ns.run(|| tb.remove(&b.tun)).unwrap().unwrap();
    }
}

/// boringtun 0.7 can lose a new device's event loop while moving it to its listen port when
/// another thread closes and reuses descriptors at that moment (it indexes its table by the
/// number of a socket it never registered). The daemon is such a process: creating tunnels
/// while other threads churn descriptors must still give a working device every time.
#[test]
fn new_devices_take_their_port_while_other_threads_churn_descriptors() {
    if skip("new_devices_take_their_port_while_other_threads_churn_descriptors", &[]) {
        return;
    }
    let panics = count_panics();
    let (a, b) = two_sides();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut opened = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Loopback sockets only, never sent on: they exist to take and free numbers.
                    let held: Vec<_> = (0..16).filter_map(|_| std::net::UdpSocket::bind("127.0.0.1:0").ok()).collect();
                    opened += held.len() as u64;
                }
                opened
            })
        })
        .collect();
    let mut tunnels = UserspaceTunnels::new(UserspaceOptions::default());
    let rounds = 60;
    let mut failures = Vec::new();
    for i in 0..rounds {
        let mut cfg = a.config_to(&b, 0);
        cfg.ifname = common::unique("twc");
        cfg.listen_port = 52000 + i;
        let name = cfg.ifname.clone();
        match a.ns.run(|| tunnels.ensure(&cfg)).unwrap() {
            Ok(()) => {
                // A working device answers its control socket and holds its port.
                let listening = a.ns.run(|| tunnels.stats(&name).is_ok()).unwrap();
                if !listening {
                    failures.push(format!("{name}: configured but does not answer"));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        a.ns.run(|| tunnels.remove(&name)).unwrap().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let opened: u64 = churners.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("{rounds} devices created while other threads opened and closed {opened} sockets");
    assert!(failures.is_empty(), "devices that failed: {failures:?}");
    // Not saved by the retry: no event loop died at all.
    assert_eq!(panics.load(Ordering::SeqCst), 0, "boringtun panicked (see the messages above)");
}
