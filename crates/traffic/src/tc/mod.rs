//! [`TcShaper`]: the [`Shaper`] on HTB, IFB and clsact.
//!
//! Writes go through `tc -batch -` (one process per apply; tc has no typed netlink API for
//! building HTB classes here); reads go through rtnetlink dumps (see [`observe`]); IFB devices
//! are created and deleted through rtnetlink.
//!
//! How packets flow (measured on kernel 6.18): a packet routed into a member tunnel gets its
//! `skb->priority` from the firewall in postrouting; the tunnel's clsact egress filter
//! redirects it to the group's IFB; the IFB's HTB takes it into the class named by its
//! priority; when HTB releases it, the IFB hands it back to the tunnel's transmit path with
//! classification skipped, so the tunnel's clsact filter does not run again (no loop: the
//! mirred action counts each packet once, though the clsact qdisc's own byte counter sees it
//! twice), and the tunnel's root qdisc (pfifo_fast for a TUN device) sends it. The priority
//! survives the round trip: a root HTB on the tunnel itself would classify the returning
//! packet by it too. An nftables netdev egress hook on the tunnel sees each packet once.

mod diff;
mod observe;
mod spec;

use crate::command::run;
use crate::link::{all_links, create_ifb, delete_link, set_link_up, LinkSummary};
use crate::plan::{BitRate, ClassId, GroupId, TrafficPlan};
use crate::shaper::*;
use diff::Observed;
use spec::{ifb_group, LeafKind};
use std::collections::BTreeSet;
use std::io;
use tollway_core::IfName;
use tollway_kernel::nl::NlSocket;

/// The tc implementation of [`Shaper`].
#[derive(Debug, Clone)]
pub struct TcShaper {
    prefix: String,
    tc: String,
    /// Probed on the first apply that needs it.
    leaf: Option<LeafKind>,
    /// Tunnels of the last applied plan, to clean up after them even if their IFB vanished.
    previous_members: BTreeSet<IfName>,
}

/// The transmit queue length of our IFBs: the length of HTB's direct queue (unused: every
/// packet lands in a class).
const IFB_TXQUEUELEN: u32 = 1000;

fn nl_err<'a>(op: &'static str, ifname: &'a str) -> impl FnOnce(io::Error) -> ShaperApplyError + 'a {
    move |source| ShaperApplyError::Netlink { op, ifname: ifname.to_string(), source }
}

impl TcShaper {
    /// A shaper naming its IFB devices `<ifb_prefix><group id>`. Give each node (each daemon
    /// in a namespace) its own prefix: everything with it is considered ours.
    pub fn new(ifb_prefix: &str) -> Result<TcShaper, IfbPrefixError> {
        let ok = !ifb_prefix.is_empty()
            && ifb_prefix.len() <= IfName::MAX_LEN - 5
            && ifb_prefix.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !ok {
            return Err(IfbPrefixError(ifb_prefix.to_string()));
        }
        Ok(TcShaper { prefix: ifb_prefix.to_string(), tc: "tc".into(), leaf: None, previous_members: BTreeSet::new() })
    }

    /// Uses the given `tc` binary.
    pub fn with_tc_program(mut self, tc: impl Into<String>) -> TcShaper {
        self.tc = tc.into();
        self
    }

    /// The IFB device of group `id`.
    pub fn ifb_name(&self, id: GroupId) -> IfName {
        spec::ifb_name(&self.prefix, id.0)
    }

    /// Whether leaves use fq_codel (`None` until the first apply with a group probed it).
    pub fn uses_fq_codel(&self) -> Option<bool> {
        self.leaf.map(|l| l == LeafKind::FqCodel)
    }

