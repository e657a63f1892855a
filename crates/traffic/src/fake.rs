//! In-memory fakes of [`Firewall`] and [`Shaper`] for tests of the driver.
//!
//! Each fake is a cheap handle on shared state: keep a clone in the test, give the other to the
//! code under test (e.g. as `Box<dyn Firewall>`), then inspect and inject through the clone.

use crate::command::CommandError;
use crate::firewall::*;
use crate::plan::{NeighborKey, TrafficPlan};
use crate::shaper::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct FirewallState {
    applied: Option<TrafficPlan>,
    applies: usize,
    counters: BTreeMap<NeighborKey, CounterReading>,
    table: u64,
    next_object: u64,
    fail_apply: Option<String>,
    fail_read: Option<String>,
}

impl FirewallState {
    /// A table that does not exist yet gets a new handle, as in the kernel.
    fn ensure_table(&mut self) {
        if self.table == 0 {
            self.table = self.next_object + 1;
            self.next_object += 1;
        }
    }

    fn new_counter(&mut self) -> CounterReading {
        self.ensure_table();
        self.next_object += 1;
        CounterReading {
            bytes: 0,
            packets: 0,
            handle: CounterHandle { table: self.table, object: self.next_object },
            spoofed: DropCount::default(),
            unsolicited: DropCount::default(),
        }
    }
}

/// A [`Firewall`] that behaves like the kernel's counters: a neighbor's counter appears (at zero,
/// with a fresh handle) when a plan first contains it, keeps its value across applies, and is
/// dropped when a plan no longer contains it.
#[derive(Debug, Clone, Default)]
pub struct FakeFirewall(Arc<Mutex<FirewallState>>);

impl FakeFirewall {
    pub fn new() -> FakeFirewall {
        FakeFirewall::default()
    }

    fn state(&self) -> MutexGuard<'_, FirewallState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last plan applied successfully.
    pub fn applied(&self) -> Option<TrafficPlan> {
        self.state().applied.clone()
    }

    /// How many times `apply` succeeded.
    pub fn applies(&self) -> usize {
        self.state().applies
    }

    /// Add traffic to a neighbor's counter (no effect if it has none).
    pub fn add_traffic(&self, key: &NeighborKey, bytes: u64, packets: u64) {
        if let Some(c) = self.state().counters.get_mut(key) {
            c.bytes += bytes;
            c.packets += packets;
        }
    }

    /// Add to a neighbor's drop counters (no effect if it has none).
    pub fn add_drops(&self, key: &NeighborKey, spoofed: DropCount, unsolicited: DropCount) {
        if let Some(c) = self.state().counters.get_mut(key) {
            c.spoofed.packets += spoofed.packets;
            c.spoofed.bytes += spoofed.bytes;
            c.unsolicited.packets += unsolicited.packets;
            c.unsolicited.bytes += unsolicited.bytes;
        }
    }

    /// Set a neighbor's counter outright (creating it if needed), handle included.
    pub fn set_counter(&self, key: NeighborKey, reading: CounterReading) {
        self.state().counters.insert(key, reading);
    }

    /// What `nft flush ruleset` does: every counter and the table vanish; the next apply
    /// re-creates them at zero under new handles.
    pub fn flush_ruleset(&self) {
        let mut s = self.state();
        s.counters.clear();
        s.table = 0;
    }

    /// Make the next `apply` fail with `stderr` (once).
    pub fn fail_next_apply(&self, stderr: &str) {
        self.state().fail_apply = Some(stderr.to_string());
    }

    /// Make the next `read_counters` fail with `stderr` (once).
    pub fn fail_next_read(&self, stderr: &str) {
        self.state().fail_read = Some(stderr.to_string());
    }
}

