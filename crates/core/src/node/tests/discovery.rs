//! Admission, Hellos, tunnel specs, and every reason a discovery datagram is ignored.

use super::*;
use crate::action::Endpoint;

fn us_and_them() -> (Identity, Identity) {
    (identity(1), identity(2))
}

#[test]
fn announce_from_new_node_admits_it_pending_with_a_tunnel_and_a_hello() {
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    let acts = hear_announce(&mut n, at(1000), &them);

    let nb = n.neighbor(&them.node_id()).expect("admitted");
    assert_eq!(nb.state(), NeighborState::Pending);
    assert_eq!((nb.underlay.clone(), nb.underlay_addr, nb.peer_port), (eth0(), PEER_LL, None));

    let specs = ensured(&acts);
    assert_eq!(specs.len(), 1, "{acts:?}");
    let spec = specs[0];
    assert_eq!(spec.endpoint, None, "no endpoint before the neighbor's Hello");
    assert_eq!(spec.neighbor, them.node_id());
    assert_eq!(spec.peer_key, them.wg_public());
    assert_eq!(spec.ifname, IfName::for_tunnel(&us.node_id(), &them.node_id()));
    assert_eq!(spec.listen_port, config().tunnel_port_base);
    assert_eq!(spec.local_link_local, us.node_id().tunnel_link_local());
    assert_eq!(spec.peer_link_local, them.node_id().tunnel_link_local());

    let hellos = hellos_sent(&acts);
    assert_eq!(hellos.len(), 1, "{acts:?}");
    let (dst, h) = &hellos[0];
    assert_eq!(*dst, PEER_LL, "the Hello goes back to where the Announce came from");
    assert_eq!((h.node, h.to, h.listen_port), (us.node_id(), them.node_id(), spec.listen_port));
    assert_eq!(h.unix_ms, at(1000).unix_ms);
    assert_eq!(total_rejects(&n), 0);
}

#[test]
fn hello_with_port_gives_the_tunnel_an_endpoint_once() {
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    hear_announce(&mut n, at(1000), &them);

    let acts = hear_hello(&mut n, at(1100), &them, 52000);
    let specs = ensured(&acts);
    assert_eq!(specs.len(), 1, "{acts:?}");
    assert_eq!(specs[0].endpoint, Some(Endpoint { addr: PEER_LL, port: 52000, via: eth0() }));
    assert_eq!(hellos_sent(&acts).len(), 1, "news of its port is answered with ours");

    // Nothing changed: no tunnel request, no Hello ping-pong.
    let acts = hear_hello(&mut n, at(1200), &them, 52000);
    assert!(ensured(&acts).is_empty() && hellos_sent(&acts).is_empty(), "{acts:?}");
    // An Announce is answered with a Hello, but the tunnel is already as it should be.
    let acts = hear_announce(&mut n, at(1300), &them);
    assert!(ensured(&acts).is_empty(), "{acts:?}");
    assert_eq!(hellos_sent(&acts).len(), 1);

    // A new port (the neighbor rebuilt its tunnel) updates the endpoint.
    let acts = hear_hello(&mut n, at(1400), &them, 52001);
    assert_eq!(ensured(&acts).len(), 1);
    assert_eq!(ensured(&acts)[0].endpoint.as_ref().map(|e| e.port), Some(52001));
    assert_eq!(total_rejects(&n), 0);
}

#[test]
fn hello_from_unknown_node_admits_it_with_an_endpoint() {
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    let acts = hear_hello(&mut n, at(1000), &them, 52000);
    assert_eq!(n.neighbor(&them.node_id()).map(|n| n.peer_port), Some(Some(52000)));
    let specs = ensured(&acts);
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].endpoint.as_ref().map(|e| e.port), Some(52000));
    assert_eq!(hellos_sent(&acts).len(), 1);
}

