//! Neighbors leaving: silence, tunnels that never come up (and the penalty), floods of new
//! identities, tunnel errors and shutdown.

use super::pair::Pair;
use super::*;

fn ifname(us: &Identity, them: &Identity) -> IfName {
    IfName::for_tunnel(&us.node_id(), &them.node_id())
}

#[test]
fn silent_neighbor_is_removed_after_neighbor_timeout_and_its_slot_freed() {
    let (us, them, next) = (identity(1), identity(2), identity(3));
    let cfg = config();
    let timeout = cfg.neighbor_timeout.0;
    let mut n = started(&us, cfg.clone());
    hear_hello(&mut n, at(1000), &them, 52000);
    n.handle_tunnel_stats(at(1500), &ifname(&us, &them), fresh_handshake());
    drain(&mut n);
    assert_ne!(n.neighbor(&them.node_id()).unwrap().state(), NeighborState::Pending);

    let acts = run_timers(&mut n, 1500, 1000 + timeout - 1);
    assert!(acts.iter().all(|(_, a)| !matches!(a, Action::RemoveTunnel { .. })), "{acts:?}");
    assert!(n.neighbor(&them.node_id()).is_some());

    let acts = run_timers(&mut n, 1000 + timeout - 1, 1000 + timeout);
    let gone: Vec<_> = acts.iter().filter(|(_, a)| matches!(a, Action::RemoveTunnel { .. })).collect();
    assert_eq!(gone.len(), 1, "{acts:?}");
    assert_eq!(gone[0].0, 1000 + timeout, "removed exactly when the timeout expires");
    assert_eq!(removed(std::slice::from_ref(&gone[0].1)), vec![them.node_id()]);
    assert!(n.neighbor(&them.node_id()).is_none());

    // The slot (and so the listen port) is free for the next neighbor, and silence is not
    // penalized: the same node is welcome back.
    let t = 1000 + timeout + 1;
    let acts = hear_announce(&mut n, at(t), &next);
    assert_eq!(ensured(&acts)[0].listen_port, cfg.tunnel_port_base);
    hear_announce(&mut n, at(t), &them);
    assert!(n.neighbor(&them.node_id()).is_some());
    assert_eq!(rejects(&n, "penalized"), 0);
}

#[test]
fn neighbor_whose_tunnel_never_comes_up_is_removed_and_penalized() {
    let (us, them) = (identity(1), identity(2));
    let cfg = CoreConfig { neighbor_timeout: Millis::from_secs(300), ..config() };
    let (pending, penalty) = (cfg.pending_timeout.0, cfg.penalty.0);
    let mut n = started(&us, cfg);
    // It keeps announcing (so it is not silent) but its tunnel never handshakes.
    let mut t = 1000;
    while t < 1000 + pending {
        assert!(run_timers(&mut n, t.saturating_sub(5000), t)
            .iter()
            .all(|(_, a)| removed(std::slice::from_ref(a)).is_empty()));
        hear_announce(&mut n, at(t), &them);
        assert_eq!(n.neighbor(&them.node_id()).map(|n| n.state()), Some(NeighborState::Pending));
        t += 5000;
    }
    let acts = run_timers(&mut n, t - 5000, 1000 + pending);
    assert_eq!(removed(&acts.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>()), vec![them.node_id()]);
    assert_eq!(acts.iter().find(|(_, a)| matches!(a, Action::RemoveTunnel { .. })).unwrap().0, 1000 + pending);
    assert!(n.neighbor(&them.node_id()).is_none());

    // Ignored for the penalty ...
    let until = 1000 + pending + penalty;
    for t in [1000 + pending + 1, until - 1] {
        run_timers(&mut n, t - 1, t);
        let acts = hear_announce(&mut n, at(t), &them);
        assert!(acts.is_empty(), "{acts:?}");
        assert!(n.neighbor(&them.node_id()).is_none());
    }
    assert_eq!(rejects(&n, "penalized"), 2);
    // ... and welcome again after it.
    run_timers(&mut n, until - 1, until);
    let acts = hear_announce(&mut n, at(until), &them);
    assert_eq!(ensured(&acts).len(), 1);
    assert!(n.neighbor(&them.node_id()).is_some());
    assert_eq!(rejects(&n, "penalized"), 2);
}

