//! Misbehaving nodes (`misbehave = {...}` in the topology): the lab makes a node cheat by
//! changing what surrounds its daemon, never the daemon itself, which stays honest and only
//! believes what it is shown.
//!
//! - `metric_lie`: the node is given a dead uplink, `v-lie` (a veth whose peer stays down, so
//!   it has no carrier), with an IPv6 default route through it that the kernel may not use
//!   (`ignore_routes_with_linkdown`). Its daemon sees a default route on its uplink and
//!   announces one into the mesh with metric 0, as if it were the exit. Its babeld then keeps
//!   the default routes its neighbors offer out of the kernel (it originates that prefix), so
//!   once the tunnels are up the lab routes [`LIE_REAL_PREFIX`] through the best of them in
//!   the node's main table: what the lie attracts goes on over the path it really has (as
//!   found then: the route does not follow later routing changes).
//! - `degrade_after_secs` / `degrade_to_mbit`: a timer in the node's namespace (stopped by
//!   `lab down` with everything else there) shapes every veth of the node to that rate after
//!   that delay: what it sends to its neighbors, forwarded or not, slows down.
//!
//! - `junk_mbit`: once the tunnels are up, the node sends that many Mbit/s of UDP datagrams to
//!   a closed port of each neighbor's mesh address (`tollway lab junk`, a process in its
//!   namespace, stopped by `lab down`): traffic nobody asked for, which the neighbor should
//!   refuse before billing it and cut the node off for.
//!
//! - `prioritize_tests`: from the start, the node polices everything it forwards to
//!   [`PRIORITIZED_REST_MBIT`] (2 Mbit/s, both directions together) except traffic to and from
//!   the lab's speed-test server (an nftables table of the lab's own, `inet twlab_misbehave`,
//!   in the node's namespace): tests through it look fast, real traffic is slow.

use crate::command;
use crate::daemon::DaemonCommand;
use crate::error::UpError;
use crate::state::NodeRecord;
use crate::topology::{Degrade, Misbehave};
use std::path::Path;

/// The dead uplink of a node that lies about its routes.
pub const LIE_INTERFACE: &str = "v-lie";
const LIE_PEER: &str = "v-lie-peer";

fn run(argv: &[&str]) -> Result<(), UpError> {
    command::run(argv, None).map(drop).map_err(|e| UpError::Misbehave(e.to_string()))
}

/// What a liar routes over its real path: the IPv6 global unicast space (the lab's internet
/// host is in it; the mesh's ULAs are not).
pub const LIE_REAL_PREFIX: &str = "2000::/3";

