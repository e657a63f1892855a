//! One task per physical interface: a UDP socket bound to the interface, joined to the discovery
//! multicast group. It hands received datagrams to the driver and sends what the driver asks.
//! If the interface is missing or goes away, the task logs it and retries every few seconds.
//!
//! Bounds, so that a flood of datagrams costs a bounded amount of CPU and memory:
//! - each task reads at most [`MAX_DATAGRAMS_PER_SEC`] datagrams a second; beyond that it stops
//!   reading for the rest of a 100 ms window and the kernel drops what overflows the socket's
//!   receive buffer (counted by the kernel as `Udp6RcvbufErrors`);
//! - at most [`DISCOVERY_QUEUE`] datagrams wait for the driver, over all interfaces; one that
//!   finds the queue full is dropped and counted ([`DiscoveryQueue::dropped`], shown by
//!   `tollway status` as the discovery reject reason `driver queue full`).

use crate::driver::Input;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tollway_core::wire::discovery::MAX_LEN;
use tollway_core::{IfName, DISCOVERY_GROUP};

const RETRY: Duration = Duration::from_secs(3);

/// Most datagrams one interface's task reads per second. Real neighbors send about three per
/// announce interval each (an Announce, a periodic Hello and a Hello answering ours): 64
/// neighbors at the shortest interval (1 s) send ~200 a second.
pub const MAX_DATAGRAMS_PER_SEC: u32 = 1000;
const READ_WINDOW: Duration = Duration::from_millis(100);
const READS_PER_WINDOW: u32 = MAX_DATAGRAMS_PER_SEC / 10;

/// Most discovery datagrams waiting for the driver at once (at most `MAX_LEN` bytes each).
pub const DISCOVERY_QUEUE: usize = 256;

/// The bound on discovery datagrams in the driver's input channel, which they share with the
/// control sessions and the API: a task takes a place before sending one, the driver frees it
/// when it takes the datagram.
#[derive(Debug)]
pub struct DiscoveryQueue {
    capacity: usize,
    queued: AtomicUsize,
    dropped: AtomicU64,
}

impl DiscoveryQueue {
    pub fn new(capacity: usize) -> Arc<DiscoveryQueue> {
        Arc::new(DiscoveryQueue { capacity, queued: AtomicUsize::new(0), dropped: AtomicU64::new(0) })
    }

    /// Take a place for one datagram; false (and counted as dropped) when the queue is full.
    pub fn try_reserve(&self) -> bool {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| (q < self.capacity).then_some(q + 1))
            .is_ok();
        if !taken {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Free the place of a datagram the driver took (or that was never delivered).
    pub fn release(&self) {
        let _ = self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_sub(1));
    }

    /// Datagrams waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Datagrams dropped since start because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How many datagrams a task may still read in the current window.
struct ReadBudget {
    window_start: Instant,
    read: u32,
}

impl ReadBudget {
    fn new() -> ReadBudget {
        ReadBudget { window_start: Instant::now(), read: 0 }
    }

    /// `None` while reading is allowed; else when the next window starts.
    fn paused_until(&mut self) -> Option<Instant> {
        let now = Instant::now();
        if now >= self.window_start + READ_WINDOW {
            self.window_start = now;
            self.read = 0;
        }
        (self.read >= READS_PER_WINDOW).then_some(self.window_start + READ_WINDOW)
    }
}

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
pub async fn run(
    iface: IfName,
    port: u16,
    to_driver: Sender<Input>,
    queue: Arc<DiscoveryQueue>,
    mut outgoing: UnboundedReceiver<Outgoing>,
) {
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
        let mut budget = ReadBudget::new();
        let failed = loop {
            let paused = budget.paused_until();
            tokio::select! {
                r = sock.recv_from(&mut buf), if paused.is_none() => match r {
                    Ok((len, SocketAddr::V6(src))) => {
                        budget.read += 1;
                        if !is_link_local(src.ip()) {
                            tracing::debug!(%iface, %src, "discovery datagram from a non-link-local address ignored");
                            continue;
                        }
                        if !queue.try_reserve() {
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
                _ = tokio::time::sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_at_most_its_capacity_and_counts_what_it_drops() {
        let q = DiscoveryQueue::new(2);
        assert!(q.try_reserve() && q.try_reserve());
        assert!(!q.try_reserve());
        assert!(!q.try_reserve());
        assert_eq!((q.queued(), q.dropped()), (2, 2));
        q.release();
        assert!(q.try_reserve());
        // Freeing more than was taken (a datagram handed to the driver by other means) is harmless.
        for _ in 0..5 {
            q.release();
        }
        assert_eq!(q.queued(), 0);
        assert_eq!(q.dropped(), 2);
    }
}