/// A neighbor whose tunnel was up and then stops handshaking gets `pending_timeout` from the
/// moment it went down to recover, not an instant penalty for having been discovered long ago.
#[test]
fn tunnel_that_goes_down_gets_the_pending_timeout_again() {
    let (us, them) = (identity(1), identity(2));
    let cfg = config();
    let pending = cfg.pending_timeout.0;
    let mut n = started(&us, cfg);
    let ifname = ifname(&us, &them);
    hear_hello(&mut n, at(1000), &them, 52000);
    n.handle_tunnel_stats(at(2000), &ifname, fresh_handshake());
    // Up for ten minutes, hearing the neighbor all along.
    let mut t = 2000;
    while t < 600_000 {
        run_timers(&mut n, t - 1, t);
        hear_announce(&mut n, at(t), &them);
        t += 5000;
    }
    assert!(n.neighbor(&them.node_id()).is_some());
    let down_at = t;
    let stale = TunnelStats { last_handshake_secs: Some(HANDSHAKE_FRESH_SECS), ..TunnelStats::default() };
    n.handle_tunnel_stats(at(down_at), &ifname, stale);
    assert_eq!(n.neighbor(&them.node_id()).unwrap().state(), NeighborState::Pending);
    while t < down_at + pending {
        let acts: Vec<Action> = run_timers(&mut n, t - 1, t).into_iter().map(|(_, a)| a).collect();
        assert!(removed(&acts).is_empty(), "removed {} ms after the tunnel went down", t - down_at);
        hear_announce(&mut n, at(t), &them);
        t += 5000;
    }
    let acts: Vec<Action> = run_timers(&mut n, t - 5000, down_at + pending).into_iter().map(|(_, a)| a).collect();
    assert_eq!(removed(&acts), vec![them.node_id()], "still down after pending_timeout: removed");
}

#[test]
fn flood_of_new_identities_is_bounded_and_rate_limited() {
    let us = identity(1);
    let cfg = CoreConfig { max_neighbors: 16, max_new_neighbors_per_sec: 10, ..config() };
    let (max, per_sec, pending) = (cfg.max_neighbors, cfg.max_new_neighbors_per_sec as usize, cfg.pending_timeout.0);
    let mut n = started(&us, cfg);
    let flood: Vec<Identity> = (0..1000).map(|i| identity(1000 + i)).collect();

    // 1,000 distinct valid identities, one every 10 ms, for 10 s (all within pending_timeout),
    // each from its own (forged) source address so that only the global limits apply.
    let mut admitted_at = Vec::new();
    let mut ensures = 0;
    for (i, id) in flood.iter().enumerate() {
        let t = 1000 + 10 * i as u64;
        let before = n.neighbors().count();
        let acts = hear_announce_from(&mut n, at(t), id, forged_addr(i));
        ensures += ensured(&acts).len();
        if n.neighbors().count() > before {
            admitted_at.push(t);
        }
        assert!(n.neighbors().count() <= max, "table exceeded its cap at {t} ms");
    }
    assert_eq!(n.neighbors().count(), max, "the table fills up");
    assert_eq!(ensures, max, "one tunnel per admitted neighbor, no more");
    // Admissions respect the rate: a burst of `per_sec`, then `per_sec` per second.
    for (i, t) in admitted_at.iter().enumerate() {
        let allowed = per_sec + ((t - 1000) as usize * per_sec).div_ceil(1000);
        assert!(i < allowed, "admission {i} at {t} ms exceeds the rate limit");
    }
    assert!(rejects(&n, "rate limited") > 0);
    assert!(rejects(&n, "neighbor table full") > 0);
    assert_eq!(total_rejects(&n) + max as u64, 1000, "{:?}", n.reject_counts());

    // Their tunnels never come up: all removed and penalized after pending_timeout (although
    // each was heard only once, so it is also silent by then), and a second round of the flood
    // cannot bring the penalized ones back.
    let last_admission = *admitted_at.last().unwrap();
    run_timers(&mut n, 11_000, last_admission + pending);
    assert_eq!(n.neighbors().count(), 0);
    let t0 = last_admission + pending + 1;
    let mut ensures = 0;
    for (i, id) in flood.iter().enumerate() {
        let t = t0 + 10 * i as u64;
        ensures += ensured(&hear_announce_from(&mut n, at(t), id, forged_addr(i))).len();
        assert!(n.neighbors().count() <= max);
    }
    assert_eq!(rejects(&n, "penalized"), max as u64);
    assert!(ensures <= max);
    assert!(n.neighbors().count() <= max);
}

fn forged_addr(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 1, i as u16)
}

fn hear_announce_from(n: &mut Node, now: Now, id: &Identity, src: Ipv6Addr) -> Vec<Action> {
    n.handle_discovery(now, &eth0(), src, &announce(id, now.unix_ms));
    drain(n)
}