/// Once the tunnels are up: route what the lie attracts over the path the liar really has
/// (the best default route its neighbors offer, from its daemon's routes), as a route in its
/// main table, which its own firewall's reverse-path check also reads.
pub fn forward_lie(node: &NodeRecord, timeout: std::time::Duration) -> Result<(), UpError> {
    let ns = node.namespace.as_str();
    let deadline = std::time::Instant::now() + timeout;
    let (best, mesh_ip) = loop {
        let found = tollway_api::Client::connect(&node.api_socket).ok().and_then(|mut c| {
            let mesh_ip = c.status().ok()?.node.mesh_ip;
            let best = c
                .routes()
                .ok()?
                .routes
                .into_iter()
                .filter(|r| r.prefix == "::/0" && r.metric < 0xffff)
                .filter_map(|r| Some((r.metric, r.interface?, r.next_hop?)))
                .min()?;
            Some((best, mesh_ip))
        });
        if let Some(f) = found {
            break f;
        }
        if std::time::Instant::now() >= deadline {
            return Err(UpError::Misbehave(format!(
                "{}: no neighbor offered a default route within {timeout:?}: the liar has no real path to forward on",
                node.name
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let (metric, dev, via) = best;
    run(&["ip", "-n", ns, "-6", "route", "replace", LIE_REAL_PREFIX, "via", &via, "dev", &dev, "src", &mesh_ip])?;
    tracing::warn!(node = %node.name, %dev, %via, metric, "misbehave: the liar forwards on its real route");
    Ok(())
}

/// Before the daemon starts: the dead uplink of a liar.
pub fn prepare(node: &NodeRecord, m: &Misbehave) -> Result<(), UpError> {
    if !m.metric_lie {
        return Ok(());
    }
    let ns = node.namespace.as_str();
    run(&["ip", "-n", ns, "link", "add", LIE_INTERFACE, "type", "veth", "peer", "name", LIE_PEER])?;
    run(&["ip", "-n", ns, "link", "set", LIE_INTERFACE, "up"])?;
    let v6 = format!("net.ipv6.conf.{LIE_INTERFACE}.ignore_routes_with_linkdown=1");
    let v4 = format!("net.ipv4.conf.{LIE_INTERFACE}.ignore_routes_with_linkdown=1");
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &v6, &v4])?;
    // IPv6 only: the lie attracts IPv6 traffic, which the liar forwards (`forward_lie`).
    run(&["ip", "-n", ns, "-6", "route", "add", "default", "dev", LIE_INTERFACE])?;
    tracing::warn!(node = %node.name, "misbehave: metric_lie (a dead uplink whose default routes its daemon announces)");
    Ok(())
}

/// What a test prioritizer lets everything else through at, Mbit/s.
pub const PRIORITIZED_REST_MBIT: u32 = 2;

/// After the daemon started: the test prioritizer's policer.
pub fn prioritize_tests(node: &NodeRecord, m: &Misbehave) -> Result<(), UpError> {
    if !m.prioritize_tests {
        return Ok(());
    }
    let (server, port) = (crate::hosts::INTERNET_IPV6, crate::up::SPEEDTEST_PORT);
    let kbytes = PRIORITIZED_REST_MBIT * 1000 / 8;
    let script = format!(
        "table inet twlab_misbehave {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 5; policy accept;\n\
         \t\tip6 daddr {server} tcp dport {port} accept\n\
         \t\tip6 saddr {server} tcp sport {port} accept\n\
         \t\tlimit rate over {kbytes} kbytes/second burst {kbytes} kbytes drop\n\
         \t}}\n\
         }}\n"
    );
    command::run(&["ip", "netns", "exec", node.namespace.as_str(), "nft", "-f", "-"], Some(&script))
        .map_err(|e| UpError::Misbehave(e.to_string()))?;
    tracing::warn!(node = %node.name, rest_mbit = PRIORITIZED_REST_MBIT, "misbehave: favoring speed tests, policing everything else it forwards");
    Ok(())
}

/// After the daemon started: the degrade timer.
pub fn start(node: &NodeRecord, m: &Misbehave, tc: &Path) -> Result<(), UpError> {
    let Some(Degrade { after_secs, to_mbit }) = m.degrade else { return Ok(()) };
    let mut script = format!("sleep {after_secs}\n");
    for iface in &node.interfaces {
        script += &format!(
            "{tc} qdisc replace dev {iface} root tbf rate {to_mbit}mbit burst 32kb latency 200ms\n",
            tc = tc.display()
        );
    }
    script += "echo degraded\n";
    let path = node.dir.join("misbehave-degrade.sh");
    std::fs::write(&path, script).map_err(|source| UpError::Io { path: path.clone(), source })?;
    let cmd = DaemonCommand::custom("/bin/sh", [path.display().to_string()]);
    let log = node.dir.join("misbehave.log");
    let proc =
        crate::daemon::spawn(&cmd, &node.namespace, &path, &log).map_err(|e| UpError::Misbehave(e.to_string()))?;
    tracing::warn!(node = %node.name, pid = proc.pid, after_secs, to_mbit, "misbehave: degrade timer started");
    Ok(())
}

/// Once the tunnels are up: the junk sender of a node with `junk_mbit`, aimed at `targets`
/// (its neighbors' mesh addresses).
pub fn start_junk(node: &NodeRecord, m: &Misbehave, tollway: &Path, targets: &[String]) -> Result<(), UpError> {
    let Some(mbit) = m.junk_mbit else { return Ok(()) };
    if targets.is_empty() {
        return Err(UpError::Misbehave(format!(
            "{}: junk_mbit set but no neighbor's mesh address is known",
            node.name
        )));
    }
    let mut args = vec!["lab".to_string(), "junk".into(), "--mbit".into(), mbit.to_string()];
    for t in targets {
        args.push("--to".into());
        args.push(t.clone());
    }
    let cmd = DaemonCommand::custom(tollway, args);
    let log = node.dir.join("misbehave.log");
    let proc = crate::daemon::spawn(&cmd, &node.namespace, &node.config_path, &log)
        .map_err(|e| UpError::Misbehave(e.to_string()))?;
    tracing::warn!(node = %node.name, pid = proc.pid, mbit, ?targets, "misbehave: sending junk to its neighbors");
    Ok(())
}

/// `tollway lab junk`: paced UDP datagrams to every address, forever (errors such as an
/// unreachable address are ignored: junk is sent, not delivered).
pub fn send_junk(to: &[std::net::IpAddr], port: u16, mbit: u32) -> anyhow::Result<i32> {
    use std::time::{Duration, Instant};
    const SIZE: usize = 1200;
    let socket = std::net::UdpSocket::bind("[::]:0")?;
    let payload = vec![0x6a_u8; SIZE];
    // Datagrams per 10 ms per address, with the remainder carried over.
    let per_tick_bits = u64::from(mbit) * 1_000_000 / 100;
    let start = Instant::now();
    let mut sent_bits: u64 = 0;
    for tick in 1u64.. {
        while sent_bits < tick * per_tick_bits {
            for addr in to {
                let _ = socket.send_to(&payload, std::net::SocketAddr::new(*addr, port));
            }
            sent_bits += (SIZE as u64) * 8;
        }
        let next = start + Duration::from_millis(tick * 10);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(0)
}
