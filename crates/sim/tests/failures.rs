//! Links cut and restored, nodes stopped and restarted, tunnels that fail, peers that refuse.

mod common;

use common::*;
use tollway_sim::{topology, CoreConfig, Millis, NeighborState, Sim};

fn timeouts() -> CoreConfig {
    CoreConfig::default()
}

#[test]
fn cut_link_is_forgotten_on_both_sides_and_rebuilt_when_restored() {
    let mut sim = Sim::new(10);
    let n = topology::chain(&mut sim, "c", 3, |_| {});
    let (a, b, c) = (n[0], n[1], n[2]);
    converge(&mut sim, secs(10), "chain before the cut");
    sim.run_for(secs(7)); // somewhere between two announcements
    let cfg = timeouts();

    sim.cut(a, b);
    // Kept for a while: a neighbor is only given up after `neighbor_timeout` of silence.
    let early = cfg.neighbor_timeout - cfg.announce_interval - Millis(100);
    sim.run_for(early);
    assert!(sim.neighbor_state(a, b).is_some() && sim.neighbor_state(b, a).is_some());
    let took = within(&mut sim, secs(10), "cut a-b: both sides forget each other", |s| forgotten(s, a, b));
    let since_cut = early + took;
    assert!(since_cut <= cfg.neighbor_timeout + Millis(100), "{since_cut:?}");
    // The other link never noticed.
    assert!(sim.pair_connected(b, c));
    assert_eq!(sim.sim_node(a).tunnels().count(), 0);

    sim.restore(a, b);
    let took = converge(&mut sim, secs(20), "restored a-b");
    assert!(took <= cfg.announce_interval + secs(2), "{took:?}");
    assert_neighbors_match_links(&sim);
}

#[test]
fn short_cut_recovers_the_session_without_losing_the_neighbor() {
    let mut sim = Sim::new(11);
    let n = topology::chain(&mut sim, "s", 2, |_| {});
    let (a, b) = (n[0], n[1]);
    converge(&mut sim, secs(10), "pair");
    let established = |s: &Sim| s.node(a).neighbor(&s.node_id(b)).and_then(|nb| nb.session_established_since());
    let first = established(&sim).unwrap();
    sim.cut(a, b);
    sim.run_for(secs(10));
    sim.restore(a, b);
    let restored = sim.now();
    // A keepalive sent during the cut broke the connection; once the session times out a new
    // one replaces it, over the same tunnel and without the neighbor ever being removed.
    let took = within(&mut sim, secs(60), "new session after a 10 s cut", |s| {
        s.pair_connected(a, b) && established(s).is_some_and(|t| t > restored)
    });
    assert!(took <= timeouts().session_timeout, "{took:?}");
    assert!(established(&sim).unwrap() > first);
    assert!(sim.node(a).neighbor(&sim.node_id(b)).unwrap().first_seen < secs(2), "never removed");
}

#[test]
fn stopped_node_is_forgotten_and_reconnects_when_restarted() {
    let mut sim = Sim::new(12);
    let n = topology::chain(&mut sim, "r", 3, |_| {});
    let (a, b, c) = (n[0], n[1], n[2]);
    converge(&mut sim, secs(10), "chain before the stop");
    let id_before = sim.node_id(b);
    sim.stop(b);
    let cfg = timeouts();
    let took = within(&mut sim, cfg.neighbor_timeout + secs(1), "stopped node forgotten by both neighbors", |s| {
        s.neighbor_state(a, b).is_none() && s.neighbor_state(c, b).is_none()
    });
    assert!(took >= cfg.neighbor_timeout - cfg.keepalive_interval, "{took:?}");
    assert!(sim.tunnel(a, b).is_none() && sim.tunnel(c, b).is_none());
    sim.run_for(secs(10));
    sim.start(b);
    assert_eq!(sim.node_id(b), id_before, "same identity");
    let took = converge(&mut sim, secs(20), "restarted node");
    assert!(took <= secs(2), "{took:?}");
    assert_neighbors_match_links(&sim);
}

