//! [`Tunnels`] with kernel WireGuard: the device is an rtnetlink link of kind `wireguard`,
//! configured with the generic-netlink `wireguard` family (`WG_CMD_SET_DEVICE`,
//! `WG_CMD_GET_DEVICE`). Every call opens its own sockets, so it acts on the calling thread's
//! network namespace.

use super::{delete_leftover, list_tunnels};
use crate::nl::route;
use crate::nl::{genl, is_errno, NlSocket};
use crate::{TunnelError, Tunnels, WgConfig};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd,
    WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};
use tollway_core::{IfName, TunnelStats};

struct Applied {
    ifindex: u32,
    cfg: WgConfig,
}

/// Kernel WireGuard tunnels.
#[derive(Default)]
pub struct KernelTunnels {
    /// The `wireguard` generic netlink family id, once resolved (ids are global).
    family: Option<u16>,
    applied: HashMap<IfName, Applied>,
}

impl KernelTunnels {
    pub fn new() -> KernelTunnels {
        KernelTunnels::default()
    }

    fn family(&mut self, sock: &mut NlSocket) -> io::Result<u16> {
        if let Some(id) = self.family {
            return Ok(id);
        }
        let id = genl::family_id(sock, "wireguard")?;
        self.family = Some(id);
        Ok(id)
    }

    fn wg_request(&mut self, msg: WireguardMessage, dump: bool) -> io::Result<Vec<WireguardMessage>> {
        let mut sock = NlSocket::generic()?;
        let family = self.family(&mut sock)?;
        let mut req = GenlMessage::from_payload(msg);
        req.set_resolved_family_id(family);
        let replies = if dump { sock.dump(req)? } else { sock.request(req, 0)? };
        Ok(replies.into_iter().map(|r| r.payload).collect())
    }
}

impl Tunnels for KernelTunnels {
    fn backend(&self) -> &'static str {
        "kernel"
    }

    fn ensure(&mut self, cfg: &WgConfig) -> Result<(), TunnelError> {
        let name = &cfg.ifname;
        let create_err = |source| TunnelError::Create { ifname: name.clone(), source };
        let index = route::ifindex(name.as_str());
        if let (Some(a), Some(i)) = (self.applied.get(name), index) {
            if a.ifindex == i && a.cfg == *cfg {
                return Ok(());
            }
        }
        let mut sock = NlSocket::route().map_err(create_err)?;
        let link = route::link_by_name(&mut sock, name.as_str()).map_err(create_err)?;
        let ifindex = match link {
            Some(l) if l.kind.as_deref() == Some("wireguard") => l.index,
            Some(_) => {
                // A TUN device left by a userspace run, or something that is not ours.
                delete_leftover(name).map_err(create_err)?;
                create_link(&mut sock, name).map_err(create_err)?
            }
            None => create_link(&mut sock, name).map_err(create_err)?,
        };
        // Update the peer in place when it is the same one (the kernel keeps its session);
        // replace all peers otherwise, which also clears strays on a device we did not make.
        let previous = self.applied.get(name).filter(|a| a.ifindex == ifindex).map(|a| &a.cfg);
        let replace_peers = !previous.is_some_and(|p| p.peer_key == cfg.peer_key);
        self.wg_request(set_device(cfg, replace_peers), false)
            .map_err(|e| TunnelError::Configure { ifname: name.clone(), detail: e.to_string() })?;
        self.applied.insert(name.clone(), Applied { ifindex, cfg: cfg.clone() });
        Ok(())
    }

    fn remove(&mut self, ifname: &IfName) -> Result<(), TunnelError> {
        self.applied.remove(ifname);
        delete_leftover(ifname).map_err(|source| TunnelError::Remove { ifname: ifname.clone(), source })
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, TunnelError> {
        list_tunnels(prefix)
    }

    fn stats(&mut self, ifname: &IfName) -> Result<TunnelStats, TunnelError> {
        let replies = match self.wg_request(get_device(ifname), true) {
            Ok(r) => r,
            Err(e) if is_errno(&e, libc::ENODEV) => return Err(TunnelError::Missing(ifname.clone())),
            Err(e) => return Err(TunnelError::Read { ifname: ifname.clone(), detail: e.to_string() }),
        };
        let want = self.applied.get(ifname).map(|a| a.cfg.peer_key.0);
        Ok(stats_from_replies(&replies, want.as_ref(), SystemTime::now()))
    }
}

fn create_link(sock: &mut NlSocket, name: &IfName) -> io::Result<u32> {
    sock.request(route::new_wireguard_link(name.as_str()), NLM_F_CREATE | NLM_F_EXCL)?;
    route::link_by_name(sock, name.as_str())?
        .map(|l| l.index)
        .ok_or_else(|| io::Error::other("created the WireGuard link but cannot find it"))
}

