//! Our table as the kernel has it, parsed from `nft -j list table inet tollway`.

use super::rules::{FAMILY, TABLE};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObservedCounter {
    pub handle: u64,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ObservedChain {
    /// `(hook, priority)` of a base chain.
    pub hook: Option<(String, i64)>,
    /// The comment of each rule, in order.
    pub comments: Vec<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ObservedTable {
    /// The table's handle: the kernel numbers tables per namespace in creation order, so a
    /// re-created table has a new one even when its objects get the same handles as before.
    pub handle: u64,
    pub counters: BTreeMap<String, ObservedCounter>,
    pub chains: BTreeMap<String, ObservedChain>,
}

/// Parse the output of `nft -j list table inet tollway`, or of several list commands (one JSON
/// document each, e.g. `list tables` then `list counters table inet tollway`).
pub(crate) fn parse(json: &[u8]) -> Result<ObservedTable, String> {
    let mut items = Vec::new();
    for doc in serde_json::Deserializer::from_slice(json).into_iter::<Value>() {
        let mut v = doc.map_err(|e| format!("not JSON: {e}"))?;
        match v.get_mut("nftables").map(Value::take) {
            Some(Value::Array(a)) => items.extend(a),
            _ => return Err("no \"nftables\" array".into()),
        }
    }
    let mut t = ObservedTable::default();
    let ours = |o: &Value, table_key: &str| {
        o.get("family").and_then(Value::as_str) == Some(FAMILY)
            && o.get(table_key).and_then(Value::as_str) == Some(TABLE)
    };
    let mut found_table = false;
    for item in &items {
        if let Some(o) = item.get("table") {
            if ours(o, "name") {
                t.handle = field_u64(o, "handle")?;
                found_table = true;
            }
        } else if let Some(o) = item.get("counter") {
            if ours(o, "table") {
                let c = ObservedCounter {
                    handle: field_u64(o, "handle")?,
                    packets: field_u64(o, "packets")?,
                    bytes: field_u64(o, "bytes")?,
                };
                t.counters.insert(field_str(o, "name")?, c);
            }
        } else if let Some(o) = item.get("chain") {
            if ours(o, "table") {
                let hook = o
                    .get("hook")
                    .and_then(Value::as_str)
                    .map(|h| (h.to_string(), o.get("prio").and_then(Value::as_i64).unwrap_or(0)));
                t.chains.entry(field_str(o, "name")?).or_default().hook = hook;
            }
        } else if let Some(o) = item.get("rule") {
            if ours(o, "table") {
                let comment = o.get("comment").and_then(Value::as_str).map(str::to_string);
                t.chains.entry(field_str(o, "chain")?).or_default().comments.push(comment);
            }
        }
    }
    if !found_table {
        return Err("the listing does not contain table inet tollway".into());
    }
    Ok(t)
}

/// Whether `nft -j list tables` output lists our table.
pub(crate) fn lists_our_table(json: &[u8]) -> Result<bool, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = v.get("nftables").and_then(Value::as_array).ok_or("no \"nftables\" array")?;
    Ok(items.iter().filter_map(|i| i.get("table")).any(|o| {
        o.get("family").and_then(Value::as_str) == Some(FAMILY) && o.get("name").and_then(Value::as_str) == Some(TABLE)
    }))
}

fn field_u64(o: &Value, name: &str) -> Result<u64, String> {
    o.get(name).and_then(Value::as_u64).ok_or_else(|| format!("missing number {name:?} in {o}"))
}

fn field_str(o: &Value, name: &str) -> Result<String, String> {
    o.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("missing string {name:?} in {o}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `nft -j list table inet tollway` (nft 1.0.6).
    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "tollway", "handle": 7}},
      {"counter": {"family": "inet", "name": "rx_k1", "table": "tollway", "handle": 5, "packets": 3, "bytes": 252}},
      {"chain": {"family": "inet", "table": "tollway", "name": "in_k1", "handle": 1}},
      {"chain": {"family": "inet", "table": "tollway", "name": "pre", "handle": 2, "type": "filter",
                 "hook": "prerouting", "prio": -300, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "tollway", "chain": "in_k1", "handle": 8,
                "comment": "tw:0123456789abcdef", "expr": [{"counter": "rx_k1"}]}},
      {"rule": {"family": "inet", "table": "tollway", "chain": "pre", "handle": 10, "expr": [{"accept": null}]}}
    ]}"#;

    #[test]
    fn parses_table_handle_counters_chains_and_rule_comments() {
        let t = parse(LISTING.as_bytes()).unwrap();
        assert_eq!(t.handle, 7);
        assert_eq!(t.counters["rx_k1"], ObservedCounter { handle: 5, packets: 3, bytes: 252 });
        assert_eq!(t.chains["in_k1"].hook, None);
        assert_eq!(t.chains["in_k1"].comments, vec![Some("tw:0123456789abcdef".to_string())]);
        assert_eq!(t.chains["pre"].hook, Some(("prerouting".to_string(), -300)));
        assert_eq!(t.chains["pre"].comments, vec![None]);
    }

    #[test]
    fn reads_several_documents_as_one_listing() {
        let tables = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "x", "handle": 1}},
            {"table": {"family": "inet", "name": "tollway", "handle": 4}}]}"#;
        let counters = r#"{"nftables": [{"metainfo": {}}, {"counter": {"family": "inet", "name": "rx_a",
            "table": "tollway", "handle": 2, "packets": 1, "bytes": 60}}]}"#;
        let t = parse(format!("{tables}\n{counters}\n").as_bytes()).unwrap();
        assert_eq!(t.handle, 4);
        assert_eq!(t.counters["rx_a"], ObservedCounter { handle: 2, packets: 1, bytes: 60 });
        assert!(parse(format!("{tables}\nnot json").as_bytes()).is_err());
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"x": 1}"#).is_err());
        assert!(parse(br#"{"nftables": []}"#).is_err());
        let bad = r#"{"nftables": [{"table": {"family": "inet", "name": "tollway", "handle": 1}},
            {"counter": {"family": "inet", "name": "rx_a", "table": "tollway", "handle": 2, "packets": 1}}]}"#;
        assert!(parse(bad.as_bytes()).unwrap_err().contains("bytes"));
    }

    #[test]
    fn finds_our_table_in_a_table_listing() {
        let yes = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "tollway", "handle": 1}},
            {"table": {"family": "inet", "name": "tollway", "handle": 2}}]}"#;
        let no = r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "tollway", "handle": 1}}]}"#;
        assert_eq!(lists_our_table(yes.as_bytes()), Ok(true));
        assert_eq!(lists_our_table(no.as_bytes()), Ok(false));
    }
}
