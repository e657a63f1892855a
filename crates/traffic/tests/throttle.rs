//! Enforcement over real userspace WireGuard tunnels: a throttled neighbor gets about its floor
//! rate in both directions while its control sessions stay fast; a cut-off neighbor gets
//! nothing but control sessions, and what it sends is not counted.

mod common;

use common::*;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;
use tollway_traffic::*;

const CTRL: u16 = 7000;
const FLOOR: BitRate = BitRate::kbit(64);
/// A control reply of 20 kB: 2.5 s of the floor rate, milliseconds in the control class.
const REPLY: usize = 20_000;

fn key(k: &str) -> NeighborKey {
    NeighborKey::new(k).unwrap()
}

#[test]
fn a_throttled_neighbor_gets_its_floor_both_ways_and_control_stays_fast() {
    if skip(
        "a_throttled_neighbor_gets_its_floor_both_ways_and_control_stays_fast",
        &["wireguard-go", "wg", "ping", "iperf3"],
    ) {
        return;
    }
    let _heavy = heavy();
    let mut lab = Lab::new("th");
    let (s, b) = (lab.netns("s"), lab.netns("b"));
    let t = lab.wg(&s, &b);
    let police = IngressPolicy::Police { bits_per_sec: FLOOR };
    let mut p = plan(CTRL, BitRate::mbit(20), &[("debtor", &t.a_if, FLOOR, FLOOR, police)]);
    // The test's control sessions and bulk run over the tunnel's IPv4 addresses: open their
    // ports there (the control port is otherwise admitted between link-local addresses only).
    p.admission.open_tcp = vec![CTRL, 5201];
    let mut fw = NftFirewall::new();
    let mut sh = TcShaper::new(&ifb_prefix("th")).unwrap();
    in_ns(&s, || fw.apply(&p)).unwrap();
    in_ns(&s, || sh.apply(&p)).unwrap();
    lab.iperf_server(&s, 5201);
    let ctl = control_server(&s, (t.a_ip, CTRL), REPLY);
    let server = t.a_ip.to_string();

    for (dir, reverse) in [("S→B (HTB class at the floor)", true), ("B→S (policed at S's ingress)", false)] {
        let t0 = std::time::Instant::now();
        let (bulk, control) = std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                // A small socket buffer: what the sender has buffered when the test ends
                // drains at the floor rate before iperf3 can exchange its results.
                let mut args = vec!["-c", server.as_str(), "-p", "5201", "-t", "6", "-w", "8K"];
                if reverse {
                    args.push("-R");
                }
                received_bps(&iperf(&b, &args))
            });
            // Let the bulk flow fill the throttled class (or the policer) first.
            std::thread::sleep(Duration::from_secs(3));
            let c = control_request(&b, (t.a_ip, CTRL), Duration::from_secs(10));
            (h.join().unwrap(), c)
        });
        let (got, took) = control.unwrap_or_else(|e| panic!("{dir}: control request failed: {e}"));
        eprintln!(
            "{dir}: bulk {:.1} kbit/s (floor {}), control request/response of {got} bytes in {} ms; {:.1} s",
            bulk / 1e3,
            FLOOR.bits_per_sec() / 1000,
            took.as_millis(),
            secs(t0)
        );
        assert!(bulk < 2.0 * FLOOR.bits_per_sec() as f64, "{dir}: {bulk:.0} bit/s is not near the floor");
        assert!(bulk > FLOOR.bits_per_sec() as f64 / 4.0, "{dir}: {bulk:.0} bit/s: the floor must still flow");
        assert_eq!(got, REPLY, "{dir}");
        assert!(took < Duration::from_millis(1500), "{dir}: control took {took:?}: throttled with the bulk?");
    }
    // The policer dropped, and what it dropped was not counted: the counter holds about what
    // the floor let through in 6 s (plus the control exchange and the first second's burst).
    let c = in_ns(&s, || fw.read_counters()).unwrap()[&key("debtor")];
    eprintln!("debtor's counter at S: {} bytes, {} packets", c.bytes, c.packets);
    assert!(c.bytes < 6 * 2 * FLOOR.bytes_per_sec() + 200_000, "{c:?}");

    stop_control_server(&s, (t.a_ip, CTRL), ctl);
    in_ns(&s, || sh.remove_all()).unwrap();
    in_ns(&s, || fw.remove_all()).unwrap();
    assert_clean(&s);
}

