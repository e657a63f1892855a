//! The per-neighbor ledger and the counter baselines it is computed from.
//!
//! Each direction of a link is counted by its receiver, whose kernel sees exactly the bytes that
//! arrived (a sender's counters include packets lost on the way and, for local TCP, count GSO
//! super-packets). The receiver prices every byte both ways — what it owes the sender at its own
//! bid, what the sender owes it at the sender's bid — and sends the running totals to the sender
//! as a [`Statement`]. Both sides therefore hold the same four accruals and their balances are
//! exact opposites. A sender checks each statement against its own egress counter.

use super::money::{Accrual, Amount, Balance, Price};

/// Running totals for the bytes one side received from the other, as counted by the receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statement {
    /// Increases by one with each change; lets the other side discard reordered copies.
    pub seq: u64,
    /// Bytes received, cumulative.
    pub bytes: u64,
    /// What the receiver owes the sender for them (receiver's bid × bytes).
    pub receiver_owes: Accrual,
    /// What the sender owes the receiver for them (sender's bid × bytes).
    pub sender_owes: Accrual,
}

impl Statement {
    /// Count `bytes` more received, priced at the receiver's and the sender's bids.
    pub fn add(&mut self, bytes: u64, receiver_bid: Price, sender_bid: Price) {
        if bytes == 0 {
            return;
        }
        self.seq += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.receiver_owes.add(receiver_bid, bytes);
        self.sender_owes.add(sender_bid, bytes);
    }
}

impl Statement {
    /// The statement at `bytes` between `from` and `to` (`from.bytes <= bytes <= to.bytes`),
    /// each amount interpolated at the rates `to` charged for the bytes after `from`, rounded
    /// down; `to`'s sequence number. Used to accept part of a claim.
    pub fn between(from: &Statement, to: &Statement, bytes: u64) -> Statement {
        let bytes = bytes.clamp(from.bytes, to.bytes.max(from.bytes));
        let num = (bytes - from.bytes) as u128;
        let den = to.bytes.saturating_sub(from.bytes) as u128;
        let mid = |a: Accrual, b: Accrual| {
            let (a, b) = (a.as_micros(), b.as_micros().max(a.as_micros()));
            if den == 0 {
                return Accrual::from_micros(a);
            }
            // (b - a) * num / den without overflowing: num <= den < 2^64.
            let d = b - a;
            Accrual::from_micros(a + (d / den) * num + (d % den) * num / den)
        };
        Statement {
            seq: to.seq,
            bytes,
            receiver_owes: mid(from.receiver_owes, to.receiver_owes),
            sender_owes: mid(from.sender_owes, to.sender_owes),
        }
    }
}

/// Everything we account with one neighbor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkLedger {
    /// Bytes we received from the neighbor: we count, we price, we send it to them.
    pub inbound: Statement,
    /// Bytes the neighbor received from us: it counts and prices; we keep its latest statement.
    pub outbound: Statement,
    /// Cumulative amount we have promised the neighbor (our latest payment note).
    pub paid: Amount,
    /// Cumulative amount the neighbor has promised us (its highest valid note).
    pub received: Amount,
}

impl LinkLedger {
    /// What the neighbor owes us for service, before payments.
    pub fn earned(&self) -> Balance {
        Balance(self.inbound.sender_owes.units as i128 + self.outbound.receiver_owes.units as i128)
    }

    /// What we owe the neighbor for service, before payments.
    pub fn spent(&self) -> Balance {
        Balance(self.inbound.receiver_owes.units as i128 + self.outbound.sender_owes.units as i128)
    }

    /// Net: positive when the neighbor owes us.
    pub fn balance(&self) -> Balance {
        self.earned() - self.spent() + Balance::of(self.paid) - Balance::of(self.received)
    }

    /// The same ledger as the neighbor keeps it (for tests and the simulator).
    pub fn mirrored(&self) -> LinkLedger {
        LinkLedger { inbound: self.outbound, outbound: self.inbound, paid: self.received, received: self.paid }
    }
}

/// Where we were in a kernel counter when we last accounted from it. A counter whose identity
/// (`instance`: nftables object handle, or interface index) changed, or whose value went down,
/// was reset: the new value is counted whole, never the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterBaseline {
    pub instance: u64,
    pub value: u64,
}

