//! A flood of fake identities (valid signatures, never a tunnel) on one link: tables stay
//! bounded, connected neighbors stay connected, and a real neighbor still gets in.

mod common;

use common::*;
use std::net::Ipv6Addr;
use tollway_sim::MAX_PENDING_PER_ADDRESS;
use tollway_sim::{FloodSpec, LinkOptions, Millis, NodeIdx, Sim};

const FLOODER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xbad, 0, 0, 1);

/// Without jitter every event sits on a millisecond lattice and a periodic sender can stay
/// phase-locked with the flood forever; real links jitter.
fn jittery() -> LinkOptions {
    LinkOptions { latency: Millis(1), jitter: Millis(3), loss_ppm: 0, ..LinkOptions::default() }
}

/// Largest table of `nodes` (fake neighbors included) seen at every step while running `d`.
fn run_watching(sim: &mut Sim, d: Millis, nodes: &[NodeIdx], mut each: impl FnMut(&Sim)) -> usize {
    let mut max = 0;
    sim.run_until(
        |s| {
            max = nodes.iter().map(|n| s.neighbor_count(*n)).max().unwrap_or(0).max(max);
            each(s);
            false
        },
        d,
    );
    max
}

#[test]
fn flood_from_one_host_cannot_lock_out_a_new_neighbor() {
    let mut sim = Sim::new(20);
    let v = sim.add_node("victim", |_| {});
    let r = sim.add_node("real", |_| {});
    let link = sim.link_with(v, r, jittery());
    sim.stop(r); // joins later, into a table the flood has had time to fill
    let f = sim.add_flooder(FloodSpec {
        link,
        identities: 1000,
        per_sec: 200,
        start: Millis::ZERO,
        stop: None,
        src: FLOODER,
        forge_sources: false,
    });
    let max = run_watching(&mut sim, secs(60), &[v], |_| {});
    assert!(max <= MAX_PENDING_PER_ADDRESS, "one address held {max} entries");

    sim.start(r);
    within(&mut sim, secs(10), "new neighbor during a one-host flood", |s| s.pair_connected(v, r));
    let max = run_watching(&mut sim, secs(60), &[v, r], |s| assert!(s.pair_connected(v, r)));
    assert!(max <= MAX_PENDING_PER_ADDRESS + 1, "{max}");
    assert!(sim.flooder_sent(f) >= 200 * 119);
    let rejected = sim.node(v).reject_counts().get("too many pending from one address").copied().unwrap_or(0);
    assert!(rejected > 20_000, "{:?}", sim.node(v).reject_counts());
    // Fakes got in two at a time, were penalized, and cost only a few tunnel interfaces.
    assert!(sim.sim_node(v).tunnels_created() <= 2 * 120 / 30 + 5, "{}", sim.sim_node(v).tunnels_created());
}

#[test]
fn forged_source_flood_keeps_tables_bounded_and_the_real_neighbor_gets_in_after_it() {
    // Small limits keep the (deliberately slow) signature checks of a debug build affordable.
    let tweak = |c: &mut tollway_sim::CoreConfig| {
        c.max_neighbors = 16;
        c.max_new_neighbors_per_sec = 2;
    };
    let cfg = {
        let mut c = tollway_sim::CoreConfig::default();
        tweak(&mut c);
        c
    };
    let mut sim = Sim::new(21);
    let v = sim.add_node("victim", tweak);
    let c = sim.add_node("old-friend", tweak);
    let r = sim.add_node("newcomer", tweak);
    sim.link(v, c);
    let flooded = sim.link_with(v, r, jittery());
    sim.stop(r);
    converge(&mut sim, secs(10), "victim and its old friend");

    let (flood_start, flood_end) = (secs(10), secs(70));
    sim.add_flooder(FloodSpec {
        link: flooded,
        identities: 1000,
        per_sec: 200,
        start: flood_start,
        stop: Some(flood_end),
        src: FLOODER,
        forge_sources: true,
    });
    sim.run_until(|s| s.now() >= secs(20), secs(20));
    sim.start(r);
    let left = flood_end - sim.now();
    let max = run_watching(&mut sim, left, &[v, r], |s| {
        assert!(s.pair_connected(v, c), "a connected neighbor is never displaced");
    });
    assert!(max <= cfg.max_neighbors, "{max}");
    let created = sim.sim_node(v).tunnels_created();
    let admissions_allowed = (cfg.max_new_neighbors_per_sec as u64) * (flood_end - flood_start).as_secs() + 2 * 10;
    assert!(created <= admissions_allowed, "{created} tunnels");
    println!("victim built {created} tunnels during the flood; rejects {:?}", sim.node(v).reject_counts());

    // The newcomer may have been penalized by the victim (its tunnel could not come up while
    // its own table was full), so allow for one penalty on top of the flood.
    let took = within(&mut sim, cfg.penalty + cfg.pending_timeout + secs(10), "newcomer after the flood ends", |s| {
        s.pair_connected(v, r)
    });
    assert!(took <= cfg.penalty + cfg.pending_timeout + secs(10));
    // The fakes are all gone in time, and everything real is connected.
    within(&mut sim, cfg.pending_timeout + cfg.penalty, "fakes gone", |s| s.neighbor_count(v) == 2);
    assert!(sim.all_links_connected());
}