impl Firewall for FakeFirewall {
    fn apply(&mut self, plan: &TrafficPlan) -> Result<FirewallReport, FirewallApplyError> {
        plan.validate()?;
        let mut s = self.state();
        if let Some(e) = s.fail_apply.take() {
            return Err(FirewallApplyError::Apply { commands: 1, error: CommandError::injected("apply", &e) });
        }
        s.ensure_table();
        let mut report = FirewallReport::default();
        let wanted: Vec<NeighborKey> = plan.neighbors().map(|(_, n)| n.key.clone()).collect();
        for key in &wanted {
            if !s.counters.contains_key(key) {
                let c = s.new_counter();
                s.counters.insert(key.clone(), c);
                report.counters_added.push(key.clone());
            }
        }
        let gone: Vec<NeighborKey> = s.counters.keys().filter(|k| !wanted.contains(k)).cloned().collect();
        for key in gone {
            s.counters.remove(&key);
            report.counters_deleted.push(key);
        }
        if s.applied.as_ref() != Some(plan) || !report.counters_added.is_empty() || !report.counters_deleted.is_empty()
        {
            report.commands = 1;
        }
        s.applied = Some(plan.clone());
        s.applies += 1;
        Ok(report)
    }

    fn read_counters(&mut self) -> Result<BTreeMap<NeighborKey, CounterReading>, ReadCountersError> {
        let mut s = self.state();
        if let Some(e) = s.fail_read.take() {
            return Err(ReadCountersError::Command(CommandError::injected("read_counters", &e)));
        }
        Ok(s.counters.clone())
    }

