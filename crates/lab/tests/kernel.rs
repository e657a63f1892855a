//! Kernel tests of the lab's plumbing: real namespaces, veths, qdiscs and processes, with a
//! stand-in for the daemon (a shell script that checks its config exists, then sleeps).
//!
//! They need root and the lab's programs; without them each test prints why it is skipped and
//! passes, except under the test command (`TOLLWAY_REQUIRE_ALL_TESTS=1`), where that fails.
//! Every test uses its own lab names (with the pid) and takes its labs down on the way out,
//! even on failure.

mod common;

use common::skip;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tollway_lab::{DaemonCommand, Lab, LabName, LoadError, Signal, Topology, UpError, UpOptions, WaitError};

/// A unique lab name for this test process: `<tag><pid>`, at most 10 characters.
fn lab_name(tag: &str) -> LabName {
    let pid = std::process::id() % 10_000_000;
    format!("{tag}{pid}").parse().expect("tag is 1-3 letters")
}

/// The stand-in daemon: prints where it runs, fails without its config, then sleeps.
fn stand_in() -> DaemonCommand {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("tollway-lab-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let script = d.join("stand-in-daemon");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = daemon ] && [ -f \"$3\" ] || { echo \"stand-in: bad arguments: $*\"; exit 2; }\n\
             echo \"stand-in daemon: config $3, netns $(ip netns identify $$)\"\nexec sleep 100000\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    });
    DaemonCommand::tollway(&dir.join("stand-in-daemon"))
}

fn no_wait() -> UpOptions {
    UpOptions { wait: None, ..UpOptions::new(stand_in()) }
}

/// Takes the lab down when dropped (also when a test panics).
struct Guard(LabName);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &self.0) {
            eprintln!("cleanup of lab {}: {e}", self.0);
        }
    }
}

fn up(name: &LabName, topology: &str, opts: &UpOptions) -> (Lab, Guard) {
    let t = Topology::parse(topology, "test topology").unwrap();
    let guard = Guard(name.clone());
    let lab = Lab::up(name, &t, opts).unwrap_or_else(|e| panic!("lab up {name}: {e}"));
    (lab, guard)
}

const CHAIN3: &str = r#"
[[node]]
name = "a"
[[node]]
name = "b"
[[node]]
name = "c"
[[link]]
a = "a"
b = "b"
rate_mbit = 20
[[link]]
a = "b"
b = "c"
loss_permille = 100
"#;

fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn json(argv: &[&str]) -> serde_json::Value {
    let out = sh(argv);
    if out.trim().is_empty() {
        return serde_json::json!([]);
    }
    serde_json::from_str(&out).unwrap()
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let list = json(&["ip", "-j", "netns", "list"]);
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn links_in(ns: &str) -> Vec<serde_json::Value> {
    json(&["ip", "-n", ns, "-j", "link", "show"]).as_array().unwrap().clone()
}

fn sysctl(ns: &str, key: &str) -> String {
    sh(&["ip", "netns", "exec", ns, "cat", &format!("/proc/sys/{key}")]).trim().to_owned()
}

fn net_ns_inode_of_pid(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino()
}

fn link_local(ns: &str, dev: &str) -> Option<String> {
    let v = json(&["ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev]);
    v.as_array()?.first()?["addr_info"]
        .as_array()?
        .iter()
        .find(|a| a["scope"] == "link")
        .map(|a| a["local"].as_str().unwrap().to_owned())
}

#[test]
fn up_builds_namespaces_veths_shaping_and_daemons_and_down_removes_them() {
    if skip("up_builds_namespaces_veths_shaping_and_daemons_and_down_removes_them", &["ping"]) {
        return;
    }
    let name = lab_name("tu");
    let (lab, _guard) = up(&name, CHAIN3, &no_wait());
    let prefix = format!("tw-{name}-");
    assert_eq!(namespaces_with_prefix(&prefix), [format!("{prefix}a"), format!("{prefix}b"), format!("{prefix}c")]);

    // Interfaces: named after the neighbor, in the right namespace, up, MTU 1500.
    let names = |ns: &str| -> Vec<String> {
        let mut v: Vec<String> = links_in(ns).iter().map(|l| l["ifname"].as_str().unwrap().to_owned()).collect();
        v.sort();
        v
    };
    let ns = |n: &str| lab.node(n).unwrap().namespace.clone();
    assert_eq!(names(&ns("a")), ["lo", "v-b"]);
    assert_eq!(names(&ns("b")), ["lo", "v-a", "v-c"]);
    assert_eq!(names(&ns("c")), ["lo", "v-b"]);
    for l in links_in(&ns("b")) {
        let flags: Vec<&str> = l["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert!(flags.contains(&"UP"), "{l}");
        if l["ifname"] != "lo" {
            assert_eq!(l["mtu"], 1500);
            assert_eq!(l["link_type"], "ether");
        }
    }

    // Sysctls set before the veths were made: the veth itself has DAD off, addresses kept.
    for n in ["a", "b", "c"] {
        assert_eq!(sysctl(&ns(n), "net/ipv6/conf/default/accept_dad"), "0");
        assert_eq!(sysctl(&ns(n), "net/ipv6/conf/all/forwarding"), "1");
        assert_eq!(sysctl(&ns(n), "net/ipv4/ip_forward"), "1");
    }
    assert_eq!(sysctl(&ns("a"), "net/ipv6/conf/v-b/accept_dad"), "0");
    assert_eq!(sysctl(&ns("a"), "net/ipv6/conf/v-b/keep_addr_on_down"), "1");

    // Link-local ping across the a–b veth.
    let deadline = Instant::now() + Duration::from_secs(3);
    let b_ll = loop {
        if let Some(a) = link_local(&ns("b"), "v-a") {
            break a;
        }
        assert!(Instant::now() < deadline, "b has no link-local address on v-a");
        std::thread::sleep(Duration::from_millis(50));
    };
    // (Right after the link comes up, neighbor discovery may still be settling on a loaded
    // machine: allow a few attempts.)
    let mut attempts = 0;
    let ping = loop {
        attempts += 1;
        let ping = lab
            .command_in("a", &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", &format!("{b_ll}%v-b")])
            .unwrap()
            .output()
            .unwrap();
        if ping.status.success() || attempts == 5 {
            break ping;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ping.status.success(), "ping a→b ({attempts} attempts): {}", String::from_utf8_lossy(&ping.stdout));

    // Shaping on both ends of a–b, none on b–c; loss rules on both ends of b–c.
    let qdisc = |ns: &str, dev: &str| json(&["tc", "-n", ns, "-j", "qdisc", "show", "dev", dev])[0]["kind"].clone();
    assert_eq!(qdisc(&ns("a"), "v-b"), "htb");
    assert_eq!(qdisc(&ns("b"), "v-a"), "htb");
    assert_ne!(qdisc(&ns("b"), "v-c"), "htb");
    let class = sh(&["tc", "-n", &ns("a"), "class", "show", "dev", "v-b"]);
    assert!(class.contains("rate 20Mbit ceil 20Mbit"), "{class}");
    for (n, dev) in [("b", "v-c"), ("c", "v-b")] {
        let rules = json(&["ip", "netns", "exec", &ns(n), "nft", "-j", "list", "table", "netdev", "tollway_lab"]);
        let text = rules.to_string();
        // nft 1.0.6's JSON leaves out a netdev chain's device; the chain is named after it.
        let chain = format!("\"name\":\"loss_{}\"", dev.replace('-', "_"));
        assert!(text.contains(&chain) && text.contains("\"hook\":\"ingress\""), "{text}");
        assert!(text.contains("\"numgen\"") && text.contains("\"right\":100"), "{text}");
    }

    // Daemons: one per node, inside its namespace, with its generated config.
    for n in lab.nodes() {
        let pid = n.pid.expect("daemon started");
        let ns_ino = std::fs::metadata(Path::new("/run/netns").join(&n.namespace)).unwrap().ino();
        let deadline = Instant::now() + Duration::from_secs(2);
        while net_ns_inode_of_pid(pid) != ns_ino {
            assert!(Instant::now() < deadline, "pid {pid} never entered {}", n.namespace);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(lab.daemon(n.name.as_str()).unwrap().is_some());
        let config: toml::Table = toml::from_str(&std::fs::read_to_string(&n.config_path).unwrap()).unwrap();
        assert_eq!(config["api_socket"].as_str(), Some(n.api_socket.to_str().unwrap()));
        assert_eq!(config["interfaces"].as_array().unwrap().len(), n.interfaces.len());
        assert!(n.data_dir.is_dir());
    }
    // The stand-in has no API: that is an API error, not "not running".
    let e = lab.status_of("a").unwrap_err();
    assert!(matches!(e, tollway_lab::StatusError::Api { .. }), "{e}");
    assert_eq!(Lab::load(&name).unwrap().state(), lab.state(), "state.json matches");

    // exec propagates the exit code, and runs inside the namespace.
    let code = tollway_lab::run(
        tollway_lab::LabCommand::Exec {
            name: Some(name.clone()),
            target: vec!["c".into()],
            command: vec!["sh".into(), "-c".into(), "ip -j link show v-b >/dev/null && exit 7".into()],
        },
        Path::new("/nonexistent"),
    )
    .unwrap();
    assert_eq!(code, 7);

    // down: all gone; again: nothing to do.
    let pids: Vec<u32> = lab.nodes().iter().filter_map(|n| n.pid).collect();
    let dir = lab.dir().to_owned();
    let report = lab.down().unwrap();
    assert_eq!(report.daemons.len(), 3);
    assert_eq!(report.namespaces_deleted.len(), 3);
    assert!(namespaces_with_prefix(&prefix).is_empty());
    assert!(!dir.exists());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid), "pid {pid} still runs");
    }
    let again = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name).unwrap();
    assert!(!again.state_removed);
    assert!(matches!(Lab::load(&name), Err(LoadError::NotFound { .. })));
}

fn proc_is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

#[test]
fn two_labs_coexist_and_down_removes_only_its_own() {
    if skip("two_labs_coexist_and_down_removes_only_its_own", &[]) {
        return;
    }
    let (n1, n2) = (lab_name("ca"), lab_name("cb"));
    let (lab1, _g1) = up(&n1, CHAIN3, &no_wait());
    let (lab2, _g2) = up(&n2, CHAIN3, &no_wait());
    assert_eq!(namespaces_with_prefix(&format!("tw-{n1}-")).len(), 3);
    assert_eq!(namespaces_with_prefix(&format!("tw-{n2}-")).len(), 3);

    // A second `up` of a running lab is refused, pointing at `lab down`.
    let t = Topology::parse(CHAIN3, "t").unwrap();
    let e = Lab::up(&n1, &t, &no_wait()).unwrap_err();
    assert!(matches!(e, UpError::AlreadyRunning { .. }), "{e}");
    assert!(e.to_string().contains(&format!("tollway lab down --name {n1}")), "{e}");

    // Without a name, several labs are ambiguous.
    match Lab::resolve_name(Path::new(tollway_lab::DEFAULT_ROOT), None) {
        Err(LoadError::Ambiguous { names }) => assert!(names.contains(n1.as_str()) && names.contains(n2.as_str())),
        other => panic!("expected Ambiguous, got {other:?}"),
    }

    // Something started through exec keeps running in lab 1 after its shell returns.
    let st = lab1
        .command_in("b", &["sh", "-c", "setsid sleep 100000 >/dev/null 2>&1 </dev/null &"])
        .unwrap()
        .status()
        .unwrap();
    assert!(st.success());
    let lab2_pids: Vec<u32> = lab2.nodes().iter().filter_map(|n| n.pid).collect();

    let report = lab1.down().unwrap();
    assert_eq!(report.others.len(), 1, "{report:?}");
    assert_eq!(report.others[0].2, "sleep");
    assert!(namespaces_with_prefix(&format!("tw-{n1}-")).is_empty());
    assert_eq!(namespaces_with_prefix(&format!("tw-{n2}-")).len(), 3, "the other lab is untouched");
    for (pid, n) in lab2_pids.iter().zip(lab2.nodes()) {
        assert!(lab2.daemon(n.name.as_str()).unwrap().is_some(), "lab 2 daemon {pid} still runs");
    }
    lab2.down().unwrap();
    assert!(namespaces_with_prefix(&format!("tw-{n2}-")).is_empty());
}

#[test]
fn daemons_restart_and_down_cleans_up_after_sigkill() {
    if skip("daemons_restart_and_down_cleans_up_after_sigkill", &[]) {
        return;
    }
    let name = lab_name("tk");
    let (mut lab, _guard) = up(&name, CHAIN3, &no_wait());

    // kill -9 one daemon and start it again.
    let old = lab.daemon("b").unwrap().unwrap();
    lab.kill_daemon("b", Signal::Kill).unwrap();
    assert!(lab.daemon("b").unwrap().is_none());
    assert!(matches!(lab.kill_daemon("b", Signal::Term), Err(tollway_lab::DaemonError::NotRunning { .. })));
    let new = lab.start_daemon("b").unwrap();
    assert_ne!(old, new);
    assert!(matches!(lab.start_daemon("b"), Err(tollway_lab::DaemonError::AlreadyRunning { .. })));
    assert_eq!(Lab::load(&name).unwrap().node("b").unwrap().pid, Some(new.pid), "recorded in state.json");
    // Restart: SIGTERM (the stand-in's sleep obeys), SIGKILL, and a daemon that is not running.
    let r = lab.restart_daemon("c", false).unwrap();
    assert!(r.old.is_some() && r.old != Some(r.new) && !r.needed_sigkill, "{r:?}");
    let r2 = lab.restart_daemon("c", true).unwrap();
    assert_eq!(r2.old, Some(r.new));
    assert!(r2.needed_sigkill && lab.daemon("c").unwrap() == Some(r2.new));
    assert_eq!(Lab::load(&name).unwrap().node("c").unwrap().pid, Some(r2.new.pid), "recorded in state.json");
    lab.kill_daemon("c", Signal::Kill).unwrap();
    let r3 = lab.restart_daemon("c", true).unwrap();
    assert!(r3.old.is_none() && !r3.needed_sigkill && lab.daemon("c").unwrap() == Some(r3.new));
    let e = lab.restart_daemon("internet", false).unwrap_err().to_string();
    assert!(e.contains("has no node \"internet\""), "{e}");

    // The restarted stand-in logs where it runs (appended after the first run's lines).
    let log_path = lab.node("b").unwrap().log_path.clone();
    let deadline = Instant::now() + Duration::from_secs(3);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if log.contains(&format!("netns tw-{name}-b")) || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(log.matches("==== tollway-lab: starting").count(), 2, "{log}");
    assert!(log.contains(&format!("netns tw-{name}-b")), "{log}");

    // Pretend node a reported an id and left a userspace-WireGuard socket behind.
    let prefix6 = format!("{:06x}", std::process::id().wrapping_mul(2654435761) & 0xffffff);
    let mut state = tollway_lab::LabState::read(lab.dir()).unwrap();
    state.node_mut("a").unwrap().node_id = Some(format!("{prefix6}{}", "0".repeat(58)));
    state.write(lab.dir()).unwrap();
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    let sock = PathBuf::from(format!("/var/run/wireguard/tw{prefix6}abcdef.sock"));
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());

    // Now every daemon dies with SIGKILL, behind the lab's back.
    for n in lab.nodes() {
        // SAFETY: signalling a pid this test's lab started.
        unsafe { libc::kill(n.pid.unwrap() as i32, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while lab.nodes().iter().any(|n| lab.daemon(n.name.as_str()).unwrap().is_some()) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }

    // `up` again on the same name: the stale lab is taken down first.
    let t = Topology::parse(CHAIN3, "t").unwrap();
    let lab = Lab::up(&name, &t, &no_wait()).unwrap();
    assert!(!sock.exists(), "stale WireGuard socket removed");
    assert_eq!(namespaces_with_prefix(&format!("tw-{name}-")).len(), 3);

    // Kill them all again; down still cleans up.
    for n in lab.nodes() {
        // SAFETY: as above.
        unsafe { libc::kill(n.pid.unwrap() as i32, libc::SIGKILL) };
    }
    let report = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name).unwrap();
    assert!(report.state_removed);
    assert!(namespaces_with_prefix(&format!("tw-{name}-")).is_empty());
}

#[test]
fn a_failed_up_tears_down_and_shows_the_daemon_logs() {
    if skip("a_failed_up_tears_down_and_shows_the_daemon_logs", &[]) {
        return;
    }
    let t = Topology::parse(CHAIN3, "t").unwrap();

    // Daemons that never answer: waiting times out naming every link, with log tails.
    let name = lab_name("tw");
    let _guard = Guard(name.clone());
    let opts = UpOptions { wait: Some(Duration::from_millis(800)), ..UpOptions::new(stand_in()) };
    let e = Lab::up(&name, &t, &opts).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, UpError::Tunnels(WaitError::Timeout { .. })), "{msg}");
    assert!(msg.contains("tunnels not up after 800ms on 2 of 2 links"), "{msg}");
    assert!(msg.contains("a–b: a sees b: no status; b sees a: no status") && msg.contains("b–c:"), "{msg}");
    assert!(msg.contains("node a: cannot connect to the daemon at"), "{msg}");
    assert!(msg.contains("--- daemon log of a (") && msg.contains("stand-in daemon: config"), "{msg}");
    assert!(namespaces_with_prefix(&format!("tw-{name}-")).is_empty(), "torn down");
    assert!(matches!(Lab::load(&name), Err(LoadError::NotFound { .. })));

    // A namespace with the lab's name that the lab did not make is neither adopted nor deleted.
    let name = lab_name("tn");
    let _guard = Guard(name.clone());
    let squatter = format!("tw-{name}-b");
    sh(&["ip", "netns", "add", &squatter]);
    let e = Lab::up(&name, &t, &no_wait()).unwrap_err();
    assert!(matches!(e, UpError::NamespaceExists { .. }), "{e}");
    assert!(e.to_string().contains(&squatter), "{e}");
    assert_eq!(
        namespaces_with_prefix(&format!("tw-{name}-")),
        std::slice::from_ref(&squatter),
        "nothing built, nothing deleted"
    );
    assert!(matches!(Lab::load(&name), Err(LoadError::NotFound { .. })));
    sh(&["ip", "netns", "del", &squatter]);

    // A daemon that exits at once: noticed while waiting; with keep_on_failure the lab stays.
    let name = lab_name("td");
    let _guard = Guard(name.clone());
    let opts = UpOptions {
        wait: Some(Duration::from_secs(10)),
        keep_on_failure: true,
        ..UpOptions::new(DaemonCommand::custom("/bin/sh", ["-c", "echo exploding; exit 3"]))
    };
    let e = Lab::up(&name, &t, &opts).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, UpError::Tunnels(WaitError::DaemonDied { .. })), "{msg}");
    assert!(msg.contains("exploding"), "{msg}");
    assert_eq!(namespaces_with_prefix(&format!("tw-{name}-")).len(), 3, "kept for inspection");
    let report = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &name).unwrap();
    assert!(report.state_removed);
    assert!(namespaces_with_prefix(&format!("tw-{name}-")).is_empty());
}

