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

/// a cuts off a neighbor that sends more than 100 kB of junk a minute, for 20 s.
const JUNK_PAIR: &str = r#"
[[node]]
name = "a"
[node.config.firewall]
junk_limit_kb = 100
junk_cut_off_secs = 20
[[node]]
name = "b"
[[link]]
a = "a"
b = "b"
"#;

#[test]
fn a_neighbor_that_keeps_sending_junk_earns_nothing_for_it_and_is_cut_off_until_it_stops() {
    if skip("junk cut-off", &["timeout"]) {
        return;
    }
    let lab = lab_up("junk", JUNK_PAIR);
    wait_agreed(&lab, "a", "b");
    let a_ip = status(&lab, "a").node.mesh_ip;
    let before = nb(&lab, "a", "b");
    assert_eq!(before.enforcement, "none", "{before:?}");

    // b sends 1000-byte UDP datagrams to a port a never opened, as fast as a shell can, for 6 s.
    let script = format!(
        "p=$(head -c 1000 /dev/zero | tr '\\0' x); end=$((SECONDS+6)); \
         while [ $SECONDS -lt $end ]; do echo \"$p\" > /dev/udp/{a_ip}/9999; done"
    );
    let t0 = std::time::Instant::now();
    let mut junk = lab.command_in("b", &["timeout", "20", "bash", "-c", &script]).unwrap().spawn().unwrap();
    let cut = wait_for(Duration::from_secs(15), "a to cut b off for junk", || {
        let n = nb(&lab, "a", "b");
        (n.enforcement == "cut_off").then_some(n)
    });
    let took = t0.elapsed();
    assert!(junk.try_wait().unwrap().is_none(), "cut off while the junk was still coming ({took:?})");
    let why = cut.enforcement_reason.clone().unwrap_or_default();
    assert!(why.contains("unsolicited") && why.contains("limit of 100000 bytes per 60 s"), "{why}");
    assert!(cut.dropped_unsolicited_bytes > 100_000, "{cut:?}");
    let _ = junk.wait();

    // None of it was billed: only the control session's few hundred bytes a second.
    let after = nb(&lab, "a", "b");
    let billed = after.billed_bytes_in - before.billed_bytes_in;
    assert!(billed < 20_000, "billed {billed} bytes while {} junk bytes arrived", after.dropped_unsolicited_bytes);
    // The reason is in the human status table too.
    let (ok, table) = run_in(&lab, "a", &[tollway_bin().to_str().unwrap(), "status"]);
    assert!(ok && table.contains("cut_off") && table.contains("sends unsolicited traffic"), "{table}");
    // The session stays up (b can learn why), and once b has stopped for the penalty time the
    // cut is lifted.
    assert_eq!(after.state, "connected", "{after:?}");
    let lifted = wait_for(Duration::from_secs(60), "the cut-off to lift", || {
        let n = nb(&lab, "a", "b");
        (n.enforcement == "none").then_some(n)
    });
    assert!(lifted.enforcement_reason.is_none(), "{lifted:?}");
    let (ok, out) = run_in(&lab, "b", &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", &a_ip]);
    assert!(ok, "b reaches a again: {out}");
}

/// a — b — c, everyone priced: a pays b, b pays c for what each carries.
const PRICED_CHAIN: &str = r#"
[defaults.config.market]
max_price = "0.01"
pay_threshold = "0.005"
credit_limit = "1"
[[node]]
name = "a"
[node.config.market]
ask = "0.001"
[[node]]
name = "b"
[node.config.market]
ask = "0.002"
[[node]]
name = "c"
[node.config.market]
ask = "0.003"
[[link]]
a = "a"
b = "b"
[[link]]
a = "b"
b = "c"
"#;

/// Junk in transit: a sends 2,000 datagrams of 1,000 bytes to a closed port of c, through b. Who
/// pays for them: a pays b (b counted them arriving and forwarded them, as it would any traffic);
/// c drops them before its counter, so b pays c nothing for them (c's statements do not
/// confirm them: b sees them as bytes c did not receive).
#[test]
fn junk_in_transit_is_paid_for_by_its_sender_and_never_by_the_relay() {
    if skip("junk in transit", &["ping"]) {
        return;
    }
    let lab = lab_up("jtr", PRICED_CHAIN);
    wait_agreed(&lab, "a", "b");
    wait_agreed(&lab, "b", "c");
    let c_ip = status(&lab, "c").node.mesh_ip;
    common::mesh::reachable(&lab, "a", &c_ip, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let (b_from_a, c_from_b) = (nb(&lab, "b", "a"), nb(&lab, "c", "b"));

    // Paced (50 datagrams every 10 ms, ~40 Mbit/s) so that no queue on the way overflows.
    let script = format!(
        "p=$(head -c 999 /dev/zero | tr '\\0' x); for i in $(seq 40); do \
           for j in $(seq 50); do echo \"$p\" > /dev/udp/{c_ip}/9999; done; sleep 0.01; done"
    );
    let (ok, out) = run_in(&lab, "a", &["timeout", "60", "bash", "-c", &script]);
    assert!(ok, "{out}");
    // Each datagram: 1,000 bytes of data, 8 of UDP, 40 of IPv6.
    let junk = 2000 * 1048u64;
    // Wait for c's count to stop moving, then for the statements and billing to catch up.
    let mut last = 0;
    wait_for(Duration::from_secs(20), "c to count the junk", || {
        std::thread::sleep(Duration::from_secs(1));
        let d = nb(&lab, "c", "b").dropped_unsolicited_bytes - c_from_b.dropped_unsolicited_bytes;
        let done = d > 0 && d == last;
        last = d;
        done.then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let (b_after, c_after) = (nb(&lab, "b", "a"), nb(&lab, "c", "b"));
    let relay_billed = b_after.billed_bytes_in - b_from_a.billed_bytes_in;
    let dest_billed = c_after.billed_bytes_in - c_from_b.billed_bytes_in;
    let dropped = c_after.dropped_unsolicited_bytes - c_from_b.dropped_unsolicited_bytes;
    println!(
        "junk in transit: {junk} bytes sent by a; b billed a for {relay_billed}; c dropped {dropped} and billed b for {dest_billed}"
    );
    assert!(dropped >= junk * 9 / 10 && dropped <= junk, "c dropped the junk that reached it: {dropped} of {junk}");
    assert!(relay_billed >= dropped, "a pays b for carrying it: b billed {relay_billed}, {dropped} reached c");
    assert!(dest_billed < 50_000, "b pays c nothing for it: c billed {dest_billed}");
}
