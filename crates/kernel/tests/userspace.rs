//! Userspace (embedded boringtun) tunnels against the real kernel, in namespaces made by each
//! test. Skipped when not root.

mod common;

use common::{skip, two_sides, unique, wait_for};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};
use tollway_core::TunnelStats;
use tollway_kernel::{Links, NetlinkLinks, Route6, TunnelError, Tunnels, UserspaceOptions, UserspaceTunnels};

fn stats(side: &common::Side, t: &mut UserspaceTunnels) -> TunnelStats {
    let tun = side.tun.clone();
    side.ns.run(|| t.stats(&tun)).unwrap().unwrap()
}

fn index_in(side: &common::Side, name: &tollway_core::IfName) -> Option<u32> {
    let name = name.clone();
    side.ns.run(move || NetlinkLinks::new().index_of(&name).unwrap()).unwrap()
}

/// Print the sockets and addresses of the namespaces, to diagnose a failed ping.
fn dump_state(sides: &[&common::Side]) {
    for side in sides {
        for (cmd, args) in [("ss", &["-uanp"][..]), ("ip", &["-6", "addr"][..])] {
            if let Ok(o) = side.ns.exec_unchecked(cmd, args) {
                eprintln!("{} {cmd}:\n{}", side.ns.name(), String::from_utf8_lossy(&o.stdout));
            }
        }
    }
}

#[test]
fn tunnel_handshakes_carries_traffic_reconfigures_and_goes_away() {
    if skip("tunnel_handshakes_carries_traffic_reconfigures_and_goes_away", &["ping"]) {
        return;
    }
    common::init_tracing();
    let (a, b) = two_sides();
    let mut ta = UserspaceTunnels::new(UserspaceOptions::default());
    let mut tb = UserspaceTunnels::new(UserspaceOptions::default());
    // No keepalive: the first handshake waits for traffic.
    let (ca, cb) = (a.config_to(&b, 0), b.config_to(&a, 0));

    let t = Instant::now();
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
    eprintln!("create + configure two devices: {:?}", t.elapsed());
    assert_eq!(stats(&a, &mut ta).last_handshake_secs, None, "no handshake while the interfaces are down");
    a.configure_tunnel_link();
    b.configure_tunnel_link();

    // The first ping starts the handshake (unless link-up multicast got there first).
    let t = Instant::now();
    let ok = a.ping(b.tun_ll, &a.tun);
    eprintln!("first ping across a fresh tunnel, handshake included: {:?}", t.elapsed());
    if !ok {
        dump_state(&[&a, &b]);
    }
    assert!(ok, "ping across the tunnel");
    let sa = stats(&a, &mut ta);
    assert_eq!(sa.last_handshake_secs, Some(0));
    assert!(sa.tx_bytes > 0 && sa.rx_bytes > 0, "{sa:?}");
    assert!(stats(&b, &mut tb).last_handshake_secs.is_some());

    // Idempotent and cheap: the peer is not replaced (its counters keep growing).
    let per_call =
        a.ns.run(|| {
            let t = Instant::now();
            for _ in 0..1000 {
                ta.ensure(&ca).unwrap();
            }
            t.elapsed() / 1000
        })
        .unwrap();
    eprintln!("ensure with nothing changed: {per_call:?} per call");
    let after = stats(&a, &mut ta);
    assert!(after.tx_bytes >= sa.tx_bytes && after.last_handshake_secs.is_some(), "{sa:?} then {after:?}");

    // Interface counters rise with traffic.
    let link_stats = |side: &common::Side| {
        let tun = side.tun.clone();
        side.ns.run(move || NetlinkLinks::new().stats(&tun).unwrap().unwrap()).unwrap()
    };
    let before = link_stats(&a);
    assert!(a.ping(b.tun_ll, &a.tun));
    let later = link_stats(&a);
    assert!(later.tx_packets > before.tx_packets && later.rx_bytes > before.rx_bytes, "{before:?} then {later:?}");

    // Mesh addresses routed through the tunnel with a preferred source.
    let (ma, mb): (Ipv6Addr, Ipv6Addr) = ("fd00::a".parse().unwrap(), "fd00::b".parse().unwrap());
    for (side, own, peer) in [(&a, ma, mb), (&b, mb, ma)] {
        let tun = side.tun.clone();
        side.ns
            .run(move || {
                let mut l = NetlinkLinks::new();
                l.ensure_address(&tun, own, 128).unwrap();
                l.ensure_route(&Route6 { dst: peer, prefix_len: 128, dev: tun.clone(), src: Some(own) }).unwrap();
            })
            .unwrap();
    }
    let out = a.ns.exec_unchecked("ping", &["-6", "-c1", "-W2", "fd00::b"]).unwrap();
    assert!(out.status.success(), "ping fd00::b over the routed tunnel: {}", String::from_utf8_lossy(&out.stdout));

    // A changed endpoint: B reaches A at a second address of A's veth.
    let (veth, second): (_, Ipv6Addr) = (a.veth.clone(), "fe80::a2".parse().unwrap());
    a.ns.run(move || NetlinkLinks::new().ensure_address(&veth, second, 64).unwrap()).unwrap();
    let mut cb2 = cb.clone();
    cb2.endpoint = Some(std::net::SocketAddrV6::new(second, a.port, 0, b.veth_index));
    b.ns.run(|| tb.ensure(&cb2)).unwrap().unwrap();
    assert_eq!(stats(&b, &mut tb).last_handshake_secs, None, "boringtun replaces the peer: a new session");
    let ok = b.ping(a.tun_ll, &b.tun);
    if !ok {
        dump_state(&[&a, &b]);
    }
    assert!(ok, "ping after the endpoint change");
    assert!(stats(&b, &mut tb).last_handshake_secs.is_some());

    // list sees exactly our device in each namespace.
    let prefix = &a.tun.as_str()[..3];
    assert_eq!(a.ns.run(|| ta.list(prefix)).unwrap().unwrap(), vec![a.tun.clone()]);
    assert_eq!(a.ns.run(|| ta.list("zz")).unwrap().unwrap(), vec![]);

    // Removal is prompt: the interface is gone when remove returns.
    let t = Instant::now();
    a.ns.run(|| ta.remove(&a.tun)).unwrap().unwrap();
    eprintln!("remove (interface gone on return): {:?}", t.elapsed());
    assert_eq!(index_in(&a, &a.tun), None);
    assert!(a.ns.run(|| ta.list(prefix)).unwrap().unwrap().is_empty());
    assert!(matches!(a.ns.run(|| ta.stats(&a.tun)).unwrap(), Err(TunnelError::Missing(_))));
    a.ns.run(|| ta.remove(&a.tun)).unwrap().unwrap();
    // And B notices nothing until its session times out, but stays healthy.
    assert!(stats(&b, &mut tb).last_handshake_secs.is_some());
}

