//! The status the API reports, built from the core's getters.

use crate::driver::Driver;
use tollway_api::{MarketStatus, NeighborStatus, NodeStatus, RouteStatus, RoutingLink, RoutingStatus, Status};
use tollway_core::market::{BidPolicy, EnforcementPolicy, OurBid, TheirBid};

/// The reject reason under which `discovery_rejected` counts datagrams dropped because the
/// driver's discovery queue was full.
pub const DRIVER_QUEUE_FULL: &str = "driver queue full";

pub fn build(d: &Driver) -> Status {
    let node = d.node();
    let uptime = d.started.elapsed();
    let now_ms = d.now().mono;
    let id = node.node_id();
    let c = d.currency();
    let m = node.market_config();
    Status {
        node: NodeStatus {
            id: id.to_string(),
            mesh_ip: id.mesh_ip().to_string(),
            wg_public_key: node.identity().wg_public().to_hex(),
            tunnel_backend: d.tunnel_backend().to_string(),
            interfaces: node.config().interfaces.iter().map(|i| i.to_string()).collect(),
            uptime_secs: uptime.as_secs(),
            market: MarketStatus {
                currency: c.name.clone(),
                ask: c.format(m.ask.0),
                max_price: c.format(m.max_price.0),
                bid_policy: match m.bid_policy {
                    BidPolicy::PayAsk => "ask".into(),
                    BidPolicy::Fixed(p) => c.format(p.0),
                },
                pay_threshold: c.format(m.pay_threshold.0),
                credit_limit: c.format(m.credit_limit.0),
                floor_rate_kbit: m.floor_bps / 1000,
                enforcement_policy: match m.enforcement {
                    EnforcementPolicy::Throttle => "throttle".into(),
                    EnforcementPolicy::CutOff => "cut_off".into(),
                },
                payments_paused: m.payments_paused,
                payments_rejected: node.payments_rejected(),
                overrides: d.describe_overrides(),
            },
        },
        neighbors: node
            .neighbors()
            .map(|n| {
                let mk = &n.market;
                let l = &mk.record.ledger;
                let negotiation = match (&mk.our_bid, &mk.their_bid) {
                    (_, TheirBid::Declined(r)) => format!("it declined our ask: {r}"),
                    (OurBid::Declined(r), _) => format!("we declined its ask: {r}"),
                    (_, TheirBid::Unanswered { .. }) => "waiting for its answer to our ask".into(),
                    (OurBid::NoAsk, _) => "waiting for its ask".into(),
                    _ if mk.awaiting_answer_since.is_some() => "waiting for its answer to our new ask".into(),
                    _ => "agreed".into(),
                };
                NeighborStatus {
                    id: n.id.to_string(),
                    mesh_ip: n.id.mesh_ip().to_string(),
                    interface: n.ifname.to_string(),
                    state: n.state().as_str().to_string(),
                    tunnel_up: n.tunnel_up(),
                    last_handshake_secs: n.tunnel.last_handshake_secs,
                    bytes_in: n.tunnel.rx_bytes,
                    bytes_out: n.tunnel.tx_bytes,
                    underlay: format!("{}%{}", n.underlay_addr, n.underlay),
                    listen_port: n.listen_port,
                    peer_port: n.peer_port,
                    last_heard_secs: now_ms.since(n.last_heard).as_secs(),
                    session_secs: n.session_established_since().map(|s| now_ms.since(s).as_secs()),
                    last_error: n.last_tunnel_error.clone().or_else(|| n.last_session_close.clone()),
                    ask: mk.their_ask.map(|(_, p)| c.format(p.0)),
                    bid: match mk.our_bid {
                        OurBid::Bid(p) => Some(c.format(p.0)),
                        _ => None,
                    },
                    their_bid: match mk.their_bid {
                        TheirBid::Accepted(p) => Some(c.format(p.0)),
                        _ => None,
                    },
                    negotiation,
                    balance: c.format_signed(mk.balance().0),
                    paid_total: c.format(l.paid.0),
                    received_total: c.format(l.received.0),
                    enforcement: mk.enforcement.as_str().into(),
                    enforcement_reason: mk.enforcement_reason.clone(),
                    billed_bytes_in: l.inbound.bytes,
                    billed_bytes_out: l.outbound.bytes,
                    unconfirmed_bytes: mk.unconfirmed_tx(),
                    reported_loss_ppm: mk.reported_loss_ppm(),
                    disputes: mk.disputes,
                    last_dispute: mk.last_dispute.clone(),
                    disputed_bytes: mk.disputed_bytes(),
                    quality: (n.passive.rtt_samples > 0
                        || n.passive.live_windows > 0
                        || n.tests.tests + n.tests.failures > 0
                        || n.tests.no_route)
                        .then(|| {
                            let mut q = quality(
                                n,
                                mk.reported_loss_ppm(),
                                now_ms,
                                node.config().quality.goals.min_samples,
                                node.live_check(),
                            );
                            let routed = node.routing_neighbors().iter().find(|r| r.neighbor == n.id);
                            q.destinations = destinations(n, routed, now_ms, &|number| d.destination_label(number));
                            q
                        }),
                    dropped_spoofed_packets: n.dropped.spoofed.packets,
                    dropped_spoofed_bytes: n.dropped.spoofed.bytes,
                    dropped_unsolicited_packets: n.dropped.unsolicited.packets,
                    dropped_unsolicited_bytes: n.dropped.unsolicited.bytes,
                }
            })
            .collect(),
        discovery_rejected: {
            let mut r: std::collections::BTreeMap<String, u64> =
                node.reject_counts().iter().map(|(k, v)| (k.to_string(), *v)).collect();
            // Dropped before the core saw them: the driver's queue was full.
            let dropped = d.discovery_dropped();
            if dropped > 0 {
                r.insert(DRIVER_QUEUE_FULL.into(), dropped);
            }
            r
        },
        routing: Default::default(),
        routes: Vec::new(),
        test_bytes_last_hour: node.test_budget(now_ms).0,
        test_budget_per_hour: node.config().quality.budget_bytes_per_hour,
        tests_upload_only: node.config().quality.testing && node.config().quality.goals.upload_only,
        test_bytes_total: node.test_budget(now_ms).1,
    }
}

