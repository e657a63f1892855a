//! A throw-away lab for kernel tests: network namespaces, veth links, userspace WireGuard
//! (wireguard-go) tunnels between namespaces, iperf3. Everything is named after the test
//! process's pid, and everything a [`Lab`] starts it stops (by pid) and deletes when dropped.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tollway_core::IfName;
use tollway_traffic::*;

/// Tests that move traffic take this, so that they do not compete for the two cores.
pub static HEAVY: Mutex<()> = Mutex::new(());

pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// True (after printing why) when the test cannot run here: it needs root, `ip`, `nft`, `tc`,
/// `sysctl`, `ss` (all the [`Lab`] uses) and every one of `programs` (a [`Lab::wg`] tunnel needs
/// `wireguard-go`, `wg` and `ping`). Under the test command (`TOLLWAY_REQUIRE_ALL_TESTS=1`) it
/// panics instead.
pub fn skip(test: &str, programs: &[&str]) -> bool {
    let mut all = vec!["ip", "nft", "tc", "sysctl", "ss"];
    all.extend_from_slice(programs);
    tollway_testkit::skip_unless(test, &all)
}

fn pid_tag() -> String {
    format!("{:x}", std::process::id() & 0xffffff)
}

/// Run `f` on a thread inside network namespace `ns` (what the daemon's driver thread would
/// be in): child processes and netlink sockets it creates live there.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
            // SAFETY: a valid namespace fd; setns affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Run and require success; returns stdout.
pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ns_exec<'a>(ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    v
}

/// One tunnel between two namespaces.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub a_ns: String,
    pub b_ns: String,
    pub a_if: IfName,
    pub b_if: IfName,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
}

pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    sockets: Vec<String>,
    links: u32,
}

impl Lab {
    /// `tag`: up to 3 characters telling this test's interfaces from its siblings'.
    pub fn new(tag: &str) -> Lab {
        assert!(tag.len() <= 3);
        Lab { tag: tag.to_string(), namespaces: Vec::new(), children: Vec::new(), sockets: Vec::new(), links: 0 }
    }

