use super::*;
use crate::plan::{test_plan, BitRate, ControlTraffic};
use tollway_core::IfName;

fn plan(ingress: IngressPolicy) -> TrafficPlan {
    test_plan(&["abc"], ingress)
}

fn chain<'a>(d: &'a DesiredTable, name: &str) -> &'a DesiredChain {
    d.chains.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no chain {name}"))
}

fn ifname(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

/// The verdict a rule ends with: ("goto", target), ("accept", ""), ("drop", "").
fn verdict(rule: &Value) -> (String, String) {
    let last = rule.as_array().unwrap().last().unwrap().as_object().unwrap();
    let (k, v) = last.iter().next().unwrap();
    (k.clone(), v.get("target").and_then(Value::as_str).unwrap_or("").to_string())
}

#[test]
fn counters_and_chains_are_named_after_the_key() {
    let d = desired(&plan(IngressPolicy::Open));
    assert_eq!(d.counters.iter().collect::<Vec<_>>(), vec!["rx_abc", "spoofed_abc", "unsolicited_abc"]);
    let names: Vec<_> = d.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["acc_abc", "rpf_abc", "local_abc", "fwd_abc", "out_abc", "pre", "input", "forward", "post"]);
    let k = NeighborKey::new("abc").unwrap();
    assert_eq!(key_of_counter("rx_abc"), Some(k.clone()));
    assert_eq!(key_of_counter("spoofed_abc"), None, "only billing counters name a neighbor in reports");
    assert_eq!(parse_counter("spoofed_abc"), Some((CounterKind::Spoofed, k.clone())));
    assert_eq!(parse_counter("unsolicited_abc"), Some((CounterKind::Unsolicited, k)));
    assert_eq!(key_of_counter("tx_abc"), None);
    assert_eq!(key_of_counter("rx_A"), None);
}

#[test]
fn chains_come_after_the_chains_they_jump_to() {
    let mut p = test_plan(&["a", "b"], IngressPolicy::Open);
    p.admission.tunnel_prefix = Some("twx".into());
    let d = desired(&p);
    let pos = |n: &str| d.chains.iter().position(|c| c.name == n).unwrap();
    for c in &d.chains {
        for rule in &c.rules {
            for target in rule.to_string().split("\"target\":\"").skip(1) {
                let target = target.split('"').next().unwrap();
                assert!(pos(target) < pos(&c.name), "{} jumps to {target}, created after it", c.name);
            }
        }
    }
}

