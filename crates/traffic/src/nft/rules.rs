//! The table a plan asks for, as nftables JSON: counters and chains with their rules.
//!
//! ```text
//! table inet tollway {
//!   counter rx_<key> { }                         # one per neighbor: accepted inbound bytes
//!   chain in_<key> {                             # inbound from the neighbor's tunnel
//!     Open:        counter name rx_<key>
//!     Police:      tcp dport CTRL fib daddr type local counter name rx_<key> accept
//!                  tcp sport CTRL fib daddr type local counter name rx_<key> accept
//!                  limit rate over R bytes/second burst B bytes drop
//!                  counter name rx_<key>
//!     ControlOnly: (the two control rules) drop
//!   }
//!   chain out_<key> {                            # outbound into the neighbor's tunnel
//!     tcp sport CTRL fib saddr type local meta priority set 1:2 accept
//!     tcp dport CTRL fib saddr type local meta priority set 1:2 accept
//!     Open/Police: meta priority set 1:<neighbor's class>
//!     ControlOnly: drop
//!   }
//!   chain pre  { type filter hook prerouting priority raw (-300); policy accept;
//!                iifname vmap { "<tunnel>" : jump in_<key>, … } }
//!   chain post { type filter hook postrouting priority mangle (-150); policy accept;
//!                oifname vmap { "<tunnel>" : jump out_<key>, … } }
//! }
//! ```
//!
//! Every rule carries a comment `tw:<fingerprint of its chain>`: a chain whose rules all carry
//! the fingerprint of the desired chain is up to date, without comparing nft's normalized JSON
//! with ours.

use crate::plan::{fnv1a64, ClassId, IngressPolicy, NeighborKey, NeighborTraffic, TrafficPlan};
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub(crate) const FAMILY: &str = "inet";
pub(crate) const TABLE: &str = "tollway";
pub(crate) const PRE: &str = "pre";
pub(crate) const POST: &str = "post";
pub(crate) const COMMENT_PREFIX: &str = "tw:";

/// The counter of a neighbor's accepted inbound bytes.
pub(crate) fn counter_name(key: &NeighborKey) -> String {
    format!("rx_{key}")
}

/// The key a counter name belongs to, if it is one of ours.
pub(crate) fn key_of_counter(name: &str) -> Option<NeighborKey> {
    NeighborKey::new(name.strip_prefix("rx_")?).ok()
}

fn in_chain(key: &NeighborKey) -> String {
    format!("in_{key}")
}

fn out_chain(key: &NeighborKey) -> String {
    format!("out_{key}")
}

/// The hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hook {
    pub hook: &'static str,
    pub prio: i64,
}

pub(crate) const PRE_HOOK: Hook = Hook { hook: "prerouting", prio: -300 };
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
    /// Regular chains first, then the base chains that jump to them.
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
    let mut counters = BTreeSet::new();
    let mut chains = Vec::new();
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    for group in &plan.groups {
        let classes = group.classes();
        for n in &group.neighbors {
            counters.insert(counter_name(&n.key));
            chains.push(DesiredChain::new(in_chain(&n.key), None, inbound_rules(n, port)));
            chains.push(DesiredChain::new(out_chain(&n.key), None, outbound_rules(n, port, classes[&n.key])));
            ins.push(json!([n.tunnel.as_str(), {"jump": {"target": in_chain(&n.key)}}]));
            outs.push(json!([n.tunnel.as_str(), {"jump": {"target": out_chain(&n.key)}}]));
        }
    }
    chains.push(DesiredChain::new(PRE.into(), Some(PRE_HOOK), dispatch("iifname", ins)));
    chains.push(DesiredChain::new(POST.into(), Some(POST_HOOK), dispatch("oifname", outs)));
    DesiredTable { counters, chains }
}

/// One rule sending each tunnel's packets to its neighbor's chain (none without neighbors).
fn dispatch(meta_key: &str, elements: Vec<Value>) -> Vec<Value> {
    if elements.is_empty() {
        return Vec::new();
    }
    vec![json!([{"vmap": {"key": {"meta": {"key": meta_key}}, "data": {"set": elements}}}])]
}

fn tcp_port(field: &str, port: u16) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": field}}, "right": port}})
}

fn local(addr: &str) -> Value {
    json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": [addr]}}, "right": "local"}})
}

fn count(key: &NeighborKey) -> Value {
    json!({"counter": counter_name(key)})
}

fn set_priority(class: ClassId) -> Value {
    json!({"mangle": {"key": {"meta": {"key": "priority"}}, "value": class.to_string()}})
}

