//! The market inside the node: counters in, statements, bids and payments over each control
//! session, enforcement decisions and the traffic policy out, and every change persisted.

use super::neighbor::Neighbor;
use super::Node;
use crate::action::{Action, MarketEvent, PersistBatch, PriceSubject, SessionId};
use crate::ids::{IfName, NodeId};
use crate::market::policy::{plan, ShareInput};
use crate::market::{
    BidPolicy, Enforcement, LogLine, MarketConfig, MarketRecord, NeighborMarket, OurBid, OverclaimChange, PaymentRail,
    Price, ReceivedNote, TheirBid, TrafficPolicy,
};
use crate::time::{Millis, Now};
use crate::wire::control::ControlMessage;
use crate::wire::market::MarketMessage;
use rand_core::RngCore;
use std::collections::BTreeMap;

/// An unacknowledged payment is sent again this often.
const NOTE_RESEND: Millis = Millis(10_000);

/// A reading of one kernel counter: the counter's identity (nftables handle, interface index)
/// and its value. A changed identity or a smaller value is a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterReading {
    pub instance: u64,
    pub value: u64,
}

/// The byte counters of one tunnel at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSample {
    pub ifname: IfName,
    /// Bytes accepted from the neighbor (nftables counter, after policing).
    pub rx: Option<CounterReading>,
    /// Bytes sent to the neighbor (the tunnel interface's transmit counter).
    pub tx: Option<CounterReading>,
    /// What the firewall dropped from the neighbor (not billed), if it was read.
    pub dropped: Option<super::Dropped>,
}

pub(super) struct MarketState {
    /// Our ask's version: increases with every change, echoed by the neighbors' bids.
    ask_seq: u64,
    rail: Box<dyn PaymentRail>,
    /// Stored records of neighbors not currently in the table.
    saved: BTreeMap<NodeId, MarketRecord>,
    last_policy: Option<TrafficPolicy>,
    events: Vec<MarketEvent>,
    /// Records of removed neighbors still to be written.
    removed: Vec<(NodeId, MarketRecord)>,
    pub(super) payments_rejected: u64,
}

impl MarketState {
    pub(super) fn new(rail: Box<dyn PaymentRail>) -> MarketState {
        MarketState {
            ask_seq: 1,
            rail,
            saved: BTreeMap::new(),
            last_policy: None,
            events: Vec::new(),
            removed: Vec::new(),
            payments_rejected: 0,
        }
    }
}

impl Node {
    // ----- commands and getters -----

    pub fn market_config(&self) -> &MarketConfig {
        &self.config.market
    }

    /// Payments rejected since start (forged, replayed, decreasing, wrongly addressed...).
    pub fn payments_rejected(&self) -> u64 {
        self.market.payments_rejected
    }

    /// Records from the store, to be used when these neighbors are (re)discovered.
    pub fn restore(&mut self, records: Vec<(NodeId, MarketRecord)>) {
        for (id, r) in records {
            match self.neighbors.get_mut(&id) {
                Some(n) => n.market.record = r,
                None => {
                    self.market.saved.insert(id, r);
                }
            }
        }
    }

    /// Replace the payment rail (the default is signed promissory notes).
    pub fn set_payment_rail(&mut self, rail: Box<dyn PaymentRail>) {
        self.market.rail = rail;
    }

    /// Change our ask; neighbors are told at once.
    pub fn set_ask(&mut self, now: Now, ask: Price) {
        let old = self.config.market.ask;
        if old == ask {
            return;
        }
        self.config.market.ask = ask;
        self.market.ask_seq += 1;
        tracing::info!(old = old.0, new = ask.0, seq = self.market.ask_seq, "our ask changed");
        self.market.events.push(MarketEvent::PriceChange {
            subject: PriceSubject::OurAsk,
            old: Some(old),
            new: ask,
            by_operator: true,
        });
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in ids {
            if let Some(session) = self.established_session(&id) {
                self.send_ask(now, &id, session);
            }
        }
        self.market_tick(now);
    }

    /// Change how we bid; every neighbor's ask is answered again at once.
    pub fn set_bidding(&mut self, now: Now, max_price: Price, policy: BidPolicy) {
        self.config.market.max_price = max_price;
        self.config.market.bid_policy = policy;
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in ids {
            let ask = self.neighbors[&id].market.their_ask;
            if let (Some((seq, price)), Some(session)) = (ask, self.established_session(&id)) {
                self.answer_ask(now, &id, session, seq, price, true);
            }
        }
        self.market_tick(now);
    }

