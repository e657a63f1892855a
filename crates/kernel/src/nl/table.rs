//! rtnetlink messages for routes in any table (both families, v4-via-v6 next hops) and for
//! policy rules, built as typed values; and their parsers. Interface names are resolved by the
//! caller: these functions only deal in indexes.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleHeader, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Flags for `RTM_NEWROUTE` that create the route or replace the one with the same
/// destination, table, metric and TOS.
pub(crate) const REPLACE_FLAGS: u16 = NLM_F_CREATE | NLM_F_REPLACE;
/// Flags for `RTM_NEWROUTE`/`RTM_NEWRULE` that fail with `EEXIST` when an equal entry exists.
/// Rules must always be added with these: without `NLM_F_EXCL` the kernel adds duplicates.
pub(crate) const CREATE_FLAGS: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// What a route does with a packet, at the level of the netlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawTarget {
    /// Out of interface `oif`, through `gateway` if given (an IPv6 gateway on an IPv4 route is
    /// a v4-via-v6 next hop, `RTA_VIA`).
    Unicast {
        oif: u32,
        gateway: Option<IpAddr>,
    },
    Blackhole,
    Unreachable,
    /// Any other route type (prohibit, throw, local, multipath…), as the kernel numbers it.
    Other(u8),
}

/// One route as the netlink layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub table: u32,
    pub protocol: u8,
    pub target: RawTarget,
    pub pref_src: Option<IpAddr>,
    /// `RTA_PRIORITY`; the kernel stores 0 on an IPv6 route as 1024.
    pub metric: u32,
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The `rtm_table` byte and, for tables above 255, the `RTA_TABLE` attribute that carries the
/// real number (the header byte then says `RT_TABLE_UNSPEC`).
fn table_header(table: u32) -> u8 {
    if table <= 255 {
        table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    }
}

fn route_message(r: &RawRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(&r.dst);
    m.header.destination_prefix_length = r.prefix_len;
    m.header.table = table_header(r.table);
    m.header.protocol = RouteProtocol::from(r.protocol);
    m.header.scope = RouteScope::Universe;
    m.header.kind = match r.target {
        RawTarget::Unicast { .. } => RouteType::Unicast,
        RawTarget::Blackhole => RouteType::BlackHole,
        RawTarget::Unreachable => RouteType::Unreachable,
        RawTarget::Other(t) => RouteType::from(t),
    };
    if r.prefix_len > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
    }
    m.attributes.push(RouteAttribute::Table(r.table));
    if let RawTarget::Unicast { oif, gateway } = r.target {
        m.attributes.push(RouteAttribute::Oif(oif));
        match (r.dst, gateway) {
            (IpAddr::V4(_), Some(IpAddr::V6(gw))) => m.attributes.push(RouteAttribute::Via(RouteVia::Inet6(gw))),
            (_, Some(gw)) => m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw))),
            (IpAddr::V4(_), None) => m.header.scope = RouteScope::Link,
            (IpAddr::V6(_), None) => {}
        }
    }
    if let Some(src) = r.pref_src {
        m.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    if r.metric != 0 {
        m.attributes.push(RouteAttribute::Priority(r.metric));
    }
    m
}

/// `RTM_NEWROUTE` (send with [`REPLACE_FLAGS`] or [`CREATE_FLAGS`]).
pub(crate) fn new_route(r: &RawRoute) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRoute(route_message(r))
}

/// `RTM_DELROUTE` matching destination, table, protocol, type, next hop and metric as given
/// (any scope).
pub(crate) fn del_route(r: &RawRoute) -> RouteNetlinkMessage {
    let mut m = route_message(r);
    m.header.scope = RouteScope::NoWhere;
    RouteNetlinkMessage::DelRoute(m)
}

/// `RTM_GETROUTE` dump of one family (every table; filter the replies with [`parse_route`]).
pub(crate) fn dump_routes(family: AddressFamily) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    RouteNetlinkMessage::GetRoute(m)
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A route from a dump reply; `None` for families other than IPv4/IPv6, cached clones and
/// routes we cannot represent (source-specific ones).
pub(crate) fn parse_route(m: &RouteMessage) -> Option<RawRoute> {
    let unspecified = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if m.header.flags.contains(RouteFlags::Cloned) || m.header.source_prefix_length != 0 {
        return None;
    }
    let mut r = RawRoute {
        dst: unspecified,
        prefix_len: m.header.destination_prefix_length,
        table: u32::from(m.header.table),
        protocol: u8::from(m.header.protocol),
        target: RawTarget::Other(u8::from(m.header.kind)),
        pref_src: None,
        metric: 0,
    };
    let (mut oif, mut gateway, mut multipath) = (None, None, false);
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(a) => r.dst = ip_of(a)?,
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::PrefSource(a) => r.pref_src = ip_of(a),
            RouteAttribute::Priority(p) => r.metric = *p,
            RouteAttribute::MultiPath(_) => multipath = true,
            _ => {}
        }
    }
    r.target = match m.header.kind {
        RouteType::Unicast if !multipath => match oif {
            Some(oif) => RawTarget::Unicast { oif, gateway },
            None => RawTarget::Other(u8::from(RouteType::Unicast)),
        },
        RouteType::BlackHole => RawTarget::Blackhole,
        RouteType::Unreachable => RawTarget::Unreachable,
        other => RawTarget::Other(u8::from(other)),
    };
    Some(r)
}