impl CounterBaseline {
    /// Bytes to account for a new reading, and the baseline to keep.
    pub fn advance(&self, instance: u64, value: u64) -> (u64, CounterBaseline) {
        let delta = if instance == self.instance && value >= self.value { value - self.value } else { value };
        (delta, CounterBaseline { instance, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn design_example_net_is_100() {
        // A asks 2, B asks 1 per MB; both bid exactly the other's ask; 100 MB cross the link
        // (here: 60 MB A→B, 40 MB B→A). B owes A 200, A owes B 100: net B pays A 100.
        let mb = 1_000_000;
        let (a_bid, b_bid) = (Price(1), Price(2)); // A pays B's ask 1; B pays A's ask 2.
        let mut a = LinkLedger::default();
        a.inbound.add(40 * mb, a_bid, b_bid); // A received 40 MB from B.
        let mut b = LinkLedger::default();
        b.inbound.add(60 * mb, b_bid, a_bid); // B received 60 MB from A.
        a.outbound = b.inbound; // statements exchanged
        b.outbound = a.inbound;
        assert_eq!(a.balance(), Balance(100));
        assert_eq!(b.balance(), Balance(-100));
    }

    #[test]
    fn counter_resets_count_the_new_value_once() {
        let b = CounterBaseline { instance: 7, value: 1000 };
        assert_eq!(b.advance(7, 1500).0, 500);
        assert_eq!(b.advance(7, 200).0, 200, "value went down: reset");
        assert_eq!(b.advance(8, 5000).0, 5000, "new object: reset, even if the value is higher");
        assert_eq!(b.advance(7, 1000).0, 0);
    }

    #[test]
    fn between_interpolates_at_the_later_statements_rates_and_never_overflows() {
        let mut from = Statement::default();
        from.add(1_000_000, Price(1000), Price(3000));
        let mut to = from;
        to.add(2_000_000, Price(2000), Price(5000));
        let mid = Statement::between(&from, &to, 2_000_000);
        assert_eq!(mid.seq, to.seq);
        assert_eq!(mid.bytes, 2_000_000);
        assert_eq!(mid.receiver_owes.as_micros(), (1000 + 2000) * 1_000_000);
        assert_eq!(mid.sender_owes.as_micros(), (3000 + 5000) * 1_000_000);
        assert_eq!(Statement::between(&from, &to, to.bytes), to);
        assert_eq!(Statement::between(&from, &to, 0).bytes, from.bytes, "clamped");
        // Huge amounts: no overflow, still exact at the ends.
        let mut big = Statement::default();
        big.add(u64::MAX / 2, Price(u64::MAX / 4), Price(7));
        let half = Statement::between(&Statement::default(), &big, u64::MAX / 4);
        assert!(half.receiver_owes.as_micros() <= big.receiver_owes.as_micros());
        assert_eq!(Statement::between(&Statement::default(), &big, big.bytes), big);
    }

    proptest! {
        #[test]
        fn between_is_monotone_and_within_the_two_statements(
            a in 0u64..1_000_000_000, b in 1u64..1_000_000_000, pa in 0u64..10_000_000, pb in 0u64..10_000_000, f in 0u64..=1000,
        ) {
            let mut from = Statement::default();
            from.add(a, Price(pa), Price(pb));
            let mut to = from;
            to.add(b, Price(pb), Price(pa));
            let x = from.bytes + b * f / 1000;
            let mid = Statement::between(&from, &to, x);
            prop_assert!(from.receiver_owes.as_micros() <= mid.receiver_owes.as_micros());
            prop_assert!(mid.receiver_owes.as_micros() <= to.receiver_owes.as_micros());
            prop_assert!(from.sender_owes.as_micros() <= mid.sender_owes.as_micros());
            prop_assert!(mid.sender_owes.as_micros() <= to.sender_owes.as_micros());
            // Exact to within one millionth of what the rate says.
            let exact = pb as u128 * (x - from.bytes) as u128;
            prop_assert!(exact - (mid.receiver_owes.as_micros() - from.receiver_owes.as_micros()) <= 1_000_000);
        }

        #[test]
        fn both_sides_balances_are_exact_opposites(
            a_bid in 0u64..5_000_000, b_bid in 0u64..5_000_000,
            a_rx in proptest::collection::vec(0u64..50_000_000, 0..20),
            b_rx in proptest::collection::vec(0u64..50_000_000, 0..20),
            paid_a in 0u64..1_000_000, paid_b in 0u64..1_000_000,
        ) {
            let mut a = LinkLedger::default();
            let mut b = LinkLedger::default();
            for bytes in &a_rx { a.inbound.add(*bytes, Price(a_bid), Price(b_bid)); }
            for bytes in &b_rx { b.inbound.add(*bytes, Price(b_bid), Price(a_bid)); }
            a.outbound = b.inbound;
            b.outbound = a.inbound;
            a.paid = Amount(paid_a); b.received = Amount(paid_a);
            b.paid = Amount(paid_b); a.received = Amount(paid_b);
            prop_assert_eq!(a.balance(), -b.balance());
            prop_assert_eq!(a.mirrored(), b);
            // And the amount is what the prices say, to within the sub-unit remainders.
            let total: u128 = a_rx.iter().chain(b_rx.iter()).map(|x| *x as u128).sum();
            let exact = (b_bid as i128 - a_bid as i128) * total as i128; // millionths B owes A
            let service = a.balance().0 + paid_b as i128 - paid_a as i128;
            prop_assert!((service * 1_000_000 - exact).abs() < 2 * 1_000_000);
        }
    }
}