fn inbound_rules(n: &NeighborTraffic, port: u16) -> Vec<Value> {
    let control = |field| json!([tcp_port(field, port), local("daddr"), count(&n.key), {"accept": null}]);
    match n.ingress {
        IngressPolicy::Open => vec![json!([count(&n.key)])],
        IngressPolicy::Police { bits_per_sec } => {
            let rate = bits_per_sec.bytes_per_sec();
            vec![
                control("dport"),
                control("sport"),
                json!([{"limit": {
                    "rate": rate, "rate_unit": "bytes", "per": "second",
                    "burst": police_burst_bytes(rate), "burst_unit": "bytes", "inv": true,
                }}, {"drop": null}]),
                json!([count(&n.key)]),
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
mod tests {
    use super::*;
    use crate::plan::{BitRate, ControlTraffic, GroupId, ShaperGroup};
    use tollway_core::IfName;

    fn plan(ingress: IngressPolicy) -> TrafficPlan {
        TrafficPlan {
            control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(100) },
            groups: vec![ShaperGroup {
                id: GroupId(0),
                capacity: BitRate::mbit(10),
                neighbors: vec![NeighborTraffic {
                    key: NeighborKey::new("abc").unwrap(),
                    tunnel: IfName::new("tw0").unwrap(),
                    rate: BitRate::mbit(1),
                    ceil: BitRate::mbit(10),
                    ingress,
                }],
            }],
        }
    }

    #[test]
    fn counters_and_chains_are_named_after_the_key() {
        let d = desired(&plan(IngressPolicy::Open));
        assert_eq!(d.counters.iter().collect::<Vec<_>>(), vec!["rx_abc"]);
        let names: Vec<_> = d.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["in_abc", "out_abc", "pre", "post"]);
        assert_eq!(key_of_counter("rx_abc"), Some(NeighborKey::new("abc").unwrap()));
        assert_eq!(key_of_counter("tx_abc"), None);
        assert_eq!(key_of_counter("rx_A"), None);
    }

    #[test]
    fn the_counter_comes_after_the_policer() {
        let d = desired(&plan(IngressPolicy::Police { bits_per_sec: BitRate::kbit(64) }));
        let rules = &d.chains[0].rules;
        assert_eq!(rules.len(), 4);
        let limit = &rules[2][0]["limit"];
        assert_eq!(limit["rate"], 8000);
        assert_eq!(limit["burst"], 3000);
        assert_eq!(limit["inv"], true);
        assert_eq!(rules[2][1], json!({"drop": null}));
        assert_eq!(rules[3], json!([{"counter": "rx_abc"}]));
    }

    #[test]
    fn cut_off_passes_only_local_control_traffic_both_ways() {
        let d = desired(&plan(IngressPolicy::ControlOnly));
        let (inb, outb) = (&d.chains[0].rules, &d.chains[1].rules);
        assert_eq!(inb.last().unwrap(), &json!([{"drop": null}]));
        assert_eq!(outb.last().unwrap(), &json!([{"drop": null}]));
        assert_eq!(inb[0][0]["match"]["right"], 7000);
        assert_eq!(inb[0][1]["match"]["left"]["fib"]["flags"], json!(["daddr"]));
        assert_eq!(outb[0][1]["match"]["left"]["fib"]["flags"], json!(["saddr"]));
        assert_eq!(outb[0][2]["mangle"]["value"], "1:2");
    }

    #[test]
    fn egress_is_classified_into_the_neighbors_class() {
        let p = plan(IngressPolicy::Open);
        let class = p.groups[0].classes()[&NeighborKey::new("abc").unwrap()];
        let d = desired(&p);
        assert_eq!(d.chains[1].rules[2], json!([set_priority(class)]));
        let post = &d.chains[3];
        assert_eq!(post.hook, Some(POST_HOOK));
        assert_eq!(post.rules[0][0]["vmap"]["data"]["set"][0], json!(["tw0", {"jump": {"target": "out_abc"}}]));
    }

    #[test]
    fn fingerprints_change_with_the_rules_only() {
        let a = desired(&plan(IngressPolicy::Open));
        let b = desired(&plan(IngressPolicy::Open));
        assert_eq!(a, b);
        let c = desired(&plan(IngressPolicy::ControlOnly));
        assert_ne!(a.chains[0].comment, c.chains[0].comment);
        assert_eq!(a.chains[2].comment, c.chains[2].comment, "dispatch unchanged");
        assert!(a.chains[0].comment.starts_with("tw:") && a.chains[0].comment.len() == 19);
    }

    #[test]
    fn an_empty_plan_has_empty_base_chains() {
        let d = desired(&TrafficPlan::empty(ControlTraffic { tcp_port: 1, rate: BitRate::MIN }));
        assert!(d.counters.is_empty());
        assert_eq!(d.chains.len(), 2);
        assert!(d.chains.iter().all(|c| c.rules.is_empty() && c.hook.is_some()));
    }
}