#[test]
fn a_cut_off_neighbor_keeps_only_its_control_sessions() {
    if skip("a_cut_off_neighbor_keeps_only_its_control_sessions", &["wireguard-go", "wg", "ping"]) {
        return;
    }
    let _heavy = heavy();
    let mut lab = Lab::new("co");
    let (s, b) = (lab.netns("s"), lab.netns("b"));
    let t = lab.wg(&s, &b);
    let open = IngressPolicy::Open;
    let cut = IngressPolicy::ControlOnly;
    let mut p_open = plan(CTRL, BitRate::mbit(20), &[("debtor", &t.a_if, FLOOR, FLOOR, open)]);
    let mut p_cut = plan(CTRL, BitRate::mbit(20), &[("debtor", &t.a_if, FLOOR, FLOOR, cut)]);
    // Control sessions over the tunnel's IPv4 addresses too (see above).
    p_open.admission.open_tcp = vec![CTRL];
    p_cut.admission.open_tcp = vec![CTRL];
    let mut fw = NftFirewall::new();
    let mut sh = TcShaper::new(&ifb_prefix("co")).unwrap();
    in_ns(&s, || fw.apply(&p_open)).unwrap();
    in_ns(&s, || sh.apply(&p_open)).unwrap();
    let ping = |from: &str, to: std::net::Ipv4Addr| {
        sh_ok(&ns_exec(from, &["ping", "-q", "-c", "2", "-i", "0.2", "-W", "1", &to.to_string()]))
    };
    assert!(ping(&b, t.a_ip) && ping(&s, t.b_ip), "open: data flows");

    in_ns(&s, || fw.apply(&p_cut)).unwrap();
    in_ns(&s, || sh.apply(&p_cut)).unwrap();
    let before = in_ns(&s, || fw.read_counters()).unwrap()[&key("debtor")];
    assert!(!ping(&b, t.a_ip), "cut off: the neighbor's data is dropped");
    assert!(!ping(&s, t.b_ip), "cut off: our data to it is dropped");
    let after = in_ns(&s, || fw.read_counters()).unwrap()[&key("debtor")];
    assert_eq!(after, before, "dropped traffic is not counted");
    // A port other than the control port: no connection.
    let other = control_request(&b, (t.a_ip, CTRL + 1), Duration::from_secs(1));
    assert!(other.is_err(), "{other:?}");

    // Control sessions in both directions: the neighbor's to us, and ours to it.
    let at_s = control_server(&s, (t.a_ip, CTRL), REPLY);
    let at_b = control_server(&b, (t.b_ip, CTRL), REPLY);
    let (n, took) = control_request(&b, (t.a_ip, CTRL), Duration::from_secs(5)).expect("B→S control");
    assert_eq!(n, REPLY);
    let (n2, took2) = control_request(&s, (t.b_ip, CTRL), Duration::from_secs(5)).expect("S→B control");
    assert_eq!(n2, REPLY);
    eprintln!("cut off: control B→S in {} ms, S→B in {} ms", took.as_millis(), took2.as_millis());
    let counted = in_ns(&s, || fw.read_counters()).unwrap()[&key("debtor")];
    assert!(counted.bytes > after.bytes, "control traffic is counted");
    stop_control_server(&s, (t.a_ip, CTRL), at_s);
    stop_control_server(&b, (t.b_ip, CTRL), at_b);

    // The same over IPv6 link-local addresses on the tunnel (what neighbors' control sessions
    // use): `fib daddr type local` recognises them as ours.
    let (ll_s, ll_b): (Ipv6Addr, Ipv6Addr) = ("fe80::5:1".parse().unwrap(), "fe80::5:2".parse().unwrap());
    must(&["ip", "-n", &s, "addr", "add", "fe80::5:1/64", "dev", t.a_if.as_str()]);
    must(&["ip", "-n", &b, "addr", "add", "fe80::5:2/64", "dev", t.b_if.as_str()]);
    let index = |ns: &str, i: &tollway_core::IfName| in_ns(ns, || link_counters(i)).unwrap().unwrap().ifindex;
    let at_s6 = SocketAddrV6::new(ll_s, CTRL, 0, index(&s, &t.a_if));
    let at_b6 = SocketAddrV6::new(ll_b, CTRL, 0, index(&b, &t.b_if));
    let srv = control_server(&s, at_s6, REPLY);
    let from_b = SocketAddrV6::new(ll_s, CTRL, 0, index(&b, &t.b_if));
    assert_eq!(control_request(&b, from_b, Duration::from_secs(5)).expect("B→S control over IPv6").0, REPLY);
    let other = SocketAddrV6::new(ll_s, CTRL + 1, 0, index(&b, &t.b_if));
    assert!(control_request(&b, other, Duration::from_secs(1)).is_err(), "other ports stay cut off over IPv6");
    stop_control_server(&s, at_s6, srv);
    let srv = control_server(&b, at_b6, REPLY);
    let from_s = SocketAddrV6::new(ll_b, CTRL, 0, index(&s, &t.a_if));
    assert_eq!(control_request(&s, from_s, Duration::from_secs(5)).expect("S→B control over IPv6").0, REPLY);
    stop_control_server(&b, at_b6, srv);

    // Lifting the cut-off restores data.
    in_ns(&s, || fw.apply(&p_open)).unwrap();
    assert!(ping(&b, t.a_ip) && ping(&s, t.b_ip), "reopened: data flows again");

    in_ns(&s, || sh.remove_all()).unwrap();
    in_ns(&s, || fw.remove_all()).unwrap();
    assert_clean(&s);
}

fn sh_ok(args: &[&str]) -> bool {
    sh(args).status.success()
}
