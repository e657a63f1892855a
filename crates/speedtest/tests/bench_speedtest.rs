//! Speed-test accuracy against iperf3 and ping over the same namespace path. Not run by
//! `cargo test`; run under the host-wide lock with
//! `flock /tmp/tollway-netns.lock cargo test --release -p tollway-speedtest --test bench_speedtest -- --ignored --nocapture --test-threads=1`
//! and see BENCHMARKS.md ("Speed tests").

mod common;

use common::*;
use std::net::IpAddr;
use tollway_speedtest::ServerOptions;

const SECS: u16 = 8;
const RUNS: usize = 3;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}–{hi:.2}")
}

/// Goodput each way, speed test vs iperf3, at several shaped rates and unshaped; runs
/// interleaved so that both see the same machine load.
#[test]
#[ignore]
fn bench_goodput_vs_iperf3() {
    if skip("bench_goodput_vs_iperf3", &["iperf3", "ping"]) {
        return;
    }
    let mut path = Path::new("bg");
    let unlimited = ServerOptions { max_rate_bps: None, max_secs: 60, tests_per_minute: 60, ..Default::default() };
    let server = NsServer::start(&path.b, IpAddr::V4(path.b_ip), unlimited);
    path.iperf_server(5201);
    for rate in [Some(10), Some(50), Some(200), None] {
        path.shape(rate);
        let label = rate.map(|r| format!("{r} Mbit/s HTB")).unwrap_or_else(|| "unshaped veth".into());
        let (mut st_up, mut st_down, mut ip_up, mut ip_down) = (vec![], vec![], vec![], vec![]);
        for run in 0..RUNS {
            let v = speedtest(&path.a, &server, SECS, SECS);
            let m = v.measurement();
            let (iu, _, _) = path.iperf(5201, SECS as u32, false);
            let (id, _, _) = path.iperf(5201, SECS as u32, true);
            println!(
                "BENCH goodput {label} run {run}: speedtest up {:.2} down {:.2} Mbit/s | iperf3 up {:.2} down {:.2} Mbit/s | rtt idle {:.3} ms loaded {:.3} ms | retrans up {} down {} ppm",
                m.up_bps() / 1e6,
                m.down_bps() / 1e6,
                iu / 1e6,
                id / 1e6,
                m.rtt_idle_us as f64 / 1e3,
                m.rtt_loaded_us as f64 / 1e3,
                m.up_loss_ppm,
                m.down_loss_ppm
            );
            st_up.push(m.up_bps() / 1e6);
            st_down.push(m.down_bps() / 1e6);
            ip_up.push(iu / 1e6);
            ip_down.push(id / 1e6);
        }
        let ratios_up: Vec<f64> = st_up.iter().zip(&ip_up).map(|(s, i)| s / i).collect();
        let ratios_down: Vec<f64> = st_down.iter().zip(&ip_down).map(|(s, i)| s / i).collect();
        println!(
            "BENCH summary {label}: up speedtest {:.2} ({}) iperf3 {:.2} ({}) ratio {:.3} ({}) | down speedtest {:.2} ({}) iperf3 {:.2} ({}) ratio {:.3} ({})",
            median(&mut st_up.clone()),
            range(&st_up),
            median(&mut ip_up.clone()),
            range(&ip_up),
            median(&mut ratios_up.clone()),
            range(&ratios_up),
            median(&mut st_down.clone()),
            range(&st_down),
            median(&mut ip_down.clone()),
            range(&ip_down),
            median(&mut ratios_down.clone()),
            range(&ratios_down),
        );
    }
}

/// RTT and loss on a lossy path (nftables drops `per_mille`/1000 of the TCP and ICMP packets
/// arriving at each end), speed test vs ping and iperf3's retransmissions; then the idle RTT on the
/// clean path vs ping.
#[test]
#[ignore]
fn bench_rtt_and_loss_vs_ping() {
    if skip("bench_rtt_and_loss_vs_ping", &["iperf3", "ping", "nft"]) {
        return;
    }
    let mut path = Path::new("bl");
    let opts = ServerOptions { max_rate_bps: None, max_secs: 60, tests_per_minute: 60, ..Default::default() };
    let server = NsServer::start(&path.b, IpAddr::V4(path.b_ip), opts);
    path.iperf_server(5202);
    path.shape(Some(50));
    for per_mille in [0, 5, 10, 20] {
        path.lossy(per_mille);
        let p = per_mille as f64 / 1000.0;
        for run in 0..RUNS {
            // ping: a lost request or a lost reply both count, so its loss is 1 - (1-p)^2.
            let (ping_loss, ping_rtt) = path.ping(500, "0.01");
            let one_way = 1.0 - (1.0 - ping_loss).sqrt();
            let v = speedtest(&path.a, &server, SECS, SECS);
            let m = v.measurement();
            println!(
                "BENCH loss {per_mille}/1000 each way run {run}: speedtest retrans up {:.3} % down {:.3} %, goodput up {:.2} down {:.2} Mbit/s, rtt idle {:.3} ms loaded {:.3} ms | ping loss {:.2} % round trip = {:.2} % one way, rtt avg {:.3} ms | configured {:.2} %",
                m.up_loss_ppm as f64 / 1e4,
                m.down_loss_ppm as f64 / 1e4,
                m.up_bps() / 1e6,
                m.down_bps() / 1e6,
                m.rtt_idle_us as f64 / 1e3,
                m.rtt_loaded_us as f64 / 1e3,
                ping_loss * 100.0,
                one_way * 100.0,
                ping_rtt,
                p * 100.0
            );
        }
        // iperf3 over the same lossy path: its sender's retransmissions for comparison.
        let (bps, retrans, bytes) = path.iperf(5202, SECS as u32, true);
        let segs = (bytes as f64 / 1448.0).max(1.0);
        println!(
            "BENCH loss {per_mille}/1000 iperf3 down {:.2} Mbit/s, {retrans} retransmitted segments of ~{segs:.0} = {:.3} %",
            bps / 1e6,
            retrans as f64 * 100.0 / segs
        );
    }
    path.lossy(0);
    path.shape(None);
    for run in 0..RUNS {
        let (_, ping_rtt) = path.ping(100, "0.01");
        let v = speedtest(&path.a, &server, 1, 1);
        println!(
            "BENCH idle rtt unshaped run {run}: speedtest {:.3} ms, ping avg {:.3} ms",
            v.measurement().rtt_idle_us as f64 / 1e3,
            ping_rtt
        );
    }
}
