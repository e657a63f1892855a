//! [`Links`] over typed rtnetlink. Each call opens its own netlink socket, so it acts on the
//! network namespace of the calling thread at the time of the call.

use crate::nl::route::{self, LinkSummary};
use crate::nl::{is_errno, NlSocket};
use crate::{LinkError, LinkStats, Links, Route6};
use std::io;
use std::net::Ipv6Addr;
use tollway_core::IfName;

/// Interfaces, IPv6 addresses and IPv6 routes of the calling thread's network namespace.
#[derive(Debug, Default, Clone)]
pub struct NetlinkLinks {
    _private: (),
}

impl NetlinkLinks {
    pub fn new() -> NetlinkLinks {
        NetlinkLinks { _private: () }
    }
}

fn err(op: &'static str, ifname: impl ToString) -> impl FnOnce(io::Error) -> LinkError {
    let ifname = ifname.to_string();
    move |source| LinkError::Netlink { op, ifname, source }
}

fn socket(op: &'static str, ifname: &IfName) -> Result<NlSocket, LinkError> {
    NlSocket::route().map_err(err(op, ifname))
}

/// The interface `ifname`, or [`LinkError::NoSuchLink`].
fn existing(sock: &mut NlSocket, op: &'static str, ifname: &IfName) -> Result<LinkSummary, LinkError> {
    route::link_by_name(sock, ifname.as_str())
        .map_err(err(op, ifname))?
        .ok_or_else(|| LinkError::NoSuchLink(ifname.clone()))
}

/// Maps `ENODEV` (the interface vanished between lookup and change) to `NoSuchLink`.
fn no_dev(op: &'static str, ifname: &IfName) -> impl FnOnce(io::Error) -> LinkError {
    let name = ifname.clone();
    move |e| if is_errno(&e, libc::ENODEV) { LinkError::NoSuchLink(name) } else { err(op, &name)(e) }
}

impl Links for NetlinkLinks {
    fn index_of(&mut self, ifname: &IfName) -> Result<Option<u32>, LinkError> {
        const OP: &str = "looking up interface";
        let mut sock = socket(OP, ifname)?;
        Ok(route::link_by_name(&mut sock, ifname.as_str()).map_err(err(OP, ifname))?.map(|l| l.index))
    }

    fn set_up(&mut self, ifname: &IfName, mtu: Option<u32>) -> Result<(), LinkError> {
        const OP: &str = "setting interface up";
        let mut sock = socket(OP, ifname)?;
        let link = existing(&mut sock, OP, ifname)?;
        if link.up && (mtu.is_none() || mtu == link.mtu) {
            return Ok(());
        }
        sock.request(route::set_up(link.index, mtu), 0).map_err(no_dev(OP, ifname))?;
        Ok(())
    }

