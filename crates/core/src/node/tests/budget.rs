//! Signature checks under budgets: floods claiming known neighbors' ids, from anywhere, cost a
//! bounded number of Ed25519 verifications, and real neighbors stay.

use super::pair::Pair;
use super::*;

/// An Announce claiming to be `claimed` (with its WireGuard key), signed by someone else. Its
/// timestamp may lie in the future (within the clock skew allowed): one forgery, never
/// accepted, stays newer than every real message, so the tests send the same bytes again and
/// again instead of paying for a signature each.
fn forged(claimed: &Identity, unix_ms: u64) -> Vec<u8> {
    let mallory = identity(666);
    Discovery::Announce(Announce { node: claimed.node_id(), wg_key: claimed.wg_public(), unix_ms })
        .encode_signed(&mallory)
}

fn addr(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 2, i)
}

#[test]
fn a_token_bucket_refills_exactly_however_small_the_steps() {
    // 6 per 5 s, asked every millisecond for 10 s: the 6 saved up, then exactly 12 more.
    let mut b = TokenBucket::new(6, Millis(5000), Millis(0));
    let taken = (0..=10_000).filter(|ms| b.take(Millis(*ms))).count();
    assert_eq!(taken, 6 + 12);
    // Nothing saved beyond the capacity, however long it waits.
    let mut b = TokenBucket::per_second(3, Millis(0));
    let taken = (0..10).filter(|_| b.take(Millis(60_000))).count();
    assert_eq!(taken, 3);
    // A clock that goes backwards refills nothing.
    let mut b = TokenBucket::per_second(1, Millis(5000));
    assert!(b.take(Millis(5000)));
    assert!(!b.take(Millis(1000)));
    assert!(!b.take(Millis(5500)));
    assert!(b.take(Millis(6000)));
}

#[test]
fn forgeries_of_a_known_id_from_its_own_address_cost_a_bounded_number_of_checks() {
    let (us, them) = (identity(1), identity(2));
    let cfg = config();
    let interval = cfg.announce_interval.0;
    let mut n = started(&us, cfg);
    hear_announce(&mut n, at(1000), &them);
    // 10,000 forged Announces over 10 s, one a millisecond.
    let fake = forged(&them, UNIX0 + 100_000);
    for t in 1001..=11_000 {
        n.handle_discovery(at(t), &eth0(), PEER_LL, &fake);
    }
    // The budget saved up, then its refill over 10 s (less the part of a token lost while the
    // bucket was full at the start).
    let checked = rejects(&n, "bad signature");
    let per_interval = NEIGHBOR_VERIFY_PER_INTERVAL as u64;
    let bound = per_interval + 10_000 * per_interval / interval;
    assert!((bound - 1..=bound).contains(&checked), "{checked} checks, bound {bound}: {:?}", n.reject_counts());
    assert_eq!(rejects(&n, "rate limited (one neighbor's id)"), 10_000 - checked);
    let nb = n.neighbor(&them.node_id()).unwrap();
    assert_eq!((nb.last_heard, nb.wg_key), (Millis(1000), them.wg_public()), "the forgeries changed nothing");
    // Replays of its real Announce are refused before any budget.
    let before = rejects(&n, "rate limited (one neighbor's id)");
    for t in 11_001..=12_000 {
        n.handle_discovery(at(t), &eth0(), PEER_LL, &announce(&them, UNIX0 + 1000));
    }
    assert_eq!(rejects(&n, "replayed"), 1000);
    assert_eq!(rejects(&n, "rate limited (one neighbor's id)"), before);
}

