//! [`Links`] in memory.

use super::{FakeKernel, FakeOp};
use crate::{LinkError, LinkStats, Links, Route6};
use std::net::Ipv6Addr;
use tollway_core::IfName;

/// In-memory interfaces, addresses and routes. Physical interfaces are added with
/// [`FakeKernel::add_link`]; tunnel interfaces appear through [`FakeTunnels`](super::FakeTunnels).
#[derive(Clone, Default)]
pub struct FakeLinks {
    kernel: FakeKernel,
}

impl FakeLinks {
    /// Fake links on a fresh [`FakeKernel`] of their own.
    pub fn new() -> FakeLinks {
        FakeLinks::default()
    }

    pub(crate) fn on(kernel: FakeKernel) -> FakeLinks {
        FakeLinks { kernel }
    }

    /// The shared state, to inspect it or inject statistics and failures.
    pub fn kernel(&self) -> &FakeKernel {
        &self.kernel
    }
}

fn injected(op: &'static str, ifname: &str) -> impl FnOnce(std::io::Error) -> LinkError {
    let ifname = ifname.to_string();
    move |source| LinkError::Netlink { op, ifname, source }
}

fn invalid(op: &'static str, ifname: &IfName, what: &str) -> LinkError {
    LinkError::Netlink {
        op,
        ifname: ifname.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string()),
    }
}

impl Links for FakeLinks {
    fn index_of(&mut self, ifname: &IfName) -> Result<Option<u32>, LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkIndexOf, ifname.as_str()).map_err(injected("looking up interface", ifname.as_str()))?;
        Ok(w.links.get(ifname).map(|l| l.index))
    }

    fn disable_ipv6_autoconf(&mut self, ifname: &IfName) -> Result<(), LinkError> {
        let w = self.kernel.lock();
        if w.links.contains_key(ifname) {
            Ok(())
        } else {
            Err(LinkError::NoSuchLink(ifname.clone()))
        }
    }

    fn set_up(&mut self, ifname: &IfName, mtu: Option<u32>) -> Result<(), LinkError> {
        const OP: &str = "setting interface up";
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkSetUp, ifname.as_str()).map_err(injected(OP, ifname.as_str()))?;
        let link = w.links.get_mut(ifname).ok_or_else(|| LinkError::NoSuchLink(ifname.clone()))?;
        if let Some(mtu) = mtu {
            if mtu < 1280 && !link.addresses.is_empty() {
                // As the kernel: IPv6 needs 1280.
                return Err(invalid(OP, ifname, "MTU below 1280 on an IPv6 interface"));
            }
            link.mtu = mtu;
        }
        link.up = true;
        Ok(())
    }

    fn ensure_address(&mut self, ifname: &IfName, addr: Ipv6Addr, prefix_len: u8) -> Result<(), LinkError> {
        const OP: &str = "adding address";
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkEnsureAddress, ifname.as_str()).map_err(injected(OP, ifname.as_str()))?;
        if prefix_len > 128 {
            return Err(invalid(OP, ifname, "prefix length above 128"));
        }
        let link = w.links.get_mut(ifname).ok_or_else(|| LinkError::NoSuchLink(ifname.clone()))?;
        // As the kernel: an address already present (with any prefix length) is left alone.
        if !link.addresses.iter().any(|(a, _)| *a == addr) {
            link.addresses.insert((addr, prefix_len));
        }
        Ok(())
    }

    fn remove_address(&mut self, ifname: &IfName, addr: Ipv6Addr, prefix_len: u8) -> Result<(), LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkRemoveAddress, ifname.as_str()).map_err(injected("removing address", ifname.as_str()))?;
        if let Some(link) = w.links.get_mut(ifname) {
            link.addresses.retain(|&(a, p)| (a, p) != (addr, prefix_len));
        }
        Ok(())
    }

    fn ensure_address_v4(
        &mut self,
        ifname: &IfName,
        addr: std::net::Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), LinkError> {
        const OP: &str = "adding address";
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkEnsureAddress, ifname.as_str()).map_err(injected(OP, ifname.as_str()))?;
        if prefix_len > 32 {
            return Err(invalid(OP, ifname, "prefix length above 32"));
        }
        let link = w.links.get_mut(ifname).ok_or_else(|| LinkError::NoSuchLink(ifname.clone()))?;
        if !link.addresses_v4.iter().any(|(a, _)| *a == addr) {
            link.addresses_v4.insert((addr, prefix_len));
        }
        Ok(())
    }
    fn ensure_route(&mut self, route: &Route6) -> Result<(), LinkError> {
        const OP: &str = "installing route";
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkEnsureRoute, route.dev.as_str()).map_err(injected(OP, route.dev.as_str()))?;
        if route.prefix_len > 128 {
            return Err(invalid(OP, &route.dev, "prefix length above 128"));
        }
        if !w.links.contains_key(&route.dev) {
            return Err(LinkError::NoSuchLink(route.dev.clone()));
        }
        w.routes.insert((route.dst, route.prefix_len), route.clone());
        Ok(())
    }

    fn remove_route(&mut self, route: &Route6) -> Result<(), LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkRemoveRoute, route.dev.as_str()).map_err(injected("removing route", route.dev.as_str()))?;
        let key = (route.dst, route.prefix_len);
        if w.routes.get(&key).is_some_and(|r| r.dev == route.dev) {
            w.routes.remove(&key);
        }
        Ok(())
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkList, prefix).map_err(injected("listing interfaces", &format!("{prefix}*")))?;
        Ok(w.links.keys().filter(|n| n.as_str().starts_with(prefix)).cloned().collect())
    }

    fn delete(&mut self, ifname: &IfName) -> Result<(), LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkDelete, ifname.as_str()).map_err(injected("deleting interface", ifname.as_str()))?;
        w.delete_link(ifname);
        Ok(())
    }

    fn ensure_altname(&mut self, ifname: &IfName, altname: &str) -> Result<(), LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkAltname, ifname.as_str()).map_err(injected("naming interface", ifname.as_str()))?;
        let link = w.links.get_mut(ifname).ok_or_else(|| LinkError::NoSuchLink(ifname.clone()))?;
        link.altnames.insert(altname.to_owned());
        Ok(())
    }

    fn remove_altname(&mut self, ifname: &IfName, altname: &str) -> Result<(), LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkAltname, ifname.as_str()).map_err(injected("naming interface", ifname.as_str()))?;
        let link = w.links.get_mut(ifname).ok_or_else(|| LinkError::NoSuchLink(ifname.clone()))?;
        link.altnames.remove(altname);
        Ok(())
    }

    fn stats(&mut self, ifname: &IfName) -> Result<Option<LinkStats>, LinkError> {
        let mut w = self.kernel.lock();
        w.enter(FakeOp::LinkStats, ifname.as_str()).map_err(injected("reading interface counters", ifname.as_str()))?;
        Ok(w.links.get(ifname).map(|l| LinkStats { ifindex: l.index, ..l.stats }))
    }
}
