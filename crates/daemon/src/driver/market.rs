//! The market's kernel and storage effects: the traffic plan (nftables counters and policing, tc
//! shaping), counter sampling, and durable writes of ledgers and history.

use super::Driver;
use tollway_core::action::{MarketEvent, PersistBatch, PriceSubject};
use tollway_core::market::{CounterBaseline, Ingress, IssuedNote, MarketRecord, ReceivedNote, TrafficPolicy};
use tollway_core::node::{CounterReading, CounterSample, Dropped, Volume};
use tollway_core::NodeId;
use tollway_store as store;
use tollway_traffic::{
    BitRate, ControlTraffic, DropCount, GroupId, IngressPolicy, NeighborKey, NeighborTraffic, ShaperGroup, TrafficPlan,
};

/// Guaranteed rate of the control class (sessions, statements, payments), bit/s.
const CONTROL_RATE: u64 = 256_000;

impl Driver {
    /// The kernel form of the core's policy.
    fn plan_for(&self, policy: &TrafficPolicy) -> TrafficPlan {
        let bits = |b: u64| BitRate(b.max(BitRate::MIN.0));
        TrafficPlan {
            control: ControlTraffic { tcp_port: self.control_port, rate: BitRate(CONTROL_RATE) },
            groups: policy
                .groups
                .iter()
                .map(|g| ShaperGroup {
                    id: GroupId(g.id),
                    capacity: bits(g.capacity_bps),
                    neighbors: g
                        .members
                        .iter()
                        .map(|m| NeighborTraffic {
                            key: NeighborKey::of(&m.neighbor),
                            tunnel: m.ifname.clone(),
                            rate: bits(m.rate_bps),
                            ceil: bits(m.ceil_bps),
                            ingress: match m.ingress {
                                Ingress::Open => IngressPolicy::Open,
                                Ingress::Police(b) => IngressPolicy::Police { bits_per_sec: bits(b) },
                                Ingress::ControlOnly => IngressPolicy::ControlOnly,
                            },
                        })
                        .collect(),
                })
                .collect(),
            admission: self.admission.clone(),
        }
    }

