//! The market between two nodes: negotiation, statements, payments, enforcement, counters and
//! restarts, driven through [`Pair`] (counters fed on every sample, persisted batches kept as
//! each side's disk, traffic policies in the log), plus shares with two buyers.
//!
//! Side 0 ("A") asks 2000 per MB, side 1 ("B") asks 1000; both pay the ask up to 5000. So for
//! every byte crossing the link B owes A 2000 and A owes B 1000: B is the net payer.

use super::pair::Pair;
use super::*;
use crate::market::notes::Note;
use crate::market::Statement;
use crate::market::{
    Amount, Balance, BidPolicy, Enforcement, Ingress, MarketConfig, NeighborMarket, NotesRail, OurBid, PaymentRail,
    Price, TheirBid, TrafficPolicy, RAIL_NOTES,
};
use crate::node::market::CounterReading;
use crate::wire::market::MarketMessage;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

const MB: u64 = 1_000_000;
const LIMIT: u64 = 10_000;
const THRESHOLD: u64 = 2_000;
const FLOOR: u64 = 64_000;

fn market(side: usize, c: &mut CoreConfig) {
    c.market = MarketConfig {
        ask: Price(if side == 0 { 2000 } else { 1000 }),
        max_price: Price(5000),
        pay_threshold: Amount(THRESHOLD),
        credit_limit: Amount(LIMIT),
        floor_bps: FLOOR,
        capacity_bps: 10_000_000,
        ..MarketConfig::default()
    };
}

/// A connected pair with the market settings above (`tweak` edits them further) and `latency`.
fn pair(latency: u64, tweak: impl Fn(usize, &mut CoreConfig)) -> Pair {
    let mut p = Pair::with(|side, c| {
        market(side, c);
        tweak(side, c);
    });
    p.latency = latency;
    p.connect(5000);
    p.run_for(100);
    p
}

/// What `side` holds about the other side.
fn m(p: &Pair, side: usize) -> &NeighborMarket {
    &p.nodes[side].neighbor(&p.ids[1 - side].node_id()).expect("a neighbor").market
}

/// How `side` treats the other side in its last traffic policy.
fn shaped(p: &Pair, side: usize) -> (u64, u64, Ingress) {
    let policy = p.policy(side).expect("a policy");
    let other = p.ids[1 - side].node_id();
    let member = policy.groups.iter().flat_map(|g| &g.members).find(|m| m.neighbor == other).expect("in it");
    (member.rate_bps, member.ceil_bps, member.ingress)
}

fn restricted(p: &Pair, side: usize) -> bool {
    shaped(p, side) == (FLOOR, FLOOR, Ingress::Police(FLOOR))
}

/// Run until `f` holds, 1 ms at a time, at most `max` ms; returns how long it took.
fn until(p: &mut Pair, max: u64, f: impl Fn(&Pair) -> bool) -> u64 {
    let start = p.now.mono.0;
    while !f(p) {
        assert!(p.now.mono.0 - start < max, "not within {max} ms");
        p.run_for(1);
    }
    p.now.mono.0 - start
}

/// A drop-or-change hook for the messages of one side, switchable from the test.
fn hook(p: &mut Pair, f: impl Fn(usize, &MarketMessage) -> bool + 'static) -> Rc<RefCell<bool>> {
    let on = Rc::new(RefCell::new(true));
    let flag = on.clone();
    p.tamper = Some(Box::new(move |side, msg| match &msg {
        ControlMessage::Market(mm) if *flag.borrow() && f(side, mm) => None,
        _ => Some(msg),
    }));
    on
}

// ----- negotiation -----

#[test]
fn each_ask_is_answered_with_a_bid_and_both_sides_hold_the_same_prices() {
    let p = pair(0, |_, _| {});
    let sent = |side| p.market_sent(0, side).into_iter().map(|(_, m)| m).collect::<Vec<_>>();
    assert!(sent(0).contains(&MarketMessage::Ask { seq: 1, price: Price(2000) }));
    assert!(sent(1).contains(&MarketMessage::Ask { seq: 1, price: Price(1000) }));
    assert!(sent(0).contains(&MarketMessage::Bid { ask_seq: 1, price: Price(1000) }));
    assert!(sent(1).contains(&MarketMessage::Bid { ask_seq: 1, price: Price(2000) }));
    assert_eq!((&m(&p, 0).our_bid, &m(&p, 0).their_bid), (&OurBid::Bid(Price(1000)), &TheirBid::Accepted(Price(2000))));
    assert_eq!((&m(&p, 1).our_bid, &m(&p, 1).their_bid), (&OurBid::Bid(Price(2000)), &TheirBid::Accepted(Price(1000))));
    assert!(!restricted(&p, 0) && !restricted(&p, 1));
}

#[test]
fn an_ask_above_the_max_price_is_declined_with_the_reason_and_the_decliner_restricted() {
    let p = pair(0, |side, c| {
        if side == 1 {
            c.market.max_price = Price(1500);
        }
    });
    let decline = p.market_sent(0, 1).into_iter().find_map(|(_, m)| match m {
        MarketMessage::Decline { ask_seq: 1, reason } => Some(reason),
        _ => None,
    });
    let reason = decline.expect("B declines A's ask");
    assert!(reason.contains("above our max price 1500"), "{reason}");
    assert!(matches!(&m(&p, 1).our_bid, OurBid::Declined(r) if *r == reason));
    assert_eq!(m(&p, 0).their_bid, TheirBid::Declined(reason));
    assert_eq!(m(&p, 0).enforcement, Enforcement::Throttled);
    assert!(restricted(&p, 0), "A restricts B at once");
    // B's own ask is within A's max price: B serves A normally.
    assert_eq!(m(&p, 1).their_bid, TheirBid::Accepted(Price(1000)));
    assert!(!restricted(&p, 1));
}