#[test]
fn keepalive_brings_the_tunnel_up_without_traffic() {
    if skip("keepalive_brings_the_tunnel_up_without_traffic", &[]) {
        return;
    }
    let (a, b) = two_sides();
    let mut ta = UserspaceTunnels::new(UserspaceOptions::default());
    let mut tb = UserspaceTunnels::new(UserspaceOptions::default());
    let (ca, cb) = (a.config_to(&b, 1), b.config_to(&a, 1));
    b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
    b.configure_tunnel_link();
    let t = Instant::now();
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    a.configure_tunnel_link();
    let up = wait_for(Duration::from_secs(10), || stats(&a, &mut ta).last_handshake_secs);
    let (_, took) = up.expect("a handshake within 10 s with a 1 s keepalive");
    eprintln!("first handshake with persistent keepalive 1 s, from ensure: {:?}", t.elapsed().min(took));
    assert!(stats(&b, &mut tb).last_handshake_secs.is_some());
}

#[test]
fn an_interface_deleted_by_someone_else_is_recreated_by_ensure() {
    if skip("an_interface_deleted_by_someone_else_is_recreated_by_ensure", &["ping"]) {
        return;
    }
    let (a, b) = two_sides();
    let mut ta = UserspaceTunnels::new(UserspaceOptions::default());
    let mut tb = UserspaceTunnels::new(UserspaceOptions::default());
    let (ca, cb) = (a.config_to(&b, 0), b.config_to(&a, 0));
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
    a.configure_tunnel_link();
    b.configure_tunnel_link();
    let first = index_in(&a, &a.tun).unwrap();

    a.ns.exec("ip", &["link", "del", a.tun.as_str()]).unwrap();
    assert_eq!(index_in(&a, &a.tun), None);
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    let second = index_in(&a, &a.tun).expect("recreated");
    assert_ne!(first, second);
    a.configure_tunnel_link();
    assert!(a.ping(b.tun_ll, &a.tun), "ping over the recreated tunnel");
}