    /// A fresh namespace with lo up and no duplicate address detection.
    pub fn netns(&mut self, short: &str) -> String {
        let name = format!("twt-{}-{}-{short}", pid_tag(), self.tag);
        let _ = sh(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        for s in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"] {
            must(&ns_exec(&name, &["sysctl", "-qw", s]));
        }
        must(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A fresh namespace without IPv6, so that no neighbor discovery or MLD packet disturbs
    /// exact packet counts.
    pub fn netns_ipv4(&mut self, short: &str) -> String {
        let name = self.netns(short);
        for s in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
            must(&ns_exec(&name, &["sysctl", "-qw", s]));
        }
        name
    }

    /// A host-wide unique interface name: `w<pid hex><tag><n><suffix>`.
    pub fn ifname(&self, n: u32, suffix: &str) -> IfName {
        IfName::new(format!("w{}{}{n}{suffix}", pid_tag(), self.tag)).expect("short enough")
    }

    /// A veth pair between `a` and `b` with 10.(100+n).0.{1,2}/24.
    pub fn veth(&mut self, a: &str, b: &str) -> Tunnel {
        self.links += 1;
        let n = self.links;
        let (ia, ib) = (self.ifname(n, "a"), self.ifname(n, "b"));
        must(&["ip", "link", "add", ia.as_str(), "netns", a, "type", "veth", "peer", "name", ib.as_str(), "netns", b]);
        let (ipa, ipb) = (Ipv4Addr::new(10, 100 + n as u8, 0, 1), Ipv4Addr::new(10, 100 + n as u8, 0, 2));
        for (ns, i, ip) in [(a, &ia, ipa), (b, &ib, ipb)] {
            must(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", i.as_str()]);
            must(&["ip", "-n", ns, "link", "set", i.as_str(), "up"]);
        }
        Tunnel { a_ns: a.into(), b_ns: b.into(), a_if: ia, b_if: ib, a_ip: ipa, b_ip: ipb }
    }

    /// A wireguard-go tunnel between `a` and `b` over a fresh veth, with 10.(200+n).0.{1,2}/24
    /// inside and MTU 1320.
    pub fn wg(&mut self, a: &str, b: &str) -> Tunnel {
        let under = self.veth(a, b);
        let n = self.links;
        let (ta, tb) = (self.ifname(n, "A"), self.ifname(n, "B"));
        let (ka, kb) = (genkey(), genkey());
        let (pa, pb) = (pubkey(&ka), pubkey(&kb));
        let port = |side: u32| (40000 + n * 2 + side).to_string();
        for (ns, t) in [(a, &ta), (b, &tb)] {
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "wireguard-go", "-f", t.as_str()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("wireguard-go");
            self.children.push(child);
            let sock = format!("/var/run/wireguard/{t}.sock");
            self.sockets.push(sock.clone());
            let deadline = Instant::now() + Duration::from_secs(5);
            while !std::path::Path::new(&sock).exists() {
                assert!(Instant::now() < deadline, "wireguard-go {t} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let cfg = [(a, &ta, &ka, &pb, under.b_ip, port(0), port(1)), (b, &tb, &kb, &pa, under.a_ip, port(1), port(0))];
        for (ns, t, key, peer, peer_ip, listen, peer_port) in cfg {
            let mut c = Command::new("ip")
                .args(["netns", "exec", ns, "wg", "set", t.as_str(), "private-key", "/dev/stdin"])
                .args(["listen-port", &listen, "peer", peer, "allowed-ips", "0.0.0.0/0,::/0"])
                .args(["endpoint", &format!("{peer_ip}:{peer_port}")])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
            assert!(c.wait().unwrap().success(), "wg set {t}");
        }
        let (ipa, ipb) = (Ipv4Addr::new(10, 200 + n as u8, 0, 1), Ipv4Addr::new(10, 200 + n as u8, 0, 2));
        for (ns, t, ip) in [(a, &ta, ipa), (b, &tb, ipb)] {
            must(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", t.as_str()]);
            must(&["ip", "-n", ns, "link", "set", t.as_str(), "mtu", "1320", "up"]);
        }
        // Handshake: ping once a second until a reply (up to 15 s). A single ping can be lost
        // with the first handshake (a veth not yet carrying, on a loaded machine), and
        // wireguard-go only retries that after 5 s.
        must(&ns_exec(a, &["ping", "-c", "1", "-w", "15", &ipb.to_string()]));
        Tunnel { a_ns: a.into(), b_ns: b.into(), a_if: ta, b_if: tb, a_ip: ipa, b_ip: ipb }
    }

    /// Start a process in a namespace; stopped when the lab is dropped.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push(child);
    }

    /// An iperf3 server in `ns` on `port`, ready when this returns.
    pub fn iperf_server(&mut self, ns: &str, port: u16) {
        self.spawn(ns, &["iperf3", "-s", "-p", &port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = sh(&ns_exec(ns, &["ss", "-Hltn", &format!("sport = :{port}")]));
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "iperf3 server on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // `ip netns exec` execs the program: the pid is the program's.
            let _ = c.kill();
            let _ = c.wait();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

fn genkey() -> String {
    must(&["wg", "genkey"]).trim().to_string()
}

fn pubkey(private: &str) -> String {
    let mut c = Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
}

/// Run an iperf3 client in `ns` (`-J` added) and return its JSON report.
pub fn iperf(ns: &str, args: &[&str]) -> Value {
    let mut v = ns_exec(ns, &["iperf3", "-J"]);
    v.extend_from_slice(args);
    let out = sh(&v);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 {args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(json.get("error").is_none(), "iperf3 {args:?}: {}", json["error"]);
    json
}

/// The rate the receiving side saw, in bit/s.
pub fn received_bps(report: &Value) -> f64 {
    report["end"]["sum_received"]["bits_per_second"].as_f64().expect("sum_received")
}

/// A control-port server in `ns`: answers each connection's request (up to `\n`) with
/// `reply_len` bytes, then closes. Runs until it gets an empty request (`stop_control_server`).
pub fn control_server(ns: &str, addr: impl Into<SocketAddr>, reply_len: usize) -> std::thread::JoinHandle<()> {
    let addr = addr.into();
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let h = std::thread::spawn(move || {
        let listener = in_ns(&ns, || TcpListener::bind(addr).expect("bind control port"));
        tx.send(()).unwrap();
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while c.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
                req.push(b[0]);
            }
            if req.is_empty() {
                return;
            }
            let _ = c.write_all(&vec![b'x'; reply_len]);
        }
    });
    rx.recv().unwrap();
    h
}

pub fn stop_control_server(ns: &str, addr: impl Into<SocketAddr>, h: std::thread::JoinHandle<()>) {
    let addr = addr.into();
    in_ns(ns, || {
        if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            let _ = c.write_all(b"\n");
        }
    });
    let _ = h.join();
}

/// From `ns`, send a request to `addr` and read the whole reply; the time it took, or why
/// it failed within `timeout`.
pub fn control_request(ns: &str, addr: impl Into<SocketAddr>, timeout: Duration) -> Result<(usize, Duration), String> {
    let addr = addr.into();
    in_ns(ns, || {
        let t0 = Instant::now();
        let mut c = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(timeout)).unwrap();
        c.write_all(b"hello\n").map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).map_err(|e| format!("after {} bytes: {e}", buf.len()))?;
        Ok((buf.len(), t0.elapsed()))
    })
}

/// A plan with one group; `neighbors`: (key, tunnel, rate, ceil, ingress).
pub fn plan(
    port: u16,
    capacity: BitRate,
    neighbors: &[(&str, &IfName, BitRate, BitRate, IngressPolicy)],
) -> TrafficPlan {
    TrafficPlan {
        control: ControlTraffic { tcp_port: port, rate: BitRate::kbit(500) },
        groups: vec![ShaperGroup {
            id: GroupId(0),
            capacity,
            neighbors: neighbors
                .iter()
                .map(|(k, t, rate, ceil, ingress)| NeighborTraffic {
                    key: NeighborKey::new(*k).unwrap(),
                    tunnel: (*t).clone(),
                    rate: *rate,
                    ceil: *ceil,
                    ingress: *ingress,
                })
                .collect(),
        }],
        admission: Admission::default(),
    }
}

/// The IFB prefix of this test process (unique host-wide, though IFBs live in namespaces).
pub fn ifb_prefix(tag: &str) -> String {
    format!("i{}{tag}", pid_tag())
}

/// Nothing of ours left in `ns`: no IFB, no clsact qdisc, no table.
pub fn assert_clean(ns: &str) {
    let links: Value = serde_json::from_str(&must(&["ip", "-n", ns, "-j", "link", "show", "type", "ifb"])).unwrap();
    assert_eq!(links.as_array().map(Vec::len), Some(0), "IFBs left in {ns}: {links}");
    let q: Value = serde_json::from_str(&must(&ns_exec(ns, &["tc", "-j", "qdisc", "show"]))).unwrap();
    let clsact: Vec<_> = q.as_array().unwrap().iter().filter(|q| q["kind"] == "clsact").collect();
    assert!(clsact.is_empty(), "clsact left in {ns}: {clsact:?}");
    let t = must(&ns_exec(ns, &["nft", "list", "tables"]));
    assert!(!t.contains("tollway"), "table left in {ns}: {t}");
}

/// How long since `t0`, in seconds.
pub fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// The kernel's 64-bit counters of interface `ifname` in the calling thread's namespace (what
/// the daemon reads as the sender's count), or `None` if there is no such interface.
pub fn link_counters(ifname: &IfName) -> std::io::Result<Option<tollway_kernel::LinkStats>> {
    let mut sock = tollway_kernel::nl::NlSocket::route()?;
    Ok(tollway_kernel::nl::link_by_name(&mut sock, ifname.as_str())?.and_then(|l| l.stats))
}
