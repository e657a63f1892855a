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
//! `junk_mbit` and `prioritize_tests` are checked but have no effect yet.

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