    /// Install the firewall without neighbors before any tunnel or session exists, so that
    /// connection tracking follows every connection from its first packet: a control session
    /// opened before it would have its replies taken for unsolicited packets (conntrack picks a
    /// running connection up as new). A table left by a previous run is kept as it is: its
    /// counters still hold bytes not yet billed, and its rules already track connections.
    pub(super) fn install_firewall(&mut self) {
        match self.k.firewall.read_counters() {
            Ok(c) if c.is_empty() => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading counters failed; the firewall is installed with the first plan");
                return;
            }
        }
        let plan = self.plan_for(&TrafficPolicy::default());
        if let Err(e) = self.k.firewall.apply(&plan) {
            tracing::warn!(error = %e, "installing the firewall failed; retrying with the first plan");
        }
    }

    pub(super) fn apply_traffic(&mut self, policy: TrafficPolicy) {
        let plan = self.plan_for(&policy);
        if let Err(e) = plan.validate() {
            tracing::error!(error = %e, "the core produced an invalid traffic plan; not applied");
            return;
        }
        self.plan = Some(plan);
        self.reconcile_traffic();
    }

    /// Make the firewall and the shaper match the last plan (a no-op when they already do).
    pub(super) fn reconcile_traffic(&mut self) {
        let Some(plan) = &self.plan else { return };
        if let Err(e) = self.k.firewall.apply(plan) {
            tracing::warn!(error = %e, "applying firewall rules failed; retrying at the next reconcile");
        }
        if let Err(e) = self.k.shaper.apply(plan) {
            tracing::warn!(error = %e, "applying shaping failed; retrying at the next reconcile");
        }
    }

    pub(super) fn reapply_shaper(&mut self) {
        if let Some(plan) = &self.plan {
            if let Err(e) = self.k.shaper.apply(plan) {
                tracing::warn!(error = %e, "applying shaping failed; retrying at the next reconcile");
            }
        }
    }

    pub(super) fn remove_traffic_rules(&mut self) {
        if let Err(e) = self.k.firewall.remove_all() {
            tracing::warn!(error = %e, "removing firewall rules failed");
        }
        if let Err(e) = self.k.shaper.remove_all() {
            tracing::warn!(error = %e, "removing shaping failed");
        }
    }

    /// Read every neighbor's receive counter and drop counters (nftables) and transmit counter
    /// (its tunnel) and hand them to the core.
    pub(super) fn sample_counters(&mut self) {
        if self.plan.is_none() {
            return;
        }
        let mut rx = match self.k.firewall.read_counters() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading counters failed");
                return;
            }
        };
        // A planned counter is missing: someone flushed our rules. Put them back now (counting
        // from zero again; the core sees a new counter) rather than at the next reconcile.
        let planned = self.plan.as_ref().map(|p| p.neighbors().map(|(_, n)| n.key.clone()).collect::<Vec<_>>());
        if planned.is_some_and(|keys| keys.iter().any(|k| !rx.contains_key(k))) {
            tracing::warn!("traffic rules were removed by someone else; re-applying them");
            self.reconcile_traffic();
            rx = self.k.firewall.read_counters().unwrap_or_default();
        }
        let links = &mut self.k.links;
        let samples: Vec<CounterSample> = self
            .node
            .neighbors()
            .map(|n| {
                let r = rx.get(&NeighborKey::of(&n.id));
                CounterSample {
                    ifname: n.ifname.clone(),
                    rx: r.map(|r| CounterReading {
                        instance: (r.handle.table << 32) | (r.handle.object & 0xffff_ffff),
                        value: r.bytes,
                    }),
                    tx: match links.stats(&n.ifname) {
                        Ok(Some(c)) => Some(CounterReading { instance: c.ifindex as u64, value: c.tx_bytes }),
                        _ => None,
                    },
                    dropped: r.map(|r| Dropped { spoofed: volume(r.spoofed), unsolicited: volume(r.unsolicited) }),
                }
            })
            .collect();
        if !samples.is_empty() {
            self.node.handle_counters(self.clock.now(), &samples);
        }
    }

    /// Commit the batch in one transaction. If the store refuses, stop: continuing would send
    /// payments or bill traffic that a restart could not account for. `execute_actions` runs
    /// nothing after this.
    pub(super) fn persist(&mut self, batch: PersistBatch) {
        if self.fatal.is_some() {
            return;
        }
        let b = to_store_batch(&batch);
        let started = std::time::Instant::now();
        let result = self.k.store.commit(&b);
        self.health.commit(started.elapsed(), result.is_ok());
        if let Err(e) = result {
            let path = self.k.store.path().to_owned();
            tracing::error!(path = %path.display(), error = %e,
                "cannot store the ledger; stopping to avoid losing or double-counting money");
            self.fatal = Some(super::Stop::StoreWrite { path, source: e });
        }
    }

    pub(super) fn restore(&mut self) -> Result<(), String> {
        let snapshot = self.k.store.load().map_err(|e| e.to_string())?;
        let n = snapshot.neighbors.len();
        let records = snapshot.neighbors.into_iter().map(|r| (r.node, from_store(r))).collect();
        self.node.restore(records);
        if n > 0 {
            tracing::info!(neighbors = n, path = %self.k.store.path().display(), "ledgers restored");
        }
        let overrides = self.k.store.settings().map_err(|e| e.to_string())?;
        if !overrides.is_empty() {
            self.overrides = overrides;
            self.apply_overrides();
            tracing::warn!(settings = %self.describe_overrides().join(", "),
                "settings changed at run time override the config file (tollway price reset to drop them)");
        }
        Ok(())
    }
}

fn volume(d: DropCount) -> Volume {
    Volume { packets: d.packets, bytes: d.bytes }
}

fn baseline(b: Option<CounterBaseline>) -> CounterBaseline {
    b.unwrap_or_default()
}

