//! The table a plan asks for, as nftables JSON: counters and chains with their rules.
//!
//! ```text
//! table inet tollway {
//!   counter rx_<key> { }           # billed: bytes accepted from the neighbor, after every drop
//!   counter spoofed_<key> { }      # dropped: source not routed back through its tunnel
//!   counter unsolicited_<key> { }  # dropped: to or through us, and nobody here asked for it
//!
//!   # Per neighbor: small chains holding its counters and its policy.
//!   chain rpf_<key> {              # prerouting, before connection tracking
//!     fib saddr . iif oif missing counter name spoofed_<key> drop
//!   }
//!   chain acc_<key> {              # accepted: policing and cut-off, then the billing counter
//!     Open:        counter name rx_<key> accept
//!     Police:      tcp dport CTRL fib daddr type local counter name rx_<key> accept
//!                  tcp sport CTRL fib daddr type local counter name rx_<key> accept
//!                  limit rate over R bytes/second burst B bytes drop
//!                  counter name rx_<key> accept
//!     ControlOnly: (the two control rules) drop
//!   }
//!   chain junk_<key> { counter name unsolicited_<key> drop }
//!   chain ping_<key> {             # its echo requests, IPv4 and IPv6 together
//!     limit rate N/second burst 2N packets goto acc_<key>
//!     goto junk_<key>
//!   }
//!   chain out_<key> {              # outbound into the neighbor's tunnel
//!     tcp sport CTRL fib saddr type local meta priority set 1:2 accept
//!     tcp dport CTRL fib saddr type local meta priority set 1:2 accept
//!     Open/Police: meta priority set 1:<neighbor's class>
//!     ControlOnly: drop
//!   }
//!
//!   # Shared by all neighbors: the admission, each verdict looked up by tunnel in a map
//!   # ACC = { "<tunnel>" : goto acc_<key>, … }, JUNK = { … : goto junk_<key> }, PING likewise.
//!   chain to_us {                  # from a tunnel, addressed to this node
//!     icmp type echo-request iifname vmap PING
//!     icmpv6 type echo-request iifname vmap PING
//!     ct state established,related iifname vmap ACC
//!     ct state invalid iifname vmap JUNK
//!     icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 iifname vmap ACC
//!     ip6 saddr fe80::/10 icmpv6 type { mld-listener-query, -report, -done, mld2-listener-report } iifname vmap ACC
//!     ip6 saddr fe80::/10 ip6 daddr fe80::/10 tcp dport CTRL iifname vmap ACC
//!     (each service)   e.g. ip6 saddr fe80::/10 ip6 daddr { fe80::/10 | ff02::1:6 } udp dport 6696 iifname vmap ACC
//!     tcp dport { open_tcp } iifname vmap ACC
//!     udp dport { open_udp } iifname vmap ACC
//!     iifname vmap JUNK
//!   }
//!   chain through_us {             # from a tunnel, to be forwarded
//!     oifname { <tunnels>, <uplinks> } iifname vmap ACC
//!     oifname "<prefix>*" iifname vmap ACC
//!     ct state established,related iifname vmap ACC
//!     oifname { <lans> } iifname vmap ACC              (when the LANs are open)
//!     iifname vmap JUNK
//!   }
//!   chain unplanned {              # a tunnel of ours not (yet) in the plan (with a tunnel prefix)
//!     icmp type echo-request limit rate N/second burst 2N packets fib daddr type local accept
//!     icmp type echo-request drop
//!     icmpv6 type echo-request (the same two rules)
//!     ct state established,related accept
//!     ip6 saddr fe80::/10 ip6 daddr fe80::/10 tcp dport CTRL accept
//!     drop
//!   }
//!   chain pre     { type filter hook prerouting priority raw (-300); policy accept;
//!                   iifname vmap { "<tunnel>" : jump rpf_<key>, … } }
//!   chain input   { type filter hook input priority filter + 10; policy accept;
//!                   iifname { <tunnels> } goto to_us
//!                   iifname "<prefix>*" goto unplanned }
//!   chain forward { type filter hook forward priority filter + 10; policy accept;
//!                   iifname { <tunnels> } goto through_us
//!                   iifname "<prefix>*" goto unplanned }
//!   chain post    { type filter hook postrouting priority mangle (-150); policy accept;
//!                   oifname vmap { "<tunnel>" : jump out_<key>, … } }
//! }
//! ```
//!
//! The billing counter is in one place, `acc_<key>`, which every accepted packet from the
//! neighbor passes last: spoofed, unsolicited, policed and cut-off packets are dropped before
//! it. Input and forward run at priority filter + 10, after the usual filter tables: what
//! those drop never reaches our counter.
//!
//! The admission is shared rather than repeated per neighbor: nft lists (and so reads counters
//! and reconciles) in time proportional to the rules of the table, and map elements cost far
//! less than rules (`bench_apply`). A neighbor's change of policy rewrites its `acc_<key>` only;
//! a neighbor coming or going rewrites the shared chains, whose maps name every tunnel.
//!
//! Every rule carries a comment `tw:<fingerprint of its chain>`: a chain whose rules all carry
//! the fingerprint of the desired chain is up to date, without comparing nft's normalized JSON
//! with ours.

