//! The operator's market settings, validated by the daemon's config loader, changeable at run time.

use super::money::{Amount, Price};
use crate::ids::IfName;
use crate::time::Millis;
use std::collections::BTreeMap;

/// How we bid for a neighbor's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BidPolicy {
    /// Pay exactly what the neighbor asks (up to our max price).
    PayAsk,
    /// Bid this much (but at least the ask, and at most our max price): a higher bid buys a
    /// bigger share of a busy neighbor's capacity.
    Fixed(Price),
}

/// What happens to a neighbor over its credit limit (or without an agreement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnforcementPolicy {
    /// Both directions limited to the floor rate.
    Throttle,
    /// Only control and payment messages pass.
    CutOff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketConfig {
    /// Our price per MB for carrying a neighbor's traffic.
    pub ask: Price,
    /// The most we pay any neighbor per MB.
    pub max_price: Price,
    pub bid_policy: BidPolicy,
    /// We pay once we owe at least this.
    pub pay_threshold: Amount,
    /// A neighbor owing more than this is restricted.
    pub credit_limit: Amount,
    /// Rate of a restricted neighbor, and the least rate of any neighbor, in bit/s.
    pub floor_bps: u64,
    pub enforcement: EnforcementPolicy,
    /// Capacity this node sells, in bit/s, shared by all neighbors...
    pub capacity_bps: u64,
    /// ...except those reached through a physical interface listed here, which share that
    /// interface's capacity.
    pub interface_capacity_bps: BTreeMap<IfName, u64>,
    /// How long a neighbor may leave our ask unanswered before it counts as declined.
    pub negotiation_grace: Millis,
    /// Bytes a neighbor's statements may claim beyond what we sent, in all: beyond it the
    /// excess is disputed (never priced) and a neighbor whose claims keep growing beyond what
    /// we send is restricted and not paid.
    pub overclaim_slack_bytes: u64,
    /// Outgoing payments paused by the operator.
    pub payments_paused: bool,
    /// Cut off a neighbor that sends more unsolicited traffic than this.
    pub junk: super::junk::JunkLimit,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            ask: Price(0),
            max_price: Price(0),
            bid_policy: BidPolicy::PayAsk,
            pay_threshold: Amount(0),
            credit_limit: Amount(0),
            floor_bps: 64_000,
            enforcement: EnforcementPolicy::Throttle,
            capacity_bps: 1_000_000_000,
            interface_capacity_bps: BTreeMap::new(),
            negotiation_grace: Millis(5_000),
            overclaim_slack_bytes: super::neighbor::DEFAULT_OVERCLAIM_SLACK,
            payments_paused: false,
            junk: Default::default(),
        }
    }
}

impl MarketConfig {
    /// Our bid for a neighbor asking `ask`, or why we decline it.
    pub fn decide_bid(&self, ask: Price) -> Result<Price, String> {
        if ask > self.max_price {
            return Err(format!("ask {} per MB is above our max price {} per MB", ask.0, self.max_price.0));
        }
        Ok(match self.bid_policy {
            BidPolicy::PayAsk => ask,
            BidPolicy::Fixed(bid) => bid.max(ask).min(self.max_price),
        })
    }

    /// The capacity group (and its capacity) of a neighbor reached through `underlay`.
    pub fn group_of(&self, underlay: &IfName) -> (u16, u64) {
        match self.interface_capacity_bps.iter().position(|(i, _)| i == underlay) {
            Some(pos) => (pos as u16 + 1, self.interface_capacity_bps[underlay]),
            None => (0, self.capacity_bps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bids_follow_the_policy_within_the_max_price() {
        let mut c = MarketConfig { max_price: Price(10), ..Default::default() };
        assert_eq!(c.decide_bid(Price(4)), Ok(Price(4)));
        assert!(c.decide_bid(Price(11)).unwrap_err().contains("above our max price"));
        c.bid_policy = BidPolicy::Fixed(Price(7));
        assert_eq!(c.decide_bid(Price(4)), Ok(Price(7)), "fixed bid above the ask");
        assert_eq!(c.decide_bid(Price(9)), Ok(Price(9)), "never below the ask");
        c.bid_policy = BidPolicy::Fixed(Price(50));
        assert_eq!(c.decide_bid(Price(4)), Ok(Price(10)), "never above the max price");
    }

    #[test]
    fn neighbors_share_their_interface_capacity_when_one_is_set() {
        let mut c = MarketConfig { capacity_bps: 100, ..Default::default() };
        let eth1 = IfName::new("eth1").unwrap();
        assert_eq!(c.group_of(&eth1), (0, 100));
        c.interface_capacity_bps.insert(eth1.clone(), 20);
        assert_eq!(c.group_of(&eth1), (1, 20));
        assert_eq!(c.group_of(&IfName::new("eth0").unwrap()), (0, 100));
    }
}
