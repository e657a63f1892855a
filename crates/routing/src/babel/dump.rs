//! babeld's `dump` output, parsed by key.
//!
//! Each line is `<event> <object> <id> key value key value …`, e.g.
//! ```text
//! add interface tw1 up true ipv6 fe80::1 ipv4 10.0.0.1
//! add neighbour 561bb34ed710 address fe80::2 if tw1 reach ff80 ureach 0000 rxcost 256 txcost 273 cost 273
//! add xroute fd00::1/128-::/0 prefix fd00::1/128 from ::/0 metric 0
//! add route 561bb34edc00 prefix 100.64.0.2/32 from 0.0.0.0/0 installed yes id 02:00:00:00:00:00:00:02 metric 277 refmetric 0 via fe80::2 if tw1
//! ```
//! Values are looked up by key, so fields a later babeld adds do not break us (neighbour lines
//! gain `rtt … rttcost …` when timestamps are on). A line that lacks a field we need, or has a
//! value we cannot read, is counted in [`Dump::skipped`] and otherwise ignored.
//!
//! On babeld 1.12/1.13 a neighbour seen on an interface that was flushed stays listed until its
//! hellos time out, and its interface name is read from freed memory: do not rely on neighbour
//! lines' `if`.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedInterface {
    pub name: String,
    pub up: bool,
    pub ipv6: Option<Ipv6Addr>,
    pub ipv4: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DumpedNeighbour {
    pub address: Ipv6Addr,
    pub ifname: String,
    /// The last 16 hellos, most recent in the high bit.
    pub reach: u16,
    pub rxcost: u32,
    /// What the neighbor claims (its IHU).
    pub txcost: u32,
    /// What a hop through it costs us.
    pub cost: u32,
    pub rtt_ms: Option<f64>,
}

/// A prefix this node announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedXroute {
    pub prefix: IpNet,
    pub metric: u32,
}

impl DumpedRoute {
    /// Whether the route is in the kernel's table. babeld 1.12 keeps saying `installed yes` of
    /// a route it has retracted (metric 65535, held for a while), which is no longer in the
    /// kernel: seen when an uplink two hops away withdrew its default route.
    pub fn in_kernel(&self) -> bool {
        self.installed && self.metric < INFINITY
    }
}

/// Babel's infinite metric: a retracted route.
pub const INFINITY: u32 = 65535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRoute {
    pub prefix: IpNet,
    /// The source prefix; `::/0` or `0.0.0.0/0` for ordinary routes.
    pub from: IpNet,
    pub installed: bool,
    /// The originator's router-id.
    pub id: String,
    pub metric: u32,
    pub refmetric: u32,
    pub via: IpAddr,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dump {
    pub interfaces: Vec<DumpedInterface>,
    pub neighbours: Vec<DumpedNeighbour>,
    pub xroutes: Vec<DumpedXroute>,
    pub routes: Vec<DumpedRoute>,
    /// Lines that were not understood.
    pub skipped: usize,
}

/// The fields after `<event> <object> <id>`, by key.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn parse<T: FromStr>(&self, key: &str) -> Option<T> {
        self.get(key)?.parse().ok()
    }
}

/// Parse `dump` reply lines (without the final `ok`).
pub fn parse_dump<S: AsRef<str>>(lines: &[S]) -> Dump {
    let mut d = Dump::default();
    for line in lines {
        if !parse_line(line.as_ref(), &mut d) {
            d.skipped += 1;
        }
    }
    d
}