/// One "lookup table" policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRule {
    pub family: AddressFamily,
    pub priority: u32,
    pub table: u32,
    pub suppress_prefixlength: Option<u32>,
    /// Source selector: address and prefix length.
    pub src: Option<(std::net::IpAddr, u8)>,
    /// Firewall mark selector (mask all ones).
    pub fwmark: Option<u32>,
}

fn rule_message(r: &RawRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header = RuleHeader { family: r.family, table: table_header(r.table), action: RuleAction::ToTable, ..m.header };
    if let Some((addr, len)) = r.src {
        m.header.src_len = len;
        m.attributes.push(RuleAttribute::Source(addr));
    }
    if let Some(mark) = r.fwmark {
        m.attributes.push(RuleAttribute::FwMark(mark));
    }
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes.push(RuleAttribute::Table(r.table));
    if let Some(len) = r.suppress_prefixlength {
        m.attributes.push(RuleAttribute::SuppressPrefixLen(len));
    }
    m
}

/// `RTM_NEWRULE` (send with [`CREATE_FLAGS`]).
pub(crate) fn new_rule(r: &RawRule) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRule(rule_message(r))
}

/// `RTM_DELRULE` matching priority, table and suppressor.
pub(crate) fn del_rule(r: &RawRule) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelRule(rule_message(r))
}

/// `RTM_GETRULE` dump of one family.
pub(crate) fn dump_rules(family: AddressFamily) -> RouteNetlinkMessage {
    let mut m = RuleMessage::default();
    m.header.family = family;
    RouteNetlinkMessage::GetRule(m)
}