fn to_store_batch(batch: &PersistBatch) -> store::Batch {
    let now = batch.unix_ms;
    let mut b = store::Batch::new(now);
    for (id, r) in &batch.records {
        let mut rec = store::NeighborRecord::new(*id, now);
        rec.ledger = r.ledger;
        rec.rx_counter = baseline(r.rx_baseline);
        rec.tx_counter = baseline(r.tx_baseline);
        rec.sent_bytes = r.sent;
        rec.tx_peak = r.tx_peak;
        rec.claimed = r.claimed;
        rec.payment = store::PaymentState {
            channel: store::ChannelId(r.channel),
            issued: r.issued.as_ref().map(|n| store::IssuedNote {
                cumulative: n.cumulative,
                note: n.proof.clone(),
                acknowledged: n.acked,
            }),
            received: r.received.as_ref().map(|n| store::ReceivedNote {
                payer_channel: store::ChannelId(n.channel),
                cumulative: n.cumulative,
                note: n.proof.clone(),
            }),
        };
        b.upsert(rec);
    }
    for (id, u) in &batch.usage {
        b.usage(store::UsageRecord {
            at_ms: now,
            node: *id,
            bytes_in: u.bytes_in,
            bytes_out: u.bytes_out,
            earned: tollway_core::market::Amount(u.earned),
            spent: tollway_core::market::Amount(u.spent),
            disputed_bytes: u.disputed,
        });
    }
    for e in &batch.events {
        match e {
            MarketEvent::PaymentSent { neighbor, before, after, rail }
            | MarketEvent::PaymentReceived { neighbor, before, after, rail } => {
                b.payment(store::PaymentRecord {
                    at_ms: now,
                    node: *neighbor,
                    direction: if matches!(e, MarketEvent::PaymentSent { .. }) {
                        store::PaymentDirection::Sent
                    } else {
                        store::PaymentDirection::Received
                    },
                    cumulative_before: tollway_core::market::Amount(*before),
                    cumulative_after: tollway_core::market::Amount(*after),
                    rail: rail.to_string(),
                    notes: 1,
                });
            }
            MarketEvent::PriceChange { subject, old, new, by_operator } => {
                let (subject, by) = match subject {
                    PriceSubject::OurAsk => (store::PriceSubject::OurAsk, store::ChangedBy::Operator),
                    PriceSubject::OurBid(n) => (
                        store::PriceSubject::OurBid(*n),
                        if *by_operator { store::ChangedBy::Operator } else { store::ChangedBy::Automatic },
                    ),
                    PriceSubject::TheirAsk(n) => (store::PriceSubject::TheirAsk(*n), store::ChangedBy::Neighbor),
                    PriceSubject::TheirBid(n) => (store::PriceSubject::TheirBid(*n), store::ChangedBy::Neighbor),
                };
                // History rows refer to stored neighbors; skip changes about one never stored.
                if subject.node().is_some_and(|n| !batch_knows(batch, &n)) {
                    continue;
                }
                b.price_change(store::PriceChange { at_ms: now, subject, old: *old, new: *new, by, changes: 1 });
            }
        }
    }
    b
}

fn batch_knows(batch: &PersistBatch, n: &NodeId) -> bool {
    batch.records.iter().any(|(id, _)| id == n) || batch.usage.iter().any(|(id, _)| id == n)
}

fn from_store(r: store::NeighborRecord) -> MarketRecord {
    let known = |b: CounterBaseline| (b != CounterBaseline::default()).then_some(b);
    MarketRecord {
        ledger: r.ledger,
        rx_baseline: known(r.rx_counter),
        tx_baseline: known(r.tx_counter),
        channel: r.payment.channel.0,
        issued: r.payment.issued.map(|n| IssuedNote { cumulative: n.cumulative, proof: n.note, acked: n.acknowledged }),
        received: r.payment.received.map(|n| ReceivedNote {
            channel: n.payer_channel.0,
            cumulative: n.cumulative,
            proof: n.note,
        }),
        sent: r.sent_bytes,
        claimed: r.claimed,
        tx_peak: r.tx_peak,
    }
}
