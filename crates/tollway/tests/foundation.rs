//! The foundation, end to end: real daemons in namespaces, real userspace WireGuard tunnels.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tollway_core::wire::discovery::{Announce, Discovery, Hello};
use tollway_core::Identity;
use tollway_lab::Signal;

#[test]
fn chain3_builds_every_tunnel_and_pings_across_each() {
    if skip("chain3_builds_every_tunnel_and_pings_across_each", &["ping"]) {
        return;
    }
    let lab = lab_up("fc", CHAIN3);
    for (from, to) in [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")] {
        let to_status = status(&lab, to);
        let from_status = status(&lab, from);
        let n = neighbor(&from_status, &to_status.node.id).unwrap_or_else(|| panic!("{from} lists {to}"));
        assert!(n.tunnel_up, "{from}→{to} tunnel up: {n:?}");
        assert!(n.interface.starts_with("tw"), "{n:?}");
        let (ok, out) = run_in(&lab, from, &["ping", "-6", "-c", "2", "-W", "3", &to_status.node.mesh_ip]);
        assert!(ok, "{from} pings {to}'s mesh address {}: {out}", to_status.node.mesh_ip);
    }
    // The ends of the chain are not neighbors of each other.
    let a = status(&lab, "a");
    assert_eq!(a.neighbors.len(), 1, "a has exactly one neighbor: {:?}", a.neighbors);
    // Sessions come up after the tunnels: every neighbor reaches `connected`.
    wait_for(Duration::from_secs(20), "all control sessions connected", || {
        ["a", "b", "c"].iter().all(|n| status(&lab, n).neighbors.iter().all(|x| x.state == "connected")).then_some(())
    });
    // Traffic shows in the per-neighbor byte counts.
    let b = status(&lab, "b");
    let a_from_b = neighbor(&b, &a.node.id).unwrap();
    assert!(a_from_b.bytes_in > 0 && a_from_b.bytes_out > 0, "{a_from_b:?}");
    // `tollway status` run inside a node (as `tollway lab exec` runs it) talks to that node's
    // daemon without being told its socket.
    let bin = tollway_bin();
    let out = lab.command_in("c", &[bin.as_os_str(), "status".as_ref(), "--json".as_ref()]).unwrap().output().unwrap();
    assert!(out.status.success(), "tollway status inside c: {}", String::from_utf8_lossy(&out.stderr));
    let c: tollway_api::Status = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(c.node.id, status(&lab, "c").node.id);
}

#[test]
fn a_neighbor_that_goes_silent_is_removed_and_rebuilt_when_it_returns() {
    if skip("a_neighbor_that_goes_silent_is_removed_and_rebuilt_when_it_returns", &["ping"]) {
        return;
    }
    let mut lab = lab_up("fs", CHAIN3);
    let c_id = node_id(&lab, "c");
    let b_ifname = neighbor(&status(&lab, "b"), &c_id).unwrap().interface.clone();

    // 1. The daemon on c stops: b removes c (lab timeout 10 s) and the tunnel interface with it.
    lab.stop_daemon("c").unwrap();
    let t = Instant::now();
    wait_for(Duration::from_secs(25), "b to drop c", || neighbor(&status(&lab, "b"), &c_id).is_none().then_some(()));
    eprintln!("b removed stopped c after {:?}", t.elapsed());
    assert!(!interfaces(&lab, "b", "tw").contains(&b_ifname), "tunnel interface {b_ifname} deleted");
    assert!(neighbor(&status(&lab, "b"), &node_id(&lab, "a")).is_some(), "a is unaffected");

    // 2. c comes back: the tunnel is rebuilt.
    lab.start_daemon("c").unwrap();
    let t = Instant::now();
    wait_for(Duration::from_secs(30), "b–c tunnel rebuilt", || {
        neighbor(&status(&lab, "b"), &c_id).filter(|n| n.tunnel_up).map(|_| ())
    });
    eprintln!("b–c tunnel back {:?} after c restarted", t.elapsed());

    // 3. The link goes down (cable pulled): same removal, and rebuilt when it comes back up.
    let (ok, out) = run_in(&lab, "b", &["ip", "link", "set", "v-c", "down"]);
    assert!(ok, "{out}");
    wait_for(Duration::from_secs(25), "b to drop c after link down", || {
        neighbor(&status(&lab, "b"), &c_id).is_none().then_some(())
    });
    let (ok, out) = run_in(&lab, "b", &["ip", "link", "set", "v-c", "up"]);
    assert!(ok, "{out}");
    wait_for(Duration::from_secs(30), "b–c tunnel after link up", || {
        neighbor(&status(&lab, "b"), &c_id).filter(|n| n.tunnel_up).map(|_| ())
    });
    // Under load the first ping after the rebuilt tunnel came up was once lost (a full test run,
    // 55e6c74; not reproduced alone): c must answer within 15 s, and how long it took is shown.
    let c_ip = status(&lab, "c").node.mesh_ip;
    let t = Instant::now();
    let mut last = String::new();
    wait_for(Duration::from_secs(15), "b to ping c after the link returned", || {
        let (ok, out) = run_in(&lab, "b", &["ping", "-6", "-c", "1", "-W", "2", &c_ip]);
        last = out;
        ok.then_some(())
    });
    eprintln!("b pings c {:?} after the tunnel was back ({})", t.elapsed(), last.lines().nth(1).unwrap_or(""));
}

