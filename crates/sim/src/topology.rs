//! Ready-made topologies. Each adds its nodes (named by `prefix` and a number) and links with
//! default options, and returns the nodes in order.

use crate::{CoreConfig, LinkId, NodeIdx, Sim};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeSet;

fn add_nodes(sim: &mut Sim, prefix: &str, n: usize, tweak: &impl Fn(&mut CoreConfig)) -> Vec<NodeIdx> {
    (0..n).map(|i| sim.add_node(&format!("{prefix}{i}"), tweak)).collect()
}

/// `n` nodes in a line: 0–1–2–…
pub fn chain(sim: &mut Sim, prefix: &str, n: usize, tweak: impl Fn(&mut CoreConfig)) -> Vec<NodeIdx> {
    let nodes = add_nodes(sim, prefix, n, &tweak);
    for w in nodes.windows(2) {
        sim.link(w[0], w[1]);
    }
    nodes
}

/// Four nodes: 0 joined to 1 and 2, both joined to 3.
pub fn diamond(sim: &mut Sim, prefix: &str, tweak: impl Fn(&mut CoreConfig)) -> Vec<NodeIdx> {
    let nodes = add_nodes(sim, prefix, 4, &tweak);
    for (a, b) in [(0, 1), (0, 2), (1, 3), (2, 3)] {
        sim.link(nodes[a], nodes[b]);
    }
    nodes
}

/// A random connected graph: a random spanning tree (each node joins a random earlier one, in
/// a shuffled order) plus `extra` distinct random edges. No node gets more links than its
/// interfaces allow. Deterministic for a given `rng` state.
pub fn random_connected(
    sim: &mut Sim,
    prefix: &str,
    n: usize,
    extra: usize,
    rng: &mut impl Rng,
    tweak: impl Fn(&mut CoreConfig),
) -> (Vec<NodeIdx>, Vec<LinkId>) {
    let nodes = add_nodes(sim, prefix, n, &tweak);
    let max_degree = sim.ifaces_per_node;
    let mut order = nodes.clone();
    order.shuffle(rng);
    let mut edges = BTreeSet::new();
    let mut degree = vec![0usize; sim.nodes().count()];
    for i in 1..order.len() {
        let candidates: Vec<NodeIdx> = order[..i].iter().copied().filter(|m| degree[m.0] < max_degree).collect();
        let peer = *candidates.choose(rng).expect("a tree always has a node with a free interface");
        edges.insert((peer.min(order[i]), peer.max(order[i])));
        degree[peer.0] += 1;
        degree[order[i].0] += 1;
    }
    let mut attempts = 0;
    while edges.len() < n - 1 + extra && attempts < 100 * (extra + 1) {
        attempts += 1;
        let (a, b) = (nodes[rng.gen_range(0..n)], nodes[rng.gen_range(0..n)]);
        if a == b || degree[a.0] >= max_degree || degree[b.0] >= max_degree || !edges.insert((a.min(b), a.max(b))) {
            continue;
        }
        degree[a.0] += 1;
        degree[b.0] += 1;
    }
    let links = edges.into_iter().map(|(a, b)| sim.link(a, b)).collect();
    (nodes, links)
}