/// Every topology shipped in `examples/lab` comes up whole within a generous bound: a namespace
/// per node, in each exactly the veths of its links (up), a daemon (the stand-in) per node; and
/// `down` removes all of it. Prints the set-up and teardown times (`-- --nocapture`); the lab-up
/// figures with the real daemon are in BENCHMARKS.md.
#[test]
fn every_shipped_topology_comes_up_whole_and_goes_down_completely() {
    if skip("every_shipped_topology_comes_up_whole_and_goes_down_completely", &[]) {
        return;
    }
    // Generous: a few seconds each on an idle 2-core machine (mesh10: 10 namespaces, 15 links).
    const UP_BOUND: Duration = Duration::from_secs(60);
    const DOWN_BOUND: Duration = Duration::from_secs(30);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "the shipped topologies: {files:?}");
    for (i, file) in files.iter().enumerate() {
        let shown = file.file_name().unwrap().to_string_lossy().into_owned();
        let t = Topology::load(file).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let name = lab_name(&format!("m{}", (b'a' + i as u8) as char));
        let _guard = Guard(name.clone());
        let started = Instant::now();
        let lab = Lab::up(&name, &t, &no_wait()).unwrap_or_else(|e| panic!("{shown}: lab up: {e}"));
        let up_total = started.elapsed();
        let timings = lab.up_timings().unwrap();

        let prefix = format!("tw-{name}-");
        // One namespace per node, one per LAN, and the internet if any node has an uplink.
        let mut expected_ns: Vec<String> = t.nodes.iter().map(|n| format!("{prefix}{}", n.name)).collect();
        expected_ns.extend(t.nodes.iter().filter(|n| n.lan).map(|n| format!("{prefix}{}-lan", n.name)));
        if t.nodes.iter().any(|n| n.uplink) {
            expected_ns.push(format!("{prefix}internet"));
        }
        expected_ns.sort();
        assert_eq!(namespaces_with_prefix(&prefix), expected_ns, "{shown}: the namespaces of nodes and hosts");
        for n in &t.nodes {
            let node = n.name.as_str();
            let mut expected: Vec<String> = t
                .links
                .iter()
                .filter_map(|l| match (l.a.as_str(), l.b.as_str()) {
                    (a, b) if a == node => Some(format!("v-{b}")),
                    (a, b) if b == node => Some(format!("v-{a}")),
                    _ => None,
                })
                .collect();
            if n.uplink {
                expected.push("v-internet".to_owned());
            }
            if n.lan {
                expected.push("v-lan".to_owned());
            }
            expected.sort();
            let links = links_in(&lab.node(node).unwrap().namespace);
            let mut veths: Vec<String> = links
                .iter()
                .filter(|l| l["ifname"] != "lo")
                .map(|l| l["ifname"].as_str().unwrap().to_owned())
                .collect();
            veths.sort();
            assert_eq!(veths, expected, "{shown}: node {node}'s veths");
            for l in &links {
                assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{shown}: {node}: {l}");
            }
            assert!(lab.daemon(node).unwrap().is_some(), "{shown}: node {node}'s daemon runs");
        }
        assert!(up_total < UP_BOUND, "{shown}: lab up took {up_total:?}");

        let down = lab.down().unwrap();
        assert_eq!(down.daemons.len(), t.nodes.len(), "{shown}: {down:?}");
        assert_eq!(down.namespaces_deleted.len(), expected_ns.len(), "{shown}: {down:?}");
        assert!(namespaces_with_prefix(&prefix).is_empty(), "{shown}: namespaces left");
        assert!(down.elapsed < DOWN_BOUND, "{shown}: lab down took {:?}", down.elapsed);
        eprintln!(
            "{shown}: {} nodes {} links: network set-up {:?}, daemons {:?}, whole up {up_total:?}; down {:?}",
            t.nodes.len(),
            t.links.len(),
            timings.network,
            timings.daemons,
            down.elapsed
        );
    }
}

