//! The tc structure a plan asks for, per shaper group:
//!
//! ```text
//! IFB <prefix><group id>, up
//!   qdisc htb 1: root default 3 r2q R
//!     class 1:1  rate capacity ceil capacity                       (parent of all)
//!       class 1:2  rate control   ceil capacity prio 0            control sessions
//!       class 1:3  rate 1kbit     ceil capacity prio 7            unclassified
//!       class 1:N  rate r_i       ceil c_i      prio 1            one per neighbor
//!     each leaf class: qdisc fq_codel if the kernel has it, else pfifo of ~100 ms (16..1000 packets)
//! each member tunnel:
//!   qdisc clsact; egress filter u32 match-all, action mirred egress redirect dev <IFB>
//! ```
//!
//! The firewall writes each packet's class into `skb->priority`; HTB takes it from there.

use crate::plan::{BitRate, ClassId, ShaperGroup, TrafficPlan, CONTROL_MINOR, DEFAULT_MINOR, PARENT_MINOR};
use tollway_core::IfName;

/// HTB's upper bound for a sensible quantum; larger ones draw a warning and hurt fairness.
const MAX_QUANTUM: u64 = 200_000;
/// At least one full-size packet per round.
const MIN_QUANTUM: u64 = 1_500;
/// The rate of the class of unclassified traffic.
const DEFAULT_CLASS_RATE: BitRate = BitRate::MIN;

/// The leaf queue under each HTB class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    FqCodel,
    /// A packet FIFO of this many packets.
    Pfifo(u32),
}

/// Which leaf queue the kernel offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafKind {
    FqCodel,
    Pfifo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassSpec {
    pub id: ClassId,
    /// `None`: directly under the qdisc (the parent class 1:1).
    pub parent: Option<ClassId>,
    /// Bytes per second.
    pub rate: u64,
    pub ceil: u64,
    pub prio: u32,
    pub quantum: u32,
    /// `None` for the inner class 1:1.
    pub leaf: Option<Leaf>,
}

