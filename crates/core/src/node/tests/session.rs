//! The control session: who connects, the signed handshake, keepalives, timeouts and
//! reconnects, and every way a peer can get it wrong.

use super::pair::Pair;
use super::*;
use crate::wire::control::transcript;
use std::net::SocketAddrV6;

fn ifn(us: &Identity, them: &Identity) -> IfName {
    IfName::for_tunnel(&us.node_id(), &them.node_id())
}

/// `us` with `them` as a neighbor whose tunnel just handshook; returns what the node asked for.
fn with_tunnel_up(us: &Identity, them: &Identity) -> (Node, Vec<Action>) {
    let mut n = started(us, config());
    hear_hello(&mut n, at(1000), them, 52000);
    n.handle_tunnel_stats(at(1500), &ifn(us, them), fresh_handshake());
    let acts = drain(&mut n);
    (n, acts)
}

fn session_of(acts: &[Action]) -> SessionId {
    acts.iter()
        .find_map(|a| match a {
            Action::OpenControl { session, .. } => Some(*session),
            _ => None,
        })
        .expect("an OpenControl")
}

/// The session-layer messages sent (market messages that follow the handshake left out).
fn sent(acts: &[Action]) -> Vec<ControlMessage> {
    acts.iter()
        .filter_map(|a| match a {
            Action::SendControl { msg, .. } if !matches!(msg, ControlMessage::Market(_)) => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

/// The session was closed, telling the peer a reason containing `why`.
fn assert_closed_because(acts: &[Action], session: SessionId, why: &str) {
    let close = acts.iter().find_map(|a| match a {
        Action::SendControl { session: s, msg: ControlMessage::Close { reason } } if *s == session => Some(reason),
        _ => None,
    });
    assert!(close.is_some_and(|r| r.contains(why)), "no Close containing {why:?} in {acts:?}");
    assert!(acts.contains(&Action::CloseControl { session }), "{acts:?}");
}

fn accepted_session(n: &mut Node, us: &Identity, them: &Identity) -> SessionId {
    let s = SessionId(SessionId::ACCEPTED_BIT | 1);
    let peer = SocketAddrV6::new(them.node_id().tunnel_link_local(), 40000, 0, 0);
    n.handle_control_accepted(at(1600), s, &ifn(us, them), peer);
    assert!(drain(n).is_empty());
    s
}

#[test]
fn fresh_handshake_brings_the_tunnel_up_and_only_the_connector_connects() {
    let (a, b) = ordered_identities();
    let mut na = started(&a, config());
    hear_hello(&mut na, at(1000), &b, 52000);
    // A handshake as old as WireGuard's session lifetime does not count.
    let stale = TunnelStats { last_handshake_secs: Some(HANDSHAKE_FRESH_SECS), ..TunnelStats::default() };
    na.handle_tunnel_stats(at(1200), &ifn(&a, &b), stale);
    assert_eq!(na.neighbor(&b.node_id()).unwrap().state(), NeighborState::Pending);
    assert_eq!(opens(&drain(&mut na)), 0);

    na.handle_tunnel_stats(at(1500), &ifn(&a, &b), fresh_handshake());
    assert_eq!(na.neighbor(&b.node_id()).unwrap().state(), NeighborState::TunnelUp);
    let acts = drain(&mut na);
    assert_eq!(opens(&acts), 1, "{acts:?}");
    let want_peer = SocketAddrV6::new(b.node_id().tunnel_link_local(), config().control_port, 0, 0);
    assert!(matches!(&acts[0], Action::OpenControl { neighbor, ifname, peer, .. }
        if *neighbor == b.node_id() && *ifname == ifn(&a, &b) && *peer == want_peer));

    let (mut nb, acts) = with_tunnel_up(&b, &a);
    assert_eq!(nb.neighbor(&a.node_id()).unwrap().state(), NeighborState::TunnelUp);
    assert_eq!(opens(&acts), 0, "the node with the larger id waits to be called");
    let later: Vec<Action> = run_timers(&mut nb, 1500, 25_000).into_iter().map(|(_, a)| a).collect();
    assert_eq!(opens(&later), 0);
}

#[test]
fn two_nodes_connect_through_the_three_message_handshake() {
    let mut p = Pair::new();
    let mut t = 0;
    while !p.both_connected() {
        t += 100;
        assert!(t <= 3000, "not connected after {t} ms");
        p.run_until(t);
    }
    let opens = p.logged(0, |a| matches!(a, Action::OpenControl { .. }));
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0].1, 0, "the smaller id connects");
    let handshake: Vec<(usize, &str)> = p
        .logged(0, |a| matches!(a, Action::SendControl { msg, .. } if !matches!(msg, ControlMessage::Market(_))))
        .iter()
        .map(|(_, side, a)| match a {
            Action::SendControl { msg, .. } => (*side, msg.name()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(handshake, vec![(0, "client_hello"), (1, "server_hello"), (0, "client_auth")]);
    for side in 0..2 {
        let nb = p.nodes[side].neighbor(&p.ids[1 - side].node_id()).unwrap();
        assert!(matches!(nb.session, Session::Established { version: 1, .. }));
        assert_eq!(nb.last_session_close, None);
    }
}

#[test]
fn pings_and_pongs_keep_the_session_and_the_neighbor_alive() {
    let mut p = Pair::new();
    p.run_until(3000);
    assert!(p.both_connected());
    // From now on only the control session says the neighbor is alive.
    p.drop_discovery = true;
    let mark = p.log.len();
    let (keepalive, span) = (config().keepalive_interval.0, 120_000);
    assert!(span > 3 * config().neighbor_timeout.0);
    p.run_for(span);
    assert!(p.both_connected());
    let count = |side: usize, name: &str| {
        p.logged(mark, |a| matches!(a, Action::SendControl { msg, .. } if msg.name() == name))
            .iter()
            .filter(|(_, s, _)| *s == side)
            .count() as u64
    };
    for side in 0..2 {
        let pings = count(side, "ping");
        assert!(pings.abs_diff(span / keepalive) <= 1, "side {side} sent {pings} pings");
        assert_eq!(count(1 - side, "pong"), pings, "every ping is answered");
        // Each answered ping is a round-trip time sample (delivered at once here: 0 ms).
        let q = p.nodes[side].neighbor(&p.ids[1 - side].node_id()).unwrap().passive;
        assert!(q.rtt_samples as u64 >= pings, "side {side}: {q:?}");
        assert_eq!((q.rtt_last_us, q.rtt_min_us), (0, 0));
    }
    // Silence the session too: now the neighbor goes away.
    p.drop_control = true;
    p.run_for(config().neighbor_timeout.0 + 1000);
    assert_eq!((p.state(0), p.state(1)), (None, None));
    assert!(!p.has_tunnel(0) && !p.has_tunnel(1));
}

#[test]
fn dead_session_times_out_and_reconnects_with_backoff() {
    let cfg = config();
    let (session_timeout, handshake_timeout) = (cfg.session_timeout.0, cfg.handshake_timeout.0);
    let mut p = Pair::new();
    p.run_until(3000);
    assert!(p.both_connected());
    let established = p.nodes[0].neighbor(&p.ids[1].node_id()).unwrap().session_established_since().unwrap();

    // The session goes quiet (discovery and the tunnel stay fine) and nobody can reconnect.
    p.drop_control = true;
    p.refuse_connect = true;
    let mark = p.log.len();
    p.run_for(200_000);
    for side in 0..2 {
        let nb = p.nodes[side].neighbor(&p.ids[1 - side].node_id()).unwrap();
        assert_ne!(nb.state(), NeighborState::Connected);
        assert_eq!(nb.state(), NeighborState::TunnelUp);
    }
    let closes = p.logged(mark, |a| matches!(a, Action::CloseControl { .. }));
    let first_close = closes[0].0;
    assert_eq!(first_close, established + Millis(session_timeout), "closed when nothing came for session_timeout");
    assert_eq!(closes.iter().filter(|(t, _, _)| *t == first_close).count(), 2, "both sides close it");
    let reason = p.nodes[1].neighbor(&p.ids[0].node_id()).unwrap().last_session_close.clone().unwrap();
    assert!(reason.contains("nothing received"), "{reason}");

    // The connector retries 1 s after losing an established session, then backs off, doubling
    // the pause after each failed attempt up to 30 s.
    let opens = p.logged(mark, |a| matches!(a, Action::OpenControl { .. }));
    assert!(opens.iter().all(|(_, side, _)| *side == 0));
    assert_eq!(opens[0].0, first_close + Millis(1000));
    let pauses: Vec<u64> = opens.windows(2).map(|w| w[1].0 .0 - w[0].0 .0 - handshake_timeout).collect();
    assert_eq!(pauses[..7], [1000, 2000, 4000, 8000, 16000, 30000, 30000], "{pauses:?}");

    // Once the peer answers again, the session comes back and the backoff resets.
    p.drop_control = false;
    p.refuse_connect = false;
    p.run_for(30_000 + handshake_timeout);
    assert!(p.both_connected());
    assert_eq!(p.nodes[0].neighbor(&p.ids[1].node_id()).unwrap().backoff, Millis(1000));
}

#[test]
fn close_from_the_peer_ends_the_session_and_the_connector_comes_back() {
    let mut p = Pair::new();
    p.run_until(3000);
    let s0 = p.nodes[0].neighbor(&p.ids[1].node_id()).unwrap().session.id().unwrap();
    let now = p.now;
    p.nodes[0].handle_control_message(now, s0, ControlMessage::Close { reason: "maintenance".into() });
    p.pump();
    assert!(!p.both_connected());
    let reason = p.nodes[0].neighbor(&p.ids[1].node_id()).unwrap().last_session_close.clone();
    assert_eq!(reason.as_deref(), Some("closed by neighbor: maintenance"));
    p.run_for(1500);
    assert!(p.both_connected());
}

#[test]
fn client_hello_with_the_wrong_node_key_or_version_is_closed_with_a_reason() {
    let (a, b) = ordered_identities();
    let (mut nb, _) = with_tunnel_up(&b, &a);
    let s = accepted_session(&mut nb, &b, &a);
    let mallory = identity(3).node_id();
    let msg = ControlMessage::ClientHello { version_min: 1, version_max: 1, node: mallory, nonce: [1; 32] };
    nb.handle_control_message(at(1700), s, msg);
    assert_closed_because(&drain(&mut nb), s, "node key other than the tunnel's");
    let nbr = nb.neighbor(&a.node_id()).unwrap();
    assert_eq!(nbr.state(), NeighborState::TunnelUp);
    assert!(nbr.last_session_close.as_deref().unwrap().contains("node key"));

    let s = accepted_session(&mut nb, &b, &a);
    let msg = ControlMessage::ClientHello { version_min: 7, version_max: 9, node: a.node_id(), nonce: [1; 32] };
    nb.handle_control_message(at(1800), s, msg);
    assert_closed_because(&drain(&mut nb), s, "no common protocol version");
}

#[test]
fn server_hello_with_a_bad_signature_or_key_is_closed_with_a_reason() {
    let (a, b) = ordered_identities();
    let mallory = identity(3);
    let nonce_s = [8; 32];
    // Each case: who signs, which node key it claims. Only the first is genuine.
    let cases: [(&Identity, NodeId, Option<&str>); 3] = [
        (&b, b.node_id(), None),
        (&mallory, b.node_id(), Some("server hello signature")),
        (&mallory, mallory.node_id(), Some("node key other than the tunnel's")),
    ];
    for (signer, claimed, failure) in cases {
        let (mut na, acts) = with_tunnel_up(&a, &b);
        let s = session_of(&acts);
        na.handle_control_opened(at(1600), s);
        let nonce_c = match &sent(&drain(&mut na))[..] {
            [ControlMessage::ClientHello { nonce, node, .. }] if *node == a.node_id() => *nonce,
            other => panic!("{other:?}"),
        };
        let sig = signer.sign(&transcript(b"server", &a.node_id(), &claimed, &nonce_c, &nonce_s, 1));
        na.handle_control_message(
            at(1700),
            s,
            ControlMessage::ServerHello { version: 1, node: claimed, nonce: nonce_s, sig },
        );
        let acts = drain(&mut na);
        let state = na.neighbor(&b.node_id()).unwrap().state();
        match failure {
            None => {
                assert!(matches!(&sent(&acts)[..], [ControlMessage::ClientAuth { .. }]), "{acts:?}");
                assert_eq!(state, NeighborState::Connected);
            }
            Some(why) => {
                assert_closed_because(&acts, s, why);
                assert_eq!(state, NeighborState::TunnelUp);
            }
        }
    }
}

#[test]
fn client_auth_with_a_bad_signature_is_closed_with_a_reason() {
    let (a, b) = ordered_identities();
    let mallory = identity(3);
    for (signer, ok) in [(&a, true), (&mallory, false)] {
        let (mut nb, _) = with_tunnel_up(&b, &a);
        let s = accepted_session(&mut nb, &b, &a);
        let nonce_c = [4; 32];
        let hello = ControlMessage::ClientHello { version_min: 1, version_max: 1, node: a.node_id(), nonce: nonce_c };
        nb.handle_control_message(at(1700), s, hello);
        let (nonce_s, sig_s) = match &sent(&drain(&mut nb))[..] {
            [ControlMessage::ServerHello { version: 1, node, nonce, sig }] if *node == b.node_id() => (*nonce, *sig),
            other => panic!("{other:?}"),
        };
        let server_transcript = transcript(b"server", &a.node_id(), &b.node_id(), &nonce_c, &nonce_s, 1);
        assert_eq!(crate::identity::verify(&b.node_id(), &server_transcript, &sig_s), Ok(()));
        let sig = signer.sign(&transcript(b"client", &a.node_id(), &b.node_id(), &nonce_c, &nonce_s, 1));
        nb.handle_control_message(at(1800), s, ControlMessage::ClientAuth { sig });
        let acts = drain(&mut nb);
        let state = nb.neighbor(&a.node_id()).unwrap().state();
        if ok {
            assert!(sent(&acts).is_empty(), "{acts:?}");
            assert_eq!(state, NeighborState::Connected);
        } else {
            assert_closed_because(&acts, s, "client auth signature");
            assert_eq!(state, NeighborState::TunnelUp);
        }
    }
}

#[test]
fn connections_from_the_wrong_place_are_closed() {
    let (a, b) = ordered_identities();
    let (mut nb, _) = with_tunnel_up(&b, &a);
    let from_a = SocketAddrV6::new(a.node_id().tunnel_link_local(), 40000, 0, 0);
    let id = |n| SessionId(SessionId::ACCEPTED_BIT | n);

    // From an address that is not on-link (routed through the tunnel from further away).
    let wrong = SocketAddrV6::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x66), 40000, 0, 0);
    nb.handle_control_accepted(at(1600), id(1), &ifn(&b, &a), wrong);
    assert_eq!(drain(&mut nb), vec![Action::CloseControl { session: id(1) }]);
    // On an interface that is no neighbor's tunnel.
    nb.handle_control_accepted(at(1600), id(2), &IfName::new("eth0").unwrap(), from_a);
    assert_eq!(drain(&mut nb), vec![Action::CloseControl { session: id(2) }]);
    // Messages on a session the node does not know.
    nb.handle_control_message(at(1600), id(9), ControlMessage::Ping { nonce: 1 });
    assert_eq!(drain(&mut nb), vec![Action::CloseControl { session: id(9) }]);
    assert!(nb.neighbor(&a.node_id()).unwrap().session.id().is_none(), "none of these became the session");
    // From the node that should be accepting: it must not connect to us.
    let (mut na, _) = with_tunnel_up(&a, &b);
    na.handle_control_accepted(
        at(1600),
        id(3),
        &ifn(&a, &b),
        SocketAddrV6::new(b.node_id().tunnel_link_local(), 1, 0, 0),
    );
    assert_eq!(drain(&mut na), vec![Action::CloseControl { session: id(3) }]);
    // The right connection is accepted.
    nb.handle_control_accepted(at(1600), id(4), &ifn(&b, &a), from_a);
    assert!(drain(&mut nb).is_empty());
    assert_eq!(nb.neighbor(&a.node_id()).unwrap().session.id(), Some(id(4)));
}

#[test]
fn a_pong_with_our_pings_nonce_gives_the_round_trip_time_and_others_are_ignored() {
    let mut p = Pair::new();
    p.run_until(3000);
    assert!(p.both_connected());
    let peer = p.ids[1].node_id();
    let start = p.now.mono.0;
    let n = &mut p.nodes[0];
    let sent = run_timers(n, start, start + 10_000);
    // The newest ping is the one awaiting its Pong.
    let (t, session, nonce) = sent
        .iter()
        .rev()
        .find_map(|(t, a)| match a {
            Action::SendControl { session, msg: ControlMessage::Ping { nonce } } => Some((*t, *session, *nonce)),
            _ => None,
        })
        .expect("a keepalive ping");
    let before = n.neighbor(&peer).unwrap().passive;
    let back = start + 10_000;
    n.handle_control_message(at(back), session, ControlMessage::Pong { nonce: nonce ^ 1 });
    assert_eq!(n.neighbor(&peer).unwrap().passive, before, "a Pong for another ping is no sample");
    n.handle_control_message(at(back + 25), session, ControlMessage::Pong { nonce });
    let q = n.neighbor(&peer).unwrap().passive;
    let rtt = (back + 25 - t) * 1000;
    assert_eq!((q.rtt_samples, q.rtt_last_us, q.last), (before.rtt_samples + 1, rtt as u32, Some(Millis(back + 25))));
    // The same Pong again (a replay) is no second sample.
    n.handle_control_message(at(back + 40), session, ControlMessage::Pong { nonce });
    assert_eq!(n.neighbor(&peer).unwrap().passive, q);
    assert!(drain(n).iter().all(|a| !matches!(a, Action::CloseControl { .. })), "Pongs never close the session");
}