/// A neighbor's quality: passive figures, its tests, and the verdict.
fn quality(
    n: &tollway_core::Neighbor,
    loss_ppm: u64,
    now: tollway_core::Millis,
    min_tests: u32,
    check: Option<tollway_core::node::LiveCheck>,
) -> tollway_api::QualityStatus {
    use tollway_core::quality::Verdict;
    let t = &n.tests;
    let live_note = if let Some(c) = check.filter(|c| c.incumbent == n.id || c.challenger == n.id) {
        Some(if c.incumbent == n.id {
            format!(
                "live check under way: its steady {} ({} kbit/s) is moved to {} for a few windows",
                c.direction.as_str(),
                c.carried_kbit,
                c.challenger.short()
            )
        } else {
            format!("live check under way: carrying {}'s traffic for a few windows", c.incumbent.short())
        })
    } else {
        t.live_cap.map(|c| {
            format!(
                "tests capped: it carried {} kbit/s of {} where the same traffic reached {} kbit/s through another neighbor",
                c.kbit,
                c.direction.as_str(),
                c.elsewhere_kbit
            )
        })
    };
    let tested = t.quality.samples > 0;
    let (verdict, score, reason) = match (t.withdrawn_since, t.verdict) {
        (Some(_), _) => ("withdrawn", None, t.withdrawn_reason().map(str::to_owned)),
        (None, _) if t.no_route => ("not_tested", None, t.last_error.clone()),
        (None, Verdict::Acceptable { value }) => ("acceptable", Some(value), live_note),
        (None, Verdict::Below(s)) => ("below", None, Some(s.to_string())),
        (None, Verdict::Unknown) => {
            let why = match &t.last_error {
                Some(e) => e.clone(),
                None if t.quality.samples < min_tests => {
                    format!("{} of the {min_tests} tests needed before it is judged", t.quality.samples)
                }
                None => "its tests are too old".to_owned(),
            };
            ("unknown", None, Some(why))
        }
    };
    tollway_api::QualityStatus {
        rtt_us: n.passive.rtt_us,
        rtt_min_us: n.passive.rtt_min_us,
        rtt_last_us: n.passive.rtt_last_us,
        rtt_samples: n.passive.rtt_samples,
        measured_secs_ago: n.passive.last.map_or(0, |l| now.since(l).as_secs()),
        loss_ppm,
        tests: t.tests,
        test_failures: t.failures,
        tested_secs_ago: t.quality.last.map(|l| now.since(l).as_secs()),
        down_kbit: tested.then_some(t.quality.down_kbit),
        up_kbit: tested.then_some(t.quality.up_kbit),
        test_rtt_us: tested.then_some(t.quality.rtt_us),
        test_loss_ppm: tested.then_some(t.quality.loss_ppm),
        test_bytes: t.bytes,
        verdict: verdict.into(),
        score,
        reason,
        live_down_kbit: n.passive.live.map(|r| r.down_kbit),
        live_up_kbit: n.passive.live.map(|r| r.up_kbit),
        live_peak_down_kbit: n.passive.live_peak.map(|r| r.down_kbit),
        live_peak_up_kbit: n.passive.live_peak.map(|r| r.up_kbit),
        destinations: Vec::new(), // filled in by the caller
    }
}

