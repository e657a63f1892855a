use super::*;
use crate::{LinkError, Links, TunnelError, Tunnels};
use std::net::SocketAddrV6;
use tollway_core::WgPublicKey;

fn name(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

fn cfg(ifname: &str, peer: u8) -> WgConfig {
    WgConfig {
        ifname: name(ifname),
        private_key: [1; 32],
        listen_port: 40000,
        peer_key: WgPublicKey([peer; 32]),
        endpoint: Some(SocketAddrV6::new("fe80::2".parse().unwrap(), 40001, 0, 2)),
        keepalive_secs: 25,
    }
}

#[test]
fn ensure_creates_an_interface_that_links_can_configure() {
    let k = FakeKernel::new();
    let (mut t, mut l) = (k.tunnels(), k.links());
    t.ensure(&cfg("tw1", 9)).unwrap();
    let link = k.link(&name("tw1")).unwrap();
    assert!(link.is_tunnel && !link.up && link.mtu == 1420);
    l.ensure_address(&name("tw1"), "fe80::1".parse().unwrap(), 64).unwrap();
    l.set_up(&name("tw1"), Some(1400)).unwrap();
    let link = k.link(&name("tw1")).unwrap();
    assert!(link.up);
    assert_eq!(link.mtu, 1400);
    assert_eq!(link.addresses.len(), 1);
    assert_eq!(t.list("tw").unwrap(), vec![name("tw1")]);
    assert_eq!(l.index_of(&name("tw1")).unwrap(), Some(link.index));
}

#[test]
fn ensure_counts_calls_and_changes_and_a_new_peer_resets_stats() {
    let k = FakeKernel::new();
    let mut t = k.tunnels();
    t.ensure(&cfg("tw1", 9)).unwrap();
    t.ensure(&cfg("tw1", 9)).unwrap();
    let f = k.tunnel(&name("tw1")).unwrap();
    assert_eq!((f.ensure_calls, f.changes), (2, 1));

    k.set_handshake_age(&name("tw1"), Some(3));
    assert!(k.add_traffic(&name("tw1"), 100, 200));
    let s = t.stats(&name("tw1")).unwrap();
    assert_eq!(s, TunnelStats { last_handshake_secs: Some(3), rx_bytes: 100, tx_bytes: 200 });
    assert_eq!(k.link(&name("tw1")).unwrap().stats.tx_packets, 1);

    let mut moved = cfg("tw1", 9);
    moved.endpoint = None;
    t.ensure(&moved).unwrap();
    assert_eq!(t.stats(&name("tw1")).unwrap().last_handshake_secs, Some(3), "same peer keeps its session");
    t.ensure(&cfg("tw1", 8)).unwrap();
    assert_eq!(t.stats(&name("tw1")).unwrap(), TunnelStats::default(), "new peer starts over");
    assert_eq!(k.tunnel(&name("tw1")).unwrap().changes, 3);
}

#[test]
fn removing_a_tunnel_takes_its_routes_and_addresses() {
    let k = FakeKernel::new();
    let (mut t, mut l) = (k.tunnels(), k.links());
    k.add_link(&name("eth0"));
    t.ensure(&cfg("tw1", 9)).unwrap();
    let via_tunnel = Route6 { dst: "fd00::9".parse().unwrap(), prefix_len: 128, dev: name("tw1"), src: None };
    let via_eth = Route6 { dst: "fd00::8".parse().unwrap(), prefix_len: 128, dev: name("eth0"), src: None };
    l.ensure_route(&via_tunnel).unwrap();
    l.ensure_route(&via_eth).unwrap();
    t.remove(&name("tw1")).unwrap();
    t.remove(&name("tw1")).unwrap();
    assert_eq!(k.routes(), vec![via_eth.clone()]);
    assert!(k.link(&name("tw1")).is_none());
    assert!(matches!(t.stats(&name("tw1")), Err(TunnelError::Missing(_))));
    // Removing a physical interface through Tunnels does nothing.
    t.remove(&name("eth0")).unwrap();
    assert!(k.link(&name("eth0")).is_some());
}

#[test]
fn routes_replace_by_destination_and_remove_only_on_their_device() {
    let k = FakeKernel::new();
    let mut l = k.links();
    k.add_link(&name("a"));
    k.add_link(&name("b"));
    let r = |dev: &str, src: Option<&str>| Route6 {
        dst: "fd00::1".parse().unwrap(),
        prefix_len: 128,
        dev: name(dev),
        src: src.map(|s| s.parse().unwrap()),
    };
    l.ensure_route(&r("a", None)).unwrap();
    l.ensure_route(&r("b", Some("fd00::2"))).unwrap();
    assert_eq!(k.routes(), vec![r("b", Some("fd00::2"))]);
    l.remove_route(&r("a", None)).unwrap();
    assert_eq!(k.routes().len(), 1, "a route via another device is not removed");
    l.remove_route(&r("b", None)).unwrap();
    assert!(k.routes().is_empty());
    assert!(matches!(l.ensure_route(&r("zz", None)), Err(LinkError::NoSuchLink(_))));
}

#[test]
fn injected_failures_fire_the_given_number_of_times_on_the_given_interface() {
    let k = FakeKernel::new();
    let (mut t, mut l) = (k.tunnels(), k.links());
    k.fail_next(FakeOp::TunnelEnsure, Some(&name("tw1")));
    assert!(t.ensure(&cfg("tw2", 9)).is_ok(), "other interface unaffected");
    assert!(matches!(t.ensure(&cfg("tw1", 9)), Err(TunnelError::Configure { .. })));
    assert!(t.ensure(&cfg("tw1", 9)).is_ok(), "only once");

    k.fail_always(FakeOp::LinkSetUp, None);
    for _ in 0..3 {
        assert!(matches!(l.set_up(&name("tw1"), None), Err(LinkError::Netlink { .. })));
    }
    k.clear_failures();
    l.set_up(&name("tw1"), None).unwrap();

    k.fail_times(FakeOp::TunnelStats, None, 2);
    assert!(t.stats(&name("tw1")).is_err());
    assert!(t.stats(&name("tw1")).is_err());
    assert!(t.stats(&name("tw1")).is_ok());
    assert_eq!(k.count(FakeOp::TunnelStats), 3);
}

#[test]
fn an_interface_deleted_behind_the_drivers_back_is_recreated_by_ensure() {
    let k = FakeKernel::new();
    let mut t = k.tunnels();
    t.ensure(&cfg("tw1", 9)).unwrap();
    let before = k.link(&name("tw1")).unwrap().index;
    assert!(k.delete_link_externally(&name("tw1")));
    assert!(t.list("tw").unwrap().is_empty());
    t.ensure(&cfg("tw1", 9)).unwrap();
    assert_ne!(k.link(&name("tw1")).unwrap().index, before);
}

#[test]
fn ensure_refuses_a_name_taken_by_a_physical_interface() {
    let k = FakeKernel::new();
    k.add_link(&name("eth0"));
    assert!(matches!(k.tunnels().ensure(&cfg("eth0", 1)), Err(TunnelError::Create { .. })));
}

#[test]
fn addresses_are_idempotent_and_link_stats_are_injectable() {
    let k = FakeKernel::new();
    let mut l = k.links();
    k.add_link(&name("eth0"));
    l.ensure_address(&name("eth0"), "fe80::1".parse().unwrap(), 64).unwrap();
    l.ensure_address(&name("eth0"), "fe80::1".parse().unwrap(), 64).unwrap();
    assert_eq!(k.link(&name("eth0")).unwrap().addresses.len(), 1);
    assert!(matches!(l.ensure_address(&name("nope"), "fe80::1".parse().unwrap(), 64), Err(LinkError::NoSuchLink(_))));
    // Removed only with its own prefix length, idempotently.
    l.remove_address(&name("eth0"), "fe80::1".parse().unwrap(), 128).unwrap();
    assert_eq!(k.link(&name("eth0")).unwrap().addresses.len(), 1);
    l.remove_address(&name("eth0"), "fe80::1".parse().unwrap(), 64).unwrap();
    l.remove_address(&name("eth0"), "fe80::1".parse().unwrap(), 64).unwrap();
    l.remove_address(&name("nope"), "fe80::1".parse().unwrap(), 64).unwrap();
    assert!(k.link(&name("eth0")).unwrap().addresses.is_empty());
    let st = LinkStats { ifindex: 0, rx_bytes: 1, tx_bytes: 2, rx_packets: 3, tx_packets: 4 };
    k.set_link_stats(&name("eth0"), st);
    let index = l.index_of(&name("eth0")).unwrap().unwrap();
    assert_eq!(l.stats(&name("eth0")).unwrap(), Some(LinkStats { ifindex: index, ..st }));
    assert_eq!(l.stats(&name("nope")).unwrap(), None);
    l.delete(&name("eth0")).unwrap();
    l.delete(&name("eth0")).unwrap();
    assert!(l.list("").unwrap().is_empty());
}

#[test]
fn calls_are_recorded_in_order() {
    let k = FakeKernel::new();
    let (mut t, mut l) = (k.tunnels(), k.links());
    t.ensure(&cfg("tw1", 9)).unwrap();
    l.set_up(&name("tw1"), None).unwrap();
    let _ = t.list("tw");
    assert_eq!(
        k.calls(),
        vec![
            FakeCall { op: FakeOp::TunnelEnsure, target: "tw1".into() },
            FakeCall { op: FakeOp::LinkSetUp, target: "tw1".into() },
            FakeCall { op: FakeOp::TunnelList, target: "tw".into() },
        ]
    );
    k.clear_calls();
    assert!(k.calls().is_empty());
}

#[test]
fn standalone_fakes_and_trait_objects_work() {
    let mut boxed: Box<dyn Tunnels> = Box::new(FakeTunnels::new());
    boxed.ensure(&cfg("tw1", 1)).unwrap();
    assert_eq!(boxed.backend(), "fake");
    let mut links: Box<dyn Links> = Box::new(FakeLinks::new());
    assert_eq!(links.index_of(&name("tw1")).unwrap(), None);
}
