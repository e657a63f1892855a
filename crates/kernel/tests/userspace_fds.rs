//! Resource use of repeated create/remove cycles of userspace tunnels, alone in its own test
//! binary so that no other test opens file descriptors meanwhile. Skipped when not root.

mod common;

use common::{keys, skip, unique};
use std::net::SocketAddrV6;
use std::time::Instant;
use tollway_kernel::netns::NetNs;
use tollway_kernel::{Links, Tunnels, UserspaceOptions, UserspaceTunnels, WgConfig};

/// The tests of this file count process-wide resources: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn create_remove_cycles_do_not_leak_threads_and_leak_few_fds() {
    if skip("create_remove_cycles_do_not_leak_threads_and_leak_few_fds", &[]) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const CYCLES: usize = 20;
    let ns = NetNs::new().unwrap();
    let (ours, theirs) = (keys(1), keys(2));
    let (fds, tasks, elapsed) = ns
        .run(|| {
            let mut t = UserspaceTunnels::new(UserspaceOptions::default());
            // One cycle first, so that lazily opened process-wide fds are not counted.
            let warm = WgConfig {
                ifname: unique("twf"),
                private_key: ours.private,
                listen_port: 52000,
                peer_key: theirs.public,
                endpoint: Some(SocketAddrV6::new("fe80::2".parse().unwrap(), 52001, 0, 1)),
                keepalive_secs: 0,
            };
            t.ensure(&warm).unwrap();
            t.remove(&warm.ifname).unwrap();
            let (fd0, th0) = (open_fds(), threads());
            let start = Instant::now();
            for i in 0..CYCLES {
                let mut cfg = warm.clone();
                cfg.ifname = unique("twf");
                cfg.listen_port = 52000 + i as u16;
                t.ensure(&cfg).unwrap();
                // A reconfiguration too (new peer and endpoint), to count its cost. (A new
                // listen port would recreate the device.)
                cfg.peer_key = ours.public;
                cfg.endpoint = Some(SocketAddrV6::new("fe80::3".parse().unwrap(), 52001, 0, 1));
                t.ensure(&cfg).unwrap();
                t.remove(&cfg.ifname).unwrap();
            }
            let elapsed = start.elapsed();
            // Reaper threads report before they have quite exited: give them a moment.
            let settled = Instant::now();
            while threads() > th0 && settled.elapsed() < std::time::Duration::from_secs(1) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (open_fds() as isize - fd0 as isize, threads() as isize - th0 as isize, elapsed)
        })
        .unwrap();
    eprintln!(
        "{CYCLES} cycles of create + reconfigure + remove: {elapsed:?}; fds leaked {fds} ({:.1} per cycle); threads left {tasks}",
        fds as f64 / CYCLES as f64
    );
    assert!(tasks <= 0, "no boringtun thread outlives its device");
    // boringtun 0.7 never closes the timerfds and eventfds of a device's event loop (2 + 2 per
    // device; `EventPoll::drop` closes only the epoll fd). Anything beyond that would be ours.
    assert!(fds <= (CYCLES * 4) as isize, "leaked {fds} fds over {CYCLES} cycles");
}

#[test]
fn child_processes_do_not_inherit_tunnel_descriptors() {
    if skip("child_processes_do_not_inherit_tunnel_descriptors", &[]) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let ns = NetNs::new().unwrap();
    let (ours, theirs) = (keys(3), keys(4));
    let cfg = WgConfig {
        ifname: unique("twi"),
        private_key: ours.private,
        listen_port: 53000,
        peer_key: theirs.public,
        endpoint: None,
        keepalive_secs: 0,
    };
    let mut t = UserspaceTunnels::new(UserspaceOptions::default());
    ns.run(|| t.ensure(&cfg)).unwrap().unwrap();
    // A long-lived child started after the device (as babeld would be).
    let pid = ns.spawn("sleep", &["30"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let inherited: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p == "/dev/net/tun" || p.starts_with("anon_inode:") || p.starts_with("socket:"))
        .collect();
    assert!(inherited.is_empty(), "the child inherited {inherited:?}");
    // So removing the device really removes the interface while the child lives.
    ns.run(|| t.remove(&cfg.ifname)).unwrap().unwrap();
    let name = cfg.ifname.clone();
    let idx = ns.run(move || tollway_kernel::NetlinkLinks::new().index_of(&name).unwrap()).unwrap();
    assert_eq!(idx, None);
    assert!(ns.kill(pid));
}
