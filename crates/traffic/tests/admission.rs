//! What neighbors may send us, against the real kernel: a router namespace R with the firewall
//! applied, neighbors behind real userspace WireGuard tunnels (wireguard-go), and veths standing
//! in for a LAN and an uplink. Each rule is exercised with a packet that must pass (and is
//! billed, exactly) and one that must not (dropped, counted as spoofed or unsolicited, and not
//! billed).

mod common;

use common::*;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::Duration;
use tollway_core::IfName;
use tollway_traffic::*;

const CTRL: u16 = 7000;
/// An IPv4 echo request of ping's default size: 56 bytes of data, 8 of ICMP, 20 of IP.
const PING4: u64 = 84;
/// The same over IPv6 (40 bytes of header).
const PING6: u64 = 104;

fn key(k: &str) -> NeighborKey {
    NeighborKey::new(k).unwrap()
}

/// A namespace that routes (forwarding on before any interface exists, so that no router
/// solicitation or other chatter crosses the tunnels during the test).
fn router_ns(lab: &mut Lab, name: &str) -> String {
    let ns = lab.netns(name);
    for s in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1"] {
        must(&ns_exec(&ns, &["sysctl", "-qw", s]));
    }
    ns
}

fn ip(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    must(&v);
}

fn ifindex(ns: &str, i: &IfName) -> u32 {
    in_ns(ns, || link_counters(i)).unwrap().expect("interface exists").ifindex
}

/// Echo replies received from `count` echo requests `ping` sends with `args`.
fn ping(ns: &str, count: u32, args: &[&str]) -> u32 {
    let c = count.to_string();
    let mut v = ns_exec(ns, &["ping", "-n", "-q", "-c", &c, "-i", "0.05", "-W", "1"]);
    v.extend_from_slice(args);
    let out = String::from_utf8_lossy(&sh(&v).stdout).into_owned();
    let received = out
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received").and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("ping output: {out}"));
    received
}

/// The neighbor's counters at R, read through the firewall.
struct Meter<'a> {
    ns: &'a str,
    fw: NftFirewall,
}

impl Meter<'_> {
    fn read(&mut self, k: &str) -> CounterReading {
        let fw = &mut self.fw;
        in_ns(self.ns, || fw.read_counters()).unwrap()[&key(k)]
    }

    /// What `f` changed in the neighbor's counters: (billed bytes, spoofed packets, unsolicited
    /// packets).
    fn delta<T>(&mut self, k: &str, f: impl FnOnce() -> T) -> ((u64, u64, u64), T) {
        let before = self.read(k);
        let t = f();
        let after = self.read(k);
        assert_eq!(after.handle, before.handle);
        let d = (
            after.bytes - before.bytes,
            after.spoofed.packets - before.spoofed.packets,
            after.unsolicited.packets - before.unsolicited.packets,
        );
        (d, t)
    }
}

/// A TCP exchange from `ns` to `addr`: Ok with the reply's length, or why it failed.
fn tcp(ns: &str, addr: impl Into<SocketAddr>) -> Result<usize, String> {
    control_request(ns, addr, Duration::from_secs(2)).map(|(n, _)| n)
}

/// A refused connection times out: the firewall dropped the SYN (a closed port without a
/// firewall answers with a reset: "connection refused").
fn assert_dropped(r: Result<usize, String>, what: &str) {
    let e = r.expect_err(what);
    assert!(e.contains("timed out"), "{what}: expected a timeout, got {e}");
}

fn udp_socket(ns: &str, bind: SocketAddr) -> UdpSocket {
    in_ns(ns, || {
        let s = UdpSocket::bind(bind).expect("bind udp");
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        s
    })
}

