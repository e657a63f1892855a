//! `GET /metrics`: the published status in the Prometheus text format (prometheus-client).
//!
//! Names follow Prometheus conventions: `tollway_` prefix, base units (bytes, seconds, the
//! currency's whole units), `_total` for counters; labels `neighbor` (the node id, 64 hex
//! digits) and `interface` (its tunnel). Money is exact in the daemon; here it is a float of
//! whole currency units, fine for graphs, not for accounting (use `tollway ledger`).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tollway_api::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NeighborLabels {
    neighbor: String,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    neighbor: String,
    interface: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    neighbor: String,
    interface: String,
    /// `down`: what the neighbor delivered to us; `up`: what we sent through it.
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    neighbor: String,
    interface: String,
    /// `internet`, or a mesh server's address.
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TestedLabels {
    neighbor: String,
    interface: String,
    destination: String,
    direction: String,
}

type Bytes = Family<NeighborLabels, Counter>;
type Money = Family<NeighborLabels, Counter<f64, AtomicU64>>;
type Level = Family<NeighborLabels, Gauge<f64, AtomicU64>>;
type Flag = Family<NeighborLabels, Gauge>;

fn amount(s: &str) -> f64 {
    s.trim().parse().unwrap_or(0.0)
}

/// Render `status` (taken at the daemon's last sample) as Prometheus text.
pub fn render(status: &Status, health: &crate::health::Health) -> String {
    let mut r = <Registry>::default();
    let bytes = |r: &mut Registry, name: &str, help: &str| {
        let f = Bytes::default();
        r.register(name, help, f.clone());
        f
    };
    let rx =
        bytes(&mut r, "tollway_neighbor_received_bytes", "Inner bytes received from the neighbor through its tunnel");
    let tx = bytes(&mut r, "tollway_neighbor_sent_bytes", "Inner bytes sent to the neighbor through its tunnel");
    let billed_in = bytes(&mut r, "tollway_neighbor_billed_received_bytes", "Bytes from the neighbor that we billed");
    let billed_out =
        bytes(&mut r, "tollway_neighbor_billed_sent_bytes", "Bytes to the neighbor that its statements confirmed");
    let disputed = bytes(
        &mut r,
        "tollway_neighbor_disputed_bytes",
        "Bytes the neighbor claimed beyond what we sent: never priced, never paid",
    );
    let dropped = Family::<DropLabels, Counter>::default();
    r.register(
        "tollway_neighbor_dropped_bytes",
        "Bytes from the neighbor the firewall dropped, never billed, by reason (spoofed, unsolicited)",
        dropped.clone(),
    );
    let paid = Money::default();
    r.register("tollway_neighbor_paid", "Money promised to the neighbor (currency units)", paid.clone());
    let received = Money::default();
    r.register("tollway_neighbor_received", "Money the neighbor promised us (currency units)", received.clone());
    let balance = Level::default();
    r.register(
        "tollway_neighbor_balance",
        "Net money owed, positive when the neighbor owes us (currency units)",
        balance.clone(),
    );
    let restricted = Flag::default();
    r.register(
        "tollway_neighbor_restricted",
        "1 while the neighbor is throttled or cut off for not paying or overclaiming",
        restricted.clone(),
    );
    let connected = Flag::default();
    r.register("tollway_neighbor_connected", "1 while the control session with the neighbor is up", connected.clone());
    let disputes = Family::<NeighborLabels, Counter>::default();
    r.register("tollway_neighbor_disputes", "Statements of the neighbor rejected or flagged", disputes.clone());

    let rtt = Level::default();
    r.register_with_unit(
        "tollway_neighbor_rtt",
        "Round-trip time of the control session's keepalives through the tunnel, smoothed",
        prometheus_client::registry::Unit::Seconds,
        rtt.clone(),
    );
    let rtt_min = Level::default();
    r.register_with_unit(
        "tollway_neighbor_rtt_min",
        "Least round-trip time seen through the tunnel",
        prometheus_client::registry::Unit::Seconds,
        rtt_min.clone(),
    );
    let rtt_samples = Family::<NeighborLabels, Counter>::default();
    r.register("tollway_neighbor_rtt_samples", "Round-trip time samples taken", rtt_samples.clone());
    let loss = Level::default();
    r.register(
        "tollway_neighbor_reported_loss_ratio",
        "Share of what we sent that the neighbor's statements did not confirm",
        loss.clone(),
    );

    let live = Family::<DirectionLabels, Gauge>::default();
    r.register(
        "tollway_neighbor_live_bits_per_second",
        "Live traffic across the neighbor's tunnel in the latest 10-s window without a speed test",
        live.clone(),
    );

    let tested = Family::<TestedLabels, Gauge>::default();
    r.register(
        "tollway_neighbor_tested_bits_per_second",
        "Speed-test goodput through the neighbor to each tested destination (each new test weighs one half)",
        tested.clone(),
    );
    let penalty = Family::<DestinationLabels, Gauge>::default();
    r.register(
        "tollway_neighbor_route_penalty",
        "What the neighbor's ranking adds to the metric of routes to each tested destination through it",
        penalty.clone(),
    );

    for n in &status.neighbors {
        let l = NeighborLabels { neighbor: n.id.clone(), interface: n.interface.clone() };
        for d in n.quality.iter().flat_map(|q| &q.destinations) {
            for (direction, kbit) in [("down", d.down_kbit), ("up", d.up_kbit)] {
                let t = TestedLabels {
                    neighbor: n.id.clone(),
                    interface: n.interface.clone(),
                    destination: d.destination.clone(),
                    direction: direction.into(),
                };
                tested.get_or_create(&t).set(i64::try_from(kbit.saturating_mul(1000)).unwrap_or(i64::MAX));
            }
            if let Some(p) = d.penalty {
                let dl = DestinationLabels {
                    neighbor: n.id.clone(),
                    interface: n.interface.clone(),
                    destination: d.destination.clone(),
                };
                penalty.get_or_create(&dl).set(i64::from(p));
            }
        }
        if let Some(q) = &n.quality {
            rtt.get_or_create(&l).set(q.rtt_us as f64 / 1e6);
            rtt_min.get_or_create(&l).set(q.rtt_min_us as f64 / 1e6);
            rtt_samples.get_or_create(&l).inc_by(q.rtt_samples as u64);
            for (direction, kbit) in [("down", q.live_down_kbit), ("up", q.live_up_kbit)] {
                if let Some(kbit) = kbit {
                    let dl = DirectionLabels {
                        neighbor: n.id.clone(),
                        interface: n.interface.clone(),
                        direction: direction.into(),
                    };
                    live.get_or_create(&dl).set(i64::try_from(kbit.saturating_mul(1000)).unwrap_or(i64::MAX));
                }
            }
        }
        loss.get_or_create(&l).set(n.reported_loss_ppm as f64 / 1e6);
        rx.get_or_create(&l).inc_by(n.bytes_in);
        tx.get_or_create(&l).inc_by(n.bytes_out);
        billed_in.get_or_create(&l).inc_by(n.billed_bytes_in);
        billed_out.get_or_create(&l).inc_by(n.billed_bytes_out);
        disputed.get_or_create(&l).inc_by(n.disputed_bytes);
        disputes.get_or_create(&l).inc_by(n.disputes);
        for (reason, b) in [("spoofed", n.dropped_spoofed_bytes), ("unsolicited", n.dropped_unsolicited_bytes)] {
            let d = DropLabels { neighbor: n.id.clone(), interface: n.interface.clone(), reason: reason.into() };
            dropped.get_or_create(&d).inc_by(b);
        }
        paid.get_or_create(&l).inc_by(amount(&n.paid_total));
        received.get_or_create(&l).inc_by(amount(&n.received_total));
        balance.get_or_create(&l).set(amount(&n.balance));
        restricted.get_or_create(&l).set((n.enforcement != "none") as i64);
        connected.get_or_create(&l).set((n.state == "connected") as i64);
    }

    let uptime = Gauge::<i64>::default();
    uptime.set(status.node.uptime_secs.min(i64::MAX as u64) as i64);
    r.register("tollway_uptime_seconds", "Seconds since the daemon started", uptime);
    let rejected = Counter::<u64>::default();
    rejected.inc_by(status.node.market.payments_rejected);
    r.register(
        "tollway_payments_rejected",
        "Payments rejected since start (forged, replayed, decreasing, misaddressed)",
        rejected,
    );
    let neighbors = Gauge::<i64>::default();
    neighbors.set(status.neighbors.len() as i64);
    r.register("tollway_neighbors", "Neighbors known (any state)", neighbors);
    let routes = Gauge::<i64>::default();
    routes.set(status.routes.iter().filter(|r| r.installed).count() as i64);
    r.register("tollway_routes_installed", "Mesh routes in the kernel's mesh table", routes);
    let problems = Gauge::<i64>::default();
    problems.set(status.routing.problems.len() as i64);
    r.register(
        "tollway_routing_problems",
        "Routing problems reported (address collisions, a failing router)",
        problems,
    );

    let discovery = Family::<ReasonLabels, Counter>::default();
    r.register("tollway_discovery_rejected", "Discovery messages ignored since start, by reason", discovery.clone());
    for (reason, n) in &status.discovery_rejected {
        discovery.get_or_create(&ReasonLabels { reason: reason.clone() }).inc_by(*n);
    }

    let sessions = Gauge::<i64>::default();
    sessions.set(status.neighbors.iter().filter(|n| n.session_secs.is_some()).count() as i64);
    r.register("tollway_control_sessions", "Control sessions with neighbors up now", sessions);
    health.register(&mut r);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_api::NeighborStatus;

    #[test]
    fn neighbors_appear_with_their_labels_in_base_units() {
        let mut s = Status::default();
        s.node.uptime_secs = 42;
        s.neighbors.push(NeighborStatus {
            id: "ab".repeat(32),
            interface: "tw1".into(),
            state: "connected".into(),
            bytes_in: 1000,
            bytes_out: 2000,
            billed_bytes_in: 990,
            balance: "-0.001500".into(),
            paid_total: "0.250000".into(),
            received_total: "0".into(),
            enforcement: "throttled".into(),
            dropped_spoofed_bytes: 104,
            quality: Some(tollway_api::QualityStatus {
                rtt_us: 12_500,
                rtt_samples: 9,
                live_down_kbit: Some(8_000),
                live_up_kbit: Some(250),
                destinations: vec![tollway_api::DestinationQuality {
                    destination: "internet".into(),
                    tests: 2,
                    down_kbit: 9_000,
                    up_kbit: 8_500,
                    verdict: "acceptable".into(),
                    penalty: Some(2048),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..NeighborStatus::default()
        });
        s.neighbors[0].session_secs = Some(3);
        let health = crate::health::Health::default();
        health.commit(std::time::Duration::from_micros(1500), true);
        health.commit(std::time::Duration::from_millis(30), false);
        health.session_opened();
        let text = render(&s, &health);
        let labels = format!("neighbor=\"{}\",interface=\"tw1\"", "ab".repeat(32));
        for line in [
            format!("tollway_neighbor_received_bytes_total{{{labels}}} 1000"),
            format!("tollway_neighbor_sent_bytes_total{{{labels}}} 2000"),
            format!("tollway_neighbor_billed_received_bytes_total{{{labels}}} 990"),
            format!("tollway_neighbor_balance{{{labels}}} -0.0015"),
            format!("tollway_neighbor_paid_total{{{labels}}} 0.25"),
            format!("tollway_neighbor_restricted{{{labels}}} 1"),
            format!("tollway_neighbor_connected{{{labels}}} 1"),
            format!("tollway_neighbor_dropped_bytes_total{{{labels},reason=\"spoofed\"}} 104"),
            "tollway_uptime_seconds 42".to_owned(),
            "tollway_control_sessions 1".to_owned(),
            format!("tollway_neighbor_rtt_seconds{{{labels}}} 0.0125"),
            format!("tollway_neighbor_rtt_samples_total{{{labels}}} 9"),
            format!("tollway_neighbor_live_bits_per_second{{{labels},direction=\"down\"}} 8000000"),
            format!("tollway_neighbor_live_bits_per_second{{{labels},direction=\"up\"}} 250000"),
            format!("tollway_neighbor_tested_bits_per_second{{{labels},destination=\"internet\",direction=\"down\"}} 9000000"),
            format!("tollway_neighbor_route_penalty{{{labels},destination=\"internet\"}} 2048"),
            "tollway_control_sessions_opened_total 1".to_owned(),
            "tollway_store_commit_failures_total 1".to_owned(),
            "tollway_store_commit_duration_seconds_count 2".to_owned(),
            "tollway_store_commit_duration_seconds_bucket{le=\"0.001\"} 0".to_owned(),
            "tollway_store_commit_duration_seconds_bucket{le=\"0.0025\"} 1".to_owned(),
            "tollway_store_commit_duration_seconds_bucket{le=\"+Inf\"} 2".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