#[test]
fn forgeries_of_a_known_id_from_another_address_cost_no_check_and_the_real_one_is_still_heard() {
    let (us, them) = (identity(1), identity(2));
    let mut n = started(&us, config());
    hear_hello(&mut n, at(1000), &them, 52000);
    let ifname = IfName::for_tunnel(&us.node_id(), &them.node_id());
    // For 60 s (twice the neighbor timeout): ten forgeries every 10 ms from another address,
    // the real Announce every 5 s, the tunnel up.
    let fake = forged(&them, UNIX0 + 100_000);
    let mut t = 1000;
    while t < 61_000 {
        t += 10;
        for _ in 0..10 {
            n.handle_discovery(at(t), &eth0(), addr(9), &fake);
        }
        if t % 5000 == 0 {
            n.handle_discovery(at(t), &eth0(), PEER_LL, &announce(&them, UNIX0 + t));
            n.handle_tunnel_stats(at(t), &ifname, fresh_handshake());
        }
        if n.poll_timeout().is_some_and(|d| d.0 <= t) {
            n.handle_timeout(at(t));
        }
        drain(&mut n);
        let nb = n.neighbor(&them.node_id()).unwrap_or_else(|| panic!("neighbor removed at {t} ms"));
        assert!(t.saturating_sub(nb.last_heard.0) <= 5000, "real Announces accepted (at {t} ms)");
    }
    assert_eq!(rejects(&n, "heard elsewhere"), 60_000);
    assert_eq!(rejects(&n, "bad signature"), 0, "no forgery was worth a signature check");
    assert_eq!(n.neighbor(&them.node_id()).unwrap().underlay_addr, PEER_LL);
}

#[test]
fn forging_every_known_id_at_once_is_bounded_by_the_shared_budget() {
    let us = identity(1);
    let cfg = CoreConfig { max_neighbors: 8, ..config() };
    let (interval, slots) = (cfg.announce_interval.0, cfg.max_neighbors as u64);
    let mut n = started(&us, cfg);
    let known: Vec<Identity> = (0..8).map(|i| identity(100 + i)).collect();
    for (i, id) in known.iter().enumerate() {
        n.handle_discovery(at(1000), &eth0(), addr(i as u16), &announce(id, UNIX0 + 1000));
    }
    drain(&mut n);
    assert_eq!(n.neighbors().count(), 8);
    // Every id, from its own address, once a millisecond, for 10 s.
    let fakes: Vec<Vec<u8>> = known.iter().map(|id| forged(id, UNIX0 + 100_000)).collect();
    for t in 1001..=11_000 {
        for (i, fake) in fakes.iter().enumerate() {
            n.handle_discovery(at(t), &eth0(), addr(i as u16), fake);
        }
    }
    let shared = KNOWN_VERIFY_SHARE as u64 * slots;
    let checked = rejects(&n, "bad signature");
    assert!(checked <= shared + 10_000 * shared / interval, "{checked} checks: {:?}", n.reject_counts());
    assert!(rejects(&n, "rate limited (all neighbors' ids)") > 0);
    assert_eq!(
        checked + rejects(&n, "rate limited (one neighbor's id)") + rejects(&n, "rate limited (all neighbors' ids)"),
        80_000
    );
}

#[test]
fn a_connected_neighbor_flooded_from_its_own_address_stays_connected() {
    // Forgeries of side 0's id, from side 0's own address, at side 1: they spend side 0's
    // budget at side 1, so its real discovery messages are refused too, but the session keeps
    // it alive.
    let mut p = Pair::new();
    p.connect(20_000);
    let victim = p.ids[0].clone();
    let side0_addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);
    let start = p.now.mono.0;
    let interval = p.configs[1].announce_interval.0;
    let neighbor_timeout = p.configs[1].neighbor_timeout.0;
    let end = start + 3 * neighbor_timeout;
    let fake = forged(&victim, p.now.unix_ms + 200_000);
    while p.now.mono.0 < end {
        let now = p.now;
        for _ in 0..20 {
            p.nodes[1].handle_discovery(now, &eth0(), side0_addr, &fake);
        }
        p.run_for(10);
        assert!(p.both_connected(), "still connected at {} ms", p.now.mono.0);
    }
    let checked = rejects(&p.nodes[1], "bad signature");
    let bound = NEIGHBOR_VERIFY_PER_INTERVAL as u64 * (1 + (end - start) / interval);
    assert!(checked <= bound, "{checked} checks (bound {bound}): {:?}", p.nodes[1].reject_counts());
}