/// Datagrams waiting on `s` (each read until the timeout).
fn received(s: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match s.recv(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return out,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn spoofed_sources_are_dropped_and_counted_and_never_billed() {
    if skip("spoofed_sources_are_dropped_and_counted_and_never_billed", &["wireguard-go", "wg", "ping"]) {
        return;
    }
    let mut lab = Lab::new("as");
    let (r, n1, n2) = (router_ns(&mut lab, "r"), router_ns(&mut lab, "n1"), router_ns(&mut lab, "n2"));
    let (t1, t2) = (lab.wg(&r, &n1), lab.wg(&r, &n2));
    let cap = BitRate::mbit(100);
    let open = IngressPolicy::Open;
    let p = plan(CTRL, cap, &[("n1", &t1.a_if, cap, cap, open), ("n2", &t2.a_if, cap, cap, open)]);
    let mut m = Meter { ns: &r, fw: NftFirewall::new() };
    in_ns(&r, || m.fw.apply(&p)).unwrap();
    // R's mesh address and a LAN (a veth pair inside R); n1's own address, one beyond the other
    // neighbor, and three it has no right to: R's own, R's LAN's, and one R routes nowhere.
    // Everything n1 sends goes to R.
    ip(&r, &["addr", "add", "fd00::aa/128", "dev", "lo"]);
    ip(&r, &["addr", "add", "fd00::4/128", "dev", "lo"]);
    ip(&r, &["link", "add", "lan0", "type", "veth", "peer", "name", "lan1"]);
    ip(&r, &["link", "set", "lan0", "up"]);
    ip(&r, &["link", "set", "lan1", "up"]);
    ip(&r, &["route", "add", "fd00::5/128", "dev", "lan0"]);
    ip(&r, &["route", "add", "fd00::1/128", "dev", t1.a_if.as_str()]);
    ip(&r, &["route", "add", "fd00::2/128", "dev", t2.a_if.as_str()]);
    for a in ["fd00::1/128", "fd00::2/128", "fd00::3/128", "fd00::4/128", "fd00::5/128", "10.99.0.1/32"] {
        ip(&n1, &["addr", "add", a, "dev", "lo"]);
    }
    ip(&n1, &["-6", "route", "add", "default", "dev", t1.b_if.as_str()]);
    ip(&n1, &["route", "add", "default", "dev", t1.b_if.as_str()]);
    let r4 = t1.a_ip.to_string();

    // Its own addresses: the tunnel's, and its mesh address (routed to it): pass, billed.
    let (d, got) = m.delta("n1", || ping(&n1, 3, &[&r4]));
    assert_eq!((got, d), (3, (3 * PING4, 0, 0)), "n1's tunnel address");
    let (d, got) = m.delta("n1", || ping(&n1, 3, &["-I", "fd00::1", "fd00::aa"]));
    assert_eq!((got, d), (3, (3 * PING6, 0, 0)), "n1's mesh address");

    // An address beyond the other neighbor passes: on a mesh the two directions of a path may
    // cross different neighbors (the replies go back through n2).
    let (d, _) = m.delta("n1", || ping(&n1, 3, &["-I", "fd00::2", "fd00::aa"]));
    assert_eq!(d, (3 * PING6, 0, 0), "an address routed through another tunnel");

    // R's own address, its LAN's, one routed nowhere, an IPv4 one routed nowhere: dropped
    // before anything else, counted per packet, not billed, not seen by n2's counters.
    let spoofed = [("fd00::3", "fd00::aa"), ("fd00::4", "fd00::aa"), ("fd00::5", "fd00::aa"), ("10.99.0.1", &r4)];
    for (src, dst) in spoofed {
        let n2_before = m.read("n2");
        let (d, got) = m.delta("n1", || ping(&n1, 3, &["-I", src, dst]));
        assert_eq!((got, d), (0, (0, 3, 0)), "spoofed source {src}");
        let n2_after = m.read("n2");
        assert_eq!((n2_after.bytes, n2_after.spoofed), (n2_before.bytes, n2_before.spoofed), "{src}");
    }
    let c = m.read("n1");
    assert_eq!(c.spoofed.bytes, 9 * PING6 + 3 * PING4, "spoofed bytes: {c:?}");

    // Routing learns prefixes behind n1, over IPv6 and as IPv4 routes with an IPv6 link-local
    // next hop (what babeld installs): the same sources now pass.
    must(&ns_exec(&r, &["ip", "addr", "add", "fe80::1:1/64", "dev", t1.a_if.as_str()]));
    must(&ns_exec(&n1, &["ip", "addr", "add", "fe80::1:2/64", "dev", t1.b_if.as_str()]));
    ip(&r, &["route", "add", "fd00::3/128", "dev", t1.a_if.as_str()]);
    ip(&r, &["route", "add", "10.99.0.0/24", "via", "inet6", "fe80::1:2", "dev", t1.a_if.as_str()]);
    let (d, got) = m.delta("n1", || ping(&n1, 3, &["-I", "fd00::3", "fd00::aa"]));
    assert_eq!((got, d), (3, (3 * PING6, 0, 0)), "a prefix routed behind n1");
    let (d, got) = m.delta("n1", || ping(&n1, 3, &["-I", "10.99.0.1", &r4]));
    assert_eq!((got, d), (3, (3 * PING4, 0, 0)), "an IPv4 prefix routed via n1's link-local address");
    // Still spoofed: the address on R's LAN.
    let (d, _) = m.delta("n1", || ping(&n1, 2, &["-I", "fd00::5", "fd00::aa"]));
    assert_eq!(d, (0, 2, 0));

    in_ns(&r, || m.fw.remove_all()).unwrap();
    assert_clean(&r);
}

#[test]
fn traffic_to_the_router_passes_only_when_solicited_or_admitted() {
    if skip("traffic_to_the_router_passes_only_when_solicited_or_admitted", &["wireguard-go", "wg", "ping"]) {
        return;
    }
    let mut lab = Lab::new("al");
    let (r, n1) = (router_ns(&mut lab, "r"), router_ns(&mut lab, "n1"));
    let t1 = lab.wg(&r, &n1);
    let cap = BitRate::mbit(100);
    let mut p = plan(CTRL, cap, &[("n1", &t1.a_if, cap, cap, IngressPolicy::Open)]);
    p.admission.open_tcp = vec![8080];
    let mut m = Meter { ns: &r, fw: NftFirewall::new() };
    in_ns(&r, || m.fw.apply(&p)).unwrap();
    let (ll_r, ll_n): (Ipv6Addr, Ipv6Addr) = ("fe80::1:1".parse().unwrap(), "fe80::1:2".parse().unwrap());
    must(&ns_exec(&r, &["ip", "addr", "add", "fe80::1:1/64", "dev", t1.a_if.as_str()]));
    must(&ns_exec(&n1, &["ip", "addr", "add", "fe80::1:2/64", "dev", t1.b_if.as_str()]));
    let (ix_r, ix_n) = (ifindex(&r, &t1.a_if), ifindex(&n1, &t1.b_if));
    // R at its link-local address, as n1 reaches it.
    let r_ll = |port| SocketAddrV6::new(ll_r, port, 0, ix_n);

    // A closed port: the SYN is dropped (no reset), counted, not billed.
    let (d, r1) = m.delta("n1", || tcp(&n1, (t1.a_ip, 9)));
    assert_dropped(r1, "closed port over IPv4");
    assert_eq!((d.0, d.1), (0, 0));
    assert!(d.2 >= 1, "the SYN (and its retransmissions) counted as unsolicited: {d:?}");
    let (d, r1) = m.delta("n1", || tcp(&n1, r_ll(9)));
    assert_dropped(r1, "closed port over IPv6 link-local");
    assert!(d.0 == 0 && d.2 >= 1, "{d:?}");

    // The control port, between link-local addresses: passes and is billed.
    let srv = control_server(&r, SocketAddrV6::new(ll_r, CTRL, 0, ix_r), 1000);
    let (d, got) = m.delta("n1", || tcp(&n1, r_ll(CTRL)));
    assert_eq!(got, Ok(1000), "control session over link-local");
    assert!(d.0 > 0 && d.2 == 0, "{d:?}");
    stop_control_server(&r, SocketAddrV6::new(ll_r, CTRL, 0, ix_r), srv);
    // Not on any other address (nothing opened it there).
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, CTRL));
    let srv = control_server(&r, any, 1000);
    let (d, r1) = m.delta("n1", || tcp(&n1, (t1.a_ip, CTRL)));
    assert_dropped(r1, "the control port over IPv4");
    assert!(d.0 == 0 && d.2 >= 1, "{d:?}");
    stop_control_server(&r, (Ipv4Addr::LOCALHOST, CTRL), srv);

    // A port the operator opened, on any of R's addresses.
    let srv = control_server(&r, (Ipv4Addr::UNSPECIFIED, 8080), 1000);
    let (d, got) = m.delta("n1", || tcp(&n1, (t1.a_ip, 8080)));
    assert_eq!(got, Ok(1000), "an opened port");
    assert!(d.0 > 0 && d.2 == 0, "{d:?}");
    stop_control_server(&r, (Ipv4Addr::LOCALHOST, 8080), srv);

    // The reply to a connection R started to a port n1 did not open to us.
    let srv = control_server(&n1, (t1.b_ip, 7777), 5000);
    let (d, got) = m.delta("n1", || tcp(&r, (t1.b_ip, 7777)));
    assert_eq!(got, Ok(5000), "a connection we started");
    assert!(d.0 > 5000 && d.2 == 0, "the reply is billed: {d:?}");
    stop_control_server(&n1, (t1.b_ip, 7777), srv);

    // Babel: UDP 6696 from n1's link-local address to R's, and to ff02::1:6; not over IPv4,
    // and no other UDP port.
    let babel = udp_socket(&r, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 6696)));
    babel.join_multicast_v6(&"ff02::1:6".parse().unwrap(), ix_r).unwrap();
    let other = udp_socket(&r, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 6697)));
    let sender = udp_socket(&n1, SocketAddr::V6(SocketAddrV6::new(ll_n, 0, 0, ix_n)));
    let sender4 = udp_socket(&n1, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let (d, _) = m.delta("n1", || {
        sender.send_to(b"unicast", SocketAddr::V6(r_ll(6696))).unwrap();
        let group = SocketAddrV6::new("ff02::1:6".parse().unwrap(), 6696, 0, ix_n);
        sender.send_to(b"multicast", SocketAddr::V6(group)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    assert_eq!(received(&babel), [b"unicast".to_vec(), b"multicast".to_vec()]);
    assert_eq!(d, (2 * 48 + 7 + 9, 0, 0), "two datagrams billed (IPv6 and UDP headers: 48 bytes each)");
    let (d, _) = m.delta("n1", || {
        sender4.send_to(b"babel over ipv4", (t1.a_ip, 6696)).unwrap();
        sender.send_to(b"another port", SocketAddr::V6(r_ll(6697))).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    assert!(received(&babel).is_empty() && received(&other).is_empty());
    assert_eq!(d, (0, 0, 2), "both dropped as unsolicited");

    // Pings: a few pass; a flood beyond the limit (10/s, burst 20) is cut, every request
    // either answered and billed or dropped and counted.
    let (d, got) = m.delta("n1", || ping(&n1, 3, &[&t1.a_ip.to_string()]));
    assert_eq!((got, d), (3, (3 * PING4, 0, 0)));
    let flood = ["-i", "0.002", "-W", "1"];
    let target = t1.a_ip.to_string();
    let (d, got) = m.delta("n1", || {
        let mut args = flood.to_vec();
        args.push(&target);
        ping(&n1, 100, &args)
    });
    eprintln!("ping flood: {got} of 100 answered; counters {d:?}");
    assert!((15..=40).contains(&got), "the limit lets the burst and about 10/s through: {got}");
    assert_eq!(d, (got as u64 * PING4, 0, 100 - got as u64));

    in_ns(&r, || m.fw.remove_all()).unwrap();
    assert_clean(&r);
}

#[test]
fn forwarding_passes_into_tunnels_and_uplinks_and_only_replies_reach_the_lan() {
    if skip(
        "forwarding_passes_into_tunnels_and_uplinks_and_only_replies_reach_the_lan",
        &["wireguard-go", "wg", "ping"],
    ) {
        return;
    }
    let mut lab = Lab::new("af");
    let [r, n1, n2, lan, up] = ["r", "n1", "n2", "lan", "up"].map(|n| router_ns(&mut lab, n));
    let (t1, t2) = (lab.wg(&r, &n1), lab.wg(&r, &n2));
    let (l_lan, l_up) = (lab.veth(&r, &lan), lab.veth(&r, &up));
    for (ns, t) in [(&n1, &t1), (&n2, &t2)] {
        ip(ns, &["route", "add", "default", "dev", t.b_if.as_str()]);
    }
    ip(&lan, &["route", "add", "default", "via", &l_lan.a_ip.to_string()]);
    ip(&up, &["route", "add", "default", "via", &l_up.a_ip.to_string()]);
    let cap = BitRate::mbit(100);
    let open = IngressPolicy::Open;
    let mut p = plan(CTRL, cap, &[("n1", &t1.a_if, cap, cap, open), ("n2", &t2.a_if, cap, cap, open)]);
    p.admission.uplinks = vec![l_up.a_if.clone()];
    p.admission.lans = vec![l_lan.a_if.clone()];
    let mut m = Meter { ns: &r, fw: NftFirewall::new() };
    in_ns(&r, || m.fw.apply(&p)).unwrap();

    // Transit, tunnel to tunnel: n1 reaches n2, new connections included; each side's traffic
    // is billed to it.
    let (d1, got) = m.delta("n1", || ping(&n1, 3, &[&t2.b_ip.to_string()]));
    assert_eq!((got, d1), (3, (3 * PING4, 0, 0)), "n1 → n2 through R");
    assert_eq!(m.read("n2").bytes, 3 * PING4, "n2's replies are billed to n2");
    let srv = control_server(&n2, (t2.b_ip, 7777), 1000);
    assert_eq!(tcp(&n1, (t2.b_ip, 7777)), Ok(1000), "a new connection in transit");
    stop_control_server(&n2, (t2.b_ip, 7777), srv);

    // Out of the uplink: new connections pass.
    let srv = control_server(&up, (l_up.b_ip, 7777), 1000);
    let (d, got) = m.delta("n1", || tcp(&n1, (l_up.b_ip, 7777)));
    assert_eq!(got, Ok(1000), "n1 → the uplink");
    assert!(d.0 > 0 && d.2 == 0, "{d:?}");
    stop_control_server(&up, (l_up.b_ip, 7777), srv);

    // Into the LAN: a new connection is dropped and counted; not billed.
    let srv = control_server(&lan, (l_lan.b_ip, 7777), 1000);
    let (d, r1) = m.delta("n1", || tcp(&n1, (l_lan.b_ip, 7777)));
    assert_dropped(r1, "n1 → the LAN, a new connection");
    assert!(d.0 == 0 && d.2 >= 1, "{d:?}");
    let (d, got) = m.delta("n1", || ping(&n1, 2, &[&l_lan.b_ip.to_string()]));
    assert_eq!((got, d), (0, (0, 0, 2)), "pings into the LAN");
    // But a connection the LAN host started to n1 works: n1's replies pass, billed.
    let n1_srv = control_server(&n1, (t1.b_ip, 7777), 5000);
    let (d, got) = m.delta("n1", || tcp(&lan, (t1.b_ip, 7777)));
    assert_eq!(got, Ok(5000), "the LAN → n1");
    assert!(d.0 > 5000 && d.2 == 0, "{d:?}");
    stop_control_server(&n1, (t1.b_ip, 7777), n1_srv);

    // The operator opens the LAN: n1's new connections reach it.
    p.admission.lans_open = true;
    in_ns(&r, || m.fw.apply(&p)).unwrap();
    let (d, got) = m.delta("n1", || tcp(&n1, (l_lan.b_ip, 7777)));
    assert_eq!(got, Ok(1000), "n1 → an open LAN");
    assert!(d.0 > 0 && d.2 == 0, "{d:?}");
    stop_control_server(&lan, (l_lan.b_ip, 7777), srv);

    // An interface that is neither a tunnel, an uplink nor a LAN (the uplink, unmarked): only
    // replies.
    p.admission.uplinks.clear();
    in_ns(&r, || m.fw.apply(&p)).unwrap();
    let srv = control_server(&up, (l_up.b_ip, 7777), 1000);
    assert_dropped(tcp(&n1, (l_up.b_ip, 7777)), "n1 → an unmarked interface");
    stop_control_server(&up, (l_up.b_ip, 7777), srv);

    in_ns(&r, || m.fw.remove_all()).unwrap();
    assert_clean(&r);
}

#[test]
fn a_tunnel_of_ours_not_yet_planned_gets_only_control_pings_and_replies() {
    if skip("a_tunnel_of_ours_not_yet_planned_gets_only_control_pings_and_replies", &["wireguard-go", "wg", "ping"]) {
        return;
    }
    let mut lab = Lab::new("au");
    let (r, n1) = (router_ns(&mut lab, "r"), router_ns(&mut lab, "n1"));
    let t1 = lab.wg(&r, &n1);
    must(&ns_exec(&r, &["ip", "addr", "add", "fe80::1:1/64", "dev", t1.a_if.as_str()]));
    must(&ns_exec(&n1, &["ip", "addr", "add", "fe80::1:2/64", "dev", t1.b_if.as_str()]));
    let (ix_r, ix_n) = (ifindex(&r, &t1.a_if), ifindex(&n1, &t1.b_if));
    let ll_r: Ipv6Addr = "fe80::1:1".parse().unwrap();
    // No neighbor in the plan yet, but R's tunnels are named with this prefix.
    let cap = BitRate::mbit(100);
    let mut p = plan(CTRL, cap, &[]);
    p.admission.tunnel_prefix = Some(t1.a_if.as_str().to_string());
    p.admission.open_tcp = vec![8080];
    let mut fw = NftFirewall::new();
    in_ns(&r, || fw.apply(&p)).unwrap();

    let opened = control_server(&r, (Ipv4Addr::UNSPECIFIED, 8080), 1000);
    assert_dropped(tcp(&n1, (t1.a_ip, 8080)), "an opened port, from an unplanned tunnel");
    assert_eq!(ping(&n1, 2, &[&t1.a_ip.to_string()]), 2, "pings pass");
    let srv = control_server(&r, SocketAddrV6::new(ll_r, CTRL, 0, ix_r), 1000);
    assert_eq!(tcp(&n1, SocketAddrV6::new(ll_r, CTRL, 0, ix_n)), Ok(1000), "its control session passes");
    stop_control_server(&r, SocketAddrV6::new(ll_r, CTRL, 0, ix_r), srv);
    let srv = control_server(&n1, (t1.b_ip, 7777), 1000);
    assert_eq!(tcp(&r, (t1.b_ip, 7777)), Ok(1000), "replies to what we send it pass");
    stop_control_server(&n1, (t1.b_ip, 7777), srv);

    // Once the neighbor is in the plan it gets the usual admission, and its counters.
    p.groups[0].neighbors =
        plan(CTRL, cap, &[("n1", &t1.a_if, cap, cap, IngressPolicy::Open)]).groups[0].neighbors.clone();
    in_ns(&r, || fw.apply(&p)).unwrap();
    assert_eq!(tcp(&n1, (t1.a_ip, 8080)), Ok(1000), "the opened port");
    stop_control_server(&r, (Ipv4Addr::LOCALHOST, 8080), opened);
    let c = in_ns(&r, || fw.read_counters()).unwrap()[&key("n1")];
    assert!(c.bytes > 0 && c.unsolicited.packets == 0, "its side of the connection is billed: {c:?}");

    in_ns(&r, || fw.remove_all()).unwrap();
    assert_clean(&r);
}
