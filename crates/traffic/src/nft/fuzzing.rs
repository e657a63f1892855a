//! The `nft -j` output parser under arbitrary input: the body of the fuzz target `nft_listing`
//! (`fuzz/`, feature `fuzzing`), and of a test that replays the target's seed corpus.

use super::{diff, observed, rules};
use crate::plan::{BitRate, ControlTraffic, GroupId, IngressPolicy, NeighborKey, NeighborTraffic, ShaperGroup};
use crate::TrafficPlan;
use serde_json::Value;
use std::collections::BTreeSet;
use tollway_core::IfName;

/// Read `json` the way [`super::NftFirewall`] reads `nft -j` output (table listing, counter
/// listing, table check), then plan the batch that would turn what it describes into a plan
/// keeping all but one of the neighbors it has counters for, plus a new one. Returns whether the
/// listing parsed.
///
/// Panics (a finding) if any of it panics, or if the batch would add a counter that exists or
/// delete one the plan still wants: a counter is never replaced, because a re-created counter
/// restarts from zero and the bytes it had counted would be billed again or lost.
pub fn check_nft_output(json: &[u8]) -> bool {
    let _ = observed::lists_our_table(json);
    let Ok(table) = observed::parse(json) else { return false };
    let mut keys: Vec<NeighborKey> = table.counters.keys().filter_map(|name| rules::key_of_counter(name)).collect();
    keys.pop();
    let new = NeighborKey::new("fuzz_new").expect("a valid key");
    if !keys.contains(&new) {
        keys.push(new);
    }
    let plan = TrafficPlan {
        control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(100) },
        groups: vec![ShaperGroup {
            id: GroupId(0),
            capacity: BitRate::mbit(100),
            neighbors: keys
                .into_iter()
                .enumerate()
                .map(|(i, key)| NeighborTraffic {
                    key,
                    tunnel: IfName::new(format!("tw{i}")).expect("a valid name"),
                    rate: BitRate::mbit(1),
                    ceil: BitRate::mbit(100),
                    ingress: if i % 2 == 0 { IngressPolicy::Open } else { IngressPolicy::ControlOnly },
                })
                .collect(),
        }],
        admission: crate::plan::Admission::default(),
    };
    plan.validate().expect("the plan is valid");
    let desired = rules::desired(&plan);
    let batch = diff::batch(&desired, Some(&table));
    let mut added = BTreeSet::new();
    for command in &batch.commands {
        if let Some(name) = command.pointer("/add/counter/name").and_then(Value::as_str) {
            assert!(!table.counters.contains_key(name), "the batch re-adds existing counter {name}: {command}");
            added.insert(name.to_string());
        }
        if let Some(name) = command.pointer("/delete/counter/name").and_then(Value::as_str) {
            assert!(!desired.counters.contains(name), "the batch deletes wanted counter {name}: {command}");
        }
    }
    for name in &desired.counters {
        assert!(table.counters.contains_key(name) || added.contains(name), "counter {name} is neither kept nor added");
    }
    serde_json::from_slice::<Value>(&batch.to_json()).expect("the batch is JSON");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seeds are real `nft -j` outputs: every one of them parses.
    #[test]
    fn the_fuzz_seeds_parse_and_keep_their_counters() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/nft_listing");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert!(check_nft_output(&bytes), "{} does not parse", path.display());
            seeds += 1;
        }
        assert!(seeds >= 3, "seeds in {}: {seeds}", dir.display());
    }

    #[test]
    fn garbage_is_rejected_without_a_panic() {
        for input in [&b""[..], b"{", b"null", b"{\"nftables\": 7}", b"{\"nftables\": [{\"table\": 1}]}"] {
            assert!(!check_nft_output(input));
        }
    }
}