#[test]
fn a_fixed_bid_pays_more_than_the_ask_and_never_more_than_the_max_price() {
    let p = pair(0, |side, c| {
        if side == 1 {
            c.market.bid_policy = BidPolicy::Fixed(Price(3000));
        }
    });
    assert_eq!(m(&p, 0).their_bid, TheirBid::Accepted(Price(3000)));
    let p = pair(0, |side, c| {
        if side == 1 {
            c.market.bid_policy = BidPolicy::Fixed(Price(9000));
        }
    });
    assert_eq!(m(&p, 0).their_bid, TheirBid::Accepted(Price(5000)));
}

#[test]
fn a_new_ask_is_rebid_and_both_sides_show_it_within_one_round_trip() {
    let latency = 20;
    let mut p = pair(latency, |_, _| {});
    let now = p.now;
    p.nodes[0].set_ask(now, Price(2500));
    let b_knows = until(&mut p, 1000, |p| m(p, 1).our_bid == OurBid::Bid(Price(2500)));
    let a_knows = b_knows + until(&mut p, 1000, |p| m(p, 0).their_bid == TheirBid::Accepted(Price(2500)));
    println!("new ask: B bids it after {b_knows} ms, A holds the bid after {a_knows} ms (latency {latency} ms)");
    assert_eq!(b_knows, latency);
    assert_eq!(a_knows, 2 * latency, "one round trip");
    // And down again, below what B used to pay.
    let now = p.now;
    p.nodes[0].set_ask(now, Price(500));
    let took = until(&mut p, 1000, |p| m(p, 0).their_bid == TheirBid::Accepted(Price(500)));
    assert_eq!(took, 2 * latency);
    assert_eq!(m(&p, 0).awaiting_answer_since, None);
}

#[test]
fn changing_how_we_bid_answers_every_ask_again() {
    let latency = 15;
    let mut p = pair(latency, |_, _| {});
    let now = p.now;
    p.nodes[1].set_bidding(now, Price(5000), BidPolicy::Fixed(Price(4000)));
    assert_eq!(m(&p, 1).our_bid, OurBid::Bid(Price(4000)), "at once on our side");
    let took = until(&mut p, 1000, |p| m(p, 0).their_bid == TheirBid::Accepted(Price(4000)));
    assert_eq!(took, latency);
    // A max price below the ask now: declined, and A restricts B.
    let now = p.now;
    p.nodes[1].set_bidding(now, Price(1000), BidPolicy::PayAsk);
    until(&mut p, 1000, |p| matches!(m(p, 0).their_bid, TheirBid::Declined(_)));
    p.run_for(1000);
    assert!(restricted(&p, 0));
}

// ----- statements -----

#[test]
fn ledgers_stay_exact_mirrors_through_traffic_both_ways_and_price_changes() {
    let mut p = pair(7, |_, _| {});
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let mut sent = [0u64; 2];
    let mut changes = 0;
    for round in 0..60 {
        for (side, total) in sent.iter_mut().enumerate() {
            let bytes = rng.gen_range(0..3 * MB);
            p.transfer(side, bytes, 0);
            *total += bytes;
        }
        if round % 5 == 2 {
            let (side, now) = (rng.gen_range(0..2), p.now);
            p.nodes[side].set_ask(now, Price(rng.gen_range(500..4500)));
            changes += 1;
        }
        if round % 9 == 4 {
            let (side, now) = (rng.gen_range(0..2), p.now);
            let policy = if rng.gen() { BidPolicy::PayAsk } else { BidPolicy::Fixed(Price(rng.gen_range(0..5000))) };
            p.nodes[side].set_bidding(now, Price(5000), policy);
            changes += 1;
        }
        p.run_for(rng.gen_range(50..1500));
    }
    p.run_for(5000);
    let (a, b) = (m(&p, 0).record.ledger, m(&p, 1).record.ledger);
    println!("{changes} price changes; A: {a:?}");
    assert_eq!(a, b.mirrored(), "exact mirrors");
    assert_eq!(a.balance(), -b.balance());
    assert_eq!((a.inbound.bytes, b.inbound.bytes), (sent[1], sent[0]), "every byte counted once");
    assert!(a.paid.0 + a.received.0 > 0, "payments flowed");
    assert_eq!(m(&p, 0).disputes + m(&p, 1).disputes, 0, "{:?} {:?}", m(&p, 0).last_dispute, m(&p, 1).last_dispute);
}

#[test]
fn with_fixed_prices_the_net_creditor_never_pays() {
    // A asks 2000, B 1000: on every byte, either way, B owes A more than A owes B, so A must
    // never pay. (A payer once sent its payment before the statement that justified it; the
    // payee, holding money for bytes it had not seen billed yet, paid the difference back.)
    let mut p = pair(7, |_, _| {});
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    for _ in 0..80 {
        for side in 0..2 {
            p.transfer(side, rng.gen_range(0..4 * MB), 0);
        }
        p.run_for(rng.gen_range(200..1200));
    }
    p.run_for(5000);
    let payments = p.logged(0, |a| {
        matches!(a, Action::SendControl { msg: ControlMessage::Market(MarketMessage::Payment { .. }), .. })
    });
    let paid_by_a: Vec<_> = payments.iter().filter(|(_, side, _)| *side == 0).collect();
    assert!(paid_by_a.is_empty(), "A, the net creditor, paid {} times", paid_by_a.len());
    assert!(m(&p, 0).record.ledger.received.0 > 0, "B paid A");
    assert_eq!(m(&p, 0).record.ledger, m(&p, 1).record.ledger.mirrored());
}

// ----- payments -----

/// The index in the log of the first action by `side` for which `f` holds.
fn position(p: &Pair, side: usize, f: impl Fn(&Action) -> bool) -> Option<usize> {
    p.log.iter().position(|(_, s, a)| *s == side && f(a))
}

