//! What routing needs from the core: which neighbors' tunnels may carry routes, what each link
//! costs (from its price), and what each neighbor's measured quality adds to the routes of the
//! tested destinations through it; a `Router` in the daemon applies them (babeld, static routes
//! or a controller's file).

use crate::ids::{IfName, NodeId};
use crate::market::Price;
use std::net::Ipv6Addr;

/// What a link to a neighbor costs routing, in Babel's units: [`LinkCost::GOOD`] is a good
/// hop, higher is worse, [`LinkCost::UNUSABLE`] carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkCost(pub u16);

impl LinkCost {
    pub const GOOD: LinkCost = LinkCost(256);
    /// The most a usable link costs (four good hops).
    pub const WORST_USABLE: LinkCost = LinkCost(1024);
    pub const UNUSABLE: LinkCost = LinkCost(u16::MAX);

    pub fn get(self) -> u16 {
        self.0
    }

    /// A link's cost from what we pay the neighbor per MB, relative to the most we pay anyone:
    /// free and cheap neighbors cost one good hop, one at our max price four. Stepped in 64s,
    /// so that small price changes do not disturb routing (each cost change briefly retracts
    /// the routes through the link).
    pub fn from_price(our_price: Price, max_price: Price) -> LinkCost {
        if our_price.0 == 0 || max_price.0 == 0 {
            return LinkCost::GOOD;
        }
        let span = (LinkCost::WORST_USABLE.0 - LinkCost::GOOD.0) as u128;
        let extra = span * our_price.0.min(max_price.0) as u128 / max_price.0 as u128;
        let stepped = (extra / 64 * 64) as u16;
        LinkCost(LinkCost::GOOD.0 + stepped)
    }
}

impl std::fmt::Display for LinkCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A neighbor routing may send through: its tunnel, its address on it, and the link's cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedNeighbor {
    pub neighbor: NodeId,
    pub ifname: IfName,
    /// The neighbor's link-local address on the tunnel: the next hop of routes through it.
    pub peer_link_local: Ipv6Addr,
    pub cost: LinkCost,
    /// Added to the metric of tested destinations learned through it: our ranking of what it
    /// delivers to each (`quality::penalty`).
    pub penalty: Penalty,
    /// Its slot in the neighbor table (names the babeld filters that apply the penalty).
    pub slot: usize,
}

/// What routing adds to the metric of the tested destinations learned through one neighbor,
/// each one of `quality::PENALTY_LEVELS`. Destinations are numbered by the daemon (0: the
/// internet's servers, reached by the default routes; then one per pinned server inside the
/// mesh, reached by its /128): a destination some neighbor has been tested against on its own
/// is ranked on those tests; every other one on all tests together (`global`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Penalty {
    /// For destinations ranked on all tests.
    pub global: u16,
    /// `(destination, penalty)` for the destinations ranked on their own tests whose penalty
    /// differs from `global`, in order of destination.
    pub destinations: Vec<(u8, u16)>,
}

impl Penalty {
    /// The same penalty for every destination.
    pub fn uniform(penalty: u16) -> Penalty {
        Penalty { global: penalty, destinations: Vec::new() }
    }

    /// The penalty of routes to `destination`.
    pub fn of(&self, destination: u8) -> u16 {
        self.destinations.iter().find(|(d, _)| *d == destination).map_or(self.global, |(_, p)| *p)
    }
}

impl std::fmt::Display for Penalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.global)?;
        for (d, p) in &self.destinations {
            write!(f, " (destination {d}: {p})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_follows_the_price_in_steps_from_one_to_four_good_hops() {
        let max = Price(5000);
        assert_eq!(LinkCost::from_price(Price(0), max), LinkCost::GOOD);
        assert_eq!(LinkCost::from_price(Price(1000), Price(0)), LinkCost::GOOD, "no max: free mesh");
        assert_eq!(LinkCost::from_price(max, max), LinkCost::WORST_USABLE);
        assert_eq!(LinkCost::from_price(Price(50_000), max), LinkCost::WORST_USABLE, "capped");
        let mid = LinkCost::from_price(Price(2500), max);
        assert_eq!(mid, LinkCost(256 + 384));
        // Small changes do not move it.
        assert_eq!(LinkCost::from_price(Price(2510), max), mid);
        let mut last = LinkCost::GOOD;
        for p in (0..=5000).step_by(50) {
            let c = LinkCost::from_price(Price(p), max);
            assert!(c >= last && c.0.is_multiple_of(64), "{p}: {c:?}");
            last = c;
        }
    }
}