use crate::plan::{
    fnv1a64, Admission, ClassId, IngressPolicy, LocalService, NeighborKey, NeighborTraffic, Protocol, ServiceScope,
    TrafficPlan,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub(crate) const FAMILY: &str = "inet";
pub(crate) const TABLE: &str = "tollway";
pub(crate) const PRE: &str = "pre";
pub(crate) const INPUT: &str = "input";
pub(crate) const FORWARD: &str = "forward";
pub(crate) const TO_US: &str = "to_us";
pub(crate) const THROUGH_US: &str = "through_us";
pub(crate) const POST: &str = "post";
pub(crate) const UNPLANNED: &str = "unplanned";
pub(crate) const COMMENT_PREFIX: &str = "tw:";

/// The kinds of per-neighbor counter, and the prefix of each one's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CounterKind {
    /// Bytes accepted from the neighbor: what it is billed for.
    Billed,
    /// Dropped: the source address is not routed back through the neighbor's tunnel.
    Spoofed,
    /// Dropped: addressed to us or through us, and nobody here asked for it.
    Unsolicited,
}

impl CounterKind {
    const ALL: [CounterKind; 3] = [CounterKind::Billed, CounterKind::Spoofed, CounterKind::Unsolicited];

    fn prefix(self) -> &'static str {
        match self {
            CounterKind::Billed => "rx_",
            CounterKind::Spoofed => "spoofed_",
            CounterKind::Unsolicited => "unsolicited_",
        }
    }

    pub(crate) fn name(self, key: &NeighborKey) -> String {
        format!("{}{key}", self.prefix())
    }
}

/// The counter of a neighbor's billed inbound bytes.
pub(crate) fn counter_name(key: &NeighborKey) -> String {
    CounterKind::Billed.name(key)
}

/// The kind and key of a counter name, if it is one of ours.
pub(crate) fn parse_counter(name: &str) -> Option<(CounterKind, NeighborKey)> {
    CounterKind::ALL
        .into_iter()
        .find_map(|k| name.strip_prefix(k.prefix()).and_then(|rest| NeighborKey::new(rest).ok()).map(|key| (k, key)))
}

/// The key a billing counter belongs to (`None` for any other name).
pub(crate) fn key_of_counter(name: &str) -> Option<NeighborKey> {
    match parse_counter(name)? {
        (CounterKind::Billed, key) => Some(key),
        _ => None,
    }
}

fn chain(prefix: &str, key: &NeighborKey) -> String {
    format!("{prefix}_{key}")
}

/// The hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hook {
    pub hook: &'static str,
    pub prio: i64,
}

pub(crate) const PRE_HOOK: Hook = Hook { hook: "prerouting", prio: -300 };
pub(crate) const INPUT_HOOK: Hook = Hook { hook: "input", prio: 10 };
pub(crate) const FORWARD_HOOK: Hook = Hook { hook: "forward", prio: 10 };
pub(crate) const POST_HOOK: Hook = Hook { hook: "postrouting", prio: -150 };

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DesiredChain {
    pub name: String,
    pub hook: Option<Hook>,
    /// Each rule's `expr` array.
    pub rules: Vec<Value>,
    /// `tw:` and 16 hex digits, from the chain's name, hook and rules.
    pub comment: String,
}

