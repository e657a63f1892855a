//! The minimal batch turning the observed table into the desired one.
//!
//! Counters are only ever added when missing and deleted when their neighbor is gone: an
//! existing counter is never re-added or replaced, so its value survives every change of rules
//! around it. (`add counter` on an existing counter would keep its value too, measured on nft
//! 1.0.6 / kernel 6.18, even with explicit zero values; we do not rely on it.) A chain whose
//! rules are stale is flushed and refilled in the same transaction, so no packet sees it empty.

use super::observed::ObservedTable;
use super::rules::{key_of_counter, DesiredChain, DesiredTable, FAMILY, TABLE};
use crate::plan::NeighborKey;
use serde_json::{json, Value};

/// A batch and what it does.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Batch {
    pub commands: Vec<Value>,
    pub created_table: bool,
    pub counters_added: Vec<NeighborKey>,
    pub counters_deleted: Vec<NeighborKey>,
    pub chains_written: Vec<String>,
    pub chains_deleted: Vec<String>,
}

impl Batch {
    /// The document `nft -j -f -` reads.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({ "nftables": self.commands })).expect("JSON values serialize")
    }
}

fn table() -> Value {
    json!({"family": FAMILY, "name": TABLE})
}

fn chain_ref(name: &str) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": name})
}

fn chain_def(c: &DesiredChain) -> Value {
    let mut v = chain_ref(&c.name);
    if let Some(h) = c.hook {
        v["type"] = json!("filter");
        v["hook"] = json!(h.hook);
        v["prio"] = json!(h.prio);
        v["policy"] = json!("accept");
    }
    v
}

fn counter_ref(name: &str) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": name})
}

fn up_to_date(c: &DesiredChain, observed: &ObservedTable) -> bool {
    let Some(o) = observed.chains.get(&c.name) else { return false };
    let hook = c.hook.map(|h| (h.hook.to_string(), h.prio));
    o.hook == hook
        && o.comments.len() == c.rules.len()
        && o.comments.iter().all(|cm| cm.as_deref() == Some(c.comment.as_str()))
}