    fn ours<'a>(&self, links: &'a [LinkSummary]) -> impl Iterator<Item = &'a LinkSummary> + 'a {
        let prefix = self.prefix.clone();
        links.iter().filter(move |l| l.kind.as_deref() == Some("ifb") && ifb_group(&prefix, &l.name).is_some())
    }

    /// Whether the kernel has fq_codel: try it as the root qdisc of a throw-away IFB.
    fn probe_leaf(&mut self, sock: &mut NlSocket) -> Result<LeafKind, ShaperApplyError> {
        if let Some(l) = self.leaf {
            return Ok(l);
        }
        let name = format!("{}p", self.prefix);
        if let Some(old) = crate::link::link_by_name(sock, &name).map_err(nl_err("looking up", &name))? {
            delete_link(sock, old.index).map_err(nl_err("deleting", &name))?;
        }
        create_ifb(sock, &name, IFB_TXQUEUELEN).map_err(nl_err("creating probe IFB", &name))?;
        let has = run(&self.tc, &["qdisc", "add", "dev", &name, "root", "fq_codel"], None).is_ok();
        if let Some(l) = crate::link::link_by_name(sock, &name).map_err(nl_err("looking up", &name))? {
            delete_link(sock, l.index).map_err(nl_err("deleting probe IFB", &name))?;
        }
        let kind = if has { LeafKind::FqCodel } else { LeafKind::Pfifo };
        tracing::info!(fq_codel = has, "probed leaf qdisc");
        self.leaf = Some(kind);
        Ok(kind)
    }

    /// Read what the diff needs. Filters are read for every device with a clsact qdisc.
    fn observe(&self, sock: &mut NlSocket, ifbs: &BTreeSet<u32>) -> io::Result<Observed> {
        let links = all_links(sock)?;
        let qdiscs = observe::qdiscs(sock)?;
        let mut o = Observed { links, qdiscs, ..Default::default() };
        for &i in ifbs {
            o.classes.insert(i, observe::htb_classes(sock, i)?);
        }
        let with_clsact: BTreeSet<u32> =
            o.qdiscs.iter().filter(|q| q.kind == "clsact" && !ifbs.contains(&q.ifindex)).map(|q| q.ifindex).collect();
        for i in with_clsact {
            // A device may vanish between the two dumps: then it has no filters.
            match observe::egress_filters(sock, i) {
                Ok(f) => {
                    o.filters.insert(i, f);
                }
                Err(e)
                    if tollway_kernel::nl::is_errno(&e, libc::ENODEV)
                        || tollway_kernel::nl::is_errno(&e, libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(o)
    }

    /// The kernel's view of our IFBs and their classes.
    pub fn inspect(&self) -> Result<Vec<IfbState>, InspectError> {
        let err = |op| move |source| InspectError { op, source };
        let mut sock = NlSocket::route().map_err(err("opening netlink"))?;
        let links = all_links(&mut sock).map_err(err("listing links"))?;
        let mut out = Vec::new();
        for l in self.ours(&links) {
            let classes = observe::htb_classes(&mut sock, l.index).map_err(err("listing classes"))?;
            out.push(IfbState {
                ifb: IfName::new(l.name.as_str()).expect("kernel interface names are valid"),
                group: GroupId(ifb_group(&self.prefix, &l.name).expect("filtered by ours()")),
                ifindex: l.index,
                up: l.up,
                classes: classes
                    .iter()
                    .map(|c| ClassState {
                        id: ClassId { major: (c.id >> 16) as u16, minor: c.id as u16 },
                        rate: BitRate(c.rate * 8),
                        ceil: BitRate(c.ceil * 8),
                        prio: c.prio,
                        quantum: c.quantum,
                        sent_bytes: c.sent_bytes,
                        sent_packets: c.sent_packets,
                        drops: c.drops,
                    })
                    .collect(),
            });
        }
        Ok(out)
    }
}

impl Shaper for TcShaper {
    fn apply(&mut self, plan: &TrafficPlan) -> Result<ShaperReport, ShaperApplyError> {
        plan.validate()?;
        let mut report = ShaperReport::default();
        let mut sock = NlSocket::route().map_err(nl_err("opening netlink", ""))?;
        let leaf = if plan.groups.is_empty() { LeafKind::Pfifo } else { self.probe_leaf(&mut sock)? };
        let specs: Vec<_> = plan.groups.iter().map(|g| spec::group_spec(plan, g, &self.prefix, leaf)).collect();

        // IFBs first: the diff needs their indexes.
        let links = all_links(&mut sock).map_err(nl_err("listing links", ""))?;
        for s in &specs {
            let name = s.ifb.as_str();
            match links.iter().find(|l| l.name == name) {
                Some(l) if l.kind.as_deref() == Some("ifb") => {
                    if !l.up {
                        set_link_up(&mut sock, l.index).map_err(nl_err("bringing up", name))?;
                    }
                }
                other => {
                    if let Some(l) = other {
                        // Our name, not an IFB: not ours to keep.
                        delete_link(&mut sock, l.index).map_err(nl_err("deleting", name))?;
                    }
                    create_ifb(&mut sock, name, IFB_TXQUEUELEN).map_err(nl_err("creating IFB", name))?;
                    let l = crate::link::link_by_name(&mut sock, name)
                        .map_err(nl_err("looking up", name))?
                        .ok_or_else(|| nl_err("looking up", name)(io::ErrorKind::NotFound.into()))?;
                    set_link_up(&mut sock, l.index).map_err(nl_err("bringing up", name))?;
                    report.ifbs_created.push(s.ifb.clone());
                }
            }
        }
        let links = all_links(&mut sock).map_err(nl_err("listing links", ""))?;
        let our_ifbs: BTreeSet<u32> = self.ours(&links).map(|l| l.index).collect();
        let observed = self.observe(&mut sock, &our_ifbs).map_err(nl_err("reading tc state", ""))?;
        let d = diff::diff(&specs, &observed, &our_ifbs, &self.previous_members);
        report.missing_tunnels = d.missing_tunnels;
        if !d.lines.is_empty() {
            let input = d.lines.join("\n") + "\n";
            tracing::debug!(commands = d.lines.len(), "tc batch");
            run(&self.tc, &["-batch", "-"], Some(input.as_bytes())).map_err(ShaperApplyError::Tc)?;
            report.tc_commands = d.lines;
        }
        // IFBs of groups no longer in the plan: nothing redirects into them any more.
        let wanted: BTreeSet<&str> = specs.iter().map(|s| s.ifb.as_str()).collect();
        for l in self.ours(&links) {
            if !wanted.contains(l.name.as_str()) {
                delete_link(&mut sock, l.index).map_err(nl_err("deleting IFB", &l.name))?;
                report.ifbs_deleted.push(IfName::new(l.name.as_str()).expect("kernel names are valid"));
            }
        }
        self.previous_members = plan.neighbors().map(|(_, n)| n.tunnel.clone()).collect();
        Ok(report)
    }

    fn remove_all(&mut self) -> Result<(), ShaperRemoveError> {
        let mut failures = Vec::new();
        let fail = |op, ifname: &str| {
            let ifname = ifname.to_string();
            move |source| RemoveFailure::Netlink { op, ifname, source }
        };
        let mut sock = match NlSocket::route() {
            Ok(s) => s,
            Err(e) => return Err(ShaperRemoveError { failures: vec![fail("opening netlink", "")(e)] }),
        };
        let links = match all_links(&mut sock) {
            Ok(l) => l,
            Err(e) => return Err(ShaperRemoveError { failures: vec![fail("listing links", "")(e)] }),
        };
        let our_ifbs: BTreeSet<u32> = self.ours(&links).map(|l| l.index).collect();
        match self.observe(&mut sock, &our_ifbs) {
            Ok(observed) => {
                // Diffing against no groups leaves exactly the removals of our redirects.
                let d = diff::diff(&[], &observed, &our_ifbs, &self.previous_members);
                let clsacts: Vec<String> = d.lines.into_iter().filter(|l| l.ends_with(" clsact")).collect();
                if !clsacts.is_empty() {
                    let input = clsacts.join("\n") + "\n";
                    if let Err(e) = run(&self.tc, &["-force", "-batch", "-"], Some(input.as_bytes())) {
                        failures.push(RemoveFailure::Tc(e));
                    }
                }
            }
            Err(e) => failures.push(fail("reading tc state", "")(e)),
        }
        let probe = format!("{}p", self.prefix);
        for l in self.ours(&links).chain(links.iter().filter(|l| l.name == probe)) {
            if let Err(e) = delete_link(&mut sock, l.index) {
                failures.push(fail("deleting IFB", &l.name)(e));
            }
        }
        self.previous_members.clear();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ShaperRemoveError { failures })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_leave_room_for_the_group_id() {
        assert!(TcShaper::new("tw").is_ok());
        assert!(TcShaper::new("abcdefghij").is_ok());
        assert_eq!(TcShaper::new("abcdefghijk").unwrap_err(), IfbPrefixError("abcdefghijk".into()));
        assert!(TcShaper::new("").is_err());
        assert!(TcShaper::new("a b").is_err());
        let s = TcShaper::new("twi").unwrap();
        assert_eq!(s.ifb_name(GroupId(65535)).as_str(), "twi65535");
        assert_eq!(s.uses_fq_codel(), None);
    }
}
