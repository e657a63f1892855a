//! Masquerading at the uplink, in a table of its own (`inet tollway_nat`):
//!
//! ```text
//! table inet tollway_nat {
//!   chain post { type nat hook postrouting priority srcnat; policy accept;
//!     oifname "<uplink>" meta nfproto ipv4 masquerade           # every IPv4 source
//!     oifname "<uplink>" ip6 saddr fc00::/7 masquerade          # ULAs (mesh, LAN), unless off
//!   }
//! }
//! ```
//!
//! Built as nftables JSON and applied in one transaction (the table is re-created whole);
//! removed at stop. Mesh and LAN addresses are private (100.64.0.0/10 and RFC 1918 LANs, ULAs
//! in fd00::/8): the internet only ever sees the uplink's own address.

use crate::command::{run, CommandError};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tollway_core::IfName;

pub const NAT_TABLE: &str = "tollway_nat";

/// What to masquerade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkNat {
    pub uplink: IfName,
    /// Also IPv6 from ULAs (off when a global prefix is routed into the mesh).
    pub ipv6: bool,
}

/// The uplink's masquerading, behind a trait for tests.
pub trait Nat: Send {
    /// Make the table hold exactly this (re-created whole if it differs or is missing).
    fn apply(&mut self, nat: &UplinkNat) -> Result<(), CommandError>;
    /// Remove the table (a missing one is fine).
    fn remove(&mut self) -> Result<(), CommandError>;
}

/// The JSON commands that (re)create the table for `nat`.
pub fn commands(nat: &UplinkNat) -> Value {
    let oif = json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": nat.uplink.as_str()}});
    let mut rules = vec![
        json!([oif, {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"masquerade": null}]),
    ];
    if nat.ipv6 {
        rules.push(json!([
            oif,
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                       "right": {"prefix": {"addr": "fc00::", "len": 7}}}},
            {"masquerade": null}
        ]));
    }
    let table = json!({"family": "inet", "name": NAT_TABLE});
    let mut cmds = vec![
        json!({"add": {"table": table}}),
        json!({"delete": {"table": table}}),
        json!({"add": {"table": table}}),
        json!({"add": {"chain": {"family": "inet", "table": NAT_TABLE, "name": "post",
            "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}}),
    ];
    for expr in rules {
        cmds.push(json!({"add": {"rule": {"family": "inet", "table": NAT_TABLE, "chain": "post", "expr": expr}}}));
    }
    json!({"nftables": cmds})
}

/// The real one: `nft -j -f -`.
#[derive(Debug, Default)]
pub struct NftNat {
    applied: Option<UplinkNat>,
}

impl NftNat {
    pub fn new() -> NftNat {
        NftNat::default()
    }

    fn present() -> bool {
        run("nft", &["-j", "list", "table", "inet", NAT_TABLE], None).is_ok()
    }
}

impl Nat for NftNat {
    fn apply(&mut self, nat: &UplinkNat) -> Result<(), CommandError> {
        if self.applied.as_ref() == Some(nat) && NftNat::present() {
            return Ok(());
        }
        let batch = commands(nat).to_string();
        run("nft", &["-j", "-f", "-"], Some(batch.as_bytes()))?;
        self.applied = Some(nat.clone());
        Ok(())
    }

    fn remove(&mut self) -> Result<(), CommandError> {
        self.applied = None;
        if !NftNat::present() {
            return Ok(());
        }
        run("nft", &["delete", "table", "inet", NAT_TABLE], None).map(|_| ())
    }
}

/// In memory: what was applied, shared with the test.
#[derive(Debug, Clone, Default)]
pub struct FakeNat {
    pub applied: Arc<Mutex<Option<UplinkNat>>>,
}

impl Nat for FakeNat {
    fn apply(&mut self, nat: &UplinkNat) -> Result<(), CommandError> {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(nat.clone());
        Ok(())
    }

    fn remove(&mut self) -> Result<(), CommandError> {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_recreated_whole_with_ipv6_only_when_asked() {
        let nat = UplinkNat { uplink: IfName::new("eth0").unwrap(), ipv6: true };
        let c = commands(&nat);
        let cmds = c["nftables"].as_array().unwrap();
        assert_eq!(cmds[1]["delete"]["table"]["name"], NAT_TABLE);
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["expr"][0]["match"]["right"], "eth0");
        assert_eq!(rules[1]["expr"][1]["match"]["right"]["prefix"]["len"], 7);
        let v4_only = commands(&UplinkNat { ipv6: false, ..nat });
        assert_eq!(
            v4_only["nftables"].as_array().unwrap().iter().filter(|c| c["add"].get("rule").is_some()).count(),
            1
        );
    }
}