    pub fn set_payments_paused(&mut self, now: Now, paused: bool) {
        if self.config.market.payments_paused != paused {
            tracing::warn!(paused, "outgoing payments {}", if paused { "paused" } else { "resumed" });
        }
        self.config.market.payments_paused = paused;
        self.market_tick(now);
    }

    pub fn set_enforcement_settings(&mut self, now: Now, f: impl FnOnce(&mut MarketConfig)) {
        f(&mut self.config.market);
        self.market_tick(now);
    }

    // ----- inputs -----

    /// The driver's reading of every tunnel's byte counters (once per sample interval).
    pub fn handle_counters(&mut self, now: Now, samples: &[CounterSample]) {
        self.last_now = now;
        let grace = self.config.market.negotiation_grace;
        for s in samples {
            let Some(id) = self.neighbor_by_ifname(&s.ifname).map(|n| n.id) else { continue };
            let testing = self.test_running_through(&id);
            let n = self.neighbors.get_mut(&id).expect("exists");
            let (mut rx_bytes, mut tx_bytes) = (0, 0);
            n.dropped = s.dropped.unwrap_or(n.dropped);
            let m = &mut n.market;
            match m.junk.observe(now.mono, n.dropped.unsolicited.bytes, &self.config.market.junk) {
                Some(crate::market::JunkChange::Cut(why)) => {
                    tracing::warn!(neighbor = %id.short(), reason = %why, "neighbor cut off for junk")
                }
                Some(crate::market::JunkChange::Lifted) => {
                    tracing::info!(neighbor = %id.short(), "junk cut-off over: accepting its traffic again")
                }
                None => {}
            }
            // Bytes received before the prices are known stay in the kernel's counter (the
            // baseline does not move) and are priced once they are.
            if let Some(rx) = s.rx.filter(|_| m.prices_known(now.mono, grace)) {
                let base = m.record.rx_baseline.unwrap_or_default();
                let (delta, next) = base.advance(rx.instance, rx.value);
                if m.record.rx_baseline.is_some() && (rx.instance != base.instance || rx.value < base.value) {
                    tracing::info!(neighbor = %id.short(), counted = rx.value, "receive counter was reset (re-created); counting it from zero");
                }
                if m.record.rx_baseline != Some(next) {
                    m.record.rx_baseline = Some(next);
                    m.dirty = true;
                }
                m.count_rx(delta);
                rx_bytes = delta;
            }
            if let Some(tx) = s.tx {
                let base = m.record.tx_baseline;
                let (delta, next) = base.unwrap_or_default().advance(tx.instance, tx.value);
                // A re-created tunnel starts a new counter: what the old one counted after our
                // last sample was never seen, and the neighbor may claim it.
                if base.is_some_and(|b| b.instance != tx.instance || tx.value < b.value) {
                    m.grant_tx_allowance();
                }
                if m.record.tx_baseline != Some(next) {
                    m.record.tx_baseline = Some(next);
                    m.dirty = true;
                }
                m.count_tx(delta);
                tx_bytes = delta;
            }
            n.passive.record_traffic(now.mono, rx_bytes, tx_bytes, testing);
        }
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in &ids {
            self.judge_deferred_statement(now, id);
            let m = &mut self.neighbors.get_mut(id).expect("exists").market;
            match m.after_sample(now.mono) {
                Some(OverclaimChange::Started { disputed }) => {
                    if let Some(unlogged) = m.logs.admit(now.mono, LogLine::Dispute) {
                        tracing::warn!(neighbor = %id.short(), disputed_bytes = disputed, not_logged = unlogged,
                            "neighbor overclaims: its statements claim bytes we never sent; the excess is not paid, and it is restricted and not paid until its claims stop growing");
                    }
                }
                Some(OverclaimChange::Grew { disputed, by }) => {
                    if let Some(unlogged) = m.logs.admit(now.mono, LogLine::Dispute) {
                        tracing::warn!(neighbor = %id.short(), disputed_bytes = disputed, more = by, not_logged = unlogged, "neighbor keeps overclaiming");
                    }
                }
                Some(OverclaimChange::Ended { disputed }) => {
                    tracing::info!(neighbor = %id.short(), disputed_bytes = disputed,
                        "neighbor's statements are back within what we send; the disputed bytes stay unpaid");
                }
                None => {}
            }
        }
        // Statements first, stored before they go out (a restart must never send the neighbor
        // a different statement under a number it already holds); payments after them, on the
        // same ordered session: a payee must see the bytes a payment covers before the payment,
        // or it would believe it owes the difference and pay it back.
        self.persist(now);
        for id in &ids {
            if let Some(session) = self.established_session(id) {
                self.send_statement(id, session, false);
            }
        }
        self.market_tick(now);
    }

