//! What neighbors may send us, end to end: real daemons in a lab, real tunnels, the firewall
//! the daemon installs from its config. A neighbor's spoofed and unsolicited packets are dropped,
//! counted per neighbor in `tollway status` and never billed; what it may send passes.

mod common;

use common::*;
use std::time::Duration;

/// Two free nodes; a opens TCP 8022 to its neighbors (the lab also opens iperf3's ports).
const PAIR: &str = r#"
[[node]]
name = "a"
[node.config.firewall]
open_tcp = [8022, 5201]
[[node]]
name = "b"
[[link]]
a = "a"
b = "b"
"#;

/// `iperf3 -c` for one second from `node` with a short connect timeout: whether it connected
/// and ran. (Timed, not a byte count: with `-n`, iperf3 ends when the sender has written its
/// bytes into the socket, and whatever its send buffer still held, up to megabytes, may never
/// be read: the receiver's count is then not bounded below.)
fn iperf_ok(lab: &tollway_lab::Lab, node: &str, ip: &str, port: u16) -> bool {
    let port = port.to_string();
    let argv = ["timeout", "10", "iperf3", "-c", ip, "-p", &port, "-t", "1", "--connect-timeout", "2000"];
    run_in(lab, node, &argv).0
}

#[test]
fn spoofed_and_unsolicited_traffic_is_dropped_counted_and_never_billed() {
    if skip("firewall", &["ping", "curl"]) {
        return;
    }
    let lab = lab_up("fw", PAIR);
    wait_agreed(&lab, "a", "b");
    let a_ip = status(&lab, "a").node.mesh_ip;

    // Pings to a's mesh address pass (the control sessions are up already: control passes).
    let (ok, out) = run_in(&lab, "b", &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", &a_ip]);
    assert!(ok, "b pings a: {out}");
    let before = nb(&lab, "a", "b");
    assert_eq!((before.dropped_spoofed_packets, before.dropped_unsolicited_packets), (0, 0), "{before:?}");

    // b sends from an address that is not its own: dropped at a, counted, not billed.
    let (ok, out) = run_in(&lab, "b", &["ip", "addr", "add", "fd00::bad/128", "dev", "lo"]);
    assert!(ok, "{out}");
    let (ok, _) =
        run_in(&lab, "b", &["ping", "-6", "-c", "20", "-i", "0.05", "-s", "1000", "-W", "1", "-I", "fd00::bad", &a_ip]);
    assert!(!ok, "no reply to a spoofed source");
    // 20 echo requests of 1000 bytes of data, 8 of ICMPv6, 40 of IPv6.
    let spoofed = 20 * 1048;
    let after = wait_for(Duration::from_secs(10), "a to count b's spoofed packets", || {
        let n = nb(&lab, "a", "b");
        (n.dropped_spoofed_packets >= 20).then_some(n)
    });
    assert_eq!(after.dropped_spoofed_packets, 20, "{after:?}");
    assert_eq!(after.dropped_spoofed_bytes, spoofed);
    // Only the control session's own messages (a few hundred bytes a second) were billed.
    let billed = after.billed_bytes_in - before.billed_bytes_in;
    assert!(billed < spoofed / 2, "billed {billed} bytes while {spoofed} spoofed bytes arrived");

    // Unsolicited: a connection to a port a did not open (a server listens there), dropped and
    // counted; the ports a opened work.
    let _closed = iperf_server(&lab, "a", 5299);
    let _open = iperf_server(&lab, "a", 5201);
    assert!(!iperf_ok(&lab, "b", &a_ip, 5299), "a port a did not open");
    let n = wait_for(Duration::from_secs(10), "a to count b's unsolicited SYN", || {
        let n = nb(&lab, "a", "b");
        (n.dropped_unsolicited_packets >= 1).then_some(n)
    });
    assert!(n.dropped_unsolicited_bytes >= 80, "a SYN over IPv6 is at least 80 bytes: {n:?}");
    let billed_before = nb(&lab, "a", "b").billed_bytes_in;
    assert!(iperf_ok(&lab, "b", &a_ip, 5201), "an opened port");
    let n = wait_for(Duration::from_secs(10), "a to bill the transfer", || {
        let n = nb(&lab, "a", "b");
        (n.billed_bytes_in >= billed_before + 1_000_000).then_some(n)
    });
    assert_eq!(n.dropped_spoofed_packets, 20, "nothing else counted as spoofed");

    // b's view of a shows nothing dropped (a sent nothing it should not); the human status
    // table of a shows the columns.
    let b_view = nb(&lab, "b", "a");
    assert_eq!((b_view.dropped_spoofed_bytes, b_view.dropped_unsolicited_bytes), (0, 0), "{b_view:?}");
    let (ok, table) = run_in(&lab, "a", &[tollway_bin().to_str().unwrap(), "status"]);
    assert!(ok, "{table}");
    assert!(table.contains("SPOOFED") && table.contains("UNSOLICITED"), "{table}");
    assert!(table.contains("21.0 kB"), "b's 20960 spoofed bytes: {table}");
    let (ok, json) = run_in(&lab, "a", &[tollway_bin().to_str().unwrap(), "status", "--json"]);
    assert!(ok && json.contains("\"dropped_spoofed_bytes\": 20960"), "{json}");

    // The same figures for Prometheus, on a's loopback (the lab's nodes keep the default
    // listener, 127.0.0.1:7480).
    let b_id = node_id(&lab, "b");
    let want = format!(
        "tollway_neighbor_dropped_bytes_total{{neighbor=\"{b_id}\",interface=\"{}\",reason=\"spoofed\"}} 20960",
        n.interface
    );
    let metrics = wait_for(Duration::from_secs(10), "a's /metrics", || {
        let (ok, text) = run_in(&lab, "a", &["curl", "-sf", "--max-time", "5", "http://127.0.0.1:7480/metrics"]);
        (ok && text.lines().any(|l| l == want)).then_some(text)
    });
    assert!(metrics.contains("tollway_neighbor_connected{") && metrics.ends_with("# EOF\n"), "{metrics}");
}
