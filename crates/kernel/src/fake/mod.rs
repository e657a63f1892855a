//! In-memory fakes of [`Tunnels`](crate::Tunnels) and [`Links`](crate::Links) for unit tests of
//! the driver. Both share one [`FakeKernel`], as the real ones share the kernel: a tunnel made
//! by [`FakeTunnels::ensure`](crate::Tunnels::ensure) is an interface [`FakeLinks`] can set up,
//! and deleting an interface takes its addresses, routes and tunnel with it.
//!
//! Handles are cheap clones of one shared state, so a test can hand one to the driver and keep
//! another to inspect what was done, inject statistics, or make the next calls fail.

mod links;
mod routes;
mod tunnels;

pub use links::FakeLinks;
pub use routes::FakeRoutes;
pub use tunnels::FakeTunnels;

use crate::{LinkStats, Route6, WgConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use tollway_core::{IfName, TunnelStats};

/// The operations of both traits, to name which call should fail and to record calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    TunnelEnsure,
    TunnelRemove,
    TunnelList,
    TunnelStats,
    LinkIndexOf,
    LinkSetUp,
    LinkEnsureAddress,
    LinkRemoveAddress,
    LinkEnsureRoute,
    LinkRemoveRoute,
    LinkList,
    LinkDelete,
    LinkStats,
    LinkAltname,
}

/// One recorded call: the operation and the interface (or list prefix) it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    pub op: FakeOp,
    pub target: String,
}

/// A tunnel as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeTunnel {
    pub config: WgConfig,
    pub stats: TunnelStats,
    /// Calls to `ensure` for this tunnel, and how many of them changed something.
    pub ensure_calls: u32,
    pub changes: u32,
}

/// An interface as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub index: u32,
    /// Made by `FakeTunnels::ensure` (as opposed to [`FakeKernel::add_link`]).
    pub is_tunnel: bool,
    pub up: bool,
    pub mtu: u32,
    pub addresses: BTreeSet<(Ipv6Addr, u8)>,
    pub addresses_v4: BTreeSet<(std::net::Ipv4Addr, u8)>,
    pub stats: LinkStats,
    pub altnames: BTreeSet<String>,
}

struct FailRule {
    op: FakeOp,
    ifname: Option<IfName>,
    /// `None`: forever.
    remaining: Option<u32>,
}

#[derive(Default)]
struct World {
    next_index: u32,
    links: BTreeMap<IfName, FakeLink>,
    tunnels: BTreeMap<IfName, FakeTunnel>,
    routes: BTreeMap<(Ipv6Addr, u8), Route6>,
    rules: Vec<FailRule>,
    calls: Vec<FakeCall>,
}

impl World {
    /// Record the call and return the injected failure, if one matches.
    fn enter(&mut self, op: FakeOp, target: &str) -> Result<(), io::Error> {
        self.calls.push(FakeCall { op, target: target.to_string() });
        let hit = self
            .rules
            .iter_mut()
            .position(|r| r.op == op && applies_to(r.ifname.as_ref(), target) && r.remaining != Some(0));
        let Some(i) = hit else { return Ok(()) };
        if let Some(n) = self.rules[i].remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(i);
            }
        }
        Err(io::Error::other(format!("injected failure of {op:?} on {target}")))
    }

    fn add_link(&mut self, name: &IfName, is_tunnel: bool) -> u32 {
        self.next_index += 1;
        let index = self.next_index + 1; // lo would be 1
        self.links.insert(
            name.clone(),
            FakeLink {
                index,
                is_tunnel,
                up: false,
                mtu: if is_tunnel { 1420 } else { 1500 },
                addresses: BTreeSet::new(),
                addresses_v4: BTreeSet::new(),
                stats: LinkStats::default(),
                altnames: BTreeSet::new(),
            },
        );
        index
    }

    /// Delete an interface and everything that depends on it.
    fn delete_link(&mut self, name: &IfName) -> bool {
        let existed = self.links.remove(name).is_some();
        self.tunnels.remove(name);
        self.routes.retain(|_, r| &r.dev != name);
        existed
    }
}

/// A rule for `ifname` (or for any interface, if `None`) applies to `target`.
fn applies_to(ifname: Option<&IfName>, target: &str) -> bool {
    match ifname {
        None => true,
        Some(n) => n.as_str() == target,
    }
}

