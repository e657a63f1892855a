//! The same seed and script give the same run, event for event.

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::net::Ipv6Addr;
use tollway_sim::{topology, FloodSpec, LinkOptions, Millis, Sim};

/// A busy script: lossy jittery links, a cut and a restore, a crash and a restart, a clean
/// shutdown, and a short flood. Returns the trace hash, its length, and a summary of the end
/// state. `short` stops after the first few seconds.
fn run(seed: u64, short: bool) -> (String, u64, Vec<String>) {
    let mut sim = Sim::new(seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (n, links) = topology::random_connected(&mut sim, "d", 6, 3, &mut rng, |_| {});
    for (i, l) in links.iter().enumerate() {
        let opts = LinkOptions {
            latency: Millis(1 + i as u64 % 5),
            jitter: Millis(3),
            loss_ppm: 30_000,
            ..LinkOptions::default()
        };
        sim.set_link_options(*l, opts);
    }
    sim.add_flooder(FloodSpec {
        link: links[0],
        identities: 20,
        per_sec: 20,
        start: secs(3),
        stop: Some(secs(8)),
        src: Ipv6Addr::new(0xfe80, 0, 0, 0, 0xbad, 0, 0, 1),
        forge_sources: true,
    });
    sim.run_for(secs(8));
    if !short {
        let l = sim.link_info(links[1]).ends.clone();
        sim.cut(l[0].node, l[1].node);
        sim.stop(n[3]);
        sim.run_for(secs(32));
        sim.restore(l[0].node, l[1].node);
        sim.start(n[3]);
        sim.shutdown(n[5]);
        sim.run_for(secs(10));
        sim.start(n[5]);
        sim.run_for(secs(8));
    }
    let summary = sim
        .nodes()
        .map(|(i, node)| {
            let core = sim.node(i);
            let states: Vec<_> = core.neighbors().map(|nb| (nb.id.short(), nb.state().as_str())).collect();
            format!("{} {:?} {:?}", node.name, states, core.reject_counts())
        })
        .collect();
    (sim.trace_hash(), sim.trace_len(), summary)
}

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let (h1, len1, end1) = run(7, false);
    let (h2, len2, end2) = run(7, false);
    assert!(len1 > 2000, "a busy run: {len1} entries");
    assert_eq!((len1, &end1), (len2, &end2));
    assert_eq!(h1, h2, "same seed, same trace");
    let (h3, _, _) = run(7, true);
    let (h4, _, _) = run(8, true);
    assert_ne!(h3, h4, "another seed takes another path");
    println!("seed 7: {len1} trace entries, hash {h1}");
}
