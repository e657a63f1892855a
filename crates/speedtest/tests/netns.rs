//! Speed tests across a real kernel path: two network namespaces, a veth shaped with tc HTB,
//! iperf3 over the same path for comparison. Run under the host-wide lock:
//! `flock /tmp/tollway-netns.lock cargo test --release -p tollway-speedtest --test netns`

mod common;

use common::*;
use std::net::IpAddr;
use tollway_speedtest::ServerOptions;

#[test]
fn goodput_on_a_shaped_path_matches_the_shaping_and_iperf3() {
    if skip("goodput_on_a_shaped_path_matches_the_shaping_and_iperf3", &["iperf3", "ping"]) {
        return;
    }
    let mut path = Path::new("g");
    path.shape(Some(20));
    let server = NsServer::start(&path.b, IpAddr::V4(path.b_ip), ServerOptions::default());
    path.iperf_server(5201);
    let v = speedtest(&path.a, &server, 8, 8);
    let m = v.measurement();
    let (iperf_up, _, _) = path.iperf(5201, 8, false);
    let (iperf_down, _, _) = path.iperf(5201, 8, true);
    eprintln!(
        "20 Mbit/s HTB: speedtest up {:.2} down {:.2} Mbit/s; iperf3 up {:.2} down {:.2} Mbit/s; rtt idle {} µs loaded {} µs; retrans up {} down {} ppm",
        m.up_bps() / 1e6,
        m.down_bps() / 1e6,
        iperf_up / 1e6,
        iperf_down / 1e6,
        m.rtt_idle_us,
        m.rtt_loaded_us,
        m.up_loss_ppm,
        m.down_loss_ppm
    );
    for (dir, got, iperf) in [("up", m.up_bps(), iperf_up), ("down", m.down_bps(), iperf_down)] {
        // Within 10 % of the shaped rate (TCP/IP and Ethernet headers take ~4.5 % of it) and of
        // what iperf3 measured over the same path.
        assert!((got / 20e6 - 1.0).abs() < 0.10, "{dir}: {:.2} Mbit/s on a 20 Mbit/s path", got / 1e6);
        assert!((got / iperf - 1.0).abs() < 0.10, "{dir}: {:.2} Mbit/s, iperf3 {:.2}", got / 1e6, iperf / 1e6);
    }
    // A loaded 20 Mbit/s HTB queue adds delay: the loaded RTT is above the idle one.
    assert!(m.rtt_idle_us > 0 && m.rtt_loaded_us > m.rtt_idle_us, "{m:?}");
}
