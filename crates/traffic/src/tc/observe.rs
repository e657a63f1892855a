//! tc state as the kernel has it, read through rtnetlink dumps: qdiscs of every device, the
//! classes of an IFB, the egress filters of a tunnel.

use netlink_packet_core::{Nla, NlasIterator};
use netlink_packet_route::tc::{
    TcActionAttribute, TcActionMirrorOption, TcActionOption, TcAttribute, TcFilterU32Option, TcHandle, TcMessage,
    TcMirrorActionType, TcOption, TcStats2,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use tollway_kernel::nl::{invalid_data, NlSocket};

/// `TC_H_CLSACT` with `TC_H_MIN_EGRESS`: the parent of a clsact qdisc's egress filters.
pub(crate) const CLSACT_EGRESS: u32 = 0xffff_fff3;
/// The handle of every clsact (and ingress) qdisc.
pub(crate) const CLSACT_HANDLE: u32 = 0xffff_0000;
pub(crate) const TC_H_ROOT: u32 = 0xffff_ffff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QdiscObs {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// HTB: the default class minor (`default N`).
    pub htb_default: Option<u32>,
    /// pfifo/bfifo: the limit.
    pub fifo_limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ClassObs {
    pub id: u32,
    pub parent: u32,
    /// Bytes per second.
    pub rate: u64,
    pub ceil: u64,
    pub prio: u32,
    pub quantum: u32,
    pub sent_bytes: u64,
    pub sent_packets: u64,
    pub drops: u32,
}

/// One entry of a filter dump (a u32 filter shows as several: hash table, node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterObs {
    pub pref: u16,
    pub kind: String,
    /// Every mirred action: whether it is an egress redirect, and its target interface.
    pub mirred: Vec<(bool, u32)>,
}

fn tc_dump(sock: &mut NlSocket, msg: RouteNetlinkMessage) -> io::Result<Vec<TcMessage>> {
    Ok(sock
        .dump(msg)?
        .into_iter()
        .filter_map(|r| match r {
            RouteNetlinkMessage::NewQueueDiscipline(m)
            | RouteNetlinkMessage::NewTrafficClass(m)
            | RouteNetlinkMessage::NewTrafficFilter(m) => Some(m),
            _ => None,
        })
        .collect())
}

fn kind(m: &TcMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The raw value of `TCA_OPTIONS` for kinds the library does not parse (htb, pfifo).
fn raw_options(m: &TcMessage) -> Option<Vec<u8>> {
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::Other(nla) => {
                let mut buf = vec![0u8; nla.value_len()];
                nla.emit_value(&mut buf);
                Some(buf)
            }
            _ => None,
        }),
        _ => None,
    })
}

/// The nested attributes of `buf` as (type without flags, value).
fn nested(buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
    NlasIterator::new(buf).filter_map(Result::ok).map(|nla| (nla.kind() & 0x3fff, nla.value().to_vec())).collect()
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
}

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;

/// Every qdisc of every device.
pub(crate) fn qdiscs(sock: &mut NlSocket) -> io::Result<Vec<QdiscObs>> {
    let msgs = tc_dump(sock, RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))?;
    Ok(msgs
        .iter()
        .map(|m| {
            let kind = kind(m);
            let opts = raw_options(m);
            let htb_default = match (kind.as_str(), &opts) {
                ("htb", Some(o)) => {
                    nested(o).into_iter().find(|(t, _)| *t == TCA_HTB_INIT).and_then(|(_, v)| u32_at(&v, 8))
                }
                _ => None,
            };
            let fifo_limit = match (kind.as_str(), &opts) {
                ("pfifo" | "bfifo", Some(o)) => u32_at(o, 0),
                _ => None,
            };
            QdiscObs {
                ifindex: m.header.index as u32,
                handle: m.header.handle.into(),
                parent: m.header.parent.into(),
                kind,
                htb_default,
                fifo_limit,
            }
        })
        .collect())
}