/// a and b have uplinks, c a LAN: two internet veths, one LAN host.
const HOSTS3: &str = r#"
[[node]]
name = "a"
uplink = true
[[node]]
name = "b"
uplink = true
[[node]]
name = "c"
lan = true
[[link]]
a = "a"
b = "b"
[[link]]
a = "b"
b = "c"
"#;

/// Ping `addr` from `target` (node or host): true once one attempt of up to 5 succeeds
/// (right after a link comes up, neighbor discovery may still be settling).
fn pings(lab: &Lab, target: &str, addr: &str) -> bool {
    (0..5).any(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let out = lab.command_in(target, &["ping", "-c", "1", "-W", "2", addr]).unwrap().output().unwrap();
        out.status.success()
    })
}

/// One ping attempt, for asserting that something is NOT reachable.
fn ping_once(lab: &Lab, target: &str, addr: &str) -> bool {
    let out = lab.command_in(target, &["ping", "-c", "1", "-W", "1", addr]).unwrap().output().unwrap();
    out.status.success()
}

fn interface_names(ns: &str) -> Vec<String> {
    let mut v: Vec<String> = links_in(ns).iter().map(|l| l["ifname"].as_str().unwrap().to_owned()).collect();
    v.sort();
    v
}

fn is_admin_up(ns: &str, dev: &str) -> bool {
    let l = json(&["ip", "-n", ns, "-j", "link", "show", "dev", dev]);
    l[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

/// `(gateway, dev)` of the default routes in `ns`, per family.
fn default_routes(ns: &str, family: &str) -> Vec<(String, String)> {
    let v = json(&["ip", family, "-n", ns, "-j", "route", "show", "default"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["gateway"].as_str().unwrap_or("").to_owned(), r["dev"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn uplink_and_lan_hosts_come_up_addressed_and_routed() {
    if skip("uplink_and_lan_hosts_come_up_addressed_and_routed", &["ping"]) {
        return;
    }
    let name = lab_name("th");
    let (lab, _guard) = up(&name, HOSTS3, &no_wait());
    let prefix = format!("tw-{name}-");
    let ns = |n: &str| format!("{prefix}{n}");
    assert_eq!(
        namespaces_with_prefix(&prefix),
        [ns("a"), ns("b"), ns("c"), ns("c-lan"), ns("internet")],
        "one internet for both uplinks, one LAN host"
    );
    assert_eq!(interface_names(&ns("a")), ["lo", "v-b", "v-internet"]);
    assert_eq!(interface_names(&ns("c")), ["lo", "v-b", "v-lan"]);
    assert_eq!(interface_names(&ns("internet")), ["lo", "v-a", "v-b"]);
    assert_eq!(interface_names(&ns("c-lan")), ["lan0", "lo"]);

    // Hosts are end points: no forwarding; DAD off and addresses kept, as in the nodes.
    for h in ["internet", "c-lan"] {
        assert_eq!(sysctl(&ns(h), "net/ipv4/ip_forward"), "0");
        assert_eq!(sysctl(&ns(h), "net/ipv6/conf/all/forwarding"), "0");
        assert_eq!(sysctl(&ns(h), "net/ipv6/conf/default/accept_dad"), "0");
        assert_eq!(sysctl(&ns(h), "net/ipv6/conf/all/keep_addr_on_down"), "1");
    }
    assert_eq!(sysctl(&ns("c"), "net/ipv6/conf/v-lan/accept_dad"), "0");
    assert_eq!(sysctl(&ns("a"), "net/ipv4/ip_forward"), "1");

    // Uplink nodes: default routes (both families) to the internet over v-internet.
    assert_eq!(default_routes(&ns("a"), "-4"), pairs(&[("198.51.100.5", "v-internet")]));
    assert_eq!(default_routes(&ns("a"), "-6"), pairs(&[("2001:db8:ffff:1::1", "v-internet")]));
    assert_eq!(default_routes(&ns("b"), "-4"), pairs(&[("198.51.100.9", "v-internet")]));
    assert_eq!(default_routes(&ns("c"), "-4"), [], "c has no uplink");
    // The LAN host: default routes via its node.
    assert_eq!(default_routes(&ns("c-lan"), "-4"), pairs(&[("10.103.0.1", "lan0")]));
    assert_eq!(default_routes(&ns("c-lan"), "-6"), pairs(&[("fd00:1ab:3::1", "lan0")]));
    // The internet routes only to its connected link subnets: nothing toward the mesh.
    for family in ["-4", "-6"] {
        let routes = json(&["ip", family, "-n", &ns("internet"), "-j", "route", "show", "table", "main"]);
        for r in routes.as_array().unwrap() {
            assert_eq!(r["protocol"], "kernel", "only connected routes in the internet: {r}");
        }
    }
    let unrouted = Command::new("ip").args(["-n", &ns("internet"), "route", "get", "fd00:1ab:3::2"]).output().unwrap();
    assert!(!unrouted.status.success(), "the internet has no route to a LAN's ULA");

    // Traffic: the uplink nodes reach the internet's addresses, the LAN host its node.
    for node in ["a", "b"] {
        assert!(pings(&lab, node, "2001:db8::1"), "{node} pings 2001:db8::1");
        assert!(pings(&lab, node, "192.0.2.1"), "{node} pings 192.0.2.1");
    }
    assert!(pings(&lab, "c-lan", "10.103.0.1"), "c-lan pings c's LAN IPv4 address");
    assert!(pings(&lab, "c-lan", "fd00:1ab:3::1"), "c-lan pings c's LAN IPv6 address");
    assert!(pings(&lab, "internet", "198.51.100.6"), "the internet reaches a's end of the uplink");

    // The daemon configs name the lab's veths and prefixes.
    let config = |n: &str| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(&lab.node(n).unwrap().config_path).unwrap()).unwrap()
    };
    assert_eq!(config("a")["uplink"]["interface"].as_str(), Some("v-internet"));
    assert!(config("a").get("lan").is_none());
    let c = config("c");
    assert!(c.get("uplink").is_none());
    assert_eq!(c["lan"]["interface"].as_str(), Some("v-lan"));
    assert_eq!(c["lan"]["ipv6_prefix"].as_str(), Some("fd00:1ab:3::/64"));
    assert_eq!(c["lan"]["ipv4_prefix"].as_str(), Some("10.103.0.0/24"));
    assert_eq!(c["interfaces"].as_array().unwrap().len(), 1, "v-lan is not a discovery interface");

    // exec reaches hosts by name, with the lab named first or with --name.
    let exec = |target: Vec<&str>, name: Option<LabName>, script: &str| {
        let command = vec!["sh".into(), "-c".into(), script.into()];
        let target = target.into_iter().map(String::from).collect();
        tollway_lab::run(tollway_lab::LabCommand::Exec { name, target, command }, Path::new("/nonexistent")).unwrap()
    };
    let in_ns =
        |want: &str| format!("[ \"$(ip netns identify $$)\" = {} ] && [ -z \"$TOLLWAY_SOCKET\" ] && exit 5", ns(want));
    assert_eq!(exec(vec![name.as_str(), "internet"], None, &in_ns("internet")), 5);
    assert_eq!(exec(vec!["c-lan"], Some(name.clone()), &in_ns("c-lan")), 5);
    let e = lab.command_in("d-lan", &["true"]).unwrap_err().to_string();
    assert!(e.contains("has no node or host \"d-lan\" (its nodes: a, b, c; its hosts: internet, c-lan)"), "{e}");

    // lab status shows the hosts.
    let mut lab = lab;
    let reports = lab.statuses();
    let links = lab.judge_links(&reports);
    let table = tollway_lab::cli::status_table(&lab, &reports, &links);
    assert!(table.contains(&format!("internet  {}", ns("internet"))), "{table}");
    assert!(table.contains("2001:db8::1 192.0.2.1 v-a: 198.51.100.5/30 2001:db8:ffff:1::1/64"), "{table}");
    let lan_row = table.lines().find(|l| l.starts_with("c-lan ")).unwrap_or_else(|| panic!("{table}"));
    assert!(lan_row.contains("lan0: 10.103.0.2/24 fd00:1ab:3::2/64"), "{table}");
    assert!(lan_row.contains("v-lan: 10.103.0.1/24 fd00:1ab:3::1/64"), "{table}");
    let j = tollway_lab::cli::status_json(&lab, &reports, &links);
    assert_eq!(j["hosts"][1]["namespace"], ns("c-lan"));
    assert_eq!(j["host_links"][0]["node_ipv4"], "198.51.100.6/30");
}

#[test]
fn link_down_stops_traffic_and_link_up_restores_it() {
    if skip("link_down_stops_traffic_and_link_up_restores_it", &["ping"]) {
        return;
    }
    let name = lab_name("tl");
    let (mut lab, _guard) = up(&name, HOSTS3, &no_wait());
    let ns = |n: &str| format!("tw-{name}-{n}");
    assert!(pings(&lab, "a", "192.0.2.1"));

    // The uplink a–internet, named either way round.
    lab.set_link("internet", "a", false).unwrap();
    assert!(!is_admin_up(&ns("a"), "v-internet") && !is_admin_up(&ns("internet"), "v-a"), "both ends down");
    assert!(!ping_once(&lab, "a", "192.0.2.1") && !ping_once(&lab, "a", "2001:db8::1"), "no traffic while down");
    assert!(!ping_once(&lab, "internet", "198.51.100.6"));
    assert!(pings(&lab, "b", "192.0.2.1"), "b's uplink is another veth, untouched");
    assert!(Lab::load(&name).unwrap().host_links()[0].down, "recorded in state.json");
    let reports = lab.statuses();
    let table = tollway_lab::cli::status_table(&lab, &reports, &lab.judge_links(&reports));
    assert!(table.lines().any(|l| l.contains("  a  ") && l.contains("  down  ")), "{table}");
    lab.set_link("a", "internet", true).unwrap();
    assert!(is_admin_up(&ns("a"), "v-internet") && is_admin_up(&ns("internet"), "v-a"));
    assert_eq!(default_routes(&ns("a"), "-4"), pairs(&[("198.51.100.5", "v-internet")]), "route put back");
    assert_eq!(default_routes(&ns("a"), "-6"), pairs(&[("2001:db8:ffff:1::1", "v-internet")]), "route put back");
    assert!(pings(&lab, "a", "192.0.2.1") && pings(&lab, "a", "2001:db8::1"), "traffic again after up");
    assert!(!Lab::load(&name).unwrap().host_links()[0].down);

    // The LAN c–c-lan, through the CLI.
    let link = |state, a: &str, b: &str| {
        tollway_lab::run(
            tollway_lab::LabCommand::Link { name: Some(name.clone()), state, a: a.into(), b: b.into() },
            Path::new("/nonexistent"),
        )
    };
    assert_eq!(link(tollway_lab::cli::LinkState::Down, "c", "c-lan").unwrap(), 0);
    assert!(!ping_once(&lab, "c-lan", "10.103.0.1"));
    assert_eq!(link(tollway_lab::cli::LinkState::Up, "c-lan", "c").unwrap(), 0);
    assert_eq!(default_routes(&ns("c-lan"), "-6"), pairs(&[("fd00:1ab:3::1", "lan0")]), "LAN host route put back");
    assert!(pings(&lab, "c-lan", "10.103.0.1") && pings(&lab, "c-lan", "fd00:1ab:3::1"));

    // A mesh link b–c: link-local traffic over the veth stops and comes back.
    let deadline = Instant::now() + Duration::from_secs(3);
    let c_ll = loop {
        if let Some(a) = link_local(&ns("c"), "v-b") {
            break a;
        }
        assert!(Instant::now() < deadline, "c has no link-local address on v-b");
        std::thread::sleep(Duration::from_millis(50));
    };
    let target = format!("{c_ll}%v-c");
    assert!(pings(&lab, "b", &target));
    lab.set_link("b", "c", false).unwrap();
    assert!(!is_admin_up(&ns("b"), "v-c") && !is_admin_up(&ns("c"), "v-b"));
    assert!(!ping_once(&lab, "b", &target));
    assert!(Lab::load(&name).unwrap().links()[1].down);
    lab.set_link("c", "b", true).unwrap();
    assert!(pings(&lab, "b", &target), "link-local ping over b–c after up");

    // Links that do not exist, and names that are nothing.
    let e = lab.set_link("a", "c", false).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "lab {name} has no link between a and c (its links: a–b, b–c, a–internet, b–internet, c–c-lan)"
        )),
        "{e}"
    );
    let e = lab.set_link("a", "c-lan", false).unwrap_err().to_string();
    assert!(e.contains("no link between a and c-lan"), "{e}");
    let e = lab.set_link("a", "x", true).unwrap_err().to_string();
    assert!(e.contains("has no node or host \"x\""), "{e}");
    assert!(is_admin_up(&ns("a"), "v-b"), "a failed call changes nothing");
}

#[test]
fn down_removes_host_namespaces_their_veths_and_processes() {
    if skip("down_removes_host_namespaces_their_veths_and_processes", &["ping"]) {
        return;
    }
    let name = lab_name("tx");
    let (lab, _guard) = up(&name, HOSTS3, &no_wait());
    let prefix = format!("tw-{name}-");
    // Servers someone started in the hosts (as a test or an operator would, with iperf3).
    for host in ["internet", "c-lan"] {
        let st = lab
            .command_in(host, &["sh", "-c", "setsid sleep 100000 >/dev/null 2>&1 </dev/null &"])
            .unwrap()
            .status()
            .unwrap();
        assert!(st.success());
    }
    let inode = |n: &str| std::fs::metadata(format!("/run/netns/{prefix}{n}")).unwrap().ino();
    let host_inodes = [inode("internet"), inode("c-lan")];
    let in_hosts = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| host_inodes.contains(&m.ino()))
                    && !proc_is_zombie(*pid)
            })
            .collect()
    };
    let mut started = in_hosts();
    assert_eq!(started.len(), 2, "one sleep in each host");
    started.extend(lab.nodes().iter().filter_map(|n| n.pid));
    assert_eq!(started.len(), 5, "and a daemon per node");

    let report = lab.down().unwrap();
    let mut others: Vec<(String, String)> =
        report.others.iter().map(|(ns, _, comm)| (ns.clone(), comm.clone())).collect();
    others.sort();
    assert_eq!(others, pairs(&[(&format!("{prefix}c-lan"), "sleep"), (&format!("{prefix}internet"), "sleep")]));
    assert_eq!(report.namespaces_deleted.len(), 5);
    assert!(namespaces_with_prefix(&prefix).is_empty(), "no namespace of the lab is left");
    for pid in started {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid), "pid {pid} still runs");
    }
    // No veth of the lab anywhere: none was ever in the root namespace, and every namespace that
    // held one is gone (a veth pair dies with either end's namespace).
    let root: Vec<String> = interface_names_root();
    for ours in ["v-internet", "v-lan", "lan0", "v-a", "v-b", "v-c"] {
        assert!(!root.contains(&ours.to_string()), "{ours} in the root namespace: {root:?}");
    }
}

fn interface_names_root() -> Vec<String> {
    json(&["ip", "-j", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}