#[test]
fn a_daemon_killed_with_sigkill_restarts_cleanly_with_the_same_identity() {
    if skip("a_daemon_killed_with_sigkill_restarts_cleanly_with_the_same_identity", &["ping"]) {
        return;
    }
    let mut lab = lab_up("fk", CHAIN3);
    let before = status(&lab, "b");
    let prefix = format!("tw{}", &before.node.id[..6]);
    lab.kill_daemon("b", Signal::Kill).unwrap();
    // Userspace tunnels live inside the daemon: they are gone with it, and nothing is left in
    // /var/run/wireguard.
    wait_for(Duration::from_secs(5), "b's tunnel interfaces to vanish", || {
        interfaces(&lab, "b", &prefix).is_empty().then_some(())
    });
    let sockets: Vec<_> = std::fs::read_dir("/var/run/wireguard")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!sockets.iter().any(|s| s.starts_with(&prefix)), "no control sockets of b: {sockets:?}");

    let t = Instant::now();
    lab.start_daemon("b").unwrap();
    lab.wait_tunnels(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("tunnels back {:?} after restarting b", t.elapsed());
    let after = status(&lab, "b");
    assert_eq!(after.node.id, before.node.id, "the key survived");
    assert_eq!(after.node.mesh_ip, before.node.mesh_ip);
    // Exactly one tunnel per neighbor and exactly one daemon process in b's namespace.
    assert_eq!(interfaces(&lab, "b", &prefix).len(), 2, "{:?}", interfaces(&lab, "b", "tw"));
    let pids =
        std::process::Command::new("ip").args(["netns", "pids", &lab.node("b").unwrap().namespace]).output().unwrap();
    // The daemon, and the babeld it supervises (the one the killed daemon left was stopped).
    let mut names: Vec<String> = String::from_utf8_lossy(&pids.stdout)
        .lines()
        .map(|pid| std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap_or_default().trim().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["babeld", "tollway"], "one daemon and one babeld in b's namespace");
    let (ok, out) = run_in(&lab, "a", &["ping", "-6", "-c", "1", "-W", "3", &after.node.mesh_ip]);
    assert!(ok, "a reaches the restarted b: {out}");
}

fn reject_count(lab: &tollway_lab::Lab, node: &str, reason: &str) -> u64 {
    status(lab, node).discovery_rejected.get(reason).copied().unwrap_or(0)
}

