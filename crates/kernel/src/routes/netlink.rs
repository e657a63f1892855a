//! [`Routes`] over typed rtnetlink. Each call opens its own socket, so it acts on the network
//! namespace of the calling thread at the time of the call.

use super::{Family, RouteError, RouteTarget, Routes, Rule, TableRoute};
use crate::nl::route::ifindex;
use crate::nl::table::{self, RawRoute, RawRule, RawTarget};
use crate::nl::{is_errno, NlSocket};
use ipnet::IpNet;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::io;
use tollway_core::IfName;

/// Routes and rules of the calling thread's network namespace.
#[derive(Debug, Default, Clone)]
pub struct NetlinkRoutes {
    _private: (),
}

impl NetlinkRoutes {
    pub fn new() -> NetlinkRoutes {
        NetlinkRoutes { _private: () }
    }
}

fn netlink(op: &'static str, what: impl ToString) -> impl FnOnce(io::Error) -> RouteError {
    let what = what.to_string();
    move |source| RouteError::Netlink { op, what, source }
}

fn address_family(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

/// The interface name of index `i`, if it still exists.
fn ifname_of(i: u32) -> Option<IfName> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has room for IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(i, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    IfName::new(name.to_string_lossy().into_owned()).ok()
}

/// The route as a netlink value; `Ok(None)` when its interface does not exist.
fn to_raw(r: &TableRoute) -> Result<Option<RawRoute>, RouteError> {
    r.validate()?;
    let target = match &r.target {
        RouteTarget::Dev { dev, gateway } => match ifindex(dev.as_str()) {
            Some(oif) => RawTarget::Unicast { oif, gateway: *gateway },
            None => return Ok(None),
        },
        RouteTarget::Blackhole => RawTarget::Blackhole,
        RouteTarget::Unreachable => RawTarget::Unreachable,
        RouteTarget::Other(t) => RawTarget::Other(*t),
    };
    Ok(Some(RawRoute {
        dst: r.dst.network(),
        prefix_len: r.dst.prefix_len(),
        table: r.table,
        protocol: r.protocol,
        target,
        pref_src: r.pref_src,
        metric: r.metric,
    }))
}

/// The route in our terms; `None` if its interface vanished meanwhile.
fn from_raw(r: RawRoute) -> Option<TableRoute> {
    let target = match r.target {
        RawTarget::Unicast { oif, gateway } => RouteTarget::Dev { dev: ifname_of(oif)?, gateway },
        RawTarget::Blackhole => RouteTarget::Blackhole,
        RawTarget::Unreachable => RouteTarget::Unreachable,
        RawTarget::Other(t) => RouteTarget::Other(t),
    };
    Some(TableRoute {
        dst: IpNet::new(r.dst, r.prefix_len).ok()?,
        table: r.table,
        protocol: r.protocol,
        target,
        pref_src: r.pref_src,
        metric: r.metric,
    })
}

fn raw_rule(r: &Rule) -> RawRule {
    RawRule {
        family: address_family(r.family),
        priority: r.priority,
        table: r.table,
        suppress_prefixlength: r.suppress_prefixlength,
        src: r.from.map(|n| (n.addr(), n.prefix_len())),
        fwmark: r.fwmark,
    }
}

impl NetlinkRoutes {
    fn new_route(&mut self, op: &'static str, r: &TableRoute, flags: u16) -> Result<(), RouteError> {
        let raw = match to_raw(r)? {
            Some(raw) => raw,
            None => {
                let RouteTarget::Dev { dev, .. } = &r.target else { unreachable!("only Dev routes name a device") };
                return Err(RouteError::NoSuchLink(dev.clone()));
            }
        };
        let mut sock = NlSocket::route().map_err(netlink(op, r))?;
        match sock.request(table::new_route(&raw), flags) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) && flags == table::CREATE_FLAGS => {
                Err(RouteError::Exists(r.to_string()))
            }
            Err(e) => Err(netlink(op, r)(e)),
        }
    }
}

impl Routes for NetlinkRoutes {
    fn add(&mut self, route: &TableRoute) -> Result<(), RouteError> {
        self.new_route("adding route", route, table::CREATE_FLAGS)
    }

    fn replace(&mut self, route: &TableRoute) -> Result<(), RouteError> {
        self.new_route("installing route", route, table::REPLACE_FLAGS)
    }

    fn delete(&mut self, route: &TableRoute) -> Result<(), RouteError> {
        const OP: &str = "removing route";
        // A route out of a missing interface went away with it.
        let Some(raw) = to_raw(route)? else { return Ok(()) };
        let mut sock = NlSocket::route().map_err(netlink(OP, route))?;
        match sock.request(table::del_route(&raw), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::ESRCH) || is_errno(&e, libc::ENOENT) || is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(netlink(OP, route)(e)),
        }
    }

    fn list(&mut self, table_id: u32, protocol: Option<u8>) -> Result<Vec<TableRoute>, RouteError> {
        const OP: &str = "listing routes of table";
        let mut sock = NlSocket::route().map_err(netlink(OP, table_id))?;
        let mut out = Vec::new();
        for family in Family::BOTH {
            let replies = sock.dump(table::dump_routes(address_family(family))).map_err(netlink(OP, table_id))?;
            out.extend(
                replies
                    .iter()
                    .filter_map(|m| match m {
                        RouteNetlinkMessage::NewRoute(m) => table::parse_route(m),
                        _ => None,
                    })
                    .filter(|r| r.table == table_id && protocol.is_none_or(|p| p == r.protocol))
                    .filter_map(from_raw),
            );
        }
        Ok(out)
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<(), RouteError> {
        const OP: &str = "adding";
        let mut sock = NlSocket::route().map_err(netlink(OP, rule))?;
        match sock.request(table::new_rule(&raw_rule(rule)), table::CREATE_FLAGS) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
            Err(e) => Err(netlink(OP, rule)(e)),
        }
    }

    fn delete_rule(&mut self, rule: &Rule) -> Result<(), RouteError> {
        const OP: &str = "removing";
        let mut sock = NlSocket::route().map_err(netlink(OP, rule))?;
        match sock.request(table::del_rule(&raw_rule(rule)), 0) {
            Ok(_) => Ok(()),
            Err(e) if is_errno(&e, libc::ENOENT) || is_errno(&e, libc::ESRCH) => Ok(()),
            Err(e) => Err(netlink(OP, rule)(e)),
        }
    }

    fn list_rules(&mut self) -> Result<Vec<Rule>, RouteError> {
        const OP: &str = "listing";
        let mut sock = NlSocket::route().map_err(netlink(OP, "policy rules"))?;
        let mut out = Vec::new();
        for family in Family::BOTH {
            let replies = sock.dump(table::dump_rules(address_family(family))).map_err(netlink(OP, "policy rules"))?;
            out.extend(replies.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(m) => table::parse_rule(m).map(|r| Rule {
                    family,
                    priority: r.priority,
                    table: r.table,
                    suppress_prefixlength: r.suppress_prefixlength,
                    from: r.src.and_then(|(a, l)| IpNet::new(a, l).ok()),
                    fwmark: r.fwmark,
                }),
                _ => None,
            }));
        }
        out.sort();
        Ok(out)
    }
}
