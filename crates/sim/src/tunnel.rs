//! Simulated WireGuard tunnels.
//!
//! A tunnel exists on a node from `EnsureTunnel` until `RemoveTunnel` (or the node stops). Two
//! tunnels handshake, when either node samples its tunnels, only if:
//! - each side has a tunnel for the other, configured with the other's WireGuard key;
//! - at least one side has an endpoint that really is the other: the interface it names is
//!   linked to the other node, the address is the other's link-local on that link, and the port
//!   is the other's tunnel listen port;
//! - that physical link is up, and neither handshake message is lost.
//!
//! A handshake binds the two tunnel instances (recreating either breaks it) and is renewed every
//! [`REKEY_AFTER`] while possible. A tunnel carries packets while its handshake is fresher than
//! the core's `HANDSHAKE_FRESH_SECS` and its link is up.

use crate::{LinkId, Millis, NodeIdx, Sim};
use rand::Rng;
use tollway_core::node::HANDSHAKE_FRESH_SECS;
use tollway_core::{IfName, TunnelSpec, TunnelStats};

/// WireGuard's REKEY_AFTER_TIME: a live session handshakes again this often.
pub const REKEY_AFTER: Millis = Millis(120_000);

#[derive(Debug, Clone)]
pub struct SimTunnel {
    pub spec: TunnelSpec,
    /// Unique per tunnel instance: a recreated tunnel is a different one.
    pub serial: u64,
    pub created: Millis,
    pub last_handshake: Option<Millis>,
    /// The peer tunnel instance (node, serial) of the current WireGuard session.
    pub(crate) session_with: Option<(NodeIdx, u64)>,
    /// The physical link that session runs over.
    pub via: Option<LinkId>,
    /// Inner bytes received from and sent to the peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The transmit counter the market reads: data bytes sent (and control bytes when
    /// `Sim::count_control_bytes`).
    pub counted_tx: u64,
}

impl Sim {
    pub(crate) fn ensure_tunnel(&mut self, n: NodeIdx, spec: TunnelSpec) {
        if self.nodes[n.0].tunnel_faults {
            let now = self.now_for(n);
            if let Some(core) = self.nodes[n.0].core.as_mut() {
                core.handle_tunnel_error(now, &spec.ifname, "simulated tunnel failure");
            }
            return;
        }
        let now = self.now;
        let serial = self.next_tunnel_serial;
        let node = &mut self.nodes[n.0];
        let (tunnels, created) = (&mut node.tunnels, &mut node.tunnels_created);
        match tunnels.get_mut(&spec.ifname) {
            // Reconfiguring keeps the WireGuard session unless the peer's key changed.
            Some(t) => {
                if t.spec.peer_key != spec.peer_key {
                    t.session_with = None;
                    t.last_handshake = None;
                    t.via = None;
                }
                t.spec = spec;
            }
            None => {
                self.next_tunnel_serial += 1;
                *created += 1;
                let t = SimTunnel {
                    spec: spec.clone(),
                    serial,
                    created: now,
                    last_handshake: None,
                    session_with: None,
                    via: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    counted_tx: 0,
                };
                tunnels.insert(spec.ifname, t);
            }
        }
    }

    pub(crate) fn remove_tunnel(&mut self, n: NodeIdx, ifname: &IfName) {
        self.nodes[n.0].tunnels.remove(ifname);
    }

    /// `SampleTunnels`: handshake where WireGuard would, then report every tunnel of `n`.
    pub(crate) fn sample_tunnels(&mut self, n: NodeIdx) {
        let names: Vec<IfName> = self.nodes[n.0].tunnels.keys().cloned().collect();
        let now = self.now_for(n);
        for ifname in names {
            self.maybe_handshake(n, &ifname);
            let t = &self.nodes[n.0].tunnels[&ifname];
            let stats = TunnelStats {
                last_handshake_secs: t.last_handshake.map(|h| self.now.since(h).as_secs()),
                rx_bytes: t.rx_bytes,
                tx_bytes: t.tx_bytes,
            };
            if let Some(core) = self.nodes[n.0].core.as_mut() {
                core.handle_tunnel_stats(now, &ifname, stats);
            }
        }
        self.sample_counters(n);
    }

    /// The peer's tunnel for `a`'s tunnel `ifname`, if the peer runs and both are configured with
    /// each other's keys.
    pub(crate) fn peer_tunnel(&self, a: NodeIdx, ifname: &IfName) -> Option<(NodeIdx, IfName)> {
        let ta = self.nodes[a.0].tunnels.get(ifname)?;
        let b = self.idx_of(&ta.spec.neighbor)?;
        let nb = &self.nodes[b.0];
        if !nb.is_running() || ta.spec.peer_key != nb.identity.wg_public() {
            return None;
        }
        let a_id = self.node_id(a);
        let (bif, tb) = nb.tunnels.iter().find(|(_, t)| t.spec.neighbor == a_id)?;
        (tb.spec.peer_key == self.nodes[a.0].identity.wg_public()).then(|| (b, bif.clone()))
    }

