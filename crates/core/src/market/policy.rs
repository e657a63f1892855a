//! From enforcement decisions and bids to the traffic policy the kernel applies: per capacity
//! group, each neighbor's guaranteed egress rate in proportion to its bid (work-conserving: every
//! ceiling is the whole capacity), restricted neighbors pinned to the floor rate.

use super::neighbor::Enforcement;
use crate::ids::{IfName, NodeId};

/// What a neighbor may send us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Open,
    /// Drop what exceeds this many bit/s (control traffic exempt).
    Police(u64),
    /// Only control-session traffic passes (both directions).
    ControlOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedNeighbor {
    pub neighbor: NodeId,
    pub ifname: IfName,
    /// Guaranteed egress rate and ceiling, bit/s.
    pub rate_bps: u64,
    pub ceil_bps: u64,
    pub ingress: Ingress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeGroup {
    /// 0: the node-wide capacity; i > 0: the i-th physical interface with its own capacity.
    pub id: u16,
    pub capacity_bps: u64,
    pub members: Vec<ShapedNeighbor>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    pub groups: Vec<ShapeGroup>,
}

/// One neighbor as the share computation sees it.
#[derive(Debug, Clone)]
pub struct ShareInput {
    pub neighbor: NodeId,
    pub ifname: IfName,
    pub group: (u16, u64),
    /// Its bid for our service, per MB: its weight.
    pub weight: u64,
    pub enforcement: Enforcement,
}

pub fn plan(floor_bps: u64, inputs: &[ShareInput]) -> TrafficPolicy {
    let mut groups: Vec<ShapeGroup> = Vec::new();
    for i in inputs {
        if !groups.iter().any(|g| g.id == i.group.0) {
            groups.push(ShapeGroup { id: i.group.0, capacity_bps: i.group.1, members: Vec::new() });
        }
    }
    groups.sort_by_key(|g| g.id);
    for g in &mut groups {
        let members: Vec<&ShareInput> = inputs.iter().filter(|i| i.group.0 == g.id).collect();
        let floor = floor_bps.min(g.capacity_bps);
        let paying: Vec<&&ShareInput> = members.iter().filter(|i| i.enforcement == Enforcement::None).collect();
        let total_weight: u128 = paying.iter().map(|i| i.weight as u128).sum();
        for i in &members {
            let (rate, ceil, ingress) = match i.enforcement {
                Enforcement::None => {
                    let share = (g.capacity_bps as u128 * i.weight as u128)
                        .checked_div(total_weight)
                        .unwrap_or(g.capacity_bps as u128 / paying.len().max(1) as u128);
                    ((share as u64).clamp(floor, g.capacity_bps), g.capacity_bps, Ingress::Open)
                }
                Enforcement::Throttled => (floor, floor, Ingress::Police(floor_bps)),
                Enforcement::CutOff => (floor, floor, Ingress::ControlOnly),
            };
            g.members.push(ShapedNeighbor {
                neighbor: i.neighbor,
                ifname: i.ifname.clone(),
                rate_bps: rate,
                ceil_bps: ceil,
                ingress,
            });
        }
    }
    TrafficPolicy { groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: u8, weight: u64, e: Enforcement) -> ShareInput {
        ShareInput {
            neighbor: NodeId([n; 32]),
            ifname: IfName::new(format!("tw{n}")).unwrap(),
            group: (0, 20_000_000),
            weight,
            enforcement: e,
        }
    }

    #[test]
    fn shares_are_proportional_to_bids_and_work_conserving() {
        let p = plan(64_000, &[input(1, 3000, Enforcement::None), input(2, 1000, Enforcement::None)]);
        let m = &p.groups[0].members;
        assert_eq!((m[0].rate_bps, m[1].rate_bps), (15_000_000, 5_000_000));
        assert!(m.iter().all(|x| x.ceil_bps == 20_000_000 && x.ingress == Ingress::Open));
    }

    #[test]
    fn restricted_neighbors_get_the_floor_and_leave_their_share_to_the_others() {
        let p = plan(
            64_000,
            &[
                input(1, 3000, Enforcement::None),
                input(2, 1000, Enforcement::Throttled),
                input(3, 1000, Enforcement::CutOff),
            ],
        );
        let m = &p.groups[0].members;
        assert_eq!((m[0].rate_bps, m[0].ceil_bps), (20_000_000, 20_000_000));
        assert_eq!((m[1].rate_bps, m[1].ceil_bps, m[1].ingress), (64_000, 64_000, Ingress::Police(64_000)));
        assert_eq!((m[2].rate_bps, m[2].ingress), (64_000, Ingress::ControlOnly));
    }

    #[test]
    fn free_neighbors_share_equally_and_nobody_falls_below_the_floor() {
        let p = plan(64_000, &[input(1, 0, Enforcement::None), input(2, 0, Enforcement::None)]);
        assert!(p.groups[0].members.iter().all(|m| m.rate_bps == 10_000_000));
        let p = plan(64_000, &[input(1, 1_000_000_000, Enforcement::None), input(2, 1, Enforcement::None)]);
        assert_eq!(p.groups[0].members[1].rate_bps, 64_000);
    }

    #[test]
    fn interfaces_with_their_own_capacity_form_their_own_group() {
        let mut b = input(2, 1, Enforcement::None);
        b.group = (1, 5_000_000);
        let p = plan(64_000, &[input(1, 1, Enforcement::None), b]);
        assert_eq!(p.groups.len(), 2);
        assert_eq!(p.groups[1].members[0].rate_bps, 5_000_000);
        assert_eq!(p.groups[0].members[0].rate_bps, 20_000_000);
    }
}