#[test]
fn a_payment_at_the_threshold_is_persisted_before_it_is_sent_and_acknowledged() {
    let mut p = pair(5, |_, _| {});
    // 1.5 MB to B: B owes 1.5 × (2000 - 1000) = 1500, below the threshold.
    p.transfer(0, 1_500_000, 0);
    p.run_for(1500);
    assert_eq!(m(&p, 1).record.issued, None);
    // 1 MB more: 2500 ≥ 2000.
    p.transfer(0, MB, 0);
    p.run_for(1500);
    let note = m(&p, 1).record.issued.clone().expect("B paid");
    assert_eq!(note.cumulative, Amount(2500));
    let stored = position(&p, 1, |a| match a {
        Action::Persist(b) => b.records.iter().any(|(_, r)| r.issued.as_ref().is_some_and(|n| n.proof == note.proof)),
        _ => false,
    });
    let sent = position(&p, 1, |a| {
        matches!(a, Action::SendControl { msg: ControlMessage::Market(MarketMessage::Payment { proof, .. }), .. }
            if *proof == note.proof)
    });
    assert!(stored.expect("persisted") < sent.expect("sent"), "stored before it was sent");
    // A stored it before acknowledging it; B holds the acknowledgement.
    let got = position(&p, 0, |a| match a {
        Action::Persist(b) => b.records.iter().any(|(_, r)| r.received.as_ref().is_some_and(|n| n.proof == note.proof)),
        _ => false,
    });
    let acked = position(&p, 0, |a| {
        matches!(a, Action::SendControl { msg: ControlMessage::Market(MarketMessage::PaymentAck { .. }), .. })
    });
    assert!(got.expect("persisted by A") < acked.expect("acknowledged"));
    assert!(m(&p, 1).record.issued.as_ref().unwrap().acked);
    assert_eq!(m(&p, 0).record.ledger.received, Amount(2500));
    assert_eq!(m(&p, 0).record.ledger, m(&p, 1).record.ledger.mirrored());
    assert_eq!(m(&p, 0).balance(), Balance(0));
}

#[test]
fn an_unacknowledged_note_is_sent_again_periodically_and_after_a_reconnect() {
    let mut p = pair(5, |_, _| {});
    let drop = hook(&mut p, |side, m| side == 1 && matches!(m, MarketMessage::Payment { .. }));
    p.transfer(0, 3 * MB, 0);
    p.run_for(1500);
    let note = m(&p, 1).record.issued.clone().expect("B paid");
    assert!(!note.acked);
    assert_eq!(m(&p, 0).record.received, None, "lost on the way");
    let resends = |p: &Pair, from| {
        p.market_sent(from, 1)
            .into_iter()
            .filter(|(_, m)| matches!(m, MarketMessage::Payment { proof, .. } if *proof == note.proof))
            .map(|(t, _)| t.0)
            .collect::<Vec<_>>()
    };
    // Sent again every 10 s while unacknowledged.
    let mark = p.log.len();
    p.run_for(21_000);
    assert_eq!(resends(&p, mark).len(), 2, "{:?}", resends(&p, mark));
    // The session breaks; once it is back the note goes out at once.
    *drop.borrow_mut() = false;
    let mark = p.log.len();
    p.inject(0, ControlMessage::Close { reason: "maintenance".into() });
    assert!(!p.both_connected());
    p.connect(5000);
    let up = m(&p, 1).record.issued.clone();
    let first = resends(&p, mark)[0];
    let established = p.nodes[1].neighbor(&p.ids[0].node_id()).unwrap().session_established_since().unwrap();
    assert_eq!(first, established.0, "re-sent when the session came back");
    p.run_for(100);
    assert!(m(&p, 1).record.issued.as_ref().unwrap().acked, "{up:?}");
    assert_eq!(m(&p, 0).record.received.as_ref().unwrap().cumulative, note.cumulative);
    assert_eq!(p.nodes[0].payments_rejected(), 0);
}

/// Collects formatted tracing events.
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", f.name(), v));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.push_str(&format!("{}={} ", f.name(), v));
    }
}

impl tracing::Subscriber for Capture {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut f = Fields(String::new());
        e.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A global subscriber that records nothing but keeps every callsite's interest at
/// "sometimes": without it, a callsite first reached on a thread with no subscriber while no
/// `Capture` was alive anywhere is cached as "never", and a test capturing its lines later, on
/// another thread (tests run in parallel), would miss them.
struct Undecided;

impl tracing::Subscriber for Undecided {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Run `f`, returning the log lines it produced.
fn logs(f: impl FnOnce()) -> Vec<String> {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Undecided);
    });
    let lines = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(Capture(lines.clone()), f);
    let v = lines.lock().unwrap().clone();
    v
}

