//! Helpers shared by the simulator tests.
#![allow(dead_code)]

use tollway_sim::{Millis, NodeIdx, Sim};

pub fn secs(s: u64) -> Millis {
    Millis::from_secs(s)
}

/// Run until every up link between running nodes is Connected at both ends; returns how long it
/// took, failing the test if it takes longer than `max`.
pub fn converge(sim: &mut Sim, max: Millis, what: &str) -> Millis {
    let took = sim.run_until(|s| s.all_links_connected(), max);
    let took = took.unwrap_or_else(|| panic!("{what}: not converged within {} s", max.as_secs()));
    println!("{what}: converged in {} ms (simulated)", took.0);
    took
}

/// Run until `pred` holds, failing the test after `max`; returns how long it took.
pub fn within(sim: &mut Sim, max: Millis, what: &str, pred: impl FnMut(&Sim) -> bool) -> Millis {
    let took = sim.run_until(pred, max).unwrap_or_else(|| panic!("{what}: not within {} s", max.as_secs()));
    println!("{what}: {} ms (simulated)", took.0);
    took
}

/// Neither node has the other as a neighbor, nor a tunnel for it.
pub fn forgotten(sim: &Sim, a: NodeIdx, b: NodeIdx) -> bool {
    sim.neighbor_state(a, b).is_none()
        && sim.neighbor_state(b, a).is_none()
        && sim.tunnel(a, b).is_none()
        && sim.tunnel(b, a).is_none()
}

/// Every node's simulated neighbors are exactly the nodes it shares an up link with.
pub fn assert_neighbors_match_links(sim: &Sim) {
    for (n, _) in sim.nodes().filter(|(_, node)| node.is_running()) {
        let want: std::collections::BTreeSet<NodeIdx> = sim
            .links()
            .filter(|(_, l)| l.up && l.ends.iter().any(|e| e.node == n))
            .flat_map(|(_, l)| l.ends.iter().map(|e| e.node))
            .filter(|m| *m != n && sim.try_node(*m).is_some())
            .collect();
        assert_eq!(sim.neighbors_of(n), want, "neighbors of {}", sim.name(n));
        assert_eq!(sim.sim_node(n).tunnels().count(), want.len(), "tunnels of {}", sim.name(n));
    }
}

/// Nothing was rejected anywhere: in a network of honest nodes every message is accepted.
pub fn assert_no_rejects(sim: &Sim) {
    for (n, node) in sim.nodes().filter(|(_, node)| node.is_running()) {
        assert!(sim.node(n).reject_counts().is_empty(), "{} rejected {:?}", node.name, sim.node(n).reject_counts());
    }
}