/// The HTB classes of device `ifindex`.
pub(crate) fn htb_classes(sock: &mut NlSocket, ifindex: u32) -> io::Result<Vec<ClassObs>> {
    let mut req = TcMessage::default();
    req.header.index = ifindex as i32;
    let msgs = tc_dump(sock, RouteNetlinkMessage::GetTrafficClass(req))?;
    let mut out = Vec::new();
    for m in msgs.iter().filter(|m| kind(m) == "htb" && m.header.index as u32 == ifindex) {
        let mut c = ClassObs { id: m.header.handle.into(), parent: m.header.parent.into(), ..Default::default() };
        let opts = raw_options(m).ok_or_else(|| invalid_data("HTB class without options"))?;
        let (mut rate64, mut ceil64) = (None, None);
        for (t, v) in nested(&opts) {
            match t {
                TCA_HTB_PARMS => {
                    let bad = || invalid_data("short tc_htb_opt");
                    c.rate = u32_at(&v, 8).ok_or_else(bad)? as u64;
                    c.ceil = u32_at(&v, 20).ok_or_else(bad)? as u64;
                    c.quantum = u32_at(&v, 32).ok_or_else(bad)?;
                    c.prio = u32_at(&v, 40).ok_or_else(bad)?;
                }
                TCA_HTB_RATE64 => rate64 = u64_of(&v),
                TCA_HTB_CEIL64 => ceil64 = u64_of(&v),
                _ => {}
            }
        }
        c.rate = rate64.unwrap_or(c.rate);
        c.ceil = ceil64.unwrap_or(c.ceil);
        for a in &m.attributes {
            match a {
                TcAttribute::Stats2(stats) => {
                    for s in stats {
                        match s {
                            TcStats2::Basic(b) => {
                                c.sent_bytes = b.bytes;
                                c.sent_packets = b.packets as u64;
                            }
                            TcStats2::Queue(q) => c.drops = q.drops,
                            _ => {}
                        }
                    }
                }
                TcAttribute::Stats(s) if c.sent_bytes == 0 => {
                    c.sent_bytes = s.bytes;
                    c.sent_packets = s.packets as u64;
                    c.drops = s.drops;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// The egress filters of device `ifindex` (which must have a clsact qdisc).
pub(crate) fn egress_filters(sock: &mut NlSocket, ifindex: u32) -> io::Result<Vec<FilterObs>> {
    let mut req = TcMessage::default();
    req.header.index = ifindex as i32;
    req.header.parent = TcHandle::from(CLSACT_EGRESS);
    let msgs = tc_dump(sock, RouteNetlinkMessage::GetTrafficFilter(req))?;
    Ok(msgs
        .iter()
        .map(|m| {
            let mut mirred = Vec::new();
            for a in &m.attributes {
                let TcAttribute::Options(opts) = a else { continue };
                for o in opts {
                    let TcOption::U32(TcFilterU32Option::Action(actions)) = o else { continue };
                    for act in actions {
                        for aa in &act.attributes {
                            let TcActionAttribute::Options(aopts) = aa else { continue };
                            for ao in aopts {
                                if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                                    mirred.push((p.eaction == TcMirrorActionType::EgressRedir, p.ifindex));
                                }
                            }
                        }
                    }
                }
            }
            FilterObs { pref: (m.header.info >> 16) as u16, kind: kind(m), mirred }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_split_with_flags_masked() {
        // Two attributes: type 1 (with NLA_F_NESTED) holding 4 bytes, type 6 holding 8.
        let mut b = Vec::new();
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&(1u16 | 0x8000).to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&12u16.to_ne_bytes());
        b.extend_from_slice(&6u16.to_ne_bytes());
        b.extend_from_slice(&5_000_000_000u64.to_ne_bytes());
        let n = nested(&b);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0], (1, 7u32.to_ne_bytes().to_vec()));
        assert_eq!(n[1].0, 6);
        assert_eq!(u64_of(&n[1].1), Some(5_000_000_000));
        assert_eq!(u32_at(&[1, 0], 0), None);
    }
}
