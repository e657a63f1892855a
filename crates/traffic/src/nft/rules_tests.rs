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
    assert_eq!(
        names,
        [
            "acc_abc",
            "junk_abc",
            "ping_abc",
            "rpf_abc",
            "out_abc",
            "to_us",
            "through_us",
            "pre",
            "input",
            "forward",
            "post"
        ]
    );
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
    // A source routed back out of any of our tunnels passes (paths on a mesh are asymmetric).
    assert_eq!(
        rpf.rules,
        [json!([
            {"match": {"op": "!=", "left": {"fib": {"result": "oifname", "flags": ["saddr"]}}, "right": {"set": ["twabc"]}}},
            {"counter": "spoofed_abc"},
            {"drop": null}
        ])]
    );
    let pre = chain(&d, "pre");
    assert_eq!(pre.hook, Some(Hook { hook: "prerouting", prio: -300 }), "raw: before conntrack (-200)");
    assert_eq!(pre.rules[0][0]["vmap"]["data"]["set"][0], json!(["twabc", {"jump": {"target": "rpf_abc"}}]));
}

/// The map a shared rule ends with: its elements, tunnel → (verdict, target).
fn map_of(rule: &Value) -> Vec<(String, String, String)> {
    let last = rule.as_array().unwrap().last().unwrap();
    assert_eq!(last["vmap"]["key"], meta("iifname"), "{rule}");
    last["vmap"]["data"]["set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (verdict, body) = e[1].as_object().unwrap().iter().next().unwrap();
            (e[0].as_str().unwrap().to_string(), verdict.clone(), body["target"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn traffic_to_us_passes_only_when_solicited_or_admitted() {
    let mut p = test_plan(&["abc", "xy"], IngressPolicy::Open);
    p.admission.open_tcp = vec![8080, 22, 8080];
    p.admission.open_udp = vec![53];
    let d = desired(&p);
    let to_us = &chain(&d, TO_US).rules;
    // Rule i ends with the map sending each neighbor's packets to its `<kind>_<key>` chain.
    let to = |i: usize, kind: &str| {
        let want = |k: &str| (format!("tw{k}"), "goto".to_string(), format!("{kind}_{k}"));
        assert_eq!(map_of(&to_us[i]), [want("abc"), want("xy")], "rule {i}: {}", to_us[i]);
    };
    // Pings first, to each neighbor's limiter (conntrack would call a flood from one ping run
    // established).
    assert_eq!(to_us[0][0], eq(payload("icmp", "type"), json!("echo-request")));
    assert_eq!(to_us[1][0], eq(payload("icmpv6", "type"), json!("echo-request")));
    to(0, "ping");
    to(1, "ping");
    // Replies; invalid packets are junk.
    assert_eq!(to_us[2][0]["match"]["right"], json!(["established", "related"]));
    to(2, "acc");
    assert_eq!(to_us[3][0]["match"]["right"], json!(["invalid"]));
    to(3, "junk");
    // IPv6 neighbor discovery from the link (no router advertisements, no redirects) and
    // multicast listener messages from link-local addresses.
    assert_eq!(to_us[4][0], eq(payload("icmpv6", "type"), json!({"set": [133, 135, 136]})));
    assert_eq!(to_us[4][1], eq(payload("ip6", "hoplimit"), json!(255)));
    assert_eq!(to_us[5][0], link_local("saddr"));
    assert_eq!(to_us[5][1], eq(payload("icmpv6", "type"), json!({"set": [130, 131, 132, 143]})));
    to(4, "acc");
    to(5, "acc");
    // The control port, between link-local addresses only.
    assert_eq!(to_us[6][0], link_local("saddr"));
    assert_eq!(to_us[6][1], link_local("daddr"));
    assert_eq!(to_us[6][2], tcp_port("dport", 7000));
    to(6, "acc");
    // Babel: link-local to link-local, and link-local to ff02::1:6.
    assert_eq!(to_us[7][2], port(Protocol::Udp, "dport", 6696));
    assert_eq!(to_us[8][1]["match"]["right"], json!({"set": ["ff02::1:6"]}));
    to(7, "acc");
    to(8, "acc");
    // Opened ports, deduplicated and sorted, on any address.
    assert_eq!(to_us[9][0], eq(payload("tcp", "dport"), set(vec![json!(22), json!(8080)])));
    assert_eq!(to_us[10][0], eq(payload("udp", "dport"), set(vec![json!(53)])));
    to(9, "acc");
    to(10, "acc");
    // Everything else: junk.
    assert_eq!(to_us[11].as_array().unwrap().len(), 1);
    to(11, "junk");
    assert_eq!(to_us.len(), 12);
    // Each neighbor's junk chain counts and drops; its ping chain limits, then junk.
    assert_eq!(chain(&d, "junk_abc").rules, [json!([{"counter": "unsolicited_abc"}, {"drop": null}])]);
    assert_eq!(
        chain(&d, "ping_abc").rules,
        [json!([{"limit": {"rate": 10, "per": "second", "burst": 20}}, goto("acc_abc")]), json!([goto("junk_abc")])]
    );
    let input = chain(&d, "input");
    assert_eq!(input.hook, Some(Hook { hook: "input", prio: 10 }));
    assert_eq!(input.rules, [json!([eq(meta("iifname"), json!({"set": ["twabc", "twxy"]})), goto(TO_US)])]);
}

#[test]
fn the_shared_admission_is_not_repeated_per_neighbor() {
    let keys: Vec<String> = (0..64).map(|i| format!("n{i}")).collect();
    let p = test_plan(&keys.iter().map(String::as_str).collect::<Vec<_>>(), IngressPolicy::Open);
    let d = desired(&p);
    let rules: usize = d.chains.iter().map(|c| c.rules.len()).sum();
    // acc 1 + junk 1 + ping 2 + rpf 1 + out 3 per neighbor, and a fixed number shared.
    assert!(rules <= 64 * 8 + 30, "{rules} rules for 64 neighbors");
}

#[test]
fn forwarding_passes_into_tunnels_and_uplinks_and_only_replies_elsewhere() {
    let mut p = test_plan(&["a", "b"], IngressPolicy::Open);
    p.admission.uplinks = vec![ifname("wan0")];
    p.admission.lans = vec![ifname("br-lan")];
    let d = desired(&p);
    let fwd = chain(&d, "forward");
    assert_eq!(fwd.hook, Some(Hook { hook: "forward", prio: 10 }));
    assert_eq!(fwd.rules, [json!([eq(meta("iifname"), json!({"set": ["twa", "twb"]})), goto(THROUGH_US)])]);
    let t = &chain(&d, THROUGH_US).rules;
    let acc = vec![
        ("twa".to_string(), "goto".to_string(), "acc_a".to_string()),
        ("twb".into(), "goto".into(), "acc_b".into()),
    ];
    let junk = vec![
        ("twa".to_string(), "goto".to_string(), "junk_a".to_string()),
        ("twb".into(), "goto".into(), "junk_b".into()),
    ];
    assert_eq!(t[0][0], eq(meta("oifname"), json!({"set": ["twa", "twb", "wan0"]})));
    assert_eq!(map_of(&t[0]), acc);
    assert_eq!(t[1][0], ct_state(&["established", "related"]));
    assert_eq!(map_of(&t[1]), acc);
    assert_eq!(t[2].as_array().unwrap().len(), 1);
    assert_eq!(map_of(&t[2]), junk);
    assert_eq!(t.len(), 3, "the LANs are closed");

    p.admission.lans_open = true;
    let d2 = desired(&p);
    let t = &chain(&d2, THROUGH_US).rules;
    assert_eq!(t[2][0], eq(meta("oifname"), json!({"set": ["br-lan"]})));
    assert_eq!(map_of(&t[2]), acc);
    assert_eq!(chain(&d, TO_US).comment, chain(&d2, TO_US).comment);
    assert_eq!(chain(&d, "acc_a").comment, chain(&d2, "acc_a").comment);
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
    let unplanned = json!([eq(meta("iifname"), json!("tw0a1b2c*")), goto(UNPLANNED)]);
    assert_eq!(chain(&d, "input").rules[1], unplanned, "after the planned tunnels");
    assert_eq!(chain(&d, "forward").rules[1], unplanned);
    let t = &chain(&d, THROUGH_US).rules;
    assert_eq!(t[1][0], eq(meta("oifname"), json!("tw0a1b2c*")), "transit into an unplanned tunnel of ours");
    // Without neighbors, only the catch-all.
    let mut p = TrafficPlan::empty(ControlTraffic { tcp_port: 7000, rate: BitRate::MIN });
    p.admission.tunnel_prefix = Some("tw0a1b2c".into());
    let d = desired(&p);
    assert_eq!(chain(&d, "input").rules, [unplanned]);
    assert!(!d.chains.iter().any(|c| c.name == TO_US || c.name == THROUGH_US));
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
    assert_eq!(chain(&a, TO_US).comment, chain(&c, TO_US).comment, "admission unchanged");
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