    // ----- the control session -----

    pub(super) fn market_session_up(&mut self, now: Now, id: &NodeId, session: SessionId) {
        let n = self.neighbors.get_mut(id).expect("exists");
        n.market.known = true;
        n.market.dirty = true;
        n.market.negotiation_started(now.mono);
        if matches!(n.market.their_bid, TheirBid::Unanswered { .. }) {
            n.market.their_bid = TheirBid::Unanswered { since: now.mono };
        }
        self.send_ask(now, id, session);
        self.send_statement(id, session, true);
        let n = self.neighbors.get_mut(id).expect("exists");
        if let Some(note) = n.market.record.issued.as_ref().filter(|n| !n.acked) {
            let msg = MarketMessage::Payment { rail: self.market.rail.id(), proof: note.proof.clone() };
            n.market.note_sent_at = Some(now.mono);
            self.send_market(session, msg);
        }
    }

    pub(super) fn on_market_message(
        &mut self,
        now: Now,
        id: &NodeId,
        session: SessionId,
        msg: MarketMessage,
    ) -> Result<(), String> {
        match msg {
            MarketMessage::Ask { seq, price } => {
                let m = &mut self.neighbors.get_mut(id).expect("exists").market;
                let old = m.their_ask.map(|(_, p)| p);
                if old != Some(price) {
                    if let Some(unlogged) = m.logs.admit(now.mono, LogLine::TheirAsk) {
                        tracing::info!(neighbor = %id.short(), ask = price.0, not_logged = unlogged, "neighbor's ask");
                    }
                    self.market.events.push(MarketEvent::PriceChange {
                        subject: PriceSubject::TheirAsk(*id),
                        old,
                        new: price,
                        by_operator: false,
                    });
                }
                self.neighbors.get_mut(id).expect("exists").market.their_ask = Some((seq, price));
                self.answer_ask(now, id, session, seq, price, false);
            }
            MarketMessage::Bid { ask_seq, price } => {
                if ask_seq != self.market.ask_seq {
                    tracing::debug!(neighbor = %id.short(), ask_seq, "bid for an earlier ask: not an agreement");
                    // But it priced what it received at it until our new ask reached it.
                    self.neighbors.get_mut(id).expect("exists").market.note_stale_bid(now.mono, price);
                    return Ok(());
                }
                let ask = self.config.market.ask;
                let m = &mut self.neighbors.get_mut(id).expect("exists").market;
                m.awaiting_answer_since = None;
                if price < ask {
                    if let Some(unlogged) = m.logs.admit(now.mono, LogLine::BidBelowAsk) {
                        tracing::warn!(neighbor = %id.short(), bid = price.0, ask = ask.0, not_logged = unlogged, "bid below our ask: treated as declined");
                    }
                    m.set_their_bid(now.mono, TheirBid::Declined(format!("bid {} below our ask {}", price.0, ask.0)));
                } else if m.their_bid != TheirBid::Accepted(price) {
                    let old = match m.their_bid {
                        TheirBid::Accepted(p) => Some(p),
                        _ => None,
                    };
                    if let Some(unlogged) = m.logs.admit(now.mono, LogLine::TheirBid) {
                        tracing::info!(neighbor = %id.short(), bid = price.0, not_logged = unlogged, "neighbor accepted our ask");
                    }
                    m.set_their_bid(now.mono, TheirBid::Accepted(price));
                    self.market.events.push(MarketEvent::PriceChange {
                        subject: PriceSubject::TheirBid(*id),
                        old,
                        new: price,
                        by_operator: false,
                    });
                }
                self.judge_deferred_statement(now, id);
                self.market_tick(now);
            }
            MarketMessage::Decline { ask_seq, reason } => {
                if ask_seq == self.market.ask_seq {
                    let m = &mut self.neighbors.get_mut(id).expect("exists").market;
                    if let Some(unlogged) = m.logs.admit(now.mono, LogLine::Declined) {
                        tracing::warn!(neighbor = %id.short(), %reason, not_logged = unlogged, "neighbor declined our ask");
                    }
                    m.awaiting_answer_since = None;
                    m.set_their_bid(now.mono, TheirBid::Declined(reason));
                    self.judge_deferred_statement(now, id);
                    self.market_tick(now);
                }
            }
            MarketMessage::Statement(st) => {
                let m = &mut self.neighbors.get_mut(id).expect("exists").market;
                m.defer_statement(st);
                self.judge_deferred_statement(now, id);
            }
            MarketMessage::Payment { rail, proof } => self.on_payment(now, id, session, rail, &proof),
            MarketMessage::PaymentAck { rail, cumulative } => {
                let m = &mut self.neighbors.get_mut(id).expect("exists").market;
                if let Some(note) = m.record.issued.as_mut() {
                    if rail == self.market.rail.id() && note.cumulative == cumulative && !note.acked {
                        note.acked = true;
                        m.dirty = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Apply the neighbor's latest statement, once the prices to check it against are known.
    fn judge_deferred_statement(&mut self, now: Now, id: &NodeId) {
        let grace = self.config.market.negotiation_grace;
        let m = &mut self.neighbors.get_mut(id).expect("exists").market;
        if !m.prices_known(now.mono, grace) {
            return;
        }
        let Some(st) = m.take_deferred() else { return };
        if let Err(why) = m.accept_statement(now.mono, &st) {
            m.disputes += 1;
            if let Some(unlogged) = m.logs.admit(now.mono, LogLine::StatementRejected) {
                tracing::warn!(neighbor = %id.short(), reason = %why, not_logged = unlogged, "statement rejected");
            }
            m.last_dispute = Some(why);
        }
    }

    fn on_payment(&mut self, now: Now, id: &NodeId, session: SessionId, rail: u8, proof: &[u8]) {
        let reject = |node: &mut Node, why: String| {
            node.market.payments_rejected += 1;
            let logs = &mut node.neighbors.get_mut(id).expect("exists").market.logs;
            if let Some(unlogged) = logs.admit(now.mono, LogLine::PaymentRejected) {
                tracing::warn!(neighbor = %id.short(), reason = %why, not_logged = unlogged, "payment rejected");
            }
        };
        if rail != self.market.rail.id() {
            return reject(self, format!("rail {rail} is not ours ({})", self.market.rail.name()));
        }
        let proven = match self.market.rail.verify(id, proof) {
            Ok(p) => p,
            Err(e) => return reject(self, e.to_string()),
        };
        let rail_name = self.market.rail.name();
        let m = &mut self.neighbors.get_mut(id).expect("exists").market;
        let held = m.record.received.as_ref().map(|r| (r.channel, r.cumulative));
        match held {
            Some((channel, _)) if channel != proven.channel => {
                return reject(self, format!("unknown channel {}", hex::encode(proven.channel)));
            }
            Some((_, held)) if proven.cumulative < held => {
                return reject(
                    self,
                    format!("decreasing: {} is below the {} it already promised", proven.cumulative.0, held.0),
                );
            }
            Some((_, held)) if proven.cumulative == held => {
                reject(self, format!("replayed: it already promised {}", held.0));
                // Still acknowledge: the payer may not have seen our first acknowledgement.
                let msg = MarketMessage::PaymentAck { rail, cumulative: held };
                return self.send_market(session, msg);
            }
            _ => {}
        }
        let before = m.record.ledger.received;
        m.record.ledger.received = proven.cumulative;
        m.record.received =
            Some(ReceivedNote { channel: proven.channel, cumulative: proven.cumulative, proof: proof.to_vec() });
        m.dirty = true;
        if let Some(unlogged) = m.logs.admit(now.mono, LogLine::PaymentReceived) {
            tracing::info!(neighbor = %id.short(), amount = proven.cumulative.0 - before.0, total = proven.cumulative.0, not_logged = unlogged, "payment received");
        }
        self.market.events.push(MarketEvent::PaymentReceived {
            neighbor: *id,
            before: before.0,
            after: proven.cumulative.0,
            rail: rail_name,
        });
        // Stored before it is acknowledged.
        self.persist(now);
        self.send_market(session, MarketMessage::PaymentAck { rail, cumulative: proven.cumulative });
        self.market_tick(now);
    }

    pub(super) fn answer_ask(
        &mut self,
        now: Now,
        id: &NodeId,
        session: SessionId,
        seq: u64,
        price: Price,
        by_operator: bool,
    ) {
        let decision = match self.quality_decline(id) {
            Some(reason) => Err(reason),
            None => self.config.market.decide_bid(price),
        };
        let m = &mut self.neighbors.get_mut(id).expect("exists").market;
        let old = match m.our_bid {
            OurBid::Bid(p) => Some(p),
            _ => None,
        };
        let msg = match decision {
            Ok(bid) => {
                if m.our_bid != OurBid::Bid(bid) {
                    // The operator's own changes are always logged; the neighbor's ask may
                    // change far more often.
                    let logged = if by_operator { Some(0) } else { m.logs.admit(now.mono, LogLine::OurBid) };
                    if let Some(unlogged) = logged {
                        tracing::info!(neighbor = %id.short(), ask = price.0, bid = bid.0, not_logged = unlogged, "bidding for neighbor's service");
                    }
                    self.market.events.push(MarketEvent::PriceChange {
                        subject: PriceSubject::OurBid(*id),
                        old,
                        new: bid,
                        by_operator,
                    });
                }
                m.set_our_bid(now.mono, OurBid::Bid(bid));
                MarketMessage::Bid { ask_seq: seq, price: bid }
            }
            Err(reason) => {
                if !matches!(m.our_bid, OurBid::Declined(_)) {
                    tracing::warn!(neighbor = %id.short(), ask = price.0, %reason, "declining neighbor's ask");
                }
                m.set_our_bid(now.mono, OurBid::Declined(reason.clone()));
                MarketMessage::Decline { ask_seq: seq, reason }
            }
        };
        self.send_market(session, msg);
        self.judge_deferred_statement(now, id);
    }

    fn send_ask(&mut self, now: Now, id: &NodeId, session: SessionId) {
        let m = &mut self.neighbors.get_mut(id).expect("exists").market;
        if !matches!(m.their_bid, TheirBid::Unanswered { .. }) {
            m.awaiting_answer_since = Some(now.mono);
        }
        let msg = MarketMessage::Ask { seq: self.market.ask_seq, price: self.config.market.ask };
        self.send_market(session, msg);
    }

    fn send_statement(&mut self, id: &NodeId, session: SessionId, always: bool) {
        let m = &mut self.neighbors.get_mut(id).expect("exists").market;
        let st = m.record.ledger.inbound;
        if st.seq > m.statement_sent_seq || (always && st.seq > 0) {
            m.statement_sent_seq = st.seq;
            self.send_market(session, MarketMessage::Statement(st));
        }
    }

    fn send_market(&mut self, session: SessionId, msg: MarketMessage) {
        self.actions.push_back(Action::SendControl { session, msg: ControlMessage::Market(msg) });
    }

    pub(super) fn established_session(&self, id: &NodeId) -> Option<SessionId> {
        let n = self.neighbors.get(id)?;
        n.session_established_since().and(n.session.id())
    }

    // ----- the periodic decisions -----

    /// Pay what is due, decide enforcement, update the traffic policy, and store what changed.
    fn market_tick(&mut self, now: Now) {
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in &ids {
            self.pay_if_due(now, id);
            let n = self.neighbors.get_mut(id).expect("exists");
            let (e, why) = n.market.decide_enforcement(now.mono, &self.config.market);
            if e != n.market.enforcement {
                match e {
                    Enforcement::None => {
                        tracing::info!(neighbor = %id.short(), was = n.market.enforcement.as_str(), "restriction lifted")
                    }
                    _ => {
                        tracing::warn!(neighbor = %id.short(), enforcement = e.as_str(), reason = why.as_deref().unwrap_or(""), "neighbor restricted")
                    }
                }
                n.market.enforcement = e;
            }
            n.market.enforcement_reason = why;
        }
        self.update_traffic_policy();
        self.update_routing();
        self.persist(now);
    }

    fn pay_if_due(&mut self, now: Now, id: &NodeId) {
        let Some(session) = self.established_session(id) else { return };
        let cfg = &self.config.market;
        let n = self.neighbors.get_mut(id).expect("exists");
        let m = &mut n.market;
        if let Some(cumulative) = m.payment_due(cfg) {
            let before = m.record.ledger.paid;
            let proof = self.market.rail.pay(id, &m.record.channel, cumulative);
            m.issue(cumulative, proof.clone());
            m.note_sent_at = Some(now.mono);
            if let Some(unlogged) = m.logs.admit(now.mono, LogLine::Paying) {
                tracing::info!(neighbor = %id.short(), amount = cumulative.0 - before.0, total = cumulative.0, not_logged = unlogged, "paying");
            }
            self.market.events.push(MarketEvent::PaymentSent {
                neighbor: *id,
                before: before.0,
                after: cumulative.0,
                rail: self.market.rail.name(),
            });
            // Stored before it is sent: a crash after this point re-sends the same note, and a
            // cumulative note can never pay twice.
            self.persist(now);
            self.send_market(session, MarketMessage::Payment { rail: self.market.rail.id(), proof });
        } else if let Some(note) = m.record.issued.as_ref().filter(|n| !n.acked) {
            if m.note_sent_at.is_none_or(|t| now.mono.since(t) >= NOTE_RESEND) {
                m.note_sent_at = Some(now.mono);
                let msg = MarketMessage::Payment { rail: self.market.rail.id(), proof: note.proof.clone() };
                self.send_market(session, msg);
            }
        }
    }

    fn update_traffic_policy(&mut self) {
        let inputs: Vec<ShareInput> = self
            .neighbors
            .values()
            .filter(|n| n.tunnel_seen_up)
            .map(|n| ShareInput {
                neighbor: n.id,
                ifname: n.ifname.clone(),
                group: self.config.market.group_of(&n.underlay),
                weight: n.market.their_price().0,
                enforcement: n.market.enforcement,
            })
            .collect();
        let policy = plan(self.config.market.floor_bps, &inputs);
        if self.market.last_policy.as_ref() != Some(&policy) {
            self.market.last_policy = Some(policy.clone());
            self.actions.push_back(Action::ApplyTraffic(policy));
        }
    }

    /// Emit one Persist with every changed record and the history since the last one.
    pub(super) fn persist(&mut self, now: Now) {
        let mut batch = PersistBatch { unix_ms: now.unix_ms, ..Default::default() };
        batch.records.append(&mut self.market.removed);
        for n in self.neighbors.values_mut() {
            if n.market.known && n.market.dirty {
                batch.records.push((n.id, n.market.record.clone()));
                n.market.dirty = false;
            }
            if n.market.known && !n.market.usage.is_zero() {
                batch.usage.push((n.id, n.market.usage));
            }
            n.market.usage = Default::default();
        }
        batch.events.append(&mut self.market.events);
        if !batch.is_empty() {
            self.actions.push_back(Action::Persist(batch));
        }
    }

    // ----- neighbor life cycle -----

    /// The market state for a neighbor being admitted: its stored record if it has one.
    pub(super) fn market_for(&mut self, now: Millis, id: &NodeId) -> NeighborMarket {
        match self.market.saved.remove(id) {
            Some(record) => {
                let mut m = NeighborMarket::new(now, record);
                m.known = true;
                // Met again (after our restart, or after it was gone): our counter may have
                // missed what was sent just before.
                m.grant_tx_allowance();
                m.set_overclaim_slack(self.config.market.overclaim_slack_bytes);
                m
            }
            None => {
                let mut channel = [0u8; 16];
                self.rng.fill_bytes(&mut channel);
                let mut m = NeighborMarket::new(now, MarketRecord::new(channel));
                m.set_overclaim_slack(self.config.market.overclaim_slack_bytes);
                m
            }
        }
    }

    pub(super) fn market_neighbor_removed(&mut self, n: Neighbor) {
        if n.market.known {
            if n.market.dirty {
                self.market.removed.push((n.id, n.market.record.clone()));
            }
            let b = n.market.balance();
            if b.0 != 0 {
                tracing::info!(neighbor = %n.id.short(), balance = b.0, "neighbor gone with an open balance; kept for its return");
            }
            self.market.saved.insert(n.id, n.market.record);
        }
        self.update_traffic_policy();
    }
}