    fn remove_all(&mut self) -> Result<(), FirewallRemoveError> {
        let mut s = self.state();
        s.counters.clear();
        s.table = 0;
        s.applied = None;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ShaperState {
    applied: Option<TrafficPlan>,
    applies: usize,
    missing_tunnels: Vec<tollway_core::IfName>,
    fail_apply: Option<String>,
    removed: usize,
}

/// A [`Shaper`] that records what it was asked to do.
#[derive(Debug, Clone, Default)]
pub struct FakeShaper(Arc<Mutex<ShaperState>>);

impl FakeShaper {
    pub fn new() -> FakeShaper {
        FakeShaper::default()
    }

    fn state(&self) -> MutexGuard<'_, ShaperState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last plan applied successfully (`None` after `remove_all`).
    pub fn applied(&self) -> Option<TrafficPlan> {
        self.state().applied.clone()
    }

    pub fn applies(&self) -> usize {
        self.state().applies
    }

    /// How many times `remove_all` was called.
    pub fn removals(&self) -> usize {
        self.state().removed
    }

    /// Tunnels to report as missing from now on.
    pub fn set_missing_tunnels(&self, tunnels: Vec<tollway_core::IfName>) {
        self.state().missing_tunnels = tunnels;
    }

    /// Make the next `apply` fail with `stderr` (once).
    pub fn fail_next_apply(&self, stderr: &str) {
        self.state().fail_apply = Some(stderr.to_string());
    }
}

impl Shaper for FakeShaper {
    fn apply(&mut self, plan: &TrafficPlan) -> Result<ShaperReport, ShaperApplyError> {
        plan.validate()?;
        let mut s = self.state();
        if let Some(e) = s.fail_apply.take() {
            return Err(ShaperApplyError::Tc(CommandError::injected("apply", &e)));
        }
        let mut report = ShaperReport { missing_tunnels: s.missing_tunnels.clone(), ..Default::default() };
        if s.applied.as_ref() != Some(plan) {
            report.tc_commands.push("fake apply".into());
        }
        s.applied = Some(plan.clone());
        s.applies += 1;
        Ok(report)
    }

    fn remove_all(&mut self) -> Result<(), ShaperRemoveError> {
        let mut s = self.state();
        s.applied = None;
        s.removed += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::*;
    use tollway_core::IfName;

    fn plan(keys: &[&str]) -> TrafficPlan {
        test_plan(keys, IngressPolicy::Open)
    }

    fn key(k: &str) -> NeighborKey {
        NeighborKey::new(k).unwrap()
    }

    #[test]
    fn fake_counters_live_as_long_as_their_neighbor() {
        let fake = FakeFirewall::new();
        let mut fw: Box<dyn Firewall> = Box::new(fake.clone());
        let r = fw.apply(&plan(&["a", "b"])).unwrap();
        assert_eq!(r.counters_added, [key("a"), key("b")]);
        fake.add_traffic(&key("a"), 1000, 2);
        let c1 = fw.read_counters().unwrap();
        assert_eq!(c1[&key("a")].bytes, 1000);
        assert!(fw.apply(&plan(&["a", "b"])).unwrap().is_noop());
        let r = fw.apply(&plan(&["a"])).unwrap();
        assert_eq!(r.counters_deleted, [key("b")]);
        let c2 = fw.read_counters().unwrap();
        assert_eq!(c2[&key("a")], c1[&key("a")]);
        assert!(!c2.contains_key(&key("b")));
        assert_eq!(fake.applied(), Some(plan(&["a"])));
        assert_eq!(fake.applies(), 3);
    }

    #[test]
    fn a_flush_gives_new_handles_and_zero_values() {
        let fake = FakeFirewall::new();
        let mut fw = fake.clone();
        fw.apply(&plan(&["a"])).unwrap();
        fake.add_traffic(&key("a"), 5, 1);
        let before = fw.read_counters().unwrap()[&key("a")];
        fake.flush_ruleset();
        assert!(fw.read_counters().unwrap().is_empty());
        fw.apply(&plan(&["a"])).unwrap();
        let after = fw.read_counters().unwrap()[&key("a")];
        assert_eq!(after.bytes, 0);
        assert_ne!(after.handle, before.handle);
        assert_ne!(after.handle.table, before.handle.table);
    }

    #[test]
    fn injected_failures_happen_once() {
        let fake = FakeFirewall::new();
        let mut fw = fake.clone();
        fake.fail_next_apply("boom");
        let e = fw.apply(&plan(&["a"])).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        assert!(fw.apply(&plan(&["a"])).is_ok());
        fake.fail_next_read("bang");
        assert!(fw.read_counters().is_err());
        assert!(fw.read_counters().is_ok());
        fake.set_counter(
            key("z"),
            CounterReading {
                bytes: 9,
                packets: 1,
                handle: CounterHandle { table: 1, object: 9 },
                spoofed: DropCount::default(),
                unsolicited: DropCount::default(),
            },
        );
        assert_eq!(fw.read_counters().unwrap()[&key("z")].bytes, 9);
        fake.add_drops(&key("z"), DropCount { packets: 1, bytes: 60 }, DropCount { packets: 2, bytes: 80 });
        let z = fw.read_counters().unwrap()[&key("z")];
        assert_eq!((z.bytes, z.spoofed.bytes, z.unsolicited.packets), (9, 60, 2));
        assert!(matches!(
            fw.apply(&TrafficPlan::empty(ControlTraffic { tcp_port: 0, rate: BitRate::MIN })),
            Err(FirewallApplyError::Plan(_))
        ));
    }

    #[test]
    fn fake_shaper_records_plans_and_failures() {
        let fake = FakeShaper::new();
        let mut sh: Box<dyn Shaper> = Box::new(fake.clone());
        assert!(!sh.apply(&plan(&["a"])).unwrap().is_noop());
        assert!(sh.apply(&plan(&["a"])).unwrap().is_noop());
        fake.set_missing_tunnels(vec![IfName::new("twa").unwrap()]);
        assert_eq!(sh.apply(&plan(&["a"])).unwrap().missing_tunnels.len(), 1);
        fake.fail_next_apply("nope");
        assert!(sh.apply(&plan(&["a"])).is_err());
        assert_eq!(fake.applies(), 3);
        sh.remove_all().unwrap();
        assert_eq!(fake.applied(), None);
        assert_eq!(fake.removals(), 1);
    }
}