/// Add one line to `d`; false if it was not understood. `flush` events (from `monitor`) and
/// blank lines are understood and ignored.
fn parse_line(line: &str, d: &mut Dump) -> bool {
    let mut words = line.split_ascii_whitespace();
    let (Some(event), Some(object), Some(id)) = (words.next(), words.next(), words.next()) else {
        return line.trim().is_empty();
    };
    if event == "flush" {
        return true;
    }
    if event != "add" && event != "change" {
        return false;
    }
    let rest: Vec<&str> = words.collect();
    let fields = Fields(rest.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0], c[1])).collect());
    match object {
        "interface" => {
            let Some(up) = fields.get("up").and_then(parse_bool) else { return false };
            d.interfaces.push(DumpedInterface {
                name: id.to_string(),
                up,
                ipv6: fields.parse("ipv6"),
                ipv4: fields.parse("ipv4"),
            });
            true
        }
        "neighbour" => {
            let n = (|| {
                Some(DumpedNeighbour {
                    address: fields.parse("address")?,
                    ifname: fields.get("if")?.to_string(),
                    reach: u16::from_str_radix(fields.get("reach")?, 16).ok()?,
                    rxcost: fields.parse("rxcost")?,
                    txcost: fields.parse("txcost")?,
                    cost: fields.parse("cost")?,
                    rtt_ms: fields.parse("rtt"),
                })
            })();
            n.map(|n| d.neighbours.push(n)).is_some()
        }
        "xroute" => {
            let x = (|| Some(DumpedXroute { prefix: fields.parse("prefix")?, metric: fields.parse("metric")? }))();
            x.map(|x| d.xroutes.push(x)).is_some()
        }
        "route" => {
            let r = (|| {
                Some(DumpedRoute {
                    prefix: fields.parse("prefix")?,
                    from: fields.parse("from")?,
                    installed: parse_bool(fields.get("installed")?)?,
                    id: fields.get("id")?.to_string(),
                    metric: fields.parse("metric")?,
                    refmetric: fields.parse("refmetric")?,
                    via: fields.parse("via")?,
                    ifname: fields.get("if")?.to_string(),
                })
            })();
            r.map(|r| d.routes.push(r)).is_some()
        }
        _ => false,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dump` of the middle node of a three-node chain (captured from babeld 1.12.1).
    const CHAIN_MIDDLE: &str = include_str!("../../tests/fixtures/dump-chain-middle.txt");
    /// `dump` of a node right after a cost change (flush and re-add of its interface): the old
    /// neighbour is still listed, with cost 65535.
    const AFTER_FLUSH: &str = include_str!("../../tests/fixtures/dump-after-flush.txt");

    fn lines(s: &str) -> Vec<&str> {
        s.lines().filter(|l| *l != "ok").collect()
    }

    #[test]
    fn a_real_dump_parses_completely() {
        let d = parse_dump(&lines(CHAIN_MIDDLE));
        assert_eq!(d.skipped, 0, "{d:#?}");
        assert!(d.interfaces.iter().any(|i| i.name == "tollway:idle" && !i.up));
        let up: Vec<_> = d.interfaces.iter().filter(|i| i.up).collect();
        assert_eq!(up.len(), 2);
        assert!(up.iter().all(|i| i.ipv6.is_some_and(|a| a.segments()[0] == 0xfe80)));
        assert_eq!(d.neighbours.len(), 2);
        assert!(d.neighbours.iter().all(|n| n.cost >= n.rxcost.max(256)));
        assert_eq!(d.xroutes.len(), 2, "our /128 and /32");
        assert!(d.xroutes.iter().any(|x| x.prefix.to_string().ends_with("/32")));
        assert_eq!(d.routes.len(), 4, "two neighbours' /128 and /32");
        for r in &d.routes {
            assert!(r.installed);
            assert!(r.metric >= r.refmetric + 256, "{r:?}");
            assert!(matches!(r.via, IpAddr::V6(v) if v.segments()[0] == 0xfe80));
            assert_eq!(r.id.len(), 23);
        }
        let v4: Vec<_> = d.routes.iter().filter(|r| matches!(r.prefix, IpNet::V4(_))).collect();
        assert_eq!(v4.len(), 2, "IPv4 routes with IPv6 next hops");
    }

    #[test]
    fn stale_neighbours_after_a_flush_are_parsed_as_they_are() {
        let d = parse_dump(&lines(AFTER_FLUSH));
        assert_eq!(d.skipped, 0);
        assert!(d.neighbours.len() >= 2, "{:?}", d.neighbours);
        assert!(d.neighbours.iter().any(|n| n.cost == 65535));
    }

    #[test]
    fn fields_are_found_by_key_and_new_ones_ignored() {
        let d = parse_dump(&[
            "add neighbour 1 address fe80::2 if tw1 reach ff00 ureach 0000 rxcost 256 txcost 300 rtt 12.5 rttcost 4 cost 310 extra field",
            "change route 2 if tw1 via fe80::2 refmetric 5 metric 261 id 02:00:00:00:00:00:00:02 installed no from ::/0 prefix fd00::9/128",
            "flush route 3 prefix fd00::9/128",
            "",
        ]);
        assert_eq!(d.skipped, 0);
        assert_eq!(d.neighbours[0].rtt_ms, Some(12.5));
        assert_eq!(d.neighbours[0].cost, 310);
        assert_eq!(d.routes[0].metric, 261);
        assert!(!d.routes[0].installed);
    }

    #[test]
    fn a_retracted_route_babeld_calls_installed_is_not_in_the_kernel() {
        let d = parse_dump(&[
            "add route 1 prefix ::/0 from ::/0 installed yes id x metric 65535 refmetric 65535 via fe80::1 if tw1",
            "add route 2 prefix fd00::1/128 from ::/0 installed yes id x metric 1344 refmetric 896 via fe80::1 if tw1",
        ]);
        assert_eq!(d.skipped, 0);
        assert!(d.routes[0].installed && !d.routes[0].in_kernel());
        assert!(d.routes[1].in_kernel());
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let bad = [
            "add route 1 prefix not-a-prefix from ::/0 installed yes id x metric 1 refmetric 0 via fe80::1 if a",
            "add route 1 prefix fd00::1/128 from ::/0 installed maybe id x metric 1 refmetric 0 via fe80::1 if a",
            "add route 1 prefix fd00::1/128 from ::/0 installed yes id x metric -1 refmetric 0 via fe80::1 if a",
            "add route 1 prefix fd00::1/128",
            "add neighbour 1 address fe80::1 if a reach zzzz ureach 0 rxcost 1 txcost 1 cost 1",
            "add interface tw1 up perhaps",
            "add gizmo 1 a b",
            "remove route 1",
            "add",
            "\u{0}\u{1}\u{ff}",
            "add xroute x prefix fd00::/8 from ::/0",
        ];
        let d = parse_dump(&bad);
        assert_eq!(d.skipped, bad.len(), "{d:?}");
        assert!(d.routes.is_empty() && d.neighbours.is_empty() && d.interfaces.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(lines in proptest::collection::vec(".{0,300}", 0..20)) {
            let _ = parse_dump(&lines);
        }

        #[test]
        fn never_panics_on_plausible_lines(
            words in proptest::collection::vec(
                proptest::sample::select(vec!["add", "route", "neighbour", "interface", "xroute", "prefix", "fd00::1/128",
                    "from", "::/0", "installed", "yes", "metric", "65535", "via", "fe80::1", "if", "tw1", "reach",
                    "ffff", "up", "true", "99999999999999999999", "id", "cost", "rxcost", "txcost"]),
                0..30)
        ) {
            let _ = parse_dump(&[words.join(" ")]);
        }
    }
}