pub(crate) fn batch(desired: &DesiredTable, observed: Option<&ObservedTable>) -> Batch {
    let empty = ObservedTable::default();
    let mut b = Batch::default();
    let o = match observed {
        Some(o) => o,
        None => {
            b.commands.push(json!({"add": {"table": table()}}));
            b.created_table = true;
            &empty
        }
    };
    for name in &desired.counters {
        if !o.counters.contains_key(name) {
            b.commands.push(json!({"add": {"counter": counter_ref(name)}}));
            b.counters_added.extend(key_of_counter(name));
        }
    }
    // Regular chains come before the base chains that jump to them (see `rules::desired`).
    for c in &desired.chains {
        if up_to_date(c, o) {
            continue;
        }
        match o.chains.get(&c.name) {
            None => b.commands.push(json!({"add": {"chain": chain_def(c)}})),
            Some(oc) if oc.hook != c.hook.map(|h| (h.hook.to_string(), h.prio)) => {
                // Wrong kind of chain (someone changed it): replace it.
                b.commands.push(json!({"flush": {"chain": chain_ref(&c.name)}}));
                b.commands.push(json!({"delete": {"chain": chain_ref(&c.name)}}));
                b.commands.push(json!({"add": {"chain": chain_def(c)}}));
            }
            Some(_) => b.commands.push(json!({"flush": {"chain": chain_ref(&c.name)}})),
        }
        for expr in &c.rules {
            let mut rule = chain_ref(&c.name);
            rule.as_object_mut().expect("object").remove("name");
            rule["chain"] = json!(c.name);
            rule["expr"] = expr.clone();
            rule["comment"] = json!(c.comment);
            b.commands.push(json!({"add": {"rule": rule}}));
        }
        b.chains_written.push(c.name.clone());
    }
    // Chains of neighbors no longer in the plan (or anything else in our table): nothing jumps
    // to them any more once the base chains above are rewritten. They may jump to each other,
    // so all are flushed before any is deleted (a chain still jumped to cannot be deleted).
    let gone: Vec<&String> = o.chains.keys().filter(|name| !desired.chains.iter().any(|c| &c.name == *name)).collect();
    for name in &gone {
        b.commands.push(json!({"flush": {"chain": chain_ref(name)}}));
    }
    for name in gone {
        b.commands.push(json!({"delete": {"chain": chain_ref(name)}}));
        b.chains_deleted.push(name.clone());
    }
    for name in o.counters.keys() {
        if !desired.counters.contains(name) {
            b.commands.push(json!({"delete": {"counter": counter_ref(name)}}));
            b.counters_deleted.extend(key_of_counter(name));
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::observed::{ObservedChain, ObservedCounter};
    use super::super::rules::desired;
    use super::*;
    use crate::plan::*;

    fn plan(keys: &[&str], ingress: IngressPolicy) -> TrafficPlan {
        test_plan(keys, ingress)
    }

    /// What the kernel would hold after applying `d` on an empty table.
    fn observed_after(d: &DesiredTable) -> ObservedTable {
        let mut o = ObservedTable { handle: 1, ..Default::default() };
        for (i, name) in d.counters.iter().enumerate() {
            o.counters.insert(name.clone(), ObservedCounter { handle: 100 + i as u64, packets: 1, bytes: 99 });
        }
        for c in &d.chains {
            o.chains.insert(
                c.name.clone(),
                ObservedChain {
                    hook: c.hook.map(|h| (h.hook.to_string(), h.prio)),
                    comments: vec![Some(c.comment.clone()); c.rules.len()],
                },
            );
        }
        o
    }

    fn verbs(b: &Batch) -> Vec<String> {
        b.commands
            .iter()
            .map(|c| {
                let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
                let (kind, obj) = body.as_object().unwrap().iter().next().unwrap();
                let name = obj.get("name").or(obj.get("chain")).and_then(Value::as_str).unwrap_or("");
                format!("{verb} {kind} {name}")
            })
            .collect()
    }

    #[test]
    fn from_nothing_everything_is_created_in_dependency_order() {
        let d = desired(&plan(&["a"], IngressPolicy::Open));
        let b = batch(&d, None);
        assert!(b.created_table);
        let v = verbs(&b);
        let mut expected: Vec<String> =
            ["add table tollway", "add counter rx_a", "add counter spoofed_a", "add counter unsolicited_a"]
                .map(String::from)
                .to_vec();
        for c in &d.chains {
            expected.push(format!("add chain {}", c.name));
            expected.extend(c.rules.iter().map(|_| format!("add rule {}", c.name)));
        }
        assert_eq!(v, expected);
        let names: Vec<&str> = d.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["acc_a", "junk_a", "ping_a", "rpf_a", "out_a", "to_us", "through_us", "pre", "input", "forward", "post"]
        );
        let doc: Value = serde_json::from_slice(&b.to_json()).unwrap();
        assert_eq!(doc["nftables"].as_array().unwrap().len(), v.len());
        let pre = v.iter().position(|c| c == "add chain pre").unwrap();
        assert_eq!(doc["nftables"][pre]["add"]["chain"]["hook"], "prerouting");
        assert_eq!(doc["nftables"][5]["add"]["rule"]["comment"], json!(d.chains[0].comment));
        assert_eq!(b.counters_added, [NeighborKey::new("a").unwrap()], "reported once per neighbor");
    }

    #[test]
    fn nothing_changed_means_an_empty_batch() {
        let d = desired(&plan(&["a", "b"], IngressPolicy::Open));
        let b = batch(&d, Some(&observed_after(&d)));
        assert!(b.commands.is_empty(), "{:?}", verbs(&b));
    }

    #[test]
    fn a_policy_change_rewrites_that_neighbors_chains_only_and_never_touches_counters() {
        let before = desired(&plan(&["a", "b"], IngressPolicy::Open));
        let o = observed_after(&before);
        let mut p = plan(&["a", "b"], IngressPolicy::Open);
        p.groups[0].neighbors[1].ingress = IngressPolicy::Police { bits_per_sec: BitRate::kbit(64) };
        let b = batch(&desired(&p), Some(&o));
        let v = verbs(&b);
        assert_eq!(v[0], "flush chain acc_b");
        assert_eq!(v.iter().filter(|s| s.starts_with("add rule acc_b")).count(), 4);
        assert!(v.iter().all(|s| !s.contains("counter") && !s.contains("_a")), "{v:?}");
        assert_eq!(b.chains_written, ["acc_b"]);
    }

    #[test]
    fn a_gone_neighbor_loses_its_chains_and_counter_after_the_dispatch_is_rewritten() {
        let o = observed_after(&desired(&plan(&["a", "b"], IngressPolicy::Open)));
        let b = batch(&desired(&plan(&["a"], IngressPolicy::Open)), Some(&o));
        let v = verbs(&b);
        let pos = |s: &str| v.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} missing from {v:?}"));
        assert!(pos("flush chain pre") < pos("delete chain rpf_b"));
        assert!(pos("flush chain to_us") < pos("delete chain acc_b"));
        assert!(pos("flush chain through_us") < pos("delete chain junk_b"));
        assert!(pos("flush chain post") < pos("delete chain out_b"));
        // ping_b jumps to acc_b and junk_b: emptied before they go.
        assert!(pos("flush chain ping_b") < pos("delete chain acc_b"));
        assert!(pos("flush chain ping_b") < pos("delete chain junk_b"));
        assert!(pos("flush chain acc_b") < pos("delete counter rx_b"));
        assert!(pos("flush chain rpf_b") < pos("delete counter spoofed_b"));
        assert!(pos("flush chain junk_b") < pos("delete counter unsolicited_b"));
        assert_eq!(b.counters_deleted, [NeighborKey::new("b").unwrap()]);
        assert_eq!(b.chains_deleted, ["acc_b", "junk_b", "out_b", "ping_b", "rpf_b"]);
    }

    #[test]
    fn a_new_neighbor_gets_its_counter_before_the_rules_using_it() {
        let o = observed_after(&desired(&plan(&["a"], IngressPolicy::Open)));
        let b = batch(&desired(&plan(&["a", "b"], IngressPolicy::Open)), Some(&o));
        let v = verbs(&b);
        assert_eq!(v[..3], ["add counter rx_b", "add counter spoofed_b", "add counter unsolicited_b"]);
        assert!(v.contains(&"add chain acc_b".to_string()));
        assert!(v.contains(&"flush chain pre".to_string()));
        // a's reverse-path check now knows b's tunnel too.
        assert!(v.contains(&"flush chain rpf_a".to_string()), "{v:?}");
        assert_eq!(b.counters_added, [NeighborKey::new("b").unwrap()]);
    }

    #[test]
    fn flushed_rules_and_foreign_changes_are_repaired() {
        let d = desired(&plan(&["a"], IngressPolicy::Open));
        let mut o = observed_after(&d);
        // `nft flush table`: chains and counters stay, rules go.
        for c in o.chains.values_mut() {
            c.comments.clear();
        }
        let v = verbs(&batch(&d, Some(&o)));
        assert_eq!(v.iter().filter(|s| s.starts_with("flush chain")).count(), d.chains.len(), "{v:?}");
        // Every rule is re-added.
        let rules: usize = d.chains.iter().map(|c| c.rules.len()).sum();
        assert_eq!(v.iter().filter(|s| s.starts_with("add rule")).count(), rules);

        let mut o = observed_after(&d);
        o.chains.get_mut("pre").unwrap().hook = Some(("input".into(), 0));
        o.chains.insert("intruder".into(), ObservedChain::default());
        o.chains.get_mut("out_a").unwrap().comments.push(None);
        let v = verbs(&batch(&d, Some(&o)));
        assert!(v.contains(&"delete chain pre".to_string()) && v.contains(&"add chain pre".to_string()), "{v:?}");
        assert!(v.contains(&"delete chain intruder".to_string()));
        assert!(v.contains(&"flush chain out_a".to_string()));
        assert!(!v.iter().any(|s| s.contains("counter")));
    }
}