/// The shared state behind [`FakeTunnels`] and [`FakeLinks`].
#[derive(Clone, Default)]
pub struct FakeKernel {
    world: Arc<Mutex<World>>,
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// A [`Tunnels`](crate::Tunnels) on this state.
    pub fn tunnels(&self) -> FakeTunnels {
        FakeTunnels::on(self.clone())
    }

    /// A [`Links`](crate::Links) on this state.
    pub fn links(&self) -> FakeLinks {
        FakeLinks::on(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    // --- Set-up -------------------------------------------------------------------------

    /// Add a physical interface (down, MTU 1500); returns its index.
    pub fn add_link(&self, name: &IfName) -> u32 {
        self.lock().add_link(name, false)
    }

    /// Delete an interface behind the driver's back, as an operator running `ip link del`
    /// would. Its tunnel, addresses and routes go with it.
    pub fn delete_link_externally(&self, name: &IfName) -> bool {
        self.lock().delete_link(name)
    }

    // --- Injection ----------------------------------------------------------------------

    /// Make the next call of `op` (on `ifname`, or on anything) fail.
    pub fn fail_next(&self, op: FakeOp, ifname: Option<&IfName>) {
        self.fail_times(op, ifname, 1);
    }

    /// Make the next `times` calls of `op` fail.
    pub fn fail_times(&self, op: FakeOp, ifname: Option<&IfName>, times: u32) {
        if times > 0 {
            self.lock().rules.push(FailRule { op, ifname: ifname.cloned(), remaining: Some(times) });
        }
    }

    /// Make every call of `op` fail until [`FakeKernel::clear_failures`].
    pub fn fail_always(&self, op: FakeOp, ifname: Option<&IfName>) {
        self.lock().rules.push(FailRule { op, ifname: ifname.cloned(), remaining: None });
    }

    pub fn clear_failures(&self) {
        self.lock().rules.clear();
    }

    /// Set what `Tunnels::stats` reports for a tunnel. Returns false if there is no such tunnel.
    pub fn set_tunnel_stats(&self, ifname: &IfName, stats: TunnelStats) -> bool {
        self.lock().tunnels.get_mut(ifname).map(|t| t.stats = stats).is_some()
    }

    /// Set only the handshake age of a tunnel (`None`: never).
    pub fn set_handshake_age(&self, ifname: &IfName, secs: Option<u64>) -> bool {
        self.lock().tunnels.get_mut(ifname).map(|t| t.stats.last_handshake_secs = secs).is_some()
    }

    /// Account traffic on an interface: its link counters rise by the bytes (one packet per
    /// call each way that moved bytes), and so do its tunnel's inner byte counts, if it is one.
    pub fn add_traffic(&self, ifname: &IfName, rx_bytes: u64, tx_bytes: u64) -> bool {
        let mut w = self.lock();
        let Some(link) = w.links.get_mut(ifname) else { return false };
        link.stats.rx_bytes += rx_bytes;
        link.stats.tx_bytes += tx_bytes;
        link.stats.rx_packets += u64::from(rx_bytes > 0);
        link.stats.tx_packets += u64::from(tx_bytes > 0);
        if let Some(t) = w.tunnels.get_mut(ifname) {
            t.stats.rx_bytes += rx_bytes;
            t.stats.tx_bytes += tx_bytes;
        }
        true
    }

    /// Set an interface's counters outright.
    pub fn set_link_stats(&self, ifname: &IfName, stats: LinkStats) -> bool {
        self.lock().links.get_mut(ifname).map(|l| l.stats = stats).is_some()
    }

    // --- Inspection ---------------------------------------------------------------------

    pub fn tunnel(&self, ifname: &IfName) -> Option<FakeTunnel> {
        self.lock().tunnels.get(ifname).cloned()
    }

    pub fn tunnel_names(&self) -> Vec<IfName> {
        self.lock().tunnels.keys().cloned().collect()
    }

    pub fn link(&self, ifname: &IfName) -> Option<FakeLink> {
        self.lock().links.get(ifname).cloned()
    }

    pub fn link_names(&self) -> Vec<IfName> {
        self.lock().links.keys().cloned().collect()
    }

    /// Every route, ordered by destination.
    pub fn routes(&self) -> Vec<Route6> {
        self.lock().routes.values().cloned().collect()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` there were.
    pub fn count(&self, op: FakeOp) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
}

#[cfg(test)]
mod tests;