impl DesiredChain {
    fn new(name: String, hook: Option<Hook>, rules: Vec<Value>) -> DesiredChain {
        let text = format!("{name} {hook:?} {}", Value::Array(rules.clone()));
        let comment = format!("{COMMENT_PREFIX}{:016x}", fnv1a64(text.as_bytes()));
        DesiredChain { name, hook, rules, comment }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DesiredTable {
    pub counters: BTreeSet<String>,
    /// Regular chains first, each after the chains it jumps to, then the base chains.
    pub chains: Vec<DesiredChain>,
}

/// Bytes a policed neighbor may send in a burst beyond its rate: a quarter second of the rate,
/// and at least two full-size packets (a bucket smaller than a packet would drop every such
/// packet). The kernel's bucket also holds one second of the rate on top.
pub fn police_burst_bytes(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 4).max(3000)
}

pub(crate) fn desired(plan: &TrafficPlan) -> DesiredTable {
    let port = plan.control.tcp_port;
    let adm = &plan.admission;
    let echo = adm.echo_requests_per_sec;
    let mut counters = BTreeSet::new();
    let mut chains = Vec::new();
    let mut tunnels = Vec::new();
    // The reverse-path check needs every tunnel's name.
    let all_tunnels: Vec<Value> =
        plan.groups.iter().flat_map(|g| &g.neighbors).map(|n| json!(n.tunnel.as_str())).collect();
    // Map elements, tunnel to verdict.
    let mut m = Maps::default();
    for group in &plan.groups {
        let classes = group.classes();
        for n in &group.neighbors {
            for kind in CounterKind::ALL {
                counters.insert(kind.name(&n.key));
            }
            let [acc, junk, ping, rpf, out] = ["acc", "junk", "ping", "rpf", "out"].map(|c| chain(c, &n.key));
            chains.push(DesiredChain::new(acc.clone(), None, accepted_rules(n, port)));
            let unsolicited = json!([count(CounterKind::Unsolicited.name(&n.key)), {"drop": null}]);
            chains.push(DesiredChain::new(junk.clone(), None, vec![unsolicited]));
            if echo > 0 {
                let limited = json!([limit_packets(echo), goto(&acc)]);
                chains.push(DesiredChain::new(ping.clone(), None, vec![limited, json!([goto(&junk)])]));
            }
            chains.push(DesiredChain::new(rpf.clone(), None, rpf_rules(&n.key, &all_tunnels)));
            chains.push(DesiredChain::new(out.clone(), None, outbound_rules(n, port, classes[&n.key])));
            let t = n.tunnel.as_str();
            tunnels.push(json!(t));
            m.acc.push(json!([t, goto(&acc)]));
            m.junk.push(json!([t, goto(&junk)]));
            m.ping.push(json!([t, goto(&ping)]));
            m.rpf.push(json!([t, {"jump": {"target": rpf}}]));
            m.out.push(json!([t, {"jump": {"target": out}}]));
        }
    }
    let prefix = adm.tunnel_prefix.as_ref().map(|p| format!("{p}*"));
    let (mut input, mut forward) = (Vec::new(), Vec::new());
    if !tunnels.is_empty() {
        chains.push(DesiredChain::new(TO_US.into(), None, to_us_rules(port, adm, &m)));
        chains.push(DesiredChain::new(THROUGH_US.into(), None, through_us_rules(adm, &tunnels, prefix.as_deref(), &m)));
        input.push(json!([eq(meta("iifname"), set(tunnels.clone())), goto(TO_US)]));
        forward.push(json!([eq(meta("iifname"), set(tunnels)), goto(THROUGH_US)]));
    }
    if let Some(p) = &prefix {
        chains.push(DesiredChain::new(UNPLANNED.into(), None, unplanned_rules(port, echo)));
        for rules in [&mut input, &mut forward] {
            rules.push(json!([eq(meta("iifname"), json!(p)), goto(UNPLANNED)]));
        }
    }
    chains.push(DesiredChain::new(PRE.into(), Some(PRE_HOOK), dispatch("iifname", m.rpf)));
    chains.push(DesiredChain::new(INPUT.into(), Some(INPUT_HOOK), input));
    chains.push(DesiredChain::new(FORWARD.into(), Some(FORWARD_HOOK), forward));
    chains.push(DesiredChain::new(POST.into(), Some(POST_HOOK), dispatch("oifname", m.out)));
    DesiredTable { counters, chains }
}

/// The elements of the verdict maps, one per planned tunnel each.
#[derive(Default)]
struct Maps {
    acc: Vec<Value>,
    junk: Vec<Value>,
    ping: Vec<Value>,
    rpf: Vec<Value>,
    out: Vec<Value>,
}

/// One rule sending each tunnel's packets to its neighbor's chain (none without neighbors).
fn dispatch(meta_key: &str, elements: Vec<Value>) -> Vec<Value> {
    if elements.is_empty() {
        return Vec::new();
    }
    vec![json!([vmap(meta_key, elements)])]
}

fn vmap(meta_key: &str, elements: Vec<Value>) -> Value {
    json!({"vmap": {"key": meta(meta_key), "data": {"set": elements}}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn set(elements: Vec<Value>) -> Value {
    json!({"set": elements})
}

fn port(protocol: Protocol, field: &str, port: u16) -> Value {
    eq(payload(protocol.as_str(), field), json!(port))
}

fn tcp_port(field: &str, p: u16) -> Value {
    port(Protocol::Tcp, field, p)
}

fn link_local(field: &str) -> Value {
    eq(payload("ip6", field), json!({"prefix": {"addr": "fe80::", "len": 10}}))
}

fn ct_state(states: &[&str]) -> Value {
    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": states}})
}

fn local(addr: &str) -> Value {
    eq(json!({"fib": {"result": "type", "flags": [addr]}}), json!("local"))
}

fn count(name: String) -> Value {
    json!({"counter": name})
}

fn goto(target: &str) -> Value {
    json!({"goto": {"target": target}})
}

fn set_priority(class: ClassId) -> Value {
    json!({"mangle": {"key": {"meta": {"key": "priority"}}, "value": class.to_string()}})
}

/// Reverse-path check, loose across tunnels: the source must be routed back out of one of our
/// tunnels. Not necessarily the one it came in by: on a mesh, paths are asymmetric (babeld
/// picks each direction's route on its own, and a neighbor forwards replies from anywhere
/// beyond it), so a strict check would drop legitimate traffic. What no neighbor may use is an
/// address we route elsewhere (our own, our LAN's, the uplink side's) or one we have no route to.
fn rpf_rules(key: &NeighborKey, tunnels: &[Value]) -> Vec<Value> {
    let rpf = json!({"match": {
        "op": "!=",
        "left": {"fib": {"result": "oifname", "flags": ["saddr"]}},
        "right": set(tunnels.to_vec()),
    }});
    vec![json!([rpf, count(CounterKind::Spoofed.name(key)), {"drop": null}])]
}

/// The control port: TCP from the neighbor's link-local address to ours.
fn control_service(port: u16) -> LocalService {
    LocalService {
        name: "control".into(),
        protocol: Protocol::Tcp,
        port,
        scope: ServiceScope::LinkLocal { groups: Vec::new() },
    }
}

/// The matches of one service: one rule per destination kind.
fn service_matches(s: &LocalService) -> Vec<Vec<Value>> {
    let dport = port(s.protocol, "dport", s.port);
    match &s.scope {
        ServiceScope::AnyAddress => vec![vec![dport]],
        ServiceScope::LinkLocal { groups } => {
            let mut v = vec![vec![link_local("saddr"), link_local("daddr"), dport.clone()]];
            if !groups.is_empty() {
                let g: Vec<Value> = groups.iter().map(|g| json!(g.to_string())).collect();
                v.push(vec![link_local("saddr"), eq(payload("ip6", "daddr"), set(g)), dport]);
            }
            v
        }
    }
}

/// ICMPv6 router solicitation, neighbor solicitation and advertisement.
const ND_TYPES: [u8; 3] = [133, 135, 136];
/// ICMPv6 multicast listener query, report, done and version 2 report.
const MLD_TYPES: [u8; 4] = [130, 131, 132, 143];

fn limit_packets(per_sec: u32) -> Value {
    json!({"limit": {"rate": per_sec, "per": "second", "burst": per_sec.saturating_mul(2)}})
}

/// Traffic from any planned tunnel to this node: each admitted kind goes to its neighbor's
/// accepting chain, the rest to its junk chain.
fn to_us_rules(port: u16, adm: &Admission, m: &Maps) -> Vec<Value> {
    let to = |mut matches: Vec<Value>, elements: &[Value]| {
        matches.push(vmap("iifname", elements.to_vec()));
        Value::Array(matches)
    };
    let admit = |matches: Vec<Value>| to(matches, &m.acc);
    let mut rules = Vec::new();
    // Echo requests first: they are never replies, and after the first one of a ping run
    // conntrack calls the rest "established", which would let a flood through unlimited.
    if adm.echo_requests_per_sec > 0 {
        for icmp in ["icmp", "icmpv6"] {
            rules.push(to(vec![eq(payload(icmp, "type"), json!("echo-request"))], &m.ping));
        }
    }
    rules.push(admit(vec![ct_state(&["established", "related"])]));
    rules.push(to(vec![ct_state(&["invalid"])], &m.junk));
    // IPv6's own signalling on the link: neighbor discovery (hop limit 255: from the link) and
    // multicast listener messages, from link-local addresses. Not router advertisements or
    // redirects: a neighbor must not change our routes.
    let nd = eq(payload("icmpv6", "type"), set(ND_TYPES.iter().map(|t| json!(t)).collect()));
    rules.push(admit(vec![nd, eq(payload("ip6", "hoplimit"), json!(255))]));
    let mld = eq(payload("icmpv6", "type"), set(MLD_TYPES.iter().map(|t| json!(t)).collect()));
    rules.push(admit(vec![link_local("saddr"), mld]));
    for s in std::iter::once(&control_service(port)).chain(&adm.services) {
        rules.extend(service_matches(s).into_iter().map(&admit));
    }
    for (protocol, ports) in [(Protocol::Tcp, &adm.open_tcp), (Protocol::Udp, &adm.open_udp)] {
        let ports: BTreeSet<u16> = ports.iter().copied().collect();
        if !ports.is_empty() {
            let ports: Vec<Value> = ports.into_iter().map(Value::from).collect();
            rules.push(admit(vec![eq(payload(protocol.as_str(), "dport"), set(ports))]));
        }
    }
    rules.push(to(vec![], &m.junk));
    rules
}

/// Traffic from any planned tunnel to be forwarded: into a tunnel or out of an uplink passes,
/// new connections included; elsewhere only replies (and new connections into open LANs).
fn through_us_rules(adm: &Admission, tunnels: &[Value], prefix: Option<&str>, m: &Maps) -> Vec<Value> {
    let admit = |matches: Vec<Value>| {
        let mut v = matches;
        v.push(vmap("iifname", m.acc.clone()));
        Value::Array(v)
    };
    let onward: Vec<Value> = tunnels.iter().cloned().chain(adm.uplinks.iter().map(|u| json!(u.as_str()))).collect();
    let mut rules = vec![admit(vec![eq(meta("oifname"), set(onward))])];
    if let Some(p) = prefix {
        rules.push(admit(vec![eq(meta("oifname"), json!(p))]));
    }
    rules.push(admit(vec![ct_state(&["established", "related"])]));
    if adm.lans_open && !adm.lans.is_empty() {
        let lans: Vec<Value> = adm.lans.iter().map(|l| json!(l.as_str())).collect();
        rules.push(admit(vec![eq(meta("oifname"), set(lans))]));
    }
    rules.push(json!([vmap("iifname", m.junk.clone())]));
    rules
}

/// A tunnel of ours whose neighbor is not in the plan yet: what an honest neighbor sends in the
/// second after its tunnel comes up (replies, its control session, a ping) passes, uncounted;
/// nothing is forwarded, no opened port is reachable.
fn unplanned_rules(port: u16, echo_requests_per_sec: u32) -> Vec<Value> {
    let mut rules = Vec::new();
    if echo_requests_per_sec > 0 {
        for icmp in ["icmp", "icmpv6"] {
            let echo = eq(payload(icmp, "type"), json!("echo-request"));
            rules.push(json!([echo.clone(), limit_packets(echo_requests_per_sec), local("daddr"), {"accept": null}]));
            rules.push(json!([echo, {"drop": null}]));
        }
    }
    rules.push(json!([ct_state(&["established", "related"]), {"accept": null}]));
    rules.push(json!([link_local("saddr"), link_local("daddr"), tcp_port("dport", port), {"accept": null}]));
    rules.push(json!([{"drop": null}]));
    rules
}

fn accepted_rules(n: &NeighborTraffic, port: u16) -> Vec<Value> {
    let billed = || count(counter_name(&n.key));
    let control = |field| json!([tcp_port(field, port), local("daddr"), billed(), {"accept": null}]);
    match n.ingress {
        IngressPolicy::Open => vec![json!([billed(), {"accept": null}])],
        IngressPolicy::Police { bits_per_sec } => {
            let rate = bits_per_sec.bytes_per_sec();
            vec![
                control("dport"),
                control("sport"),
                json!([{"limit": {
                    "rate": rate, "rate_unit": "bytes", "per": "second",
                    "burst": police_burst_bytes(rate), "burst_unit": "bytes", "inv": true,
                }}, {"drop": null}]),
                json!([billed(), {"accept": null}]),
            ]
        }
        IngressPolicy::ControlOnly => vec![control("dport"), control("sport"), json!([{"drop": null}])],
    }
}

fn outbound_rules(n: &NeighborTraffic, port: u16, class: ClassId) -> Vec<Value> {
    let control =
        |field| json!([tcp_port(field, port), local("saddr"), set_priority(ClassId::control()), {"accept": null}]);
    let last = match n.ingress {
        IngressPolicy::Open | IngressPolicy::Police { .. } => json!([set_priority(class)]),
        IngressPolicy::ControlOnly => json!([{"drop": null}]),
    };
    vec![control("sport"), control("dport"), last]
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