/// A node sends its periodic Announce and its Hellos with the same timestamp; both must count.
#[test]
fn announce_and_hello_with_the_same_timestamp_are_both_accepted() {
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    let to = us.node_id();
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &announce(&them, UNIX0 + 1000));
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &hello(&them, &to, 52000, UNIX0 + 1000));
    assert_eq!(total_rejects(&n), 0, "{:?}", n.reject_counts());
    assert_eq!(n.neighbor(&them.node_id()).unwrap().peer_port, Some(52000));
    // ... while a second copy of either is still a replay.
    n.handle_discovery(at(1001), &eth0(), PEER_LL, &hello(&them, &to, 52000, UNIX0 + 1000));
    n.handle_discovery(at(1001), &eth0(), PEER_LL, &announce(&them, UNIX0 + 1000));
    assert_eq!(rejects(&n, "replayed"), 2);
}

#[test]
fn forged_announce_is_rejected_and_changes_nothing() {
    let (us, them) = us_and_them();
    let mallory = identity(3);
    let forge = |unix_ms| {
        let msg = Discovery::Announce(Announce { node: them.node_id(), wg_key: mallory.wg_public(), unix_ms });
        msg.encode_signed(&mallory)
    };
    let mut n = started(&us, config());

    // From an unknown node: not admitted.
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &forge(UNIX0 + 1000));
    assert_eq!(rejects(&n, "bad signature"), 1);
    assert_eq!(n.neighbors().count(), 0);
    assert!(drain(&mut n).is_empty());

    // Claiming to be a known neighbor: its record is untouched (key, liveness, replay window).
    hear_announce(&mut n, at(2000), &them);
    n.handle_discovery(at(3000), &eth0(), PEER_LL, &forge(UNIX0 + 3000));
    assert_eq!(rejects(&n, "bad signature"), 2);
    assert!(drain(&mut n).is_empty());
    let nb = n.neighbor(&them.node_id()).unwrap();
    assert_eq!((nb.last_heard, nb.wg_key), (Millis(2000), them.wg_public()));
    // A genuine Announce older than the forged one is still accepted.
    n.handle_discovery(at(3100), &eth0(), PEER_LL, &announce(&them, UNIX0 + 2500));
    assert_eq!(n.neighbor(&them.node_id()).unwrap().last_heard, Millis(3100));
    assert_eq!(total_rejects(&n), 2);
}

#[test]
fn stale_announce_is_rejected() {
    let (us, them) = us_and_them();
    let cfg = config();
    let skew = cfg.max_clock_skew.0;
    let mut n = started(&us, cfg);
    let now = at(1_000_000);
    n.handle_discovery(now, &eth0(), PEER_LL, &announce(&them, now.unix_ms - skew - 1));
    n.handle_discovery(now, &eth0(), PEER_LL, &announce(&them, now.unix_ms + skew + 1));
    assert_eq!(rejects(&n, "stale"), 2);
    assert_eq!(n.neighbors().count(), 0);
    assert!(drain(&mut n).is_empty());
    // Exactly at the limit is still fresh.
    n.handle_discovery(now, &eth0(), PEER_LL, &announce(&them, now.unix_ms - skew));
    assert!(n.neighbor(&them.node_id()).is_some());
    assert_eq!(total_rejects(&n), 2);
}

#[test]
fn replayed_announce_is_rejected() {
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    let first = announce(&them, UNIX0 + 1000);
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &first);
    drain(&mut n);
    n.handle_discovery(at(2000), &eth0(), PEER_LL, &first);
    n.handle_discovery(at(2000), &eth0(), PEER_LL, &announce(&them, UNIX0 + 900));
    assert_eq!(rejects(&n, "replayed"), 2);
    assert!(drain(&mut n).is_empty(), "a replay is not answered");
    assert_eq!(n.neighbor(&them.node_id()).unwrap().last_heard, Millis(1000));
    assert_eq!(n.neighbors().count(), 1);
}