#[test]
fn one_address_cannot_hold_more_than_a_few_pending_neighbors() {
    let us = identity(1);
    let mut n = started(&us, config());
    let flood: Vec<Identity> = (0..50).map(|i| identity(1000 + i)).collect();
    for id in &flood {
        hear_announce(&mut n, at(1000), id);
    }
    let cap = MAX_PENDING_PER_ADDRESS;
    assert_eq!(n.neighbors().count(), cap);
    assert_eq!(rejects(&n, "too many pending from one address"), (flood.len() - cap) as u64);
    assert_eq!(rejects(&n, "rate limited"), 0, "refused before spending the budgets");
    // Other addresses are not affected ...
    let real = identity(2);
    hear_announce_from(&mut n, at(1000), &real, forged_addr(7));
    assert!(n.neighbor(&real.node_id()).is_some());
    // ... and once a neighbor from that address has its tunnel up, it no longer counts.
    let first = n.neighbors().find(|nb| nb.underlay_addr == PEER_LL).unwrap().ifname.clone();
    n.handle_tunnel_stats(at(1100), &first, fresh_handshake());
    hear_announce(&mut n, at(1200), &flood[cap + 1]);
    assert!(n.neighbor(&flood[cap + 1].node_id()).is_some());
    assert_eq!(n.neighbors().count(), cap + 2);
}

#[test]
fn forged_flood_is_limited_before_paying_for_signature_checks() {
    let us = identity(1);
    let cfg = CoreConfig { max_new_neighbors_per_sec: 10, ..config() };
    let budget = 10 * cfg.max_new_neighbors_per_sec as u64;
    let mut n = started(&us, cfg);
    let mallory = identity(3);
    let forged = |i: u32, unix_ms| {
        let claimed = identity(1000 + i);
        let msg = Discovery::Announce(Announce { node: claimed.node_id(), wg_key: claimed.wg_public(), unix_ms });
        msg.encode_signed(&mallory)
    };
    let msgs: Vec<Vec<u8>> = (0..1000).map(|i| forged(i, UNIX0 + 1000)).collect();
    for m in &msgs {
        n.handle_discovery(at(1000), &eth0(), PEER_LL, m);
    }
    assert_eq!(rejects(&n, "bad signature"), budget, "only a bounded number of signatures is checked");
    assert_eq!(rejects(&n, "rate limited"), 1000 - budget);
    // The budget refills with time.
    for m in &msgs[..200] {
        n.handle_discovery(at(2000), &eth0(), PEER_LL, m);
    }
    assert_eq!(rejects(&n, "bad signature"), 2 * budget);
    assert_eq!(n.neighbors().count(), 0);
    assert!(drain(&mut n).is_empty());
}

#[test]
fn failed_tunnel_is_retried_after_a_pause() {
    let (us, them) = (identity(1), identity(2));
    let mut n = started(&us, config());
    let first = ensured(&hear_hello(&mut n, at(1000), &them, 52000))[0].clone();
    n.handle_tunnel_error(at(1100), &first.ifname, "netlink said no");
    assert_eq!(n.neighbor(&them.node_id()).unwrap().last_tunnel_error.as_deref(), Some("netlink said no"));
    // Not re-requested before the pause is over, even when the neighbor speaks up ...
    assert!(ensured(&hear_announce(&mut n, at(3000), &them)).is_empty());
    let acts: Vec<Action> = run_timers(&mut n, 3000, 1100 + TUNNEL_RETRY.0 - 1).into_iter().map(|(_, a)| a).collect();
    assert!(ensured(&acts).is_empty());
    // ... then requested again, unchanged.
    let acts: Vec<Action> =
        run_timers(&mut n, 1100 + TUNNEL_RETRY.0 - 1, 1100 + TUNNEL_RETRY.0).into_iter().map(|(_, a)| a).collect();
    assert_eq!(ensured(&acts), vec![&first]);
}

#[test]
fn shutdown_removes_every_tunnel_and_session() {
    let mut p = Pair::new();
    p.run_until(5000);
    assert!(p.both_connected());
    let third = identity(3);
    hear_announce(&mut p.nodes[0], p.now, &third);
    assert_eq!(p.nodes[0].neighbors().count(), 2);

    p.nodes[0].shutdown();
    let acts = drain(&mut p.nodes[0]);
    let mut gone = removed(&acts);
    gone.sort();
    let mut want = vec![p.ids[1].node_id(), third.node_id()];
    want.sort();
    assert_eq!(gone, want);
    let closes: Vec<_> = acts.iter().filter(|a| matches!(a, Action::CloseControl { .. })).collect();
    assert_eq!(closes.len(), 1, "the one session is closed");
    assert!(acts.iter().any(|a| matches!(a, Action::SendControl { msg: ControlMessage::Close { .. }, .. })));
    assert_eq!(p.nodes[0].neighbors().count(), 0);
    assert!(p.nodes[0].slots.iter().all(Option::is_none));
}