    /// The link over which `from`'s endpoint for its tunnel `tf` reaches `to`'s tunnel `tt`.
    fn endpoint_link(&self, from: NodeIdx, tf: &SimTunnel, to: NodeIdx, tt: &SimTunnel) -> Option<LinkId> {
        let ep = tf.spec.endpoint.as_ref()?;
        let (link, far) = self.link_at(from, &ep.via)?;
        let right_place = far.node == to && self.nodes[to.0].addr(&far.iface) == Some(ep.addr);
        (self.links[link.0].up && right_place && ep.port == tt.spec.listen_port).then_some(link)
    }

    fn maybe_handshake(&mut self, a: NodeIdx, ifname: &IfName) {
        let Some((b, bif)) = self.peer_tunnel(a, ifname) else { return };
        let ta = &self.nodes[a.0].tunnels[ifname];
        let tb = &self.nodes[b.0].tunnels[&bif];
        let Some(link) = self.endpoint_link(a, ta, b, tb).or_else(|| self.endpoint_link(b, tb, a, ta)) else {
            return;
        };
        let current = ta.session_with == Some((b, tb.serial)) && tb.session_with == Some((a, ta.serial));
        let due = match (current, ta.last_handshake) {
            (true, Some(h)) => self.now.since(h) >= REKEY_AFTER || ta.via != Some(link),
            _ => true,
        };
        if !due {
            return;
        }
        let (sa, sb) = (ta.serial, tb.serial);
        // Initiation and response each cross the link once; a loss is retried at the next sample.
        if self.lost(link) || self.lost(link) {
            return;
        }
        let now = self.now;
        for (n, ifn, peer) in [(a, ifname, (b, sb)), (b, &bif, (a, sa))] {
            let t = self.nodes[n.0].tunnels.get_mut(ifn).expect("checked");
            t.last_handshake = Some(now);
            t.session_with = Some(peer);
            t.via = Some(link);
        }
        self.trace.note(self.now, format_args!("handshake {a}:{ifname} {b}:{bif} via {link:?}"));
    }

    /// Where `a`'s tunnel `ifname` delivers packets right now: the peer node, its tunnel and the
    /// link, if the WireGuard session between these two instances is fresh and its link is up.
    pub(crate) fn tunnel_path(&self, a: NodeIdx, ifname: &IfName) -> Option<(NodeIdx, IfName, LinkId)> {
        let (b, bif) = self.peer_tunnel(a, ifname)?;
        let ta = &self.nodes[a.0].tunnels[ifname];
        let tb = &self.nodes[b.0].tunnels[&bif];
        let bound = ta.session_with == Some((b, tb.serial)) && tb.session_with == Some((a, ta.serial));
        let fresh = ta.last_handshake.is_some_and(|h| self.now.since(h).as_secs() < HANDSHAKE_FRESH_SECS);
        let link = ta.via?;
        (bound && fresh && self.links[link.0].up).then_some((b, bif, link))
    }

    /// Carry `bytes` of control traffic from `a` through its tunnel `ifname`: counts them on
    /// both tunnels and on the link (and in the market's counters if
    /// `Sim::count_control_bytes`). Returns the receiving end and the link, or `None` (nothing
    /// counted) if the tunnel does not deliver right now.
    pub fn carry(&mut self, a: NodeIdx, ifname: &IfName, bytes: u64) -> Option<(NodeIdx, IfName, LinkId)> {
        let (b, bif, link) = self.tunnel_path(a, ifname)?;
        self.nodes[a.0].tunnels.get_mut(ifname).expect("on path").tx_bytes += bytes;
        self.nodes[b.0].tunnels.get_mut(&bif).expect("on path").rx_bytes += bytes;
        self.links[link.0].flow_from_mut(a).tunnel_bytes += bytes;
        self.count_control(a, ifname, b, bytes);
        Some((b, bif, link))
    }

    /// The one-way delay of one datagram or segment crossing `link`.
    pub(crate) fn delay(&mut self, link: LinkId) -> Millis {
        let o = self.links[link.0].opts;
        let extra = if o.jitter.0 > 0 { self.rng.gen_range(0..=o.jitter.0) } else { 0 };
        o.latency + Millis(extra)
    }

    /// Whether one datagram crossing `link` is lost.
    pub(crate) fn lost(&mut self, link: LinkId) -> bool {
        let ppm = self.links[link.0].opts.loss_ppm;
        ppm > 0 && self.rng.gen_range(0..1_000_000) < ppm
    }
}
