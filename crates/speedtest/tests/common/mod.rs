//! Two network namespaces joined by a veth pair, shaped with tc HTB and made lossy with
//! nftables, for speed tests against the real kernel; and iperf3 over the same path.
//! Everything is named after the test process's pid; everything made is deleted on drop, and
//! every process started is stopped by its pid. Run under the host-wide lock:
//! `flock /tmp/tollway-netns.lock cargo test --release -p tollway-speedtest --test netns`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tollway_core::{Identity, NodeId};
use tollway_speedtest::{Server, ServerOptions, TestSpec, VerifiedReceipt};

/// Whether the test cannot run here (not root, a program missing): it then says why and passes,
/// or fails under the test command (`TOLLWAY_REQUIRE_ALL_TESTS`).
pub fn skip(test: &str, tools: &[&str]) -> bool {
    let all: Vec<&str> = tools.iter().copied().chain(["ip", "tc"]).collect();
    tollway_testkit::skip_unless(test, &all)
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_exec<'a>(ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    v
}

/// Run `f` on a thread inside namespace `ns` (sockets it creates live there).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    // SAFETY: a valid namespace fd; setns affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Namespace `a` (the client side) and `b` (the server side), a veth between them.
pub struct Path {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    children: Vec<Child>,
}

impl Path {
    pub fn new(tag: &str) -> Path {
        let pid = format!("{:x}", std::process::id() & 0xffffff);
        let (a, b) = (format!("twst-{pid}-{tag}-a"), format!("twst-{pid}-{tag}-b"));
        let (a_if, b_if) = (format!("s{pid}{tag}a"), format!("s{pid}{tag}b"));
        assert!(a_if.len() <= 15, "interface name {a_if} too long");
        let p = Path {
            a,
            b,
            a_if,
            b_if,
            a_ip: Ipv4Addr::new(10, 77, 0, 1),
            b_ip: Ipv4Addr::new(10, 77, 0, 2),
            children: Vec::new(),
        };
        for ns in [&p.a, &p.b] {
            let _ = sh(&["ip", "netns", "del", ns]);
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        must(&["ip", "link", "add", &p.a_if, "netns", &p.a, "type", "veth", "peer", "name", &p.b_if, "netns", &p.b]);
        for (ns, i, ip) in [(&p.a, &p.a_if, p.a_ip), (&p.b, &p.b_if, p.b_ip)] {
            must(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", i]);
            must(&["ip", "-n", ns, "link", "set", i, "up"]);
        }
        must(&ns_exec(&p.a, &["ping", "-c", "1", "-w", "10", &p.b_ip.to_string()]));
        p
    }

    /// Shape both directions to `mbit` Mbit/s (HTB on each end's egress), or remove shaping
    /// with `None`.
    pub fn shape(&self, mbit: Option<u32>) {
        for (ns, i) in [(&self.a, &self.a_if), (&self.b, &self.b_if)] {
            let _ = sh(&["tc", "-n", ns, "qdisc", "del", "dev", i, "root"]);
            if let Some(m) = mbit {
                let rate = format!("{m}mbit");
                must(&["tc", "-n", ns, "qdisc", "add", "dev", i, "root", "handle", "1:", "htb", "default", "10"]);
                must(&[
                    "tc", "-n", ns, "class", "add", "dev", i, "parent", "1:", "classid", "1:10", "htb", "rate", &rate,
                    "ceil", &rate,
                ]);
            }
        }
    }

    /// Drop `per_mille`/1000 of the TCP and ICMP packets arriving at each end (nftables
    /// `numgen random` in the input hook), or stop dropping with 0. (Not in the output hook: a
    /// sender's TCP sees a drop there as a local error and sends the segment again without
    /// counting a retransmission, as no network loss does.)
    pub fn lossy(&self, per_mille: u32) {
        for ns in [&self.a, &self.b] {
            let _ = sh(&ns_exec(ns, &["nft", "delete", "table", "inet", "twst_loss"]));
            if per_mille > 0 {
                let rules = format!(
                    "table inet twst_loss {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
                     meta l4proto {{ tcp, icmp }} numgen random mod 1000 < {per_mille} drop\n }}\n}}\n"
                );
                let mut c = Command::new("ip")
                    .args(["netns", "exec", ns, "nft", "-f", "-"])
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("nft");
                std::io::Write::write_all(&mut c.stdin.take().unwrap(), rules.as_bytes()).unwrap();
                assert!(c.wait().unwrap().success(), "nft -f - in {ns}: {rules}");
            }
        }
    }

    /// Start a process in a namespace; stopped (by pid) when the path is dropped.
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

    /// An iperf3 server in `b`, ready when this returns.
    pub fn iperf_server(&mut self, port: u16) {
        let b = self.b.clone();
        self.spawn(&b, &["iperf3", "-s", "-p", &port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = sh(&ns_exec(&self.b, &["ss", "-Hltn", &format!("sport = :{port}")]));
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "iperf3 server on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// iperf3 from `a` to `b` (or `b` to `a` with `reverse`) for `secs`: the receiver's goodput
    /// (bit/s), the sender's retransmissions and the bytes it sent.
    pub fn iperf(&self, port: u16, secs: u32, reverse: bool) -> (f64, u64, u64) {
        let (b_ip, port_s, secs_s) = (self.b_ip.to_string(), port.to_string(), secs.to_string());
        let mut args = vec!["iperf3", "-J", "-c", &b_ip, "-p", &port_s, "-t", &secs_s];
        if reverse {
            args.push("-R");
        }
        let out = sh(&ns_exec(&self.a, &args));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("iperf3: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(json.get("error").is_none(), "iperf3: {}", json["error"]);
        let end = &json["end"];
        (
            end["sum_received"]["bits_per_second"].as_f64().expect("sum_received"),
            end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            end["sum_sent"]["bytes"].as_u64().unwrap_or(0),
        )
    }

    /// `ping` from `a` to `b`: (loss fraction, average RTT in ms).
    pub fn ping(&self, count: u32, interval: &str) -> (f64, f64) {
        let out = sh(&ns_exec(
            &self.a,
            &["ping", "-q", "-c", &count.to_string(), "-i", interval, "-W", "2", &self.b_ip.to_string()],
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let loss = text
            .split(',')
            .find_map(|p| p.trim().strip_suffix("% packet loss").and_then(|v| v.parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("ping output: {text}"));
        let avg = text
            .lines()
            .find(|l| l.contains("min/avg/max"))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.trim().split('/').nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        (loss / 100.0, avg)
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        for c in &mut self.children {
            // `ip netns exec` execs the program: the pid is the program's.
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// A speed-test server running on its own thread inside a namespace.
pub struct NsServer {
    pub addr: SocketAddr,
    pub key: NodeId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsServer {
    pub fn start(ns: &str, ip: IpAddr, opts: ServerOptions) -> NsServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.to_string();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let server = Server::bind(Identity::from_seed(&rand::random()), SocketAddr::new(ip, 7479), opts)
                    .await
                    .expect("bind the speed-test server");
                tx.send((server.local_addr().unwrap(), server.key())).unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let (addr, key) = rx.recv().expect("server started");
        NsServer { addr, key, stop: Some(stop_tx), thread: Some(thread) }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One speed test from namespace `ns`.
pub fn speedtest(ns: &str, server: &NsServer, up_secs: u16, down_secs: u16) -> VerifiedReceipt {
    let spec = TestSpec {
        server: server.addr,
        server_key: server.key,
        bind: None,
        mark: None,
        identity: Identity::from_seed(&rand::random()),
        path_label: [0; 32],
        up_secs,
        down_secs,
        max_bytes: u64::MAX,
    };
    in_ns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(tollway_speedtest::run_test(spec)).unwrap_or_else(|e| panic!("{e}"))
    })
}
