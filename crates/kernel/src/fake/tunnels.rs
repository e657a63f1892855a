//! [`Tunnels`] in memory.

use super::{FakeKernel, FakeOp, FakeTunnel};
use crate::{TunnelError, Tunnels, WgConfig};
use tollway_core::{IfName, TunnelStats};

/// In-memory tunnels. `ensure` creates the interface (down, MTU 1420) as the real backends do;
/// a changed peer key resets the tunnel's stats (a new peer has had no handshake).
#[derive(Clone, Default)]
pub struct FakeTunnels {
    kernel: FakeKernel,
}

impl FakeTunnels {
    /// Fake tunnels on a fresh [`FakeKernel`] of their own.
    pub fn new() -> FakeTunnels {
        FakeTunnels::default()
    }

    pub(crate) fn on(kernel: FakeKernel) -> FakeTunnels {
        FakeTunnels { kernel }
    }

    /// The shared state, to inspect it or inject statistics and failures.
    pub fn kernel(&self) -> &FakeKernel {
        &self.kernel
    }
}

impl Tunnels for FakeTunnels {
    fn backend(&self) -> &'static str {
        "fake"
    }

    fn ensure(&mut self, cfg: &WgConfig) -> Result<(), TunnelError> {
        let name = &cfg.ifname;
        let mut w = self.kernel.lock();
        w.enter(FakeOp::TunnelEnsure, name.as_str())
            .map_err(|e| TunnelError::Configure { ifname: name.clone(), detail: e.to_string() })?;
        match w.links.get(name) {
            Some(l) if !l.is_tunnel => {
                return Err(TunnelError::Create {
                    ifname: name.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a non-tunnel interface has this name",
                    ),
                })
            }
            Some(_) => {}
            None => {
                // New, or deleted behind our back: (re)create.
                w.tunnels.remove(name);
                w.add_link(name, true);
            }
        }
        let t = w.tunnels.entry(name.clone()).or_insert_with(|| FakeTunnel {
            config: cfg.clone(),
            stats: TunnelStats::default(),
            ensure_calls: 0,
            changes: 1,
        });
        t.ensure_calls += 1;
        if t.config != *cfg {
            if t.config.peer_key != cfg.peer_key {
                t.stats = TunnelStats::default();
            }
            t.config = cfg.clone();
            t.changes += 1;
        }
        Ok(())
    }

    fn remove(&mut self, ifname: &IfName) -> Result<(), TunnelError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::TunnelRemove, ifname.as_str())
            .map_err(|source| TunnelError::Remove { ifname: ifname.clone(), source })?;
        if w.tunnels.contains_key(ifname) {
            w.delete_link(ifname);
        }
        Ok(())
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, TunnelError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::TunnelList, prefix).map_err(TunnelError::List)?;
        Ok(w.tunnels.keys().filter(|n| n.as_str().starts_with(prefix)).cloned().collect())
    }

    fn stats(&mut self, ifname: &IfName) -> Result<TunnelStats, TunnelError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::TunnelStats, ifname.as_str())
            .map_err(|e| TunnelError::Read { ifname: ifname.clone(), detail: e.to_string() })?;
        w.tunnels.get(ifname).map(|t| t.stats).ok_or_else(|| TunnelError::Missing(ifname.clone()))
    }
}
