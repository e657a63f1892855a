//! One task per physical interface: a UDP socket bound to the interface, joined to the discovery
//! multicast group. It hands received datagrams to the driver and sends what the driver asks.
//! If the interface is missing or goes away, the task logs it and retries every few seconds.

use crate::driver::Input;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::mpsc::Sender;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;
use tollway_core::wire::discovery::MAX_LEN;
use tollway_core::{IfName, DISCOVERY_GROUP};

const RETRY: Duration = Duration::from_secs(3);

/// A datagram the driver wants sent on this interface.
pub struct Outgoing {
    pub dst: Ipv6Addr,
    pub payload: Vec<u8>,
}

fn open(iface: &IfName, port: u16) -> std::io::Result<UdpSocket> {
    let idx =
        super::if_index(iface).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such interface"))?;
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(iface.as_str().as_bytes()))?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_hops_v6(1)?;
    s.set_multicast_if_v6(idx)?;
    s.bind(&SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
    s.join_multicast_v6(&DISCOVERY_GROUP, idx)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Run the interface's discovery socket until the driver goes away.
pub async fn run(iface: IfName, port: u16, to_driver: Sender<Input>, mut outgoing: UnboundedReceiver<Outgoing>) {
    let mut logged_missing = false;
    loop {
        let sock = match open(&iface, port) {
            Ok(s) => {
                tracing::info!(%iface, port, "discovery listening");
                logged_missing = false;
                s
            }
            Err(e) => {
                if !logged_missing {
                    tracing::warn!(%iface, error = %e, "cannot open discovery socket; retrying every 3 s");
                    logged_missing = true;
                }
                // Drop what the driver queued meanwhile: discovery is periodic, nothing is lost.
                let deadline = tokio::time::sleep(RETRY);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        m = outgoing.recv() => if m.is_none() { return },
                    }
                }
                continue;
            }
        };
        let mut buf = vec![0u8; MAX_LEN + 1];
        let failed = loop {
            tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok((len, SocketAddr::V6(src))) => {
                        if !is_link_local(src.ip()) {
                            tracing::debug!(%iface, %src, "discovery datagram from a non-link-local address ignored");
                            continue;
                        }
                        let input = Input::Discovery { iface: iface.clone(), src: *src.ip(), bytes: buf[..len].to_vec() };
                        if to_driver.send(input).is_err() {
                            return;
                        }
                    }
                    Ok(_) => continue,
                    Err(e) => break e,
                },
                m = outgoing.recv() => {
                    let Some(m) = m else { return };
                    let dst = SocketAddrV6::new(m.dst, port, 0, super::if_index(&iface).unwrap_or(0));
                    if let Err(e) = sock.send_to(&m.payload, dst).await {
                        tracing::debug!(%iface, dst = %m.dst, error = %e, "discovery send failed");
                        if e.raw_os_error() == Some(libc::ENODEV) {
                            break e;
                        }
                    }
                }
            }
        };
        tracing::warn!(%iface, error = %failed, "discovery socket failed; reopening");
        tokio::time::sleep(RETRY).await;
    }
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}