/// A neighbor's tests against each destination apart, with what routing adds for each.
fn destinations(
    n: &tollway_core::Neighbor,
    routed: Option<&tollway_core::RoutedNeighbor>,
    now: tollway_core::Millis,
    label: &dyn Fn(u8) -> String,
) -> Vec<tollway_api::DestinationQuality> {
    use tollway_core::quality::Verdict;
    n.tests
        .destinations
        .iter()
        .map(|(number, t)| {
            let (verdict, score) = match t.verdict {
                Verdict::Unknown => ("unknown", None),
                Verdict::Acceptable { value } => ("acceptable", Some(value)),
                Verdict::Below(_) => ("below", None),
            };
            tollway_api::DestinationQuality {
                destination: label(*number),
                tests: t.quality.samples,
                tested_secs_ago: t.quality.last.map(|l| now.since(l).as_secs()),
                down_kbit: t.quality.down_kbit,
                up_kbit: t.quality.up_kbit,
                rtt_us: t.quality.rtt_us,
                loss_ppm: t.quality.loss_ppm,
                verdict: verdict.into(),
                score,
                penalty: routed.map(|r| r.penalty.of(*number)),
            }
        })
        .collect()
}

/// The status with routing too (reading the router's routes: babeld's `dump`).
pub fn build_full(d: &mut Driver) -> Status {
    let mut s = build(d);
    let (routing, routes) = routing(d);
    s.routing = routing;
    s.routes = routes;
    s
}

/// How the node routes, and every route its router knows.
pub fn routing(d: &mut Driver) -> (RoutingStatus, Vec<RouteStatus>) {
    let links: Vec<RoutingLink> = d
        .node()
        .routing_neighbors()
        .iter()
        .map(|r| RoutingLink {
            neighbor: r.neighbor.to_string(),
            interface: r.ifname.to_string(),
            cost: r.cost.get(),
            penalty: r.penalty.global,
            destination_penalties: r.penalty.destinations.iter().map(|(n, p)| (d.destination_label(*n), *p)).collect(),
        })
        .collect();
    let by_ifname: std::collections::HashMap<String, String> =
        d.node().neighbors().map(|n| (n.ifname.to_string(), n.id.to_string())).collect();
    let (uplink_ipv4, uplink_ipv6) = d.uplink_defaults();
    let Some(m) = d.mesh_settings().cloned() else {
        return (RoutingStatus { kind: "none".into(), links, ..Default::default() }, Vec::new());
    };
    let (entries, problems) = d.routing_view();
    let routes = entries
        .into_iter()
        .map(|e| RouteStatus {
            prefix: e.prefix.to_string(),
            via: e.ifname.as_ref().and_then(|i| by_ifname.get(i.as_str()).cloned()),
            interface: e.ifname.map(|i| i.to_string()),
            next_hop: e.next_hop.map(|h| h.to_string()),
            metric: e.metric,
            refmetric: e.refmetric,
            installed: e.installed,
            router_id: e.router_id,
            source: e.source.as_str().into(),
        })
        .collect();
    let status = RoutingStatus {
        kind: m.kind.as_str().into(),
        table: m.table,
        mesh_ipv4: m.mesh_ipv4.to_string(),
        uplink: m.uplink.as_ref().map(|u| u.ifname.to_string()),
        uplink_ipv4,
        uplink_ipv6,
        lan: m.lan.as_ref().map(|l| l.ifname.to_string()),
        lan_prefixes: m
            .lan
            .as_ref()
            .map(|l| std::iter::once(l.ipv6.to_string()).chain(l.ipv4.map(|p| p.to_string())).collect())
            .unwrap_or_default(),
        links,
        problems,
    };
    (status, routes)
}