#[test]
fn the_payee_rejects_bad_notes_with_a_logged_reason_and_its_balance_never_drops_for_them() {
    let mut p = pair(0, |_, _| {});
    p.transfer(0, 3 * MB, 0);
    p.run_for(1500);
    let held = m(&p, 0).record.received.clone().expect("a valid payment first");
    let (b, a) = (p.ids[1].clone(), p.ids[0].node_id());
    let third = identity(99);
    let channel = m(&p, 1).record.channel;
    let valid = |cumulative| NotesRail::new(b.clone()).pay(&a, &channel, Amount(cumulative));
    // A note signed by someone else in B's name.
    let mut forged = NotesRail::new(third.clone()).pay(&a, &channel, Amount(held.cumulative.0 + 5000));
    forged[1..33].copy_from_slice(&b.node_id().0);
    // A genuine note with its amount raised.
    let mut raised = valid(held.cumulative.0 + 1);
    raised[1 + 32 + 32 + 16 + 6] ^= 0x10;
    let bad: Vec<(&str, u8, Vec<u8>, &str)> = vec![
        ("forged", RAIL_NOTES, forged, "bad signature"),
        ("altered", RAIL_NOTES, raised, "bad signature"),
        ("replayed", RAIL_NOTES, held.proof.clone(), "replayed"),
        ("decreasing", RAIL_NOTES, valid(held.cumulative.0 - 1), "decreasing"),
        (
            "wrongly addressed",
            RAIL_NOTES,
            NotesRail::new(b.clone()).pay(&third.node_id(), &channel, Amount(1 << 40)),
            "not to us",
        ),
        ("other payer", RAIL_NOTES, NotesRail::new(third.clone()).pay(&a, &channel, Amount(1 << 40)), "signed as"),
        (
            "other channel",
            RAIL_NOTES,
            NotesRail::new(b.clone()).pay(&a, &[0xee; 16], Amount(1 << 40)),
            "unknown channel",
        ),
        ("wrong rail", 9, valid(1 << 40), "rail 9 is not ours"),
        ("garbage", RAIL_NOTES, vec![1, 2, 3], "malformed"),
    ];
    for (what, rail, proof, why) in bad {
        p.run_for(60_000); // a minute apart: each is logged (a neighbor's are limited per minute)
        let before = (p.nodes[0].payments_rejected(), m(&p, 0).balance(), m(&p, 0).record.clone());
        let lines = logs(|| p.inject(0, ControlMessage::Market(MarketMessage::Payment { rail, proof })));
        assert_eq!(p.nodes[0].payments_rejected(), before.0 + 1, "{what}");
        assert_eq!(m(&p, 0).balance(), before.1, "{what}: the balance did not move");
        assert_eq!(m(&p, 0).record, before.2, "{what}: nothing stored");
        assert!(
            lines.iter().any(|l| l.contains("payment rejected") && l.contains(why)),
            "{what}: no log line with {why:?} in {lines:?}"
        );
    }
    // A flood of bad notes is all counted and rejected, but only a few are logged, and the next
    // line logged says how many were not.
    p.run_for(60_000);
    let before = p.nodes[0].payments_rejected();
    let lines = logs(|| {
        for _ in 0..100 {
            p.inject(0, ControlMessage::Market(MarketMessage::Payment { rail: 9, proof: vec![] }));
        }
    });
    assert_eq!(p.nodes[0].payments_rejected(), before + 100);
    let burst = crate::market::neighbor::NEIGHBOR_LOG_BURST as usize;
    assert_eq!(lines.iter().filter(|l| l.contains("payment rejected")).count(), burst);
    p.run_for(60_000);
    let lines = logs(|| p.inject(0, ControlMessage::Market(MarketMessage::Payment { rail: 9, proof: vec![] })));
    let not_logged = format!("not_logged={} ", 100 - burst);
    assert!(lines.iter().any(|l| l.contains("payment rejected") && l.contains(&not_logged)), "{lines:?}");
    // A real, higher note is still accepted after all that.
    let next = held.cumulative.0 + 700;
    p.inject(0, ControlMessage::Market(MarketMessage::Payment { rail: RAIL_NOTES, proof: valid(next) }));
    assert_eq!(m(&p, 0).record.ledger.received, Amount(next));
}

#[test]
fn the_decoded_forgery_really_claims_to_be_from_the_payer() {
    // Guards the test above: the forged note parses as B's and differs only in its signature.
    let (b, a, third) = (identity(1), identity(2), identity(99));
    let mut forged = NotesRail::new(third).pay(&a.node_id(), &[1; 16], Amount(5));
    forged[1..33].copy_from_slice(&b.node_id().0);
    let note = Note::parse(&forged).unwrap();
    assert_eq!((note.payer, note.payee, note.cumulative), (b.node_id(), a.node_id(), Amount(5)));
}

// ----- enforcement -----

#[test]
fn a_payer_that_pauses_payments_is_restricted_past_the_credit_limit_and_released_once_it_pays() {
    let latency = 10;
    let mut p = pair(latency, |_, _| {});
    let now = p.now;
    p.nodes[1].set_payments_paused(now, true);
    // 1 MB a second to B: it owes 1000 more each second.
    let mut crossed = None;
    for s in 0..20 {
        p.transfer(0, MB, 0);
        p.run_for(1000);
        let (owed, exposure) = (m(&p, 0).balance().0, m(&p, 0).exposure().0);
        if crossed.is_none() && owed + exposure > LIMIT as i128 {
            crossed = Some(s);
        }
        assert_eq!(restricted(&p, 0), crossed.is_some(), "second {s}: owes {owed} (+{exposure})");
    }
    assert!(crossed.is_some_and(|s| s >= 8), "{crossed:?}");
    assert!(m(&p, 0).enforcement_reason.as_deref().unwrap().contains("more than the credit limit"));
    assert_eq!(m(&p, 1).record.ledger.paid, Amount(0), "paused: nothing paid");
    let now = p.now;
    p.nodes[1].set_payments_paused(now, false);
    let took = until(&mut p, 1000, |p| !restricted(p, 0));
    println!("lifted {took} ms after payments resumed");
    assert_eq!(took, latency, "released as soon as the payment arrives");
    assert_eq!(shaped(&p, 0), (10_000_000, 10_000_000, Ingress::Open));
}

#[test]
fn an_unanswered_ask_restricts_the_neighbor_after_the_grace_period() {
    let mut p = Pair::with(market);
    hook(&mut p, |side, m| side == 1 && matches!(m, MarketMessage::Bid { .. } | MarketMessage::Decline { .. }));
    p.connect(5000);
    let up = p.nodes[0].neighbor(&p.ids[1].node_id()).unwrap().session_established_since().unwrap().0;
    let grace = p.configs[0].market.negotiation_grace.0;
    p.run_until(up + grace - 1);
    assert!(matches!(m(&p, 0).their_bid, TheirBid::Unanswered { .. }));
    assert!(!restricted(&p, 0), "within the grace period");
    p.run_until(up + grace + 1000);
    assert!(restricted(&p, 0));
    assert_eq!(m(&p, 0).enforcement_reason.as_deref(), Some("has not accepted our ask"));
    assert!(!restricted(&p, 1), "B got A's bid");

    // Once answered, released; a later ask left unanswered restricts again.
    let mut p = pair(0, |_, _| {});
    hook(&mut p, |side, m| side == 1 && matches!(m, MarketMessage::Bid { .. }));
    let now = p.now;
    p.nodes[0].set_ask(now, Price(2200));
    p.run_for(grace - 100);
    assert!(!restricted(&p, 0));
    p.run_for(1200);
    assert!(restricted(&p, 0));
    assert_eq!(m(&p, 0).enforcement_reason.as_deref(), Some("has not answered our new ask"));
}

