//! An adversary on a link that announces many fake identities (each with a valid signature) and
//! never builds a tunnel: what admission rate limits, the neighbor cap and penalties are for.

use crate::driver::Event;
use crate::{LinkId, Millis, Sim, UNIX_AT_ZERO};
use std::net::Ipv6Addr;
use tollway_core::wire::discovery::{Announce, Discovery};
use tollway_core::Identity;

/// What a flooder does.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// The link it is plugged into: both ends hear it (while the link is up).
    pub link: LinkId,
    /// How many distinct identities it cycles through.
    pub identities: u32,
    /// Announcements per second, all identities together.
    pub per_sec: u32,
    /// When it starts and stops (absolute simulated time; `None`: never stops).
    pub start: Millis,
    pub stop: Option<Millis>,
    /// The link-local address it sends from.
    pub src: Ipv6Addr,
    /// Forge a different source address for each identity (derived from `src`), which defeats
    /// per-address limits.
    pub forge_sources: bool,
}

/// Ticks per second of a flooder.
const TICK: Millis = Millis(10);
/// A signed announcement is reused for this long (well within the receivers' clock skew
/// tolerance; unknown senders are not replay-checked), which keeps signing cheap.
const RESIGN_AFTER_MS: u64 = 240_000;

pub(crate) struct Flooder {
    spec: FloodSpec,
    ids: Vec<Identity>,
    signed: Vec<Option<(u64, Vec<u8>)>>,
    next: usize,
    ticks: u64,
    pub sent: u64,
}

impl Flooder {
    pub(crate) fn new(spec: FloodSpec, ids: Vec<Identity>) -> Flooder {
        let signed = vec![None; ids.len()];
        Flooder { spec, ids, signed, next: 0, ticks: 0, sent: 0 }
    }

    /// The next identity's announcement and the address it comes from.
    fn announcement(&mut self, unix_ms: u64) -> (Ipv6Addr, Vec<u8>) {
        let i = self.next;
        self.next = (self.next + 1) % self.ids.len();
        let src = if self.spec.forge_sources {
            let mut s = self.spec.src.segments();
            s[6] ^= (i >> 16) as u16;
            s[7] ^= i as u16;
            Ipv6Addr::from(s)
        } else {
            self.spec.src
        };
        (src, self.signed_announcement(i, unix_ms))
    }

    fn signed_announcement(&mut self, i: usize, unix_ms: u64) -> Vec<u8> {
        match &self.signed[i] {
            Some((at, bytes)) if unix_ms.saturating_sub(*at) < RESIGN_AFTER_MS => bytes.clone(),
            _ => {
                let id = &self.ids[i];
                let msg = Discovery::Announce(Announce { node: id.node_id(), wg_key: id.wg_public(), unix_ms });
                let bytes = msg.encode_signed(id);
                self.signed[i] = Some((unix_ms, bytes.clone()));
                bytes
            }
        }
    }
}

impl Sim {
    pub(crate) fn flood_tick(&mut self, i: usize) {
        let f = &mut self.flooders[i];
        if f.ids.is_empty() || f.spec.stop.is_some_and(|s| self.now >= s) {
            return;
        }
        let per_tick = |k: u64| k * f.spec.per_sec as u64 * TICK.0 / 1000;
        let count = per_tick(f.ticks + 1) - per_tick(f.ticks);
        f.ticks += 1;
        let link = f.spec.link;
        let unix_ms = UNIX_AT_ZERO + self.now.0;
        for _ in 0..count {
            let (src, bytes) = self.flooders[i].announcement(unix_ms);
            self.flooders[i].sent += 1;
            if !self.links[link.0].up {
                continue;
            }
            for end in self.links[link.0].ends.clone() {
                self.send_datagram(link, end.node, end.iface, src, bytes.clone());
            }
        }
        self.schedule(self.now + TICK, Event::FloodTick { flooder: i });
    }
}
