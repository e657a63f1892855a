//! The lab with the real daemon: `TOLLWAY_BIN=/path/to/tollway cargo test -p tollway-lab --test real_daemon`.
//! Skipped (with the reason printed) when not root or when TOLLWAY_BIN is not set; under the test
//! command (`TOLLWAY_REQUIRE_ALL_TESTS=1`, which also sets TOLLWAY_BIN) that is a failure.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};
use tollway_lab::{DaemonCommand, Lab, LabName, Topology, UpOptions};

struct Guard(LabName);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down_by_name(Path::new(tollway_lab::DEFAULT_ROOT), &self.0) {
            eprintln!("cleanup of lab {}: {e}", self.0);
        }
    }
}

/// The shipped chain3, with its uplink on a and its LAN on c.
fn chain3() -> Topology {
    Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab/chain3.toml")).unwrap()
}

#[test]
fn chain3_comes_up_and_a_killed_daemon_comes_back_with_the_same_id() {
    const TEST: &str = "chain3_comes_up_and_a_killed_daemon_comes_back_with_the_same_id";
    if common::skip(TEST, &["ping"]) {
        return;
    }
    let Some(bin) = common::daemon_binary(TEST) else { return };
    let name: LabName = format!("tr{}", std::process::id() % 10_000_000).parse().unwrap();
    let _guard = Guard(name.clone());
    let t = chain3();
    let opts = UpOptions { wait: Some(Duration::from_secs(30)), ..UpOptions::new(DaemonCommand::tollway(&bin)) };
    let started = Instant::now();
    let lab = Lab::up(&name, &t, &opts).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("chain3 with the real daemon: {:?} (total {:?})", lab.up_timings().unwrap(), started.elapsed());

    let b = lab.node("b").unwrap().clone();
    let b_id = b.node_id.clone().expect("node id learned while waiting");
    let b_ip = b.mesh_ip.clone().expect("mesh IP learned while waiting");
    let ping = lab.command_in("a", &["ping", "-c", "1", "-W", "2", &b_ip]).unwrap().output().unwrap();
    assert!(ping.status.success(), "a pings b's mesh IP: {}", String::from_utf8_lossy(&ping.stdout));
    let status = lab.status_of("b").unwrap();
    assert_eq!(status.node.id, b_id);
    assert_eq!(status.neighbors.iter().filter(|n| n.tunnel_up).count(), 2);

    // `tollway lab restart b --kill`: SIGKILL, then the same config and data dir again.
    let old = lab.daemon("b").unwrap().expect("b runs");
    let restarted = Instant::now();
    let code = tollway_lab::run(
        tollway_lab::LabCommand::Restart { name: Some(name.clone()), node: "b".into(), kill: true },
        &bin,
    )
    .unwrap();
    assert_eq!(code, 0);
    let mut lab = Lab::load(&name).unwrap();
    let new = lab.daemon("b").unwrap().expect("b runs again");
    assert_ne!(new.pid, old.pid, "a new daemon process");
    assert!(!old.is_alive(), "the old one is gone");
    lab.wait_tunnels(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("tunnels back {:?} after restart --kill of b", restarted.elapsed());
    assert_eq!(lab.status_of("b").unwrap().node.id, b_id, "keys persist across restarts");
    let log = std::fs::read_to_string(&lab.node("b").unwrap().log_path).unwrap();
    assert_eq!(log.matches("==== tollway-lab: starting").count(), 2, "{log}");

    // `lab restart a`: SIGTERM is enough for a healthy daemon (no SIGKILL needed).
    let r = lab.restart_daemon("a", false).unwrap();
    assert!(r.old.is_some() && !r.needed_sigkill, "{r:?}");
    lab.wait_tunnels(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));

    let report = lab.down().unwrap();
    // The three nodes, c's LAN host and the internet.
    assert_eq!(report.namespaces_deleted.len(), 5, "{report:?}");
}