#[test]
fn a_neighbor_that_stops_sending_statements_is_restricted_for_its_exposure() {
    let mut p = pair(0, |_, _| {});
    let now = p.now;
    p.nodes[1].set_payments_paused(now, true);
    hook(&mut p, |side, m| side == 1 && matches!(m, MarketMessage::Statement(_)));
    let mut seconds = 0;
    while !restricted(&p, 0) {
        seconds += 1;
        assert!(seconds < 30);
        p.transfer(0, MB, 0);
        p.run_for(1000);
    }
    let a = m(&p, 0);
    assert_eq!(a.balance(), Balance(0), "A was told of nothing it could bill");
    assert!(a.exposure().0 > LIMIT as i128, "{:?}", a.exposure());
    assert!(a.enforcement_reason.as_deref().unwrap().contains("unconfirmed"));
    assert_eq!(seconds, 11, "10,000 units of credit at 1000 per unconfirmed MB");
}

#[test]
fn traffic_policy_shares_follow_the_bids() {
    // A hub whose two neighbors bid 3000 and 1000 for its service.
    let mut ids: Vec<Identity> = (10..13).map(identity).collect();
    ids.sort_by_key(|i| i.node_id());
    let hub_id = ids.remove(0);
    let mut cfg = config();
    market(0, &mut cfg);
    cfg.market.ask = Price(1000);
    let mut hub = started(&hub_id, cfg);
    for (k, (peer, bid)) in ids.iter().zip([3000, 1000]).enumerate() {
        let src = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x20 + k as u16);
        let hello = hello(peer, &hub_id.node_id(), 52000, UNIX0 + 1000);
        hub.handle_discovery(at(1000), &eth0(), src, &hello);
        let ifname = IfName::for_tunnel(&hub_id.node_id(), &peer.node_id());
        hub.handle_tunnel_stats(at(1100), &ifname, fresh_handshake());
        let session = drain(&mut hub)
            .into_iter()
            .find_map(|a| match a {
                Action::OpenControl { session, .. } => Some(session),
                _ => None,
            })
            .expect("the hub connects");
        hub.handle_control_opened(at(1200), session);
        let nonce_c = drain(&mut hub)
            .into_iter()
            .find_map(|a| match a {
                Action::SendControl { msg: ControlMessage::ClientHello { nonce, .. }, .. } => Some(nonce),
                _ => None,
            })
            .unwrap();
        let nonce_s = [k as u8; 32];
        let sig = peer.sign(&crate::wire::control::transcript(
            b"server",
            &hub_id.node_id(),
            &peer.node_id(),
            &nonce_c,
            &nonce_s,
            1,
        ));
        let hello = ControlMessage::ServerHello { version: 1, node: peer.node_id(), nonce: nonce_s, sig };
        hub.handle_control_message(at(1300), session, hello);
        let bid = MarketMessage::Bid { ask_seq: 1, price: Price(bid) };
        hub.handle_control_message(at(1400), session, ControlMessage::Market(bid));
    }
    let policy: TrafficPolicy = drain(&mut hub)
        .into_iter()
        .rev()
        .find_map(|a| match a {
            Action::ApplyTraffic(p) => Some(p),
            _ => None,
        })
        .expect("a policy");
    let rate = |peer: &Identity| {
        let g = &policy.groups[0];
        g.members.iter().find(|m| m.neighbor == peer.node_id()).map(|m| (m.rate_bps, m.ceil_bps, m.ingress))
    };
    assert_eq!(policy.groups.len(), 1);
    assert_eq!(rate(&ids[0]), Some((7_500_000, 10_000_000, Ingress::Open)), "3/4 of 10 Mbit/s");
    assert_eq!(rate(&ids[1]), Some((2_500_000, 10_000_000, Ingress::Open)), "1/4");
}

// ----- counters and restarts -----

#[test]
fn counter_resets_never_count_a_byte_twice_nor_lose_what_was_counted() {
    let mut p = pair(0, |_, _| {});
    let rx = |p: &Pair| m(p, 1).record.ledger.inbound.bytes;
    p.transfer(0, 5000, 0);
    p.run_for(1000);
    assert_eq!(rx(&p), 5000);
    p.run_for(3000);
    assert_eq!(rx(&p), 5000, "the same reading again counts nothing");
    // The firewall's counter is re-created (a new object): what it holds is new.
    p.counters[1].rx = CounterReading { instance: 777, value: 700 };
    p.run_for(1000);
    assert_eq!(rx(&p), 5700);
    // The same object but a smaller value: reset, counted from zero.
    p.counters[1].rx.value = 200;
    p.run_for(1000);
    assert_eq!(rx(&p), 5900);
    p.counters[1].rx.value = 1200;
    p.run_for(1000);
    assert_eq!(rx(&p), 6900);
    // A new object with a larger value than the old one still counts whole (not the difference).
    p.counters[1].rx = CounterReading { instance: 778, value: 9000 };
    p.run_for(1000);
    assert_eq!(rx(&p), 15_900);
    p.run_for(2000);
    assert_eq!(m(&p, 0).record.ledger.outbound.bytes, 15_900, "A was told the same");
    // The transmit side: a re-created tunnel counts from zero too.
    let before = m(&p, 0).unconfirmed_signed();
    p.counters[0].tx = CounterReading { instance: 999, value: 300 };
    p.run_for(1000);
    assert_eq!(m(&p, 0).unconfirmed_signed(), before + 300);
}