    fn ensure_altname(&mut self, ifname: &IfName, altname: &str) -> Result<(), LinkError> {
        const OP: &str = "adding an alternative name to interface";
        if altname.is_empty() || altname.len() > 15 {
            // The kernel takes up to 127 bytes, but if_nametoindex (babeld's lookup) only 15.
            let e = io::Error::new(io::ErrorKind::InvalidInput, format!("altname {altname:?} must be 1 to 15 bytes"));
            return Err(err(OP, ifname)(e));
        }
        let mut sock = socket(OP, ifname)?;
        let link = existing(&mut sock, OP, ifname)?;
        // The kernel answers EEXIST when the interface (or another) already has the name.
        match sock.request(route::add_altname(link.index, altname), libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16)
        {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) && route::ifindex(altname) == Some(link.index) => Ok(()),
            Err(e) => Err(no_dev(OP, ifname)(e)),
        }
    }

    fn remove_altname(&mut self, ifname: &IfName, altname: &str) -> Result<(), LinkError> {
        const OP: &str = "removing an alternative name of interface";
        let mut sock = socket(OP, ifname)?;
        let link = existing(&mut sock, OP, ifname)?;
        match sock.request(route::del_altname(link.index, altname), 0) {
            Ok(_) => Ok(()),
            // Not one of its names.
            Err(e) if is_errno(&e, libc::ENOENT) || is_errno(&e, libc::ENODATA) || is_errno(&e, libc::EINVAL) => Ok(()),
            Err(e) => Err(no_dev(OP, ifname)(e)),
        }
    }

    fn disable_ipv6_autoconf(&mut self, ifname: &IfName) -> Result<(), LinkError> {
        // No typed netlink verb for this in our message crate; the per-interface sysctl is the
        // same setting (IFLA_INET6_ADDR_GEN_MODE = none) and lives in the calling thread's
        // namespace's /proc/sys/net.
        let path = format!("/proc/sys/net/ipv6/conf/{ifname}/addr_gen_mode");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => Ok(()),
            _ => std::fs::write(&path, "1").map_err(|source| LinkError::Netlink {
                op: "disabling IPv6 address generation",
                ifname: ifname.to_string(),
                source,
            }),
        }
    }

    fn ensure_address(&mut self, ifname: &IfName, addr: Ipv6Addr, prefix_len: u8) -> Result<(), LinkError> {
        const OP: &str = "adding address";
        let mut sock = socket(OP, ifname)?;
        let link = existing(&mut sock, OP, ifname)?;
        match sock.request(route::new_addr6(link.index, addr, prefix_len), route::NEW_ADDR_FLAGS) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(no_dev(OP, ifname)(e)),
        }
    }

    fn remove_address(&mut self, ifname: &IfName, addr: Ipv6Addr, prefix_len: u8) -> Result<(), LinkError> {
        const OP: &str = "removing address";
        let mut sock = socket(OP, ifname)?;
        let Some(link) = route::link_by_name(&mut sock, ifname.as_str()).map_err(err(OP, ifname))? else {
            return Ok(());
        };
        match sock.request(route::del_addr6(link.index, addr, prefix_len), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EADDRNOTAVAIL) || is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(err(OP, ifname)(e)),
        }
    }

    fn ensure_address_v4(
        &mut self,
        ifname: &IfName,
        addr: std::net::Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), LinkError> {
        const OP: &str = "adding address";
        let mut sock = socket(OP, ifname)?;
        let link = existing(&mut sock, OP, ifname)?;
        match sock.request(route::new_addr4(link.index, addr, prefix_len), route::NEW_ADDR_FLAGS) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(no_dev(OP, ifname)(e)),
        }
    }

    fn ensure_route(&mut self, r: &Route6) -> Result<(), LinkError> {
        const OP: &str = "installing route";
        let mut sock = socket(OP, &r.dev)?;
        let link = existing(&mut sock, OP, &r.dev)?;
        sock.request(route::new_route6(link.index, r.dst, r.prefix_len, r.src), route::NEW_ROUTE_FLAGS)
            .map_err(no_dev(OP, &r.dev))?;
        Ok(())
    }

    fn remove_route(&mut self, r: &Route6) -> Result<(), LinkError> {
        const OP: &str = "removing route";
        let mut sock = socket(OP, &r.dev)?;
        // Routes out of a device go away with it.
        let Some(link) = route::link_by_name(&mut sock, r.dev.as_str()).map_err(err(OP, &r.dev))? else {
            return Ok(());
        };
        match sock.request(route::del_route6(link.index, r.dst, r.prefix_len), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::ESRCH) || is_errno(&e, libc::ENOENT) || is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(err(OP, &r.dev)(e)),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, LinkError> {
        const OP: &str = "listing interfaces";
        let pattern = format!("{prefix}*");
        let mut sock = NlSocket::route().map_err(err(OP, &pattern))?;
        let links = route::all_links(&mut sock).map_err(err(OP, &pattern))?;
        Ok(names_with_prefix(links.iter().map(|l| l.name.as_str()), prefix))
    }

    fn delete(&mut self, ifname: &IfName) -> Result<(), LinkError> {
        const OP: &str = "deleting interface";
        let mut sock = socket(OP, ifname)?;
        let Some(link) = route::link_by_name(&mut sock, ifname.as_str()).map_err(err(OP, ifname))? else {
            return Ok(());
        };
        route::delete_link(&mut sock, link.index).map_err(err(OP, ifname))
    }

    fn stats(&mut self, ifname: &IfName) -> Result<Option<LinkStats>, LinkError> {
        const OP: &str = "reading interface counters";
        let mut sock = socket(OP, ifname)?;
        let link = route::link_by_name(&mut sock, ifname.as_str()).map_err(err(OP, ifname))?;
        Ok(link.map(|l| LinkStats { ifindex: l.index, ..l.stats.unwrap_or_default() }))
    }
}

/// Sorted names starting with `prefix`; names that are not valid [`IfName`]s are skipped.
pub(crate) fn names_with_prefix<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<IfName> {
    let mut out: Vec<IfName> = names.filter(|n| n.starts_with(prefix)).filter_map(|n| IfName::new(n).ok()).collect();
    out.sort();
    out
}
