//! [`NftFirewall`]: the [`Firewall`] on nftables, through `nft -j` (JSON in and out). The table
//! is described in [`rules`].
//!
//! Reads the table once per call (`nft -j list table inet tollway`), computes the minimal batch
//! (see [`diff`]) and applies it as one atomic transaction (`nft -j -f -`).

mod diff;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzzing;
mod observed;
pub(crate) mod rules;

pub use rules::police_burst_bytes;

use crate::command::{run, CommandError};
use crate::firewall::*;
use crate::plan::{NeighborKey, TrafficPlan};
use observed::ObservedTable;
use serde_json::json;
use std::collections::BTreeMap;

/// The nftables implementation of [`Firewall`]. Owns table `inet tollway`.
#[derive(Debug, Clone)]
pub struct NftFirewall {
    nft: String,
}

impl Default for NftFirewall {
    fn default() -> Self {
        NftFirewall::new()
    }
}

enum ListError {
    Command(CommandError),
    Parse(String),
}

impl NftFirewall {
    /// Uses `nft` from `PATH`.
    pub fn new() -> NftFirewall {
        NftFirewall { nft: "nft".into() }
    }

    /// Uses the given `nft` binary.
    pub fn with_program(nft: impl Into<String>) -> NftFirewall {
        NftFirewall { nft: nft.into() }
    }

    /// Our table as the kernel has it, `None` if it does not exist.
    fn list(&self) -> Result<Option<ObservedTable>, ListError> {
        match run(&self.nft, &["-j", "list", "table", rules::FAMILY, rules::TABLE], None) {
            Ok(out) => observed::parse(&out).map(Some).map_err(ListError::Parse),
            Err(e) => {
                // Listing a missing table fails; tell that apart from real failures by asking
                // which tables exist rather than by matching an error message.
                if self.table_exists().map_err(|_| ListError::Command(e.clone()))? {
                    Err(ListError::Command(e))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Our table's handle and counters only (no rules): half the cost of a full listing.
    fn list_counters(&self) -> Result<Option<ObservedTable>, ListError> {
        let doc = json!({"nftables": [
            {"list": {"tables": null}},
            {"list": {"counters": {"family": rules::FAMILY, "table": rules::TABLE}}},
        ]});
        let doc = serde_json::to_vec(&doc).expect("JSON values serialize");
        match run(&self.nft, &["-j", "-f", "-"], Some(&doc)) {
            Ok(out) => observed::parse(&out).map(Some).map_err(ListError::Parse),
            Err(e) => {
                if self.table_exists().map_err(|_| ListError::Command(e.clone()))? {
                    Err(ListError::Command(e))
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn table_exists(&self) -> Result<bool, ListError> {
        let out = run(&self.nft, &["-j", "list", "tables", rules::FAMILY], None).map_err(ListError::Command)?;
        observed::lists_our_table(&out).map_err(ListError::Parse)
    }
}

impl Firewall for NftFirewall {
    fn apply(&mut self, plan: &TrafficPlan) -> Result<FirewallReport, FirewallApplyError> {
        plan.validate()?;
        let observed = self.list().map_err(|e| match e {
            ListError::Command(e) => FirewallApplyError::Read(e),
            ListError::Parse(e) => FirewallApplyError::Parse(e),
        })?;
        let b = diff::batch(&rules::desired(plan), observed.as_ref());
        if !b.commands.is_empty() {
            tracing::debug!(commands = b.commands.len(), chains = ?b.chains_written, "nft batch");
            run(&self.nft, &["-j", "-f", "-"], Some(&b.to_json()))
                .map_err(|error| FirewallApplyError::Apply { commands: b.commands.len(), error })?;
        }
        Ok(FirewallReport {
            commands: b.commands.len(),
            created_table: b.created_table,
            counters_added: b.counters_added,
            counters_deleted: b.counters_deleted,
            chains_written: b.chains_written,
            chains_deleted: b.chains_deleted,
        })
    }

    fn read_counters(&mut self) -> Result<BTreeMap<NeighborKey, CounterReading>, ReadCountersError> {
        let Some(t) = self.list_counters().map_err(|e| match e {
            ListError::Command(e) => ReadCountersError::Command(e),
            ListError::Parse(e) => ReadCountersError::Parse(e),
        })?
        else {
            return Ok(BTreeMap::new());
        };
        let mut readings: BTreeMap<NeighborKey, CounterReading> = t
            .counters
            .iter()
            .filter_map(|(name, c)| {
                let key = rules::key_of_counter(name)?;
                let handle = CounterHandle { table: t.handle, object: c.handle };
                let (spoofed, unsolicited) = (DropCount::default(), DropCount::default());
                Some((key, CounterReading { bytes: c.bytes, packets: c.packets, handle, spoofed, unsolicited }))
            })
            .collect();
        for (name, c) in &t.counters {
            let Some((kind, key)) = rules::parse_counter(name) else { continue };
            let Some(r) = readings.get_mut(&key) else { continue };
            let drops = DropCount { packets: c.packets, bytes: c.bytes };
            match kind {
                rules::CounterKind::Billed => {}
                rules::CounterKind::Spoofed => r.spoofed = drops,
                rules::CounterKind::Unsolicited => r.unsolicited = drops,
            }
        }
        Ok(readings)
    }

    fn remove_all(&mut self) -> Result<(), FirewallRemoveError> {
        let doc = json!({"nftables": [{"delete": {"table": {"family": rules::FAMILY, "name": rules::TABLE}}}]});
        let doc = serde_json::to_vec(&doc).expect("JSON values serialize");
        match run(&self.nft, &["-j", "-f", "-"], Some(&doc)) {
            Ok(_) => Ok(()),
            Err(e) => match self.table_exists() {
                Ok(false) => Ok(()),
                Ok(true) => Err(FirewallRemoveError::Command(e)),
                Err(ListError::Command(_)) => Err(FirewallRemoveError::Command(e)),
                Err(ListError::Parse(p)) => Err(FirewallRemoveError::Parse(p)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BitRate, ControlTraffic};

    #[test]
    fn failures_to_run_nft_are_reported_with_the_command() {
        let mut fw = NftFirewall::with_program("/nonexistent/nft");
        let plan = TrafficPlan::empty(ControlTraffic { tcp_port: 7000, rate: BitRate::MIN });
        let e = fw.apply(&plan).unwrap_err();
        assert!(
            matches!(&e, FirewallApplyError::Read(CommandError::Spawn { argv, .. }) if argv[0] == "/nonexistent/nft"),
            "{e:?}"
        );
        assert!(matches!(fw.read_counters(), Err(ReadCountersError::Command(_))));
        assert!(matches!(fw.remove_all(), Err(FirewallRemoveError::Command(_))));
    }
}