#[test]
fn the_latest_drop_totals_are_kept_per_neighbor_and_never_billed() {
    use crate::node::{Dropped, Volume};
    let mut p = pair(0, |_, _| {});
    let dropped = |p: &Pair| p.nodes[1].neighbor(&p.ids[0].node_id()).expect("a neighbor").dropped;
    assert_eq!(dropped(&p), Dropped::default());
    p.transfer(0, 5000, 0);
    let d = Dropped { spoofed: Volume { packets: 2, bytes: 120 }, unsolicited: Volume { packets: 3, bytes: 180 } };
    p.counters[1].dropped = Some(d);
    p.run_for(1000);
    assert_eq!(dropped(&p), d);
    assert_eq!(m(&p, 1).record.ledger.inbound.bytes, 5000, "drops are not billed");
    // A sample without drop counters (the firewall could not read them) keeps the last totals.
    p.counters[1].dropped = None;
    p.run_for(1000);
    assert_eq!(dropped(&p), d);
}

#[test]
fn a_node_rebuilt_from_its_last_persisted_records_counts_no_byte_twice_and_loses_none() {
    let mut p = pair(3, |_, _| {});
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let mut sent = [0u64; 2];
    let send = |p: &mut Pair, rng: &mut rand_chacha::ChaCha20Rng, sent: &mut [u64; 2]| {
        for (side, total) in sent.iter_mut().enumerate() {
            let bytes = rng.gen_range(0..2 * MB);
            p.transfer(side, bytes, 0);
            *total += bytes;
        }
    };
    for _ in 0..10 {
        send(&mut p, &mut rng, &mut sent);
        p.run_for(rng.gen_range(200..1200));
    }
    // Bytes arrive after B's last sample, then B is killed: they are in the kernel's counters
    // only. Its disk holds what it persisted at that sample.
    p.run_for(1000 - p.now.mono.0 % 1000 + 10);
    send(&mut p, &mut rng, &mut sent);
    p.run_for(500);
    let on_disk = p.disk[1][&p.ids[0].node_id()].clone();
    assert!(on_disk.ledger.inbound.bytes < sent[0], "some bytes were not sampled yet");
    p.crash(1);
    assert!(p.nodes[1].neighbor(&p.ids[0].node_id()).is_none());
    p.run_for(3000);
    p.connect(30_000);
    for _ in 0..10 {
        send(&mut p, &mut rng, &mut sent);
        p.run_for(rng.gen_range(200..1200));
    }
    p.run_for(5000);
    let (a, b) = (m(&p, 0).record.ledger, m(&p, 1).record.ledger);
    assert_eq!(b.inbound.bytes, sent[0], "B counted every byte A sent, once");
    assert_eq!(a.inbound.bytes, sent[1], "A counted every byte B sent, once");
    assert_eq!(m(&p, 0).disputes + m(&p, 1).disputes, 0, "{:?} {:?}", m(&p, 0).last_dispute, m(&p, 1).last_dispute);
    assert_eq!(a, b.mirrored());
}

#[test]
fn a_neighbor_under_reporting_what_it_received_is_restricted_for_its_exposure_not_disputed() {
    // B claims (and pays for) half of what it receives: indistinguishable from 50% loss, so it
    // is not a provable dispute; but the half it never confirms is exposure.
    let mut p = pair(5, |_, _| {});
    let (b, a) = (p.ids[1].clone(), p.ids[0].node_id());
    let channel = m(&p, 1).record.channel;
    p.tamper = Some(Box::new(move |side, msg| {
        Some(match msg {
            ControlMessage::Market(MarketMessage::Statement(st)) if side == 1 => {
                let mut half = Statement { seq: st.seq, bytes: st.bytes / 2, ..Statement::default() };
                half.receiver_owes.add(Price(2000), half.bytes);
                half.sender_owes.add(Price(1000), half.bytes);
                ControlMessage::Market(MarketMessage::Statement(half))
            }
            ControlMessage::Market(MarketMessage::Payment { rail, proof }) if side == 1 => {
                let note = Note::parse(&proof).unwrap();
                let proof = NotesRail::new(b.clone()).pay(&a, &channel, Amount(note.cumulative.0 / 2));
                ControlMessage::Market(MarketMessage::Payment { rail, proof })
            }
            other => other,
        })
    }));
    let mut seconds = 0;
    while !restricted(&p, 0) {
        seconds += 1;
        assert!(seconds <= 30, "never restricted: {:?}", m(&p, 0));
        p.transfer(0, 4 * MB, 0);
        p.run_for(1000);
    }
    let am = m(&p, 0);
    println!(
        "under-reporter restricted after {seconds} s: owes {:?}, exposure {:?}, reported loss {} ppm",
        am.balance(),
        am.exposure(),
        am.reported_loss_ppm()
    );
    assert!(am.enforcement_reason.as_deref().unwrap().contains("unconfirmed"));
    assert!(am.balance().0 < THRESHOLD as i128, "it paid for what it admitted");
    assert!(am.reported_loss_ppm() > 400_000);
    assert_eq!(am.disputes, 0, "nothing provably wrong");
}

#[test]
fn an_honest_neighbor_on_a_lossy_link_is_not_restricted() {
    let mut p = pair(5, |_, _| {});
    for s in 0..60 {
        p.transfer(0, 4 * MB, 4 * MB / 20); // 5% lost
        p.run_for(1000);
        assert!(!restricted(&p, 0), "second {s}: {:?}", m(&p, 0));
    }
    assert!(m(&p, 0).unconfirmed_tx() <= 4 * MB, "at most one sample: {}", m(&p, 0).unconfirmed_tx());
    assert!(m(&p, 0).record.ledger.received.0 > 100_000, "it paid");
}