/// `WG_CMD_SET_DEVICE` making the device match `cfg`, with exactly one peer allowed
/// everything.
pub(crate) fn set_device(cfg: &WgConfig, replace_peers: bool) -> WireguardMessage {
    let mut peer = vec![WireguardPeerAttribute::PublicKey(cfg.peer_key.0)];
    if let Some(ep) = cfg.endpoint {
        peer.push(WireguardPeerAttribute::Endpoint(SocketAddr::V6(ep)));
    }
    peer.push(WireguardPeerAttribute::PersistentKeepalive(cfg.keepalive_secs));
    peer.push(WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps));
    peer.push(WireguardPeerAttribute::AllowedIps(vec![
        allowed(WireguardAddressFamily::Ipv6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        allowed(WireguardAddressFamily::Ipv4, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    ]));

    let mut attributes = vec![
        WireguardAttribute::IfName(cfg.ifname.as_str().to_string()),
        WireguardAttribute::PrivateKey(cfg.private_key),
    ];
    // Port 0 would ask the kernel for a new random port on every call.
    if cfg.listen_port != 0 {
        attributes.push(WireguardAttribute::ListenPort(cfg.listen_port));
    }
    if replace_peers {
        attributes.push(WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers));
    }
    attributes.push(WireguardAttribute::Peers(vec![WireguardPeer(peer)]));
    WireguardMessage { cmd: WireguardCmd::SetDevice, attributes }
}

fn allowed(family: WireguardAddressFamily, ip: IpAddr) -> WireguardAllowedIp {
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(ip),
        WireguardAllowedIpAttr::Cidr(0),
    ])
}

/// `WG_CMD_GET_DEVICE` (sent as a dump, as the kernel requires) for one device.
pub(crate) fn get_device(ifname: &IfName) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(ifname.as_str().to_string())],
    }
}

/// The stats of peer `want` (or the first peer) across the replies of a `GET_DEVICE` dump (a
/// device with many peers spans several messages). The kernel's handshake time is a Unix time,
/// zero for never. Its byte counts are of WireGuard messages (ciphertext plus headers), not
/// inner bytes like boringtun's.
pub(crate) fn stats_from_replies(
    replies: &[WireguardMessage],
    want: Option<&[u8; 32]>,
    now: SystemTime,
) -> TunnelStats {
    let peers = replies.iter().flat_map(|m| m.attributes.iter()).flat_map(|a| match a {
        WireguardAttribute::Peers(p) => p.as_slice(),
        _ => &[],
    });
    let mut first = None;
    for peer in peers {
        let key = peer.iter().find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(k) => Some(k),
            _ => None,
        });
        if want.is_none() || key == want {
            return peer_stats(peer, now);
        }
        first.get_or_insert(peer);
    }
    first.map(|p| peer_stats(p, now)).unwrap_or_default()
}

fn peer_stats(peer: &WireguardPeer, now: SystemTime) -> TunnelStats {
    let mut s = TunnelStats::default();
    for a in peer.iter() {
        match a {
            WireguardPeerAttribute::LastHandshake(t) if t.seconds > 0 || t.nano_seconds > 0 => {
                let at = Duration::new(t.seconds.max(0) as u64, t.nano_seconds.clamp(0, 999_999_999) as u32);
                let now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                s.last_handshake_secs = Some(now.saturating_sub(at).as_secs());
            }
            WireguardPeerAttribute::RxBytes(b) => s.rx_bytes = *b,
            WireguardPeerAttribute::TxBytes(b) => s.tx_bytes = *b,
            _ => {}
        }
    }
    s
}

/// Whether this kernel can create WireGuard devices, found by creating one with a unique
/// throw-away name in the calling thread's namespace and deleting it again. "Unknown device
/// type" (`EOPNOTSUPP`) and any other failure (no permission, say) mean no.
pub fn probe_kernel_wireguard() -> bool {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // "twp" + up to 6 hex digits of pid (pid_max is at most 2^22) + "p" + counter: ≤ 15.
    let name = format!("twp{:x}p{:x}", std::process::id(), n & 0xffff);
    let result = (|| -> io::Result<()> {
        let mut sock = NlSocket::route()?;
        sock.request(route::new_wireguard_link(&name), NLM_F_CREATE | NLM_F_EXCL)?;
        let index = route::link_by_name(&mut sock, &name)?.map(|l| l.index);
        if let Some(i) = index {
            route::delete_link(&mut sock, i)?;
        }
        // The link type exists; the configuration family must too.
        let mut g = NlSocket::generic()?;
        genl::family_id(&mut g, "wireguard").map(|_| ())
    })();
    match result {
        Ok(()) => {
            tracing::debug!("kernel WireGuard is available");
            true
        }
        Err(e) if is_errno(&e, libc::EOPNOTSUPP) => {
            tracing::debug!("kernel WireGuard is not available: unknown device type");
            false
        }
        Err(e) => {
            tracing::debug!("kernel WireGuard probe failed: {e}");
            false
        }
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
