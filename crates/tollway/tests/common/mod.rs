//! Shared helpers of the integration tests: labs with the real `tollway` binary, in namespaces
//! the test creates and removes itself. Every test skips (saying why) when not run as root or
//! when a program it needs is missing; under the test command that is a failure (see [`skip`]).
#![allow(dead_code)]

pub mod mesh;
pub mod rogue;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollway_api::Status;
use tollway_lab::{DaemonCommand, Lab, LabName, Topology, UpOptions};

pub fn tollway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollway"))
}

/// True (after printing why) when the test cannot run here: it needs root, `ip`, `nft` and `tc`
/// (the lab and the daemon use them) and every one of `programs`. Under the test command
/// (`TOLLWAY_REQUIRE_ALL_TESTS=1`) it panics instead.
pub fn skip(test: &str, programs: &[&str]) -> bool {
    let mut all = vec!["ip", "nft", "tc"];
    all.extend_from_slice(programs);
    tollway_testkit::skip_unless(test, &all)
}

/// A running lab, taken down when dropped (also when the test panics).
pub struct TestLab {
    pub lab: Lab,
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("TOLLWAY_TEST_KEEP_LAB").is_some() {
            eprintln!("keeping lab {} for inspection (TOLLWAY_TEST_KEEP_LAB)", self.lab.name());
            return;
        }
        if let Err(e) = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), self.lab.name()) {
            eprintln!("cleanup of lab {}: {e}", self.lab.name());
        }
    }
}

impl std::ops::Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl std::ops::DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

/// A lab name unique to this test run: `<prefix><pid mod 10^5>` (at most 10 characters).
pub fn lab_name(prefix: &str) -> LabName {
    format!("{prefix}{}", std::process::id() % 100_000).parse().expect("valid lab name")
}

/// Bring up the topology in `toml` and wait for every tunnel.
pub fn lab_up(prefix: &str, toml: &str) -> TestLab {
    let name = lab_name(prefix);
    let _ = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name);
    let topology = Topology::parse(toml, prefix).unwrap_or_else(|e| panic!("topology: {e}"));
    let opts =
        UpOptions { wait: Some(Duration::from_secs(60)), ..UpOptions::new(DaemonCommand::tollway(&tollway_bin())) };
    let lab = Lab::up(&name, &topology, &opts).unwrap_or_else(|e| panic!("lab up: {e}"));
    TestLab { lab }
}

/// a sells to b at 0.02 per MB with a small credit limit (0.05) and 20 Mbit/s of capacity: b
/// crosses the limit within seconds of downloading without paying.
pub const THROTTLE: &str = r#"
[defaults.config.market]
max_price = "0.05"
pay_threshold = "0.005"
credit_limit = "0.05"
capacity_mbit = 20
[[node]]
name = "a"
[node.config.market]
ask = "0.02"
[[node]]
name = "b"
[[link]]
a = "a"
b = "b"
"#;

pub const CHAIN3: &str = r#"
[[node]]
name = "a"
[[node]]
name = "b"
[[node]]
name = "c"
[[link]]
a = "a"
b = "b"
[[link]]
a = "b"
b = "c"
"#;

/// Poll `f` every 100 ms until it returns Some, or panic with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(lab: &Lab, node: &str) -> Status {
    lab.status_of(node).unwrap_or_else(|e| panic!("status of {node}: {e}"))
}

pub fn node_id(lab: &Lab, node: &str) -> String {
    status(lab, node).node.id
}

/// The neighbor entry `of` has for `peer`, if any.
pub fn neighbor<'a>(s: &'a Status, peer_id: &str) -> Option<&'a tollway_api::NeighborStatus> {
    s.neighbors.iter().find(|n| n.id == peer_id)
}

