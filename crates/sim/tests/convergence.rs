//! Small and larger topologies reach Connected on every link, and stay there.

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tollway_sim::{topology, LinkOptions, Millis, Sim};

#[test]
fn chain_of_three_connects_every_link() {
    let mut sim = Sim::new(1);
    let n = topology::chain(&mut sim, "c", 3, |_| {});
    let took = converge(&mut sim, secs(10), "chain of 3");
    // The first announcement, a Hello each way, the first tunnel sample and three messages.
    assert!(took <= secs(2), "{took:?}");
    assert_neighbors_match_links(&sim);
    assert!(sim.neighbor_state(n[0], n[2]).is_none(), "the ends are not neighbors");
    // And it holds.
    sim.run_for(secs(30));
    assert!(sim.all_links_connected());
    assert_neighbors_match_links(&sim);
    assert_no_rejects(&sim);
}

#[test]
fn diamond_of_four_connects_every_link() {
    let mut sim = Sim::new(2);
    let n = topology::diamond(&mut sim, "d", |_| {});
    let took = converge(&mut sim, secs(10), "diamond of 4");
    assert!(took <= secs(2), "{took:?}");
    assert_neighbors_match_links(&sim);
    assert!(sim.neighbor_state(n[0], n[3]).is_none() && sim.neighbor_state(n[1], n[2]).is_none());
    sim.run_for(secs(30));
    assert!(sim.all_links_connected());
    assert_no_rejects(&sim);
}

#[test]
fn random_mesh_of_twenty_converges() {
    let mut sim = Sim::new(3);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (_, links) = topology::random_connected(&mut sim, "m", 20, 12, &mut rng, |_| {});
    assert_eq!(links.len(), 19 + 12);
    let took = converge(&mut sim, secs(20), "random mesh of 20");
    assert!(took <= secs(3), "{took:?}");
    assert_neighbors_match_links(&sim);
    sim.run_for(secs(20));
    assert!(sim.all_links_connected());
    assert_no_rejects(&sim);
    // Control traffic crossed every link, inside the tunnels, both ways.
    for (id, l) in sim.links() {
        assert!(l.flows.iter().all(|f| f.tunnel_bytes > 0 && f.discovery_packets > 0), "{id:?}: {:?}", l.flows);
    }
}

#[test]
fn lossy_slow_links_still_converge() {
    let mut sim = Sim::new(4);
    let n = topology::chain(&mut sim, "l", 3, |_| {});
    let bad = LinkOptions { latency: Millis(40), jitter: Millis(20), loss_ppm: 200_000, ..LinkOptions::default() };
    for l in sim.links().map(|(id, _)| id).collect::<Vec<_>>() {
        sim.set_link_options(l, bad);
    }
    let took = converge(&mut sim, secs(60), "chain of 3, 20% loss, 40-60 ms");
    assert!(took <= secs(30), "{took:?}");
    // Lost datagrams were really lost, and lost segments retransmitted, yet it holds.
    sim.run_for(secs(60));
    assert!(sim.all_links_connected(), "{:?}", sim.neighbor_state(n[0], n[1]));
    assert!(sim.links().all(|(_, l)| l.flows.iter().all(|f| f.dropped > 0)));
}