#[test]
fn hello_addressed_to_another_node_is_rejected() {
    let (us, them) = us_and_them();
    let other = identity(3).node_id();
    let mut n = started(&us, config());
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &hello(&them, &other, 52000, UNIX0 + 1000));
    assert_eq!(rejects(&n, "addressed to another node"), 1);
    assert_eq!(n.neighbors().count(), 0);
    assert!(drain(&mut n).is_empty());
    // Nor does it set the port of a known neighbor.
    hear_announce(&mut n, at(2000), &them);
    n.handle_discovery(at(3000), &eth0(), PEER_LL, &hello(&them, &other, 52000, UNIX0 + 3000));
    assert_eq!(rejects(&n, "addressed to another node"), 2);
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.neighbor(&them.node_id()).unwrap().peer_port, None);
}

#[test]
fn malformed_misdirected_and_own_datagrams_are_ignored() {
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    let good = announce(&them, UNIX0 + 1000);
    n.handle_discovery(at(1000), &eth0(), PEER_LL, b"hello, world");
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &good[..good.len() - 1]);
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &[good.clone(), vec![0]].concat());
    assert_eq!(rejects(&n, "malformed"), 3);
    n.handle_discovery(at(1000), &IfName::new("wlan0").unwrap(), PEER_LL, &good);
    assert_eq!(rejects(&n, "not a discovery interface"), 1);
    n.handle_discovery(at(1000), &eth0(), PEER_LL, &announce(&us, UNIX0 + 1000));
    assert_eq!(rejects(&n, "own message"), 1);
    assert_eq!(n.neighbors().count(), 0);
    assert!(drain(&mut n).is_empty());
}

#[test]
fn neighbor_heard_at_a_second_address_is_kept_where_it_was_until_it_moves() {
    let (us, them) = us_and_them();
    let cfg = config();
    let quiet = cfg.announce_interval.0 * 3;
    let mut n = started(&us, cfg);
    let elsewhere = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99);
    hear_hello(&mut n, at(1000), &them, 52000);
    let to = us.node_id();
    n.handle_discovery(at(2000), &eth0(), elsewhere, &hello(&them, &to, 52000, UNIX0 + 2000));
    assert_eq!(rejects(&n, "heard elsewhere"), 1);
    assert!(drain(&mut n).is_empty());
    assert_eq!(n.neighbor(&them.node_id()).unwrap().underlay_addr, PEER_LL);
    // Silent at the old address long enough: it moved, and the tunnel follows.
    let t = 1000 + quiet;
    n.handle_discovery(at(t), &eth0(), elsewhere, &hello(&them, &to, 52000, UNIX0 + t));
    let acts = drain(&mut n);
    assert_eq!(ensured(&acts).len(), 1);
    assert_eq!(ensured(&acts)[0].endpoint.as_ref().map(|e| e.addr), Some(elsewhere));
}

#[test]
fn our_discovery_messages_sent_within_one_millisecond_are_not_replays_of_each_other() {
    // A node answers an Announce with a Hello and sends its periodic Hellos: within the same
    // millisecond, two Hellos to the same neighbor. The second must still look newer to it.
    let (us, them) = us_and_them();
    let mut n = started(&us, config());
    // The periodic announcement is due at exactly the moment the neighbor's Announce arrives.
    let due = n.poll_timeout().expect("announce timer").0;
    let t = at(due + config().announce_interval.0);
    let mut acts = hear_announce(&mut n, t, &them);
    n.handle_timeout(t);
    acts.extend(drain(&mut n));
    let stamps: Vec<u64> = hellos_sent(&acts).iter().map(|(_, h)| h.unix_ms).collect();
    assert!(stamps.len() >= 2, "{acts:?}");
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {stamps:?}");
    // And the neighbor accepts every one of them.
    let mut peer = started(&them, config());
    let _ = hear_announce(&mut peer, t, &us);
    for a in &acts {
        if let Action::SendDiscovery { payload, .. } = a {
            peer.handle_discovery(t, &eth0(), PEER_LL, payload);
        }
    }
    assert_eq!(rejects(&peer, "replayed"), 0);
}
