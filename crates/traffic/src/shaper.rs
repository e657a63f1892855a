//! The [`Shaper`] facility: each capacity domain's egress shared between its neighbors in
//! proportion to their rates. The real implementation is [`crate::TcShaper`].

use crate::command::CommandError;
use crate::plan::{BitRate, ClassId, GroupId, PlanError, TrafficPlan};
use std::io;
use tollway_core::IfName;

fn on(ifname: &str) -> String {
    if ifname.is_empty() {
        String::new()
    } else {
        format!(" {ifname}")
    }
}

/// What one [`Shaper::apply`] changed. All empty when the kernel already matched the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShaperReport {
    pub ifbs_created: Vec<IfName>,
    pub ifbs_deleted: Vec<IfName>,
    /// The tc commands run (one `tc -batch`), as given to tc.
    pub tc_commands: Vec<String>,
    /// Member tunnels that do not exist: their classes are in place, their redirect will be
    /// added by the first apply after they appear.
    pub missing_tunnels: Vec<IfName>,
}

impl ShaperReport {
    /// True if nothing was changed (missing tunnels aside).
    pub fn is_noop(&self) -> bool {
        self.ifbs_created.is_empty() && self.ifbs_deleted.is_empty() && self.tc_commands.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShaperApplyError {
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    /// `ifname` is empty for operations on no interface in particular (listing, reading).
    #[error("{op}{}: {source}", on(.ifname))]
    Netlink { op: &'static str, ifname: String, source: io::Error },
    /// tc stopped at the failing command (`failed_input`); the ones before it were applied.
    #[error("tc: {0}")]
    Tc(CommandError),
}

/// One thing [`Shaper::remove_all`] could not undo.
#[derive(Debug, thiserror::Error)]
pub enum RemoveFailure {
    #[error("{op}{}: {source}", on(.ifname))]
    Netlink { op: &'static str, ifname: String, source: io::Error },
    #[error("tc: {0}")]
    Tc(CommandError),
}

/// Everything [`Shaper::remove_all`] could not undo (it goes on after a failure).
#[derive(Debug, thiserror::Error)]
#[error("removing shaping left {} failure(s): {}", .failures.len(), .failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ShaperRemoveError {
    pub failures: Vec<RemoveFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IFB prefix {0:?} must be 1 to 10 characters of [A-Za-z0-9_-] (5 are left for the group id)")]
pub struct IfbPrefixError(pub String);

#[derive(Debug, thiserror::Error)]
#[error("reading tc state ({op}): {source}")]
pub struct InspectError {
    pub op: &'static str,
    pub source: io::Error,
}

/// One HTB class as the kernel has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassState {
    pub id: ClassId,
    pub rate: BitRate,
    pub ceil: BitRate,
    pub prio: u32,
    pub quantum: u32,
    pub sent_bytes: u64,
    pub sent_packets: u64,
    pub drops: u32,
}

/// One group's IFB as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfbState {
    pub ifb: IfName,
    pub group: GroupId,
    pub ifindex: u32,
    pub up: bool,
    pub classes: Vec<ClassState>,
}

/// Egress shaping per capacity domain.
///
/// Calls are synchronous and act on the network namespace of the calling thread.
pub trait Shaper: Send {
    /// Make the kernel match `plan` with the minimal set of changes: one IFB with an HTB per
    /// group, one class per neighbor, every member tunnel's egress redirected into its group's
    /// IFB. Unchanged classes are not touched; tunnels that do not exist yet are skipped and
    /// listed in the report.
    fn apply(&mut self, plan: &TrafficPlan) -> Result<ShaperReport, ShaperApplyError>;

    /// Delete our IFBs and the clsact qdiscs that redirect into them (clean shutdown). Goes on
    /// after failures and reports them all.
    fn remove_all(&mut self) -> Result<(), ShaperRemoveError>;
}

/// A shaper that shapes nothing: for nodes that do not sell capacity.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopShaper;

impl Shaper for NoopShaper {
    fn apply(&mut self, plan: &TrafficPlan) -> Result<ShaperReport, ShaperApplyError> {
        plan.validate()?;
        Ok(ShaperReport::default())
    }

    fn remove_all(&mut self) -> Result<(), ShaperRemoveError> {
        Ok(())
    }
}
