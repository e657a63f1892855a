//! Proportional, work-conserving shares over real userspace WireGuard tunnels: a seller S with
//! a 20 Mbit/s capacity and two buyers bidding 3:1 (rates 15 and 5 Mbit/s, ceilings 20).
//! Downloading at once, they get 3:1; alone, one gets (nearly) the whole capacity.

mod common;

use common::*;
use std::net::Ipv4Addr;
use tollway_traffic::*;

/// Buyer `ns` downloads from the iperf3 server at `ip:port` on the seller for `secs` seconds
/// (the first one, TCP's ramp-up, not counted); the rate it received, bit/s.
fn download(ns: &str, ip: Ipv4Addr, port: u16, secs: u32) -> f64 {
    let rep = iperf(ns, &["-c", &ip.to_string(), "-p", &port.to_string(), "-R", "-t", &secs.to_string(), "-O", "1"]);
    received_bps(&rep)
}

#[test]
fn competing_buyers_share_in_proportion_to_their_rates_and_one_alone_gets_it_all() {
    if skip(
        "competing_buyers_share_in_proportion_to_their_rates_and_one_alone_gets_it_all",
        &["wireguard-go", "wg", "ping", "iperf3"],
    ) {
        return;
    }
    let _heavy = heavy();
    let mut lab = Lab::new("sh");
    let (s, b1, b2) = (lab.netns("s"), lab.netns("b1"), lab.netns("b2"));
    let (t1, t2) = (lab.wg(&s, &b1), lab.wg(&s, &b2));
    let cap = BitRate::mbit(20);
    let open = IngressPolicy::Open;
    let mut p = plan(
        7000,
        cap,
        &[("buyer1", &t1.a_if, BitRate::mbit(15), cap, open), ("buyer2", &t2.a_if, BitRate::mbit(5), cap, open)],
    );
    p.admission.open_tcp = vec![5201, 5202];
    let mut fw = NftFirewall::new();
    let mut sh = TcShaper::new(&ifb_prefix("sh")).unwrap();
    in_ns(&s, || fw.apply(&p)).unwrap();
    in_ns(&s, || sh.apply(&p)).unwrap();
    lab.iperf_server(&s, 5201);
    lab.iperf_server(&s, 5202);

    let (r1, r2) = std::thread::scope(|sc| {
        let h1 = sc.spawn(|| download(&b1, t1.a_ip, 5201, 7));
        let h2 = sc.spawn(|| download(&b2, t2.a_ip, 5202, 7));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    let ratio = r1 / r2;
    eprintln!(
        "together: buyer1 {:.2} Mbit/s, buyer2 {:.2} Mbit/s, ratio {ratio:.3} (want 3), sum {:.2} of 20",
        r1 / 1e6,
        r2 / 1e6,
        (r1 + r2) / 1e6
    );
    assert!((2.7..=3.3).contains(&ratio), "ratio {ratio:.3} is not 3 ± 10 %");
    assert!(r1 + r2 >= 0.9 * 20e6, "together they use the capacity: {:.2} Mbit/s", (r1 + r2) / 1e6);

    let alone = download(&b2, t2.a_ip, 5202, 5);
    eprintln!("alone: buyer2 (rate 5 of 20) {:.2} Mbit/s", alone / 1e6);
    assert!(alone >= 0.9 * 20e6, "a buyer alone gets at least 90 % of the capacity: {:.2} Mbit/s", alone / 1e6);
    assert!(alone <= 1.05 * 20e6, "but no more than the capacity: {:.2} Mbit/s", alone / 1e6);

    in_ns(&s, || sh.remove_all()).unwrap();
    in_ns(&s, || fw.remove_all()).unwrap();
    assert_clean(&s);
}