/// Run a command inside a lab node and return (success, stdout+stderr).
pub fn run_in(lab: &Lab, node: &str, argv: &[&str]) -> (bool, String) {
    let out = lab.command_in(node, argv).unwrap().output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Names of the interfaces in a node's namespace starting with `prefix`.
pub fn interfaces(lab: &Lab, node: &str, prefix: &str) -> Vec<String> {
    let (ok, text) = run_in(lab, node, &["ip", "-j", "link", "show"]);
    assert!(ok, "ip link: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("ip -j output");
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Send raw discovery datagrams from inside `namespace`, out of `iface`, to the discovery
/// multicast group: what a (possibly hostile) machine on that link could send.
pub fn send_discovery(namespace: &str, iface: &str, datagrams: Vec<Vec<u8>>) {
    let iface = iface.to_owned();
    tollway_kernel::netns::run_in(namespace, move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.bind_device(Some(iface.as_bytes())).unwrap();
        let c = std::ffi::CString::new(iface.clone()).unwrap();
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert!(idx != 0, "interface {iface} exists");
        s.set_multicast_if_v6(idx).unwrap();
        let group: Ipv6Addr = tollway_core::DISCOVERY_GROUP;
        let dst = SocketAddrV6::new(group, 7477, 0, idx);
        for d in datagrams {
            s.send_to(&d, &dst.into()).unwrap();
        }
    })
    .expect("enter namespace");
}

/// Datagrams the kernel of namespace `ns` dropped because a UDP socket's receive buffer
/// was full (`Udp6RcvbufErrors`): a flood faster than the reader never reaches the daemon.
pub fn udp6_rcvbuf_drops(ns: &str) -> u64 {
    tollway_kernel::netns::run_in(ns, || {
        // /proc/thread-self/net shows this thread's namespace; /proc/self/net the process's.
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp6").expect("read snmp6");
        text.lines()
            .find_map(|l| l.strip_prefix("Udp6RcvbufErrors"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Udp6RcvbufErrors in snmp6")
    })
    .expect("enter namespace")
}

/// Resident memory of a process in kB.
pub fn rss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Status of `node` fetched through its API socket.
pub fn try_status(lab: &Lab, node: &str) -> Option<Status> {
    lab.status_of(node).ok()
}

/// The API client of a lab node.
pub fn client(lab: &Lab, node: &str) -> tollway_api::Client {
    tollway_api::Client::connect(&lab.node(node).unwrap().api_socket).unwrap()
}

/// A decimal amount string as smallest units (6 decimals, the default currency).
pub fn units(s: &str) -> i128 {
    let neg = s.starts_with('-');
    let t = s.trim_start_matches('-');
    let (i, f) = t.split_once('.').unwrap_or((t, ""));
    let f = format!("{f:0<6}");
    let v = i.parse::<i128>().unwrap() * 1_000_000 + f[..6].parse::<i128>().unwrap();
    if neg {
        -v
    } else {
        v
    }
}

/// An `iperf3 -s` the test started: killed by its pid and reaped when dropped.
pub struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `iperf3 -s` in `node` on `port`.
pub fn iperf_server(lab: &Lab, node: &str, port: u16) -> Server {
    let child = lab
        .command_in(node, &["iperf3", "-s", "-p", &port.to_string()])
        .unwrap()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Server(child)
}

/// Run an iperf3 client in `node` against `server_ip:port` with extra `args`; returns the
/// receiver's bits per second and the bytes received.
pub fn iperf(lab: &Lab, node: &str, server_ip: &str, port: u16, args: &[&str]) -> (f64, u64) {
    let port = port.to_string();
    let mut argv = vec!["iperf3", "-J", "-c", server_ip, "-p", &port];
    argv.extend_from_slice(args);
    let out = lab.command_in(node, &argv).unwrap().output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let r = &v["end"]["sum_received"];
    (r["bits_per_second"].as_f64().unwrap_or(0.0), r["bytes"].as_u64().unwrap_or(0))
}

/// The inner bytes a node's tunnel interface has received and sent, read from the kernel at the
/// moment of the call (the status only shows them as of the daemon's last sample).
pub fn link_bytes(lab: &Lab, node: &str, ifname: &str) -> (u64, u64) {
    let (ok, text) = run_in(lab, node, &["ip", "-j", "-s", "link", "show", "dev", ifname]);
    assert!(ok, "ip -s link show dev {ifname}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("ip -j output");
    let s = &v[0]["stats64"];
    (s["rx"]["bytes"].as_u64().expect("rx bytes"), s["tx"]["bytes"].as_u64().expect("tx bytes"))
}

/// What a buyer owes a seller right now, as the seller will count it at its next sample: the
/// balance the seller reported when the watch began, plus every byte that has crossed the
/// seller's tunnel since (both directions, read from the kernel) at the buyer's bid.
///
/// Control traffic between the seller's last sample and the start of the watch is not in
/// either part; it is a few hundred bytes, far below any amount the tests compare.
pub struct DebtWatch {
    seller: String,
    ifname: String,
    bid_per_mb: i128,
    base_bytes: u64,
    owed_at_start: i128,
}

impl DebtWatch {
    pub fn start(lab: &Lab, seller: &str, buyer: &str, bid_per_mb: i128) -> DebtWatch {
        let peer = neighbor(&status(lab, seller), &node_id(lab, buyer)).expect("seller lists the buyer").clone();
        let (rx, tx) = link_bytes(lab, seller, &peer.interface);
        DebtWatch {
            seller: seller.into(),
            ifname: peer.interface,
            bid_per_mb,
            base_bytes: rx + tx,
            owed_at_start: units(&peer.balance),
        }
    }

    /// Bytes across the seller's tunnel since the watch began.
    pub fn bytes(&self, lab: &Lab) -> u64 {
        let (rx, tx) = link_bytes(lab, &self.seller, &self.ifname);
        (rx + tx).saturating_sub(self.base_bytes)
    }

    /// What the buyer owes now, in smallest units.
    pub fn owed(&self, lab: &Lab) -> i128 {
        self.owed_at_start + self.bytes(lab) as i128 * self.bid_per_mb / 1_000_000
    }
}

/// The neighbor entry `of` has for `peer` (panics if it has none).
pub fn nb(lab: &Lab, of: &str, peer: &str) -> tollway_api::NeighborStatus {
    let peer_id = node_id(lab, peer);
    neighbor(&status(lab, of), &peer_id).unwrap_or_else(|| panic!("{of} lists {peer}")).clone()
}

/// Wait until both sides have agreed prices and the session is up.
pub fn wait_agreed(lab: &Lab, x: &str, y: &str) {
    // Either side may not list the other yet (a daemon that just restarted answers its API
    // before it has heard its neighbors): that is "not yet", not a failure.
    let (x_id, y_id) = (node_id(lab, x), node_id(lab, y));
    wait_for(Duration::from_secs(30), "prices agreed both ways", || {
        let agreed = |of: &str, peer: &str| neighbor(&status(lab, of), peer).is_some_and(|n| n.negotiation == "agreed");
        (agreed(x, &y_id) && agreed(y, &x_id)).then_some(())
    });
}

/// An iperf3 client the test started in the background: killed by its pid and reaped when
/// dropped, unless it has finished.
pub struct Client {
    child: std::process::Child,
    what: String,
}

impl Client {
    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for it to end; its report (`-J`), or why there is none.
    pub fn finish(mut self, timeout: Duration) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + timeout;
        while self.running() {
            if Instant::now() > deadline {
                return Err(format!("{} still running after {timeout:?}", self.what));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut out = String::new();
        use std::io::Read;
        if let Some(mut s) = self.child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        serde_json::from_str(&out).map_err(|e| format!("{}: no JSON report ({e}): {out}", self.what))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Start an iperf3 client (`-J`) in `node` against `server_ip:port` with extra `args`, in the
/// background.
pub fn iperf_client(lab: &Lab, node: &str, server_ip: &str, port: u16, args: &[&str]) -> Client {
    let port = port.to_string();
    let mut argv = vec!["iperf3", "-J", "-c", server_ip, "-p", &port];
    argv.extend_from_slice(args);
    let child = lab
        .command_in(node, &argv)
        .unwrap()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("iperf3 in {node}: {e}"));
    Client { child, what: format!("iperf3 {argv:?} in {node}") }
}

/// The bytes `node`'s nftables receive counter for neighbor `peer_id` holds now, read from the
/// kernel: everything `node` accepted from that neighbor since the counter was created. The
/// counter is `rx_<first 12 hex digits of the neighbor's id>` in table `inet tollway`; it lives
/// in the kernel, so it outlives a daemon killed with SIGKILL.
pub fn nft_rx_counter(lab: &Lab, node: &str, peer_id: &str) -> u64 {
    let name = format!("rx_{}", &peer_id[..12]);
    let (ok, text) = run_in(lab, node, &["nft", "-j", "list", "counter", "inet", "tollway", &name]);
    assert!(ok, "nft list counter {name} in {node}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("nft -j output");
    v["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["bytes"].as_u64()))
        .unwrap_or_else(|| panic!("no counter {name} in {node}: {text}"))
}