#[test]
fn forged_stale_replayed_and_malformed_announcements_are_ignored() {
    if skip("forged_stale_replayed_and_malformed_announcements_are_ignored", &[]) {
        return;
    }
    let lab = lab_up("ff", CHAIN3);
    let ns_a = lab.node("a").unwrap().namespace.clone();
    let b_id: tollway_core::NodeId = node_id(&lab, "b").parse().unwrap();
    let now = unix_ms();
    let victim = Identity::from_seed(&[0x11; 32]);
    let mallory = Identity::from_seed(&[0x22; 32]);
    let announce = |who: &Identity, unix_ms: u64| {
        Discovery::Announce(Announce { node: who.node_id(), wg_key: who.wg_public(), unix_ms })
    };
    // Forged: claims to be `victim` but is signed by mallory.
    let forged = announce(&victim, now).encode_signed(&mallory);
    // Stale: correctly signed, an hour old.
    let stale = announce(&mallory, now - 3_600_000).encode_signed(&mallory);
    // Replayed: a valid announce of `replayer`, then the very same bytes again.
    let replayer = Identity::from_seed(&[0x33; 32]);
    let valid = announce(&replayer, now).encode_signed(&replayer);
    // A Hello addressed to someone other than b, and bytes that are not a message at all.
    let elsewhere = Discovery::Hello(Hello {
        node: mallory.node_id(),
        wg_key: mallory.wg_public(),
        to: victim.node_id(),
        listen_port: 51900,
        unix_ms: now,
    })
    .encode_signed(&mallory);
    let before: Vec<u64> = ["bad signature", "stale", "replayed", "malformed", "addressed to another node"]
        .iter()
        .map(|r| reject_count(&lab, "b", r))
        .collect();
    send_discovery(&ns_a, "v-b", vec![forged, stale, valid.clone()]);
    std::thread::sleep(Duration::from_millis(300));
    send_discovery(&ns_a, "v-b", vec![valid, elsewhere, b"definitely not a tollway datagram".to_vec()]);

    wait_for(Duration::from_secs(10), "b to count every rejection", || {
        let now: Vec<u64> = ["bad signature", "stale", "replayed", "malformed", "addressed to another node"]
            .iter()
            .map(|r| reject_count(&lab, "b", r))
            .collect();
        now.iter().zip(&before).all(|(n, b)| n > b).then_some(())
    });
    let b = status(&lab, "b");
    assert!(neighbor(&b, &victim.node_id().to_string()).is_none(), "the forged identity was not admitted");
    assert!(neighbor(&b, &mallory.node_id().to_string()).is_none(), "the stale/misaddressed sender was not admitted");
    // b's real neighbors are untouched.
    for real in ["a", "c"] {
        let id = node_id(&lab, real);
        assert!(neighbor(&b, &id).is_some_and(|n| n.tunnel_up), "{real} still up");
    }
    let _ = b_id;
}

#[test]
fn a_flood_of_announcements_from_fake_identities_stays_bounded() {
    if skip("a_flood_of_announcements_from_fake_identities_stays_bounded", &[]) {
        return;
    }
    // b's table holds at most 12 neighbors (2 real ones) and admits 5 new ones per second.
    let topology = r#"
[[node]]
name = "a"
[[node]]
name = "b"
[node.config.discovery]
max_neighbors = 12
max_new_neighbors_per_sec = 5
pending_timeout_secs = 8
[[node]]
name = "c"
[[link]]
a = "a"
b = "b"
[[link]]
a = "b"
b = "c"
"#;
    let lab = lab_up("fl", topology);
    let ns_a = lab.node("a").unwrap().namespace.clone();
    let b_pid = lab.node("b").unwrap().pid.unwrap();
    let ns_b = lab.node("b").unwrap().namespace.clone();
    let rss_before = rss_kb(b_pid);
    let drops_before = udp6_rcvbuf_drops(&ns_b);
    let (a_id, c_id) = (node_id(&lab, "a"), node_id(&lab, "c"));

    // 3,000 valid announcements from 3,000 distinct identities, sent as fast as possible.
    let now = unix_ms();
    let flood: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            seed[4] = 0xf1;
            let id = Identity::from_seed(&seed);
            Discovery::Announce(Announce { node: id.node_id(), wg_key: id.wg_public(), unix_ms: now })
                .encode_signed(&id)
        })
        .collect();
    let t = Instant::now();
    for chunk in flood.chunks(300) {
        send_discovery(&ns_a, "v-b", chunk.to_vec());
    }
    eprintln!("sent 3000 announcements in {:?}", t.elapsed());

    // For the next 10 s the table and the interfaces stay within the cap, and the real
    // neighbors stay up.
    let mut max_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let b = status(&lab, "b");
        max_seen = max_seen.max(b.neighbors.len());
        assert!(b.neighbors.len() <= 12, "neighbor table over the cap: {}", b.neighbors.len());
        let tunnels = interfaces(&lab, "b", "tw");
        assert!(tunnels.len() <= 12, "tunnel interfaces over the cap: {}", tunnels.len());
        std::thread::sleep(Duration::from_millis(500));
    }
    let b = status(&lab, "b");
    for (name, id) in [("a", &a_id), ("c", &c_id)] {
        assert!(neighbor(&b, id).is_some_and(|n| n.tunnel_up), "real neighbor {name} survived the flood");
    }
    // Every datagram is accounted for: refused with a counted reason, dropped by the kernel
    // because the socket's buffer was full (the flood outran the reader), or admitted (at
    // most the table's cap).
    let refused: u64 = b.discovery_rejected.values().sum();
    let dropped = udp6_rcvbuf_drops(&ns_b) - drops_before;
    eprintln!("b: refused {refused} ({:?}), kernel dropped {dropped}", b.discovery_rejected);
    assert!(
        refused + dropped + 12 >= 3000,
        "all but at most 12 of the 3000 announcements refused or dropped: refused {refused} {:?}, dropped {dropped}",
        b.discovery_rejected
    );
    let rss_after = rss_kb(b_pid);
    eprintln!("b: at most {max_seen} neighbors; RSS {rss_before} kB → {rss_after} kB");
    assert!(rss_after < rss_before + 64 * 1024, "memory stayed bounded: {rss_before} → {rss_after} kB");
}