impl ClassSpec {
    /// `class add` / `class change` arguments after the verb.
    pub fn tc_args(&self, ifb: &str) -> String {
        let parent = self.parent.map_or_else(|| "1:".to_string(), |p| p.to_string());
        format!(
            "dev {ifb} parent {parent} classid {} htb rate {}bit ceil {}bit prio {} quantum {}",
            self.id,
            self.rate * 8,
            self.ceil * 8,
            self.prio,
            self.quantum
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSpec {
    pub ifb: IfName,
    pub r2q: u32,
    /// Parents before children.
    pub classes: Vec<ClassSpec>,
    pub members: Vec<IfName>,
}

/// The IFB device of group `id`.
pub(crate) fn ifb_name(prefix: &str, id: u16) -> IfName {
    IfName::new(format!("{prefix}{id}")).expect("prefix validated to leave room for 5 digits")
}

/// The group id an interface name belongs to, if it is one of our IFBs.
pub(crate) fn ifb_group(prefix: &str, name: &str) -> Option<u16> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// `r2q` such that a class at the full capacity gets the largest sensible quantum.
fn r2q(capacity_bytes: u64) -> u64 {
    capacity_bytes.div_ceil(MAX_QUANTUM).max(1)
}

/// Excess capacity is shared between borrowing classes in proportion to their quanta, so the
/// quantum follows the rate (within HTB's sensible range).
fn quantum(rate_bytes: u64, r2q: u64) -> u32 {
    (rate_bytes / r2q).clamp(MIN_QUANTUM, MAX_QUANTUM) as u32
}

/// A FIFO holding ~100 ms at `ceil_bytes`, in 1500-byte packets, between 16 and 1000 packets:
/// at least a TCP initial window (10 packets) and some, or slow classes drop every new flow's
/// first burst.
fn fifo_packets(ceil_bytes: u64) -> u32 {
    (ceil_bytes / 15_000).clamp(16, 1000) as u32
}

pub(crate) fn group_spec(plan: &TrafficPlan, g: &ShaperGroup, prefix: &str, leaf: LeafKind) -> GroupSpec {
    let cap = g.capacity.bytes_per_sec();
    let r2q = r2q(cap);
    let leaf_for = |ceil| match leaf {
        LeafKind::FqCodel => Leaf::FqCodel,
        LeafKind::Pfifo => Leaf::Pfifo(fifo_packets(ceil)),
    };
    let parent = Some(ClassId::htb(PARENT_MINOR));
    let class = |id, rate: u64, ceil: u64, prio| ClassSpec {
        id,
        parent,
        rate,
        ceil,
        prio,
        quantum: quantum(rate, r2q),
        leaf: Some(leaf_for(ceil)),
    };
    let mut classes = vec![
        ClassSpec {
            id: ClassId::htb(PARENT_MINOR),
            parent: None,
            rate: cap,
            ceil: cap,
            prio: 0,
            quantum: quantum(cap, r2q),
            leaf: None,
        },
        class(ClassId::htb(CONTROL_MINOR), plan.control.rate.bytes_per_sec(), cap, 0),
        class(ClassId::htb(DEFAULT_MINOR), DEFAULT_CLASS_RATE.bytes_per_sec(), cap, 7),
    ];
    let ids = g.classes();
    for n in &g.neighbors {
        classes.push(class(ids[&n.key], n.rate.bytes_per_sec(), n.ceil.bytes_per_sec(), 1));
    }
    GroupSpec {
        ifb: ifb_name(prefix, g.id.0),
        r2q: r2q as u32,
        classes,
        members: g.neighbors.iter().map(|n| n.tunnel.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Admission, ControlTraffic, GroupId, IngressPolicy, NeighborKey, NeighborTraffic};

    fn plan() -> TrafficPlan {
        let n = |k: &str, rate, ceil| NeighborTraffic {
            key: NeighborKey::new(k).unwrap(),
            tunnel: IfName::new(format!("tw{k}")).unwrap(),
            rate: BitRate(rate),
            ceil: BitRate(ceil),
            ingress: IngressPolicy::Open,
        };
        TrafficPlan {
            control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(200) },
            groups: vec![ShaperGroup {
                id: GroupId(3),
                capacity: BitRate::mbit(20),
                neighbors: vec![n("a", 15_000_000, 20_000_000), n("b", 64_000, 64_000)],
            }],
            admission: Admission::default(),
        }
    }

    #[test]
    fn a_group_has_parent_control_default_and_neighbor_classes() {
        let p = plan();
        let s = group_spec(&p, &p.groups[0], "twi", LeafKind::Pfifo);
        assert_eq!(s.ifb.as_str(), "twi3");
        assert_eq!(s.r2q, 13);
        let minors: Vec<u16> = s.classes.iter().map(|c| c.id.minor).collect();
        assert_eq!(&minors[..3], &[1, 2, 3]);
        assert_eq!(s.classes[0].parent, None);
        assert!(s.classes[1..].iter().all(|c| c.parent == Some(ClassId::htb(1))));
        let a = &s.classes[3];
        assert_eq!((a.rate, a.ceil, a.prio), (1_875_000, 2_500_000, 1));
        assert_eq!(a.quantum, 144_230);
        assert_eq!(a.leaf, Some(Leaf::Pfifo(166)));
        let b = &s.classes[4];
        assert_eq!((b.rate, b.ceil, b.quantum), (8_000, 8_000, 1_500));
        assert_eq!(b.leaf, Some(Leaf::Pfifo(16)));
        assert_eq!(s.classes[1].prio, 0);
        assert_eq!(s.classes[2].prio, 7);
        assert_eq!(s.members.len(), 2);
        let s = group_spec(&p, &p.groups[0], "twi", LeafKind::FqCodel);
        assert!(s.classes[1..].iter().all(|c| c.leaf == Some(Leaf::FqCodel)));
    }

    #[test]
    fn class_arguments_read_like_tc() {
        let p = plan();
        let s = group_spec(&p, &p.groups[0], "twi", LeafKind::Pfifo);
        assert_eq!(
            s.classes[0].tc_args("twi3"),
            "dev twi3 parent 1: classid 1:1 htb rate 20000000bit ceil 20000000bit prio 0 quantum 192307"
        );
        assert!(s.classes[1].tc_args("twi3").starts_with("dev twi3 parent 1:1 classid 1:2 htb rate 200000bit"));
    }

    #[test]
    fn ifb_names_round_trip() {
        assert_eq!(ifb_name("twi", 12).as_str(), "twi12");
        assert_eq!(ifb_group("twi", "twi12"), Some(12));
        assert_eq!(ifb_group("twi", "twi"), None);
        assert_eq!(ifb_group("twi", "twi01"), None);
        assert_eq!(ifb_group("twi", "twip"), None);
        assert_eq!(ifb_group("twi", "twx1"), None);
        assert_eq!(ifb_group("twi", "twi70000"), None);
    }

    #[test]
    fn quanta_follow_rates_within_bounds() {
        assert_eq!(r2q(2_500_000), 13);
        assert_eq!(r2q(1), 1);
        assert_eq!(quantum(1_875_000, 13), 144_230);
        assert_eq!(quantum(10, 13), 1_500);
        assert_eq!(quantum(125_000_000, 1), 200_000);
        assert_eq!(fifo_packets(0), 16);
        assert_eq!(fifo_packets(125_000_000), 1000);
    }
}