#[test]
fn every_statement_is_stored_before_it_is_sent() {
    // Otherwise a crash in between makes the restarted node send different totals under a
    // number the neighbor already holds (and ignores as stale).
    let mut p = pair(3, |_, _| {});
    for _ in 0..10 {
        p.transfer(0, MB, 0);
        p.transfer(1, MB / 2, 0);
        p.run_for(700);
    }
    let mut checked = 0;
    for side in 0..2 {
        let peer = p.ids[1 - side].node_id();
        let mut stored = 0;
        for (_, s, a) in p.log.iter().filter(|(_, s, _)| *s == side) {
            match a {
                Action::Persist(b) => {
                    for (id, r) in &b.records {
                        if *id == peer {
                            stored = stored.max(r.ledger.inbound.seq);
                        }
                    }
                }
                Action::SendControl { msg: ControlMessage::Market(MarketMessage::Statement(st)), .. } => {
                    assert!(st.seq <= stored, "side {s} sent statement {} with {stored} stored", st.seq);
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    assert!(checked >= 10, "{checked}");
}

#[test]
fn bytes_received_before_the_prices_are_agreed_are_priced_once_they_are() {
    // Traffic crosses as soon as the tunnel is up, before the session and the negotiation.
    let mut p = Pair::with(market);
    p.latency = 20;
    p.run_until(1);
    p.transfer(0, 3 * MB, 0);
    p.connect(5000);
    p.run_for(3000);
    let b = m(&p, 1).record.ledger;
    assert_eq!(b.inbound.bytes, 3 * MB);
    assert_eq!(b.inbound.receiver_owes.units, 3 * 2000, "at B's bid for A");
    assert_eq!(b.inbound.sender_owes.units, 3 * 1000, "at A's bid for B");
    assert_eq!(m(&p, 0).record.ledger, b.mirrored());
}

#[test]
fn a_bid_for_an_ask_that_changed_meanwhile_still_prices_what_was_counted_at_it() {
    // B changes how it bids just as A's new ask leaves: B's bid answers A's old ask, which A
    // no longer takes as an agreement; but B prices what it counts at that bid until A's new ask
    // reaches it. A must accept those statements (it rejected them for good before: the price
    // was never in its history). Changes land 10 ms before the samples, the latency is 30 ms.
    let mut p = pair(30, |_, _| {});
    for round in 0..10u64 {
        p.run_until((p.now.mono.0 / 1000 + 1) * 1000 - 10);
        p.transfer(0, MB, 0);
        p.transfer(1, MB, 0);
        let now = p.now;
        let policy = if round % 2 == 0 { BidPolicy::PayAsk } else { BidPolicy::Fixed(Price(4000)) };
        p.nodes[1].set_bidding(now, Price(5000), policy);
        p.nodes[0].set_ask(now, Price(1000 + round * 100));
        p.run_for(500);
    }
    p.run_for(3000);
    assert_eq!(m(&p, 0).disputes + m(&p, 1).disputes, 0, "{:?} {:?}", m(&p, 0).last_dispute, m(&p, 1).last_dispute);
    assert_eq!(m(&p, 0).record.ledger, m(&p, 1).record.ledger.mirrored());
}

#[test]
fn a_restarted_node_whose_session_is_slow_to_return_prices_nothing_at_zero() {
    // After B's restart its session takes longer than the negotiation grace to come back;
    // bytes keep crossing the tunnel meanwhile. B must not start pricing them at 0 (no
    // agreement yet): A would reject its statements from then on.
    let mut p = pair(3, |_, _| {});
    let mut sent = [0u64; 2];
    for _ in 0..5 {
        for (side, s) in sent.iter_mut().enumerate() {
            p.transfer(side, MB, 0);
            *s += MB;
        }
        p.run_for(1000);
    }
    p.crash(1);
    p.refuse_connect = true;
    for _ in 0..15 {
        for (side, s) in sent.iter_mut().enumerate() {
            p.transfer(side, MB, 0);
            *s += MB;
        }
        p.run_for(1000);
    }
    assert!(!p.both_connected());
    p.refuse_connect = false;
    p.connect(40_000);
    p.run_for(5000);
    let (a, b) = (m(&p, 0).record.ledger, m(&p, 1).record.ledger);
    assert_eq!(m(&p, 0).disputes + m(&p, 1).disputes, 0, "{:?} {:?}", m(&p, 0).last_dispute, m(&p, 1).last_dispute);
    assert_eq!((b.inbound.bytes, a.inbound.bytes), (sent[0], sent[1]));
    assert_eq!(b.inbound.receiver_owes.units, sent[0] / MB * 2000, "all at the agreed price");
    assert_eq!(a, b.mirrored());
}

#[test]
fn a_neighbor_flipping_its_ask_is_followed_but_logged_only_a_few_times_a_minute() {
    let mut p = pair(0, |_, _| {});
    let lines = logs(|| {
        for i in 0..100u64 {
            let now = p.now;
            p.nodes[0].set_ask(now, Price(if i % 2 == 0 { 2500 } else { 2000 }));
            p.run_for(100);
        }
    });
    // B follows every change (A's last ask is 2000) ...
    assert_eq!(m(&p, 1).our_bid, OurBid::Bid(Price(2000)));
    assert_eq!(m(&p, 0).their_bid, TheirBid::Accepted(Price(2000)));
    // ... but the lines about them stay within the per-minute burst; A's own (operator) ask
    // changes are all logged.
    let count = |what: &str| lines.iter().filter(|l| l.contains(&format!("message={what} "))).count();
    let (asks, bids, accepted) =
        (count("neighbor's ask"), count("bidding for neighbor's service"), count("neighbor accepted our ask"));
    println!("100 flips: {asks} ask lines, {bids} bid lines, {accepted} accepted lines");
    let burst = crate::market::neighbor::NEIGHBOR_LOG_BURST as usize;
    assert!([asks, bids, accepted].iter().all(|n| (1..=burst).contains(n)), "{lines:#?}");
    assert_eq!(count("our ask changed"), 100);
    // A minute later the next change is logged again, saying how many were not.
    p.run_for(60_000);
    let lines = logs(|| {
        let now = p.now;
        p.nodes[0].set_ask(now, Price(2500));
        p.run_for(100);
    });
    let ask_line = lines.iter().find(|l| l.contains("message=neighbor's ask ")).expect("logged again");
    assert!(ask_line.contains(&format!("not_logged={} ", 100 - asks)), "{ask_line}");
}

#[test]
fn a_neighbor_inflating_its_statements_is_never_paid_for_bytes_we_did_not_send() {
    // A (side 0) asks more than B: each byte A claims to have received from B makes B owe
    // 2000/MB and A owe 1000/MB, so A gains 1000/MB for every byte it invents. It claims three
    // times what it receives, priced consistently (so the price checks pass).
    let mut p = pair(5, |_, _| {});
    let inflated = Rc::new(RefCell::new(true));
    let on = inflated.clone();
    p.tamper = Some(Box::new(move |side, msg| {
        Some(match msg {
            ControlMessage::Market(MarketMessage::Statement(st)) if side == 0 && *on.borrow() => {
                let mut big = Statement { seq: st.seq, bytes: st.bytes * 3, ..Statement::default() };
                big.receiver_owes.add(Price(1000), big.bytes);
                big.sender_owes.add(Price(2000), big.bytes);
                ControlMessage::Market(MarketMessage::Statement(big))
            }
            other => other,
        })
    }));
    let mut sent = 0;
    for s in 0..20 {
        p.transfer(1, 2 * MB, 0);
        sent += 2 * MB;
        p.run_for(1000);
        let b = m(&p, 1);
        // What B accepted never exceeds what it sent (plus the slack), at any moment.
        assert!(b.record.ledger.outbound.bytes <= b.record.sent + crate::market::DEFAULT_OVERCLAIM_SLACK, "second {s}");
        assert!(b.record.sent <= sent + 1_000_000, "control bytes only beyond the transfers");
    }
    let b = m(&p, 1);
    assert!(b.overclaiming, "{:?}", b.enforcement_reason);
    assert!(restricted(&p, 1), "B restricts the overclaimer like a non-payer");
    assert!(b.disputed_bytes() > 30 * MB, "{}", b.disputed_bytes());
    assert_eq!(b.disputes, 1);
    // B's balance moved only by what it sent: 1000/MB net on accepted bytes, less what it paid.
    let out = b.record.ledger.outbound;
    let accepted = out.bytes as i128;
    let paid = b.record.ledger.paid.0 as i128;
    assert_eq!(out.receiver_owes.as_micros(), out.bytes as u128 * 1000, "priced on accepted bytes only");
    assert_eq!(out.sender_owes.as_micros(), out.bytes as u128 * 2000);
    assert_eq!(b.balance().0, out.receiver_owes.units as i128 - out.sender_owes.units as i128 + paid);
    // And it stopped paying once the overclaim was found: at most what the accepted bytes
    // were worth.
    assert!(paid <= accepted * 1000 / MB as i128, "paid {paid} for {accepted} bytes");
    let paid_then = paid;
    p.run_for(5000);
    assert_eq!(m(&p, 1).record.ledger.paid.0 as i128, paid_then, "no payment while it overclaims");
    // A stops inflating (its statements now add exactly what it receives): after the quiet
    // period B pays again for the accepted bytes, and the disputed bytes stay unpaid.
    *inflated.borrow_mut() = false;
    for _ in 0..45 {
        p.transfer(1, MB, 0);
        p.run_for(1000);
    }
    let b = m(&p, 1);
    assert!(!b.overclaiming);
    assert!(!restricted(&p, 1));
    assert!(b.record.ledger.paid.0 as i128 > paid_then, "paid again");
    assert!(b.record.ledger.outbound.bytes <= b.record.sent + crate::market::DEFAULT_OVERCLAIM_SLACK);
}

// ----- routing -----

/// What `side` last told routing, and how many times it told it.
fn routing_log(p: &Pair, side: usize) -> (Vec<crate::routing::RoutedNeighbor>, usize) {
    let all: Vec<_> = p
        .logged(0, |a| matches!(a, Action::SetRoutingNeighbors(_)))
        .into_iter()
        .filter(|(_, s, _)| *s == side)
        .map(|(_, _, a)| match a {
            Action::SetRoutingNeighbors(r) => r,
            _ => unreachable!(),
        })
        .collect();
    (all.last().cloned().unwrap_or_default(), all.len())
}

fn routed(p: &Pair, side: usize) -> Vec<crate::routing::RoutedNeighbor> {
    routing_log(p, side).0
}

#[test]
fn routing_uses_a_neighbor_once_connected_and_agreed_at_a_cost_from_its_price_and_drops_it_when_gone() {
    let mut p = pair(3, |_, _| {});
    p.run_for(2000);
    // Side 1 pays side 0's ask of 2000 (max 5000): 256 + 768 * 2/5 = 563.2, stepped to 512.
    let r1 = routed(&p, 1);
    assert_eq!(r1.len(), 1, "{r1:?}");
    assert_eq!(r1[0].neighbor, p.ids[0].node_id());
    assert_eq!(r1[0].peer_link_local, p.ids[0].node_id().tunnel_link_local());
    assert_eq!(r1[0].cost, crate::routing::LinkCost(512));
    assert_eq!(routed(&p, 0)[0].cost, crate::routing::LinkCost(256 + 128), "side 0 pays 1000");
    assert_eq!(p.nodes[1].routing_neighbors(), &r1[..]);
    // Emitted once, not at every sample.
    let before = routing_log(&p, 1).1;
    p.run_for(5000);
    assert_eq!(routing_log(&p, 1).1, before);
    // The session dies: no longer routed through.
    p.drop_control = true;
    p.run_for(30_000);
    assert!(routed(&p, 1).is_empty(), "{:?}", routed(&p, 1));
}

#[test]
fn a_neighbor_whose_price_we_decline_is_not_routed_through() {
    let p = pair(3, |side, c| {
        if side == 1 {
            c.market.max_price = Price(1500); // side 0 asks 2000
        }
    });
    let mut p = p;
    p.run_for(3000);
    assert!(routed(&p, 1).is_empty(), "{:?}", routed(&p, 1));
    assert_eq!(routed(&p, 0).len(), 1, "side 0 pays side 1's ask");
}