/// CPU time (user + system, all threads) a process has used, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The fields after the command name (which is in parentheses and may contain spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap(); // utime, stime
                                                                                              // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Discovery datagrams arriving in namespace `ns` on `iface`, collected for `wait` (a second
/// socket on the discovery port, as any host on the link could open).
fn capture_discovery(ns: &str, iface: &str, wait: Duration, want: usize) -> Vec<Vec<u8>> {
    let iface = iface.to_owned();
    tollway_kernel::netns::run_in(ns, move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_only_v6(true).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind_device(Some(iface.as_bytes())).unwrap();
        let c = std::ffi::CString::new(iface.clone()).unwrap();
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        s.bind(
            &std::net::SocketAddr::from(std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 7477, 0, 0))
                .into(),
        )
        .unwrap();
        s.join_multicast_v6(&tollway_core::DISCOVERY_GROUP, idx).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let socket: std::net::UdpSocket = s.into();
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while Instant::now() < deadline && got.len() < want {
            if let Ok(n) = socket.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        got
    })
    .expect("enter namespace")
}

#[test]
fn a_flood_claiming_a_connected_neighbors_id_costs_bounded_cpu_and_leaves_it_connected() {
    if skip("known-id flood", &[]) {
        return;
    }
    let lab = lab_up("fn", CHAIN3);
    wait_for(Duration::from_secs(30), "a–b and b–c connected", || {
        let b = status(&lab, "b");
        (b.neighbors.len() == 2 && b.neighbors.iter().all(|n| n.state == "connected")).then_some(())
    });
    let ns_a = lab.node("a").unwrap().namespace.clone();
    let ns_b = lab.node("b").unwrap().namespace.clone();
    let b_pid = lab.node("b").unwrap().pid.unwrap();
    let a = status(&lab, "a").node;
    let (a_id, b_id, c_id) = (a.id.clone(), node_id(&lab, "b"), node_id(&lab, "c"));
    let a_node: tollway_core::NodeId = a_id.parse().unwrap();
    let mut a_wg = [0u8; 32];
    hex::decode_to_slice(&a.wg_public_key, &mut a_wg).unwrap();

    // What the attacker sends, from a's own link-local address on the a–b link (it is on that
    // link): Announces claiming a's id and key, signed by someone else, with fresh timestamps
    // (ahead of a's own for the whole test), and replays of a's real Announces.
    let replays = capture_discovery(&ns_b, "v-a", Duration::from_secs(10), 3);
    assert!(!replays.is_empty(), "captured a's announcements");
    let mallory = Identity::from_seed(&[0x66; 32]);
    let ahead = unix_ms() + 120_000;
    let forged: Vec<Vec<u8>> = (0..2000u64)
        .map(|i| {
            Discovery::Announce(Announce { node: a_node, wg_key: tollway_core::WgPublicKey(a_wg), unix_ms: ahead + i })
                .encode_signed(&mallory)
        })
        .collect();

    const RATE: u64 = 20_000; // datagrams per second
    const FLOOD: Duration = Duration::from_secs(20);
    let before = status(&lab, "b").discovery_rejected;
    let drops_before = udp6_rcvbuf_drops(&ns_b);
    let cpu_before = cpu_secs(b_pid);
    let t0 = Instant::now();
    let sender = {
        let ns_a = ns_a.clone();
        std::thread::spawn(move || {
            tollway_kernel::netns::run_in(&ns_a, move || {
                use socket2::{Domain, Protocol, Socket, Type};
                let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
                s.bind_device(Some(b"v-b")).unwrap();
                // SAFETY: valid C string.
                let idx = unsafe { libc::if_nametoindex(c"v-b".as_ptr()) };
                s.set_multicast_if_v6(idx).unwrap();
                s.set_multicast_loop_v6(false).unwrap();
                let dst = std::net::SocketAddrV6::new(tollway_core::DISCOVERY_GROUP, 7477, 0, idx).into();
                let start = Instant::now();
                let mut sent = 0u64;
                while start.elapsed() < FLOOD {
                    // Keep to RATE: send what is due, then sleep a millisecond.
                    let due = (start.elapsed().as_secs_f64() * RATE as f64) as u64;
                    while sent < due {
                        let d = if sent % 10 == 9 {
                            &replays[(sent / 10) as usize % replays.len()]
                        } else {
                            &forged[sent as usize % forged.len()]
                        };
                        if s.send_to(d, &dst).is_ok() {
                            sent += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent
            })
            .expect("enter namespace")
        })
    };

    // Throughout the flood: a stays connected to b, both ways, and so does c.
    let mut polls = 0;
    while !sender.is_finished() {
        let b = status(&lab, "b");
        for (name, id) in [("a", &a_id), ("c", &c_id)] {
            let n = neighbor(&b, id).unwrap_or_else(|| panic!("b lost {name} at {:?}", t0.elapsed()));
            assert_eq!(n.state, "connected", "b–{name} at {:?}: {n:?}", t0.elapsed());
        }
        let from_a = status(&lab, "a");
        let n = neighbor(&from_a, &b_id).unwrap_or_else(|| panic!("a lost b at {:?}", t0.elapsed()));
        assert_eq!(n.state, "connected", "a–b at {:?}", t0.elapsed());
        polls += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent = sender.join().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(b_pid) - cpu_before;
    // Let the daemon finish what its socket and queue still hold.
    std::thread::sleep(Duration::from_secs(2));
    let after = status(&lab, "b");
    for (name, id) in [("a", &a_id), ("c", &c_id)] {
        assert!(neighbor(&after, id).is_some_and(|n| n.state == "connected"), "{name} connected after the flood");
    }
    let delta = |reason: &str| {
        after.discovery_rejected.get(reason).copied().unwrap_or(0) - before.get(reason).copied().unwrap_or(0)
    };
    let refused: u64 = after.discovery_rejected.keys().map(|r| delta(r)).sum();
    let dropped = udp6_rcvbuf_drops(&ns_b) - drops_before;
    let reasons: Vec<(String, u64)> =
        after.discovery_rejected.keys().map(|r| (r.clone(), delta(r))).filter(|(_, n)| *n > 0).collect();
    eprintln!(
        "sent {sent} in {wall:.1} s ({:.0}/s); b refused {refused} {reasons:?}, kernel dropped {dropped}; \
         b used {cpu:.2} s of CPU ({:.1}% of one core); {polls} status polls",
        sent as f64 / wall,
        100.0 * cpu / wall
    );
    assert!(sent as f64 >= 0.8 * RATE as f64 * FLOOD.as_secs_f64(), "the flood ran at the rate: {sent}");
    // Every datagram is accounted for: refused with a counted reason (signature, replay, budget,
    // full queue) or dropped by the kernel when the daemon's reading was paused. The real
    // neighbors' own messages over the window (a few a second) come on top.
    assert!(refused + dropped >= sent, "all {sent} accounted: refused {refused}, dropped {dropped}");
    assert!(refused + dropped <= sent + 1000, "no more than sent plus real traffic: {refused} + {dropped}");
    // Signature checks of a's id stay within its budget: 6 per announce interval (1 s in the lab).
    let checked = delta("bad signature");
    assert!(checked as f64 <= 6.0 * (wall + 3.0) + 6.0, "{checked} signature checks of forgeries");
    // The daemon's CPU stays bounded whatever the flood's rate: it reads at most 1,000
    // datagrams a second on the link (~10 µs of daemon CPU each: 1% of a core) and checks at
    // most 6 signatures a second of a's id. 10% of a core leaves a tenfold margin for a loaded
    // machine. Measured (see BENCHMARKS.md): 0.8% with the bounds; 16% with the budgets but
    // without the read bound; 48% (and 107,000 checks) with neither.
    assert!(cpu < 0.10 * wall, "b used {cpu:.2} s of CPU in {wall:.1} s");
}