#[test]
fn port_conflicts_and_foreign_names_are_refused_cleanly() {
    if skip("port_conflicts_and_foreign_names_are_refused_cleanly", &[]) {
        return;
    }
    let (a, b) = two_sides();
    let mut ta = UserspaceTunnels::new(UserspaceOptions::default());
    let ca = a.config_to(&b, 0);
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();

    // A second tunnel on the same port in the same namespace.
    let mut clash = ca.clone();
    clash.ifname = unique("twc");
    let err = a.ns.run(|| ta.ensure(&clash)).unwrap().unwrap_err();
    assert!(matches!(err, TunnelError::Configure { .. }), "{err}");
    assert!(err.to_string().contains("listen port"), "{err}");
    assert_eq!(index_in(&a, &clash.ifname), None, "nothing half-made left behind");
    // The first tunnel is unharmed.
    assert!(a.ns.run(|| ta.stats(&ca.ifname)).unwrap().is_ok());

    // A name held by a veth is not ours: neither replaced nor removed.
    let mut foreign = ca.clone();
    foreign.ifname = a.veth.clone();
    foreign.listen_port = 51999;
    let err = a.ns.run(|| ta.ensure(&foreign)).unwrap().unwrap_err();
    assert!(matches!(err, TunnelError::Create { .. }), "{err}");
    assert!(a.ns.run(|| ta.remove(&a.veth)).unwrap().is_err());
    assert!(index_in(&a, &a.veth).is_some());
}

#[test]
fn several_threads_per_device_work_and_stop() {
    if skip("several_threads_per_device_work_and_stop", &["ping"]) {
        return;
    }
    let (a, b) = two_sides();
    let opts = UserspaceOptions { threads: 2, ..UserspaceOptions::default() };
    let mut ta = UserspaceTunnels::new(opts.clone());
    let mut tb = UserspaceTunnels::new(opts);
    let (ca, cb) = (a.config_to(&b, 0), b.config_to(&a, 0));
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
    a.configure_tunnel_link();
    b.configure_tunnel_link();
    assert!(a.ping(b.tun_ll, &a.tun));
    let t = Instant::now();
    a.ns.run(|| ta.remove(&a.tun)).unwrap().unwrap();
    assert_eq!(index_in(&a, &a.tun), None);
    eprintln!("remove with 2 threads: {:?}", t.elapsed());
    // Dropping the set stops the rest.
    drop(tb);
    // The devices' threads exit and close their TUN descriptors; allow for a loaded machine.
    let t = Instant::now();
    while index_in(&b, &b.tun).is_some() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(index_in(&b, &b.tun), None, "dropping UserspaceTunnels removes its devices");
}

#[test]
fn a_listen_port_change_frees_the_old_port() {
    if skip("a_listen_port_change_frees_the_old_port", &["ping", "ss"]) {
        return;
    }
    let (a, b) = two_sides();
    let mut ta = UserspaceTunnels::new(UserspaceOptions::default());
    let mut tb = UserspaceTunnels::new(UserspaceOptions::default());
    let (mut ca, mut cb) = (a.config_to(&b, 0), b.config_to(&a, 0));
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
    a.configure_tunnel_link();
    b.configure_tunnel_link();
    assert!(a.ping(b.tun_ll, &a.tun));

    let bound = |port: u16| {
        let out = a.ns.exec("ss", &["-Hunl", &format!("sport = :{port}")]).unwrap();
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    let (old, new) = (ca.listen_port, ca.listen_port + 100);
    assert!(bound(old));
    ca.listen_port = new;
    cb.endpoint = Some(std::net::SocketAddrV6::new(a.veth_ll, new, 0, b.veth_index));
    a.ns.run(|| ta.ensure(&ca)).unwrap().unwrap();
    b.ns.run(|| tb.ensure(&cb)).unwrap().unwrap();
    // The device was recreated: its link state is applied again, as the driver does.
    a.configure_tunnel_link();
    assert!(!bound(old), "the old port is released");
    assert!(bound(new));
    assert!(a.ping(b.tun_ll, &a.tun), "ping over the new port");
}
