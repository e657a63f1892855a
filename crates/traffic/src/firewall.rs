//! The [`Firewall`] facility: what neighbors may send us (reverse-path check, admission of
//! traffic to and through this node), per-neighbor accounting, policing, cut-off and egress
//! classification. The real implementation is [`crate::NftFirewall`].

use crate::command::CommandError;
use crate::plan::{NeighborKey, PlanError, TrafficPlan};
use std::collections::BTreeMap;

/// The identity of one counter object. If it differs from the last reading, the counter was
/// re-created (someone deleted our table or flushed the ruleset, and `apply` rebuilt it) and its
/// value restarted from zero. Both parts are needed: a re-created table numbers its objects
/// from scratch and may give the new counter the old handle, but the table itself gets a new
/// handle (tables are numbered per namespace, never reused while the namespace lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CounterHandle {
    /// The handle of table `inet tollway`.
    pub table: u64,
    /// The handle of the counter object in it.
    pub object: u64,
}

/// Packets and bytes dropped for one reason, since the counter was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCount {
    pub packets: u64,
    pub bytes: u64,
}

/// One neighbor's inbound counters. `bytes`/`packets`/`handle` are the billing counter: what it
/// sent us that we accepted, counted once the verdict is known (after every drop: spoofed,
/// unsolicited, policed, cut off). The drop counters beside it say what was refused; they are
/// never billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterReading {
    pub bytes: u64,
    pub packets: u64,
    pub handle: CounterHandle,
    /// Dropped because the source address is not routed back through its tunnel.
    pub spoofed: DropCount,
    /// Dropped because nobody here asked for it: addressed to this node or through it, not
    /// part of a connection started from here, not to a service or an opened port.
    pub unsolicited: DropCount,
}

/// What one [`Firewall::apply`] changed. All empty when the kernel already matched the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallReport {
    /// Commands in the atomic batch (0: nothing was sent to the kernel).
    pub commands: usize,
    pub created_table: bool,
    pub counters_added: Vec<NeighborKey>,
    pub counters_deleted: Vec<NeighborKey>,
    /// Chains whose rules were (re)written.
    pub chains_written: Vec<String>,
    pub chains_deleted: Vec<String>,
}

impl FirewallReport {
    pub fn is_noop(&self) -> bool {
        self.commands == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallApplyError {
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    #[error("reading table inet tollway: {0}")]
    Read(CommandError),
    #[error("parsing table inet tollway: {0}")]
    Parse(String),
    /// The batch failed as a whole: nftables applied none of it.
    #[error("applying a batch of {commands} commands to table inet tollway: {error}")]
    Apply { commands: usize, error: CommandError },
}

#[derive(Debug, thiserror::Error)]
pub enum ReadCountersError {
    #[error("reading the counters of table inet tollway: {0}")]
    Command(CommandError),
    #[error("parsing the counters of table inet tollway: {0}")]
    Parse(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallRemoveError {
    #[error("deleting table inet tollway: {0}")]
    Command(CommandError),
    #[error("checking whether table inet tollway exists: {0}")]
    Parse(String),
}

/// Per-neighbor packet filtering and accounting.
///
/// Owns one nftables table and nothing else. Calls are synchronous and act on the network
/// namespace of the calling thread.
pub trait Firewall: Send {
    /// Make the kernel match `plan`: the admission of neighbors' traffic (spoofed and unsolicited
    /// packets dropped and counted), a billing counter per neighbor, policing of throttled
    /// neighbors' inbound traffic before it is counted, cut-offs, and egress classification into
    /// the neighbors' HTB classes. A reconcile: idempotent, sends nothing when nothing changed,
    /// never resets the counter of a neighbor that stays in the plan, deletes the counters of
    /// neighbors that left it, and rebuilds whatever someone else deleted.
    fn apply(&mut self, plan: &TrafficPlan) -> Result<FirewallReport, FirewallApplyError>;

    /// Every neighbor's counters in the kernel, by key (none if our table is missing).
    fn read_counters(&mut self) -> Result<BTreeMap<NeighborKey, CounterReading>, ReadCountersError>;

    /// Delete our table (clean shutdown). Deleting a missing table is not an error.
    fn remove_all(&mut self) -> Result<(), FirewallRemoveError>;
}

/// A firewall that does nothing and counts nothing: for nodes that run without accounting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopFirewall;

impl Firewall for NoopFirewall {
    fn apply(&mut self, plan: &TrafficPlan) -> Result<FirewallReport, FirewallApplyError> {
        plan.validate()?;
        Ok(FirewallReport::default())
    }

    fn read_counters(&mut self) -> Result<BTreeMap<NeighborKey, CounterReading>, ReadCountersError> {
        Ok(BTreeMap::new())
    }

    fn remove_all(&mut self) -> Result<(), FirewallRemoveError> {
        Ok(())
    }
}