#[test]
fn spoofed_sources_are_dropped_and_counted_before_connection_tracking() {
    let d = desired(&plan(IngressPolicy::Open));
    let rpf = chain(&d, "rpf_abc");
    assert_eq!(
        rpf.rules,
        [json!([
            {"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, "right": false}},
            {"counter": "spoofed_abc"},
            {"drop": null}
        ])]
    );
    let pre = chain(&d, "pre");
    assert_eq!(pre.hook, Some(Hook { hook: "prerouting", prio: -300 }), "raw: before conntrack (-200)");
    assert_eq!(pre.rules[0][0]["vmap"]["data"]["set"][0], json!(["twabc", {"jump": {"target": "rpf_abc"}}]));
}

#[test]
fn traffic_to_us_passes_only_when_solicited_or_admitted() {
    let mut p = plan(IngressPolicy::Open);
    p.admission.open_tcp = vec![8080, 22, 8080];
    p.admission.open_udp = vec![53];
    let d = desired(&p);
    let local = &chain(&d, "local_abc").rules;
    let admitted =
        |i: usize| assert_eq!(verdict(&local[i]), ("goto".into(), "acc_abc".into()), "rule {i}: {}", local[i]);
    let unsolicited = |i: usize| {
        assert_eq!(verdict(&local[i]), ("drop".into(), String::new()), "rule {i}: {}", local[i]);
        assert_eq!(local[i].as_array().unwrap().iter().rev().nth(1), Some(&json!({"counter": "unsolicited_abc"})));
    };
    // Pings first, limited per neighbor, the rest dropped (conntrack would call a flood from
    // one ping run established).
    for (i, icmp) in [(0, "icmp"), (2, "icmpv6")] {
        assert_eq!(local[i][0], eq(payload(icmp, "type"), json!("echo-request")));
        assert_eq!(local[i][1], json!({"limit": {"rate": 10, "per": "second", "burst": 20}}));
        admitted(i);
        assert_eq!(local[i + 1][0], eq(payload(icmp, "type"), json!("echo-request")));
        unsolicited(i + 1);
    }
    // Replies, invalid packets out.
    assert_eq!(local[4][0]["match"]["right"], json!(["established", "related"]));
    admitted(4);
    assert_eq!(local[5][0]["match"]["right"], json!(["invalid"]));
    unsolicited(5);
    // IPv6 neighbor discovery from the link (no router advertisements, no redirects) and
    // multicast listener messages from link-local addresses.
    assert_eq!(local[6][0], eq(payload("icmpv6", "type"), json!({"set": [133, 135, 136]})));
    assert_eq!(local[6][1], eq(payload("ip6", "hoplimit"), json!(255)));
    assert_eq!(local[7][0], link_local("saddr"));
    assert_eq!(local[7][1], eq(payload("icmpv6", "type"), json!({"set": [130, 131, 132, 143]})));
    admitted(6);
    admitted(7);
    // The control port, between link-local addresses only.
    assert_eq!(local[8][0]["match"]["right"], json!({"prefix": {"addr": "fe80::", "len": 10}}));
    assert_eq!(local[8][0]["match"]["left"]["payload"]["field"], "saddr");
    assert_eq!(local[8][1]["match"]["left"]["payload"]["field"], "daddr");
    assert_eq!(local[8][2], tcp_port("dport", 7000));
    admitted(8);
    // Babel: link-local to link-local, and link-local to ff02::1:6.
    assert_eq!(local[9][2], port(Protocol::Udp, "dport", 6696));
    assert_eq!(local[10][1]["match"]["right"], json!({"set": ["ff02::1:6"]}));
    admitted(9);
    admitted(10);
    // Opened ports, deduplicated and sorted, on any address.
    assert_eq!(local[11], json!([eq(payload("tcp", "dport"), set(vec![json!(22), json!(8080)])), goto("acc_abc")]));
    assert_eq!(local[12], json!([eq(payload("udp", "dport"), set(vec![json!(53)])), goto("acc_abc")]));
    // Everything else: counted and dropped.
    assert_eq!(local[13], json!([{"counter": "unsolicited_abc"}, {"drop": null}]));
    assert_eq!(local.len(), 14);
    let input = chain(&d, "input");
    assert_eq!(input.hook, Some(Hook { hook: "input", prio: 10 }));
    assert_eq!(input.rules[0][0]["vmap"]["data"]["set"][0], json!(["twabc", {"jump": {"target": "local_abc"}}]));
}

#[test]
fn services_are_data() {
    let mut p = plan(IngressPolicy::Open);
    p.admission.services = vec![LocalService {
        name: "speedtest".into(),
        protocol: Protocol::Tcp,
        port: 9000,
        scope: ServiceScope::AnyAddress,
    }];
    p.admission.echo_requests_per_sec = 0;
    let d = desired(&p);
    let local = &chain(&d, "local_abc").rules;
    // No echo rules; established, invalid, ND, MLD, control, speedtest, unsolicited.
    assert_eq!(local.len(), 7, "{local:?}");
    assert_eq!(local[5], json!([tcp_port("dport", 9000), goto("acc_abc")]));
    assert!(!local.iter().any(|r| r.to_string().contains("6696") || r.to_string().contains("echo")));
}

#[test]
fn forwarding_passes_into_tunnels_and_uplinks_and_only_replies_elsewhere() {
    let mut p = test_plan(&["a", "b"], IngressPolicy::Open);
    p.admission.uplinks = vec![ifname("wan0")];
    p.admission.lans = vec![ifname("br-lan")];
    let d = desired(&p);
    let fwd = chain(&d, "forward");
    assert_eq!(fwd.hook, Some(Hook { hook: "forward", prio: 10 }));
    assert_eq!(fwd.rules[0][0], eq(meta("oifname"), json!({"set": ["twa", "twb", "wan0"]})));
    assert_eq!(
        fwd.rules[0][1]["vmap"]["data"]["set"],
        json!([["twa", {"goto": {"target": "acc_a"}}], ["twb", {"goto": {"target": "acc_b"}}]])
    );
    assert_eq!(fwd.rules[1][0]["vmap"]["data"]["set"][1], json!(["twb", {"goto": {"target": "fwd_b"}}]));
    assert_eq!(fwd.rules.len(), 2);
    let f = &chain(&d, "fwd_a").rules;
    assert_eq!(
        *f,
        [
            json!([ct_state(&["established", "related"]), goto("acc_a")]),
            json!([{"counter": "unsolicited_a"}, {"drop": null}])
        ]
    );

    p.admission.lans_open = true;
    let d2 = desired(&p);
    let f = &chain(&d2, "fwd_a").rules;
    assert_eq!(f[1], json!([eq(meta("oifname"), json!({"set": ["br-lan"]})), goto("acc_a")]));
    assert_ne!(chain(&d, "fwd_a").comment, chain(&d2, "fwd_a").comment);
    assert_eq!(chain(&d, "local_a").comment, chain(&d2, "local_a").comment);
}

#[test]
fn unplanned_tunnels_of_ours_get_control_and_replies_only() {
    let mut p = plan(IngressPolicy::Open);
    assert!(!desired(&p).chains.iter().any(|c| c.name == UNPLANNED));
    p.admission.tunnel_prefix = Some("tw0a1b2c".into());
    let d = desired(&p);
    let u = &chain(&d, UNPLANNED).rules;
    // Pings to us, limited (one limit for all unplanned tunnels), then replies and control.
    assert_eq!(u[0][0], eq(payload("icmp", "type"), json!("echo-request")));
    assert_eq!(u[0][2], local("daddr"), "pings to us, never through us");
    assert_eq!(verdict(&u[0]).0, "accept");
    assert_eq!(verdict(&u[1]).0, "drop");
    assert_eq!(u[4][0]["match"]["right"], json!(["established", "related"]));
    assert_eq!(verdict(&u[4]).0, "accept");
    assert_eq!(u[5][2], tcp_port("dport", 7000));
    assert_eq!(u[6], json!([{"drop": null}]));
    assert_eq!(u.len(), 7);
    assert!(!u.iter().any(|r| r.to_string().contains("counter")), "uncounted: no neighbor to count for");
    let input = &chain(&d, "input").rules;
    assert_eq!(input[1], json!([eq(meta("iifname"), json!("tw0a1b2c*")), goto(UNPLANNED)]));
    let fwd = &chain(&d, "forward").rules;
    assert_eq!(fwd[1][0], eq(meta("oifname"), json!("tw0a1b2c*")), "transit into an unplanned tunnel of ours");
    assert_eq!(fwd.last().unwrap(), &json!([eq(meta("iifname"), json!("tw0a1b2c*")), goto(UNPLANNED)]));
}

#[test]
fn the_counter_comes_after_the_policer() {
    let d = desired(&plan(IngressPolicy::Police { bits_per_sec: BitRate::kbit(64) }));
    let rules = &chain(&d, "acc_abc").rules;
    assert_eq!(rules.len(), 4);
    let limit = &rules[2][0]["limit"];
    assert_eq!(limit["rate"], 8000);
    assert_eq!(limit["burst"], 3000);
    assert_eq!(limit["inv"], true);
    assert_eq!(rules[2][1], json!({"drop": null}));
    assert_eq!(rules[3], json!([{"counter": "rx_abc"}, {"accept": null}]));
}

#[test]
fn the_billing_counter_is_only_in_the_accepting_chain() {
    for ingress in
        [IngressPolicy::Open, IngressPolicy::Police { bits_per_sec: BitRate::kbit(64) }, IngressPolicy::ControlOnly]
    {
        let d = desired(&plan(ingress));
        for c in &d.chains {
            let text = Value::Array(c.rules.clone()).to_string();
            assert_eq!(text.contains("\"rx_abc\""), c.name == "acc_abc", "{}: {text}", c.name);
            if c.name == "acc_abc" {
                // Every rule that counts accepts: nothing counted is dropped afterwards.
                for r in &c.rules {
                    if r.to_string().contains("rx_abc") {
                        assert_eq!(verdict(r).0, "accept", "{r}");
                    }
                }
            }
        }
    }
}

#[test]
fn cut_off_passes_only_local_control_traffic_both_ways() {
    let d = desired(&plan(IngressPolicy::ControlOnly));
    let (inb, outb) = (&chain(&d, "acc_abc").rules, &chain(&d, "out_abc").rules);
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
    assert_eq!(chain(&d, "out_abc").rules[2], json!([set_priority(class)]));
    let post = chain(&d, "post");
    assert_eq!(post.hook, Some(POST_HOOK));
    assert_eq!(post.rules[0][0]["vmap"]["data"]["set"][0], json!(["twabc", {"jump": {"target": "out_abc"}}]));
}

#[test]
fn fingerprints_change_with_the_rules_only() {
    let a = desired(&plan(IngressPolicy::Open));
    let b = desired(&plan(IngressPolicy::Open));
    assert_eq!(a, b);
    let c = desired(&plan(IngressPolicy::ControlOnly));
    assert_ne!(chain(&a, "acc_abc").comment, chain(&c, "acc_abc").comment);
    assert_eq!(chain(&a, "local_abc").comment, chain(&c, "local_abc").comment, "admission unchanged");
    assert_eq!(chain(&a, "pre").comment, chain(&c, "pre").comment, "dispatch unchanged");
    assert!(a.chains[0].comment.starts_with("tw:") && a.chains[0].comment.len() == 19);
}

#[test]
fn an_empty_plan_has_empty_base_chains() {
    let d = desired(&TrafficPlan::empty(ControlTraffic { tcp_port: 1, rate: BitRate::MIN }));
    assert!(d.counters.is_empty());
    assert_eq!(d.chains.len(), 4);
    assert!(d.chains.iter().all(|c| c.rules.is_empty() && c.hook.is_some()));
}