#[test]
fn quickly_restarted_node_reconnects_before_being_forgotten() {
    let mut sim = Sim::new(13);
    let n = topology::chain(&mut sim, "q", 3, |_| {});
    let b = n[1];
    converge(&mut sim, secs(10), "chain before the restart");
    sim.stop(b);
    sim.run_for(secs(2));
    sim.start(b);
    // Its neighbors still hold its old tunnel and session; the new incarnation is admitted
    // again at once, and a session that was silently lost is replaced once it times out.
    let took = converge(&mut sim, secs(60), "node restarted after 2 s");
    assert!(took <= timeouts().session_timeout + secs(5), "{took:?}");
    assert_neighbors_match_links(&sim);
}

#[test]
fn clean_shutdown_tells_the_neighbors_at_once() {
    let mut sim = Sim::new(14);
    let n = topology::chain(&mut sim, "g", 2, |_| {});
    let (a, b) = (n[0], n[1]);
    converge(&mut sim, secs(10), "pair");
    // At once: the price negotiation that follows the session handshake is still in flight
    // towards b, and must not keep b's Close from reaching a.
    sim.shutdown(b);
    sim.run_for(Millis(50));
    let nb = sim.node(a).neighbor(&sim.node_id(b)).expect("still a neighbor until it times out").clone();
    assert_eq!(nb.state(), NeighborState::TunnelUp);
    assert!(nb.last_session_close.as_deref().is_some_and(|r| r.contains("daemon stopping")), "{nb:?}");
    within(&mut sim, timeouts().neighbor_timeout + secs(1), "shut-down node forgotten", |s| {
        s.neighbor_state(a, b).is_none()
    });
    sim.start(b);
    converge(&mut sim, secs(20), "after the shut-down node returns");
}

#[test]
fn failing_tunnels_are_penalized_then_recover_after_the_penalty() {
    let mut sim = Sim::new(15);
    let n = topology::chain(&mut sim, "f", 2, |_| {});
    let (a, b) = (n[0], n[1]);
    sim.set_tunnel_faults(b, true);
    let cfg = timeouts();
    sim.run_for(secs(1));
    assert_eq!(sim.neighbor_state(a, b), Some(NeighborState::Pending));
    assert!(sim.node(b).neighbor(&sim.node_id(a)).unwrap().last_tunnel_error.is_some());
    // b's kernel refuses to build the tunnel: a never sees a handshake, gives b up after
    // pending_timeout and ignores it for the penalty.
    within(&mut sim, cfg.pending_timeout + secs(2), "a gives up on b", |s| s.neighbor_state(a, b).is_none());
    sim.run_for(cfg.announce_interval + secs(1));
    assert!(sim.node(a).reject_counts().get("penalized").copied().unwrap_or(0) > 0);
    assert_eq!(sim.sim_node(b).tunnels().count(), 0, "b never managed to build one");
    sim.set_tunnel_faults(b, false);
    let took = converge(&mut sim, cfg.penalty + secs(20), "after the fault is fixed");
    // Not before the penalty has run out.
    assert!(took >= cfg.penalty - cfg.pending_timeout, "{took:?}");
}

#[test]
fn refused_connections_back_off_and_connect_once_accepted() {
    let mut sim = Sim::new(16);
    let n = topology::chain(&mut sim, "x", 2, |_| {});
    for m in &n {
        sim.set_accepting(*m, false);
    }
    sim.run_for(secs(60));
    for (x, y) in [(n[0], n[1]), (n[1], n[0])] {
        assert_eq!(sim.neighbor_state(x, y), Some(NeighborState::TunnelUp));
    }
    let closes: Vec<String> =
        n.iter().filter_map(|m| sim.node(*m).neighbors().next()?.last_session_close.clone()).collect();
    assert!(closes.iter().any(|r| r.contains("refused")), "{closes:?}");
    for m in &n {
        sim.set_accepting(*m, true);
    }
    let took = converge(&mut sim, secs(40), "after the listener comes back");
    assert!(took <= secs(31), "at most one full backoff: {took:?}");
}