/// A "lookup table" rule from a dump reply without selectors we do not model (source,
/// destination, marks, interfaces…); `None` for anything else.
pub(crate) fn parse_rule(m: &RuleMessage) -> Option<RawRule> {
    // "not …" rules (e.g. wg-quick's `not fwmark`) select the opposite: not ours to show.
    if m.header.action != RuleAction::ToTable || m.header.dst_len != 0 || m.header.flags.contains(RuleFlags::Invert) {
        return None;
    }
    let mut r = RawRule {
        family: m.header.family,
        priority: 0,
        table: u32::from(m.header.table),
        suppress_prefixlength: None,
        src: None,
        fwmark: None,
    };
    let mut mask = None;
    for attr in &m.attributes {
        match attr {
            RuleAttribute::Priority(p) => r.priority = *p,
            RuleAttribute::Table(t) => r.table = *t,
            // The kernel reports "no suppressor" as -1.
            RuleAttribute::SuppressPrefixLen(len) if *len != u32::MAX => r.suppress_prefixlength = Some(*len),
            RuleAttribute::SuppressPrefixLen(_) | RuleAttribute::Protocol(_) => {}
            RuleAttribute::Source(addr) if m.header.src_len != 0 => r.src = Some((*addr, m.header.src_len)),
            RuleAttribute::FwMark(mark) => r.fwmark = Some(*mark),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            _ => return None,
        }
    }
    // Only marks matched whole (the kernel reports the default mask as all ones); a mask with
    // no mark (`fwmark 0/mask`) is a selector too.
    if mask.is_some_and(|m| m != u32::MAX || r.fwmark.is_none()) {
        return None;
    }
    // A source length with no source attribute is a selector we cannot show.
    if m.header.src_len != 0 && r.src.is_none() {
        return None;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nl::encode;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};

    fn round_trip(msg: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let bytes = encode(msg, NLM_F_REQUEST | REPLACE_FLAGS, 3);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(inner) = parsed.payload else { panic!("not an inner message") };
        inner
    }

    fn v4_via_v6() -> RawRoute {
        RawRoute {
            dst: "100.64.0.3".parse().unwrap(),
            prefix_len: 32,
            table: 7474,
            protocol: 251,
            target: RawTarget::Unicast { oif: 5, gateway: Some("fe80::1".parse().unwrap()) },
            pref_src: Some("100.64.0.1".parse().unwrap()),
            metric: 0,
        }
    }

    #[test]
    fn an_ipv4_route_through_an_ipv6_gateway_uses_rta_via_and_a_table_attribute() {
        let RouteNetlinkMessage::NewRoute(m) = round_trip(new_route(&v4_via_v6())) else { panic!() };
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_UNSPEC, "7474 does not fit the header byte");
        assert!(m.attributes.contains(&RouteAttribute::Table(7474)));
        assert!(m.attributes.contains(&RouteAttribute::Via(RouteVia::Inet6("fe80::1".parse().unwrap()))));
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Gateway(_))));
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Priority(_))));
        assert_eq!(m.header.protocol, RouteProtocol::Other(251));
        assert_eq!(parse_route(&m), Some(v4_via_v6()), "parses back to what was built");
    }

    #[test]
    fn same_family_gateways_use_rta_gateway_and_small_tables_fit_the_header() {
        let r = RawRoute {
            dst: "fd00::3".parse().unwrap(),
            prefix_len: 128,
            table: 74,
            protocol: 42,
            target: RawTarget::Unicast { oif: 2, gateway: Some("fe80::2".parse().unwrap()) },
            pref_src: None,
            metric: 1024,
        };
        let RouteNetlinkMessage::NewRoute(m) = round_trip(new_route(&r)) else { panic!() };
        assert_eq!(m.header.table, 74);
        assert_eq!(m.header.protocol, RouteProtocol::Babel);
        assert!(m.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet6("fe80::2".parse().unwrap()))));
        assert!(m.attributes.contains(&RouteAttribute::Priority(1024)));
        assert_eq!(parse_route(&m), Some(r));
    }

    #[test]
    fn blackhole_defaults_have_no_destination_attribute_and_delete_matches_any_scope() {
        let r = RawRoute {
            dst: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
            table: 75,
            protocol: 251,
            target: RawTarget::Blackhole,
            pref_src: None,
            metric: 0,
        };
        let RouteNetlinkMessage::NewRoute(m) = round_trip(new_route(&r)) else { panic!() };
        assert_eq!(m.header.kind, RouteType::BlackHole);
        assert!(!m.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_) | RouteAttribute::Oif(_))));
        assert_eq!(parse_route(&m), Some(r.clone()));
        let RouteNetlinkMessage::DelRoute(d) = round_trip(del_route(&r)) else { panic!() };
        assert_eq!(d.header.scope, RouteScope::NoWhere);
    }

    #[test]
    fn an_ipv4_route_out_of_a_device_has_link_scope() {
        let r = RawRoute {
            dst: "10.1.0.0".parse().unwrap(),
            prefix_len: 16,
            table: 74,
            protocol: 251,
            target: RawTarget::Unicast { oif: 3, gateway: None },
            pref_src: None,
            metric: 0,
        };
        let RouteNetlinkMessage::NewRoute(m) = round_trip(new_route(&r)) else { panic!() };
        assert_eq!(m.header.scope, RouteScope::Link);
    }

    #[test]
    fn rules_carry_priority_table_and_suppressor_and_parse_back() {
        let r = RawRule {
            family: AddressFamily::Inet6,
            priority: 7471,
            table: 7474,
            suppress_prefixlength: Some(0),
            src: None,
            fwmark: None,
        };
        let RouteNetlinkMessage::NewRule(m) = round_trip(new_rule(&r)) else { panic!() };
        assert_eq!(m.header.action, RuleAction::ToTable);
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RuleAttribute::SuppressPrefixLen(0)));
        assert_eq!(parse_rule(&m), Some(r));

        // "No suppressor" comes back from the kernel as -1.
        let mut m = rule_message(&RawRule { suppress_prefixlength: None, ..r });
        m.attributes.push(RuleAttribute::SuppressPrefixLen(u32::MAX));
        assert_eq!(parse_rule(&m).unwrap().suppress_prefixlength, None);
        // Rules with selectors we do not model are left out: a partial mark, an interface.
        let mut m = rule_message(&r);
        m.attributes.push(RuleAttribute::FwMark(1));
        m.attributes.push(RuleAttribute::FwMask(0xff));
        assert_eq!(parse_rule(&m), None);
        let mut m = rule_message(&r);
        m.attributes.push(RuleAttribute::Iifname("lo".into()));
        assert_eq!(parse_rule(&m), None);
        let mut m = rule_message(&r);
        m.attributes.push(RuleAttribute::FwMask(0xff));
        assert_eq!(parse_rule(&m), None, "fwmark 0/0xff");
        let mut m = rule_message(&RawRule { fwmark: Some(0xca6c), ..r });
        m.header.flags = RuleFlags::Invert;
        assert_eq!(parse_rule(&m), None, "not fwmark 0xca6c");
        // A whole mark is carried and parsed back (with or without the kernel's all-ones mask).
        let marked = RawRule { fwmark: Some(0x746c_0003), ..r };
        let RouteNetlinkMessage::NewRule(m) = round_trip(new_rule(&marked)) else { panic!() };
        assert!(m.attributes.contains(&RuleAttribute::FwMark(0x746c_0003)));
        assert_eq!(parse_rule(&m), Some(marked));
        let mut m = rule_message(&marked);
        m.attributes.push(RuleAttribute::FwMask(u32::MAX));
        assert_eq!(parse_rule(&m), Some(marked));
        // A source selector is carried and parsed back; a source length without the address
        // is not shown as "from all".
        let from = RawRule { src: Some(("fd12::7".parse().unwrap(), 128)), ..r };
        let RouteNetlinkMessage::NewRule(m) = round_trip(new_rule(&from)) else { panic!() };
        assert_eq!(m.header.src_len, 128);
        assert_eq!(parse_rule(&m), Some(from));
        let mut m = rule_message(&r);
        m.header.src_len = 64;
        assert_eq!(parse_rule(&m), None);
    }
}
