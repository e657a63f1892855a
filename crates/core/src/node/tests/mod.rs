//! Unit tests of the neighbor state machine, driving `Node`s by hand with synthetic clocks.
//!
//! - `budget`: signature checks under budgets, floods claiming known ids;
//! - `discovery`: admission, Hellos, tunnel specs, and every reason a datagram is ignored;
//! - `lifecycle`: timeouts, penalties, the announcement flood, tunnel errors, shutdown;
//! - `session`: the control session handshake, keepalives, timeouts and reconnects, bad peers.
//!
//! [`pair::Pair`] is a tiny two-node driver (zero latency) for the tests that need both ends.

mod budget;
mod discovery;
mod lifecycle;
mod market;
mod pair;
mod session;

use super::*;
use crate::wire::control::ControlMessage;
use crate::wire::discovery::{parse, Announce, Discovery, Hello};
use std::net::Ipv6Addr;

/// The wall clock at `Millis(0)`; `at(ms)` keeps both clocks in step.
pub(super) const UNIX0: u64 = 1_700_000_000_000;
/// The link-local address our test peers send from.
pub(super) const PEER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

pub(super) fn at(ms: u64) -> Now {
    Now::new(Millis(ms), UNIX0 + ms)
}

pub(super) fn eth0() -> IfName {
    IfName::new("eth0").unwrap()
}

pub(super) fn config() -> CoreConfig {
    CoreConfig { interfaces: vec![eth0()], ..CoreConfig::default() }
}

pub(super) fn identity(n: u32) -> Identity {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    Identity::from_seed(&seed)
}

/// Two identities, the first with the smaller node id (the connector).
pub(super) fn ordered_identities() -> (Identity, Identity) {
    let (a, b) = (identity(1), identity(2));
    if a.node_id() < b.node_id() {
        (a, b)
    } else {
        (b, a)
    }
}

/// A node created at `at(0)` whose first announcement has been sent and drained.
pub(super) fn started(id: &Identity, config: CoreConfig) -> Node {
    let mut n = Node::new(config, id.clone(), at(0), [7; 32]);
    n.handle_timeout(at(0));
    drain(&mut n);
    n
}

pub(super) fn drain(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

pub(super) fn announce(id: &Identity, unix_ms: u64) -> Vec<u8> {
    Discovery::Announce(Announce { node: id.node_id(), wg_key: id.wg_public(), unix_ms }).encode_signed(id)
}

pub(super) fn hello(id: &Identity, to: &NodeId, listen_port: u16, unix_ms: u64) -> Vec<u8> {
    Discovery::Hello(Hello { node: id.node_id(), wg_key: id.wg_public(), to: *to, listen_port, unix_ms })
        .encode_signed(id)
}

pub(super) fn ensured(actions: &[Action]) -> Vec<&TunnelSpec> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::EnsureTunnel(s) => Some(s),
            _ => None,
        })
        .collect()
}

pub(super) fn removed(actions: &[Action]) -> Vec<NodeId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RemoveTunnel { neighbor, .. } => Some(*neighbor),
            _ => None,
        })
        .collect()
}

/// Every Hello sent, with the address it went to, parsed and verified.
pub(super) fn hellos_sent(actions: &[Action]) -> Vec<(Ipv6Addr, Hello)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendDiscovery { dst, payload, .. } => match parse(payload).unwrap().verify().unwrap() {
                Discovery::Hello(h) => Some((*dst, h)),
                Discovery::Announce(_) => None,
            },
            _ => None,
        })
        .collect()
}

pub(super) fn opens(actions: &[Action]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::OpenControl { .. })).count()
}

pub(super) fn rejects(n: &Node, reason: &str) -> u64 {
    n.reject_counts().get(reason).copied().unwrap_or(0)
}

pub(super) fn total_rejects(n: &Node) -> u64 {
    n.reject_counts().values().sum()
}

pub(super) fn fresh_handshake() -> TunnelStats {
    TunnelStats { last_handshake_secs: Some(0), ..TunnelStats::default() }
}

/// Feed `n` an Announce from `id` at `now` (sent at the same wall-clock instant).
pub(super) fn hear_announce(n: &mut Node, now: Now, id: &Identity) -> Vec<Action> {
    n.handle_discovery(now, &eth0(), PEER_LL, &announce(id, now.unix_ms));
    drain(n)
}

/// Feed `n` a Hello from `id` (addressed to `n`) at `now`.
pub(super) fn hear_hello(n: &mut Node, now: Now, id: &Identity, port: u16) -> Vec<Action> {
    let to = n.node_id();
    n.handle_discovery(now, &eth0(), PEER_LL, &hello(id, &to, port, now.unix_ms));
    drain(n)
}

/// Run `n` by its own timers from `from` to `to` (inclusive), collecting what it asks for.
/// Each step is a `handle_timeout` at the time `poll_timeout` asked for.
pub(super) fn run_timers(n: &mut Node, from: u64, to: u64) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    let mut t = from;
    let mut same = 0;
    while let Some(next) = n.poll_timeout() {
        let next = next.0.max(t);
        if next > to {
            break;
        }
        same = if next == t { same + 1 } else { 0 };
        assert!(same < 100, "poll_timeout keeps asking for {next} ms after handle_timeout");
        t = next;
        n.handle_timeout(at(t));
        out.extend(drain(n).into_iter().map(|a| (t, a)));
    }
    out
}
