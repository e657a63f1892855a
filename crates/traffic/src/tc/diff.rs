//! The minimal `tc -batch` turning observed tc state into the desired one. Pure: every input is
//! an argument, so each case is unit-tested without a kernel.
//!
//! Unchanged classes and leaves get no command at all (their queues and statistics live on);
//! changed rates use `class change`; a replaced root qdisc (someone else's, or none) brings all
//! classes back. Order: qdiscs and classes (parents first), leaves, redirects of member tunnels,
//! removal of stale redirects, then deletion of gone classes.

use super::observe::{ClassObs, FilterObs, QdiscObs, CLSACT_HANDLE, TC_H_ROOT};
use super::spec::{ClassSpec, GroupSpec, Leaf};
use crate::link::LinkSummary;
use crate::plan::{ClassId, DEFAULT_MINOR, HTB_MAJOR};
use std::collections::{BTreeMap, BTreeSet};
use tollway_core::IfName;

/// Kernel state the diff needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub links: Vec<LinkSummary>,
    pub qdiscs: Vec<QdiscObs>,
    /// HTB classes of our IFBs, by ifindex.
    pub classes: BTreeMap<u32, Vec<ClassObs>>,
    /// Egress filters of every device with a clsact qdisc, by ifindex.
    pub filters: BTreeMap<u32, Vec<FilterObs>>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&LinkSummary> {
        self.links.iter().find(|l| l.name == name)
    }

    fn has_clsact(&self, ifindex: u32) -> bool {
        self.qdiscs.iter().any(|q| q.ifindex == ifindex && q.kind == "clsact" && q.handle == CLSACT_HANDLE)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TcDiff {
    /// `tc -batch` lines.
    pub lines: Vec<String>,
    /// Member tunnels that do not exist (yet): they get their redirect on a later apply.
    pub missing_tunnels: Vec<IfName>,
}

fn leaf_handle(id: ClassId) -> String {
    format!("{:x}:", id.minor)
}

fn leaf_matches(want: Leaf, q: &QdiscObs) -> bool {
    match want {
        Leaf::FqCodel => q.kind == "fq_codel",
        Leaf::Pfifo(n) => q.kind == "pfifo" && q.fifo_limit == Some(n),
    }
}

fn leaf_line(ifb: &str, id: ClassId, leaf: Leaf) -> String {
    let kind = match leaf {
        Leaf::FqCodel => "fq_codel".to_string(),
        Leaf::Pfifo(n) => format!("pfifo limit {n}"),
    };
    format!("qdisc replace dev {ifb} parent {id} handle {} {kind}", leaf_handle(id))
}

fn class_matches(want: &ClassSpec, got: &ClassObs) -> bool {
    let parent = want.parent.map_or(TC_H_ROOT, ClassId::raw);
    // HTB ignores (and does not update) the quantum and priority of an inner class.
    let inner = want.leaf.is_none();
    got.parent == parent
        && got.rate == want.rate
        && got.ceil == want.ceil
        && (inner || (got.prio == want.prio && got.quantum == want.quantum))
}

/// The filter every member tunnel must have: one u32 entry set with a single mirred redirect.
fn redirect_ok(filters: &[FilterObs], ifb_index: u32) -> bool {
    let mirred: Vec<_> = filters.iter().flat_map(|f| f.mirred.iter().copied()).collect();
    mirred == [(true, ifb_index)] && filters.iter().all(|f| f.kind == "u32" && f.pref == 1)
}

fn redirect_line(tunnel: &str, ifb: &str) -> String {
    format!(
        "filter add dev {tunnel} egress protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev {ifb}"
    )
}

/// `our_ifbs`: indexes of every IFB of ours, including ones about to be deleted;
/// `previous_members`: tunnels of the last applied plan (their redirect may point to an IFB
/// someone deleted).
pub(crate) fn diff(
    groups: &[GroupSpec],
    obs: &Observed,
    our_ifbs: &BTreeSet<u32>,
    previous_members: &BTreeSet<IfName>,
) -> TcDiff {
    let mut d = TcDiff::default();
    let mut deletions = Vec::new();
    let mut members = BTreeSet::new();

    for g in groups {
        let ifb = g.ifb.as_str();
        let Some(link) = obs.link(ifb) else {
            // Created before the diff; absent only if someone deleted it meanwhile. The next
            // apply recreates it.
            continue;
        };
        let root = obs.qdiscs.iter().find(|q| q.ifindex == link.index && q.parent == TC_H_ROOT);
        let root_ok = root.is_some_and(|q| {
            q.kind == "htb" && q.handle == (HTB_MAJOR as u32) << 16 && q.htb_default == Some(DEFAULT_MINOR as u32)
        });
        let empty = Vec::new();
        let observed_classes = if root_ok {
            obs.classes.get(&link.index).unwrap_or(&empty)
        } else {
            d.lines.push(format!("qdisc replace dev {ifb} root handle 1: htb default {DEFAULT_MINOR:x} r2q {}", g.r2q));
            &empty
        };
        let leaves: Vec<&QdiscObs> = if root_ok {
            obs.qdiscs.iter().filter(|q| q.ifindex == link.index && q.parent != TC_H_ROOT).collect()
        } else {
            Vec::new()
        };
        for c in &g.classes {
            match observed_classes.iter().find(|o| o.id == c.id.raw()) {
                None => d.lines.push(format!("class add {}", c.tc_args(ifb))),
                Some(o) if class_matches(c, o) => {}
                Some(o) if o.parent != c.parent.map_or(TC_H_ROOT, ClassId::raw) => {
                    d.lines.push(format!("class del dev {ifb} classid {}", c.id));
                    d.lines.push(format!("class add {}", c.tc_args(ifb)));
                }
                Some(_) => d.lines.push(format!("class change {}", c.tc_args(ifb))),
            }
            if let Some(leaf) = c.leaf {
                if !leaves.iter().any(|q| q.parent == c.id.raw() && leaf_matches(leaf, q)) {
                    d.lines.push(leaf_line(ifb, c.id, leaf));
                }
            }
        }
        for o in observed_classes {
            if !g.classes.iter().any(|c| c.id.raw() == o.id) {
                deletions.push(format!(
                    "class del dev {ifb} classid {}",
                    ClassId { major: (o.id >> 16) as u16, minor: o.id as u16 }
                ));
            }
        }
        for t in &g.members {
            members.insert(t.clone());
            let Some(tl) = obs.link(t.as_str()) else {
                d.missing_tunnels.push(t.clone());
                continue;
            };
            if !obs.has_clsact(tl.index) {
                d.lines.push(format!("qdisc add dev {t} clsact"));
                d.lines.push(redirect_line(t.as_str(), ifb));
            } else if !redirect_ok(obs.filters.get(&tl.index).map_or(&[][..], Vec::as_slice), link.index) {
                d.lines.push(format!("filter del dev {t} egress"));
                d.lines.push(redirect_line(t.as_str(), ifb));
            }
        }
    }

    // Redirects into our IFBs from devices that are no longer members.
    for (&index, filters) in &obs.filters {
        let Some(l) = obs.links.iter().find(|l| l.index == index) else { continue };
        let Ok(name) = IfName::new(l.name.as_str()) else { continue };
        if members.contains(&name) || !obs.has_clsact(index) {
            continue;
        }
        let into_ours = filters.iter().flat_map(|f| &f.mirred).any(|(_, target)| our_ifbs.contains(target));
        if into_ours || previous_members.contains(&name) {
            d.lines.push(format!("qdisc del dev {name} clsact"));
        }
    }
    d.lines.extend(deletions);
    d
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
