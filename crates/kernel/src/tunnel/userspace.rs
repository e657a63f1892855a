//! [`Tunnels`] with boringtun embedded: one [`DeviceHandle`] per tunnel, running on threads of
//! our own process, so tunnels die with the daemon and leave nothing behind.
//!
//! Each device is configured through a socketpair handed to boringtun as
//! [`DeviceConfig::uapi_fd`], not through `/var/run/wireguard/<name>.sock`: with a path,
//! boringtun installs SIGINT/SIGTERM handlers in our process, creates host-wide socket files
//! that go stale after `kill -9`, and takes over same-named sockets of other namespaces. We keep
//! the other end and speak the UAPI text protocol over it; closing it makes boringtun stop that
//! device, which closes the TUN file descriptor, which makes the kernel delete the interface.
//!
//! boringtun's threads are spawned by the thread that calls [`Tunnels::ensure`] and inherit its
//! network namespace, so a device lives in the namespace of the thread that created it. Call
//! every method of one `UserspaceTunnels` from that same namespace.
//!
//! Defects of boringtun 0.7 worked around here:
//! - setting a peer that exists panics its thread: peers are always added afresh;
//! - `replace_peers` drops peers without shutting their connected UDP sockets, which keep
//!   capturing the new peer's packets: a live peer is removed first with `remove=true`, in a
//!   request of its own (flags are not reset at the next `public_key=` of a request);
//! - a failed `listen_port` bind leaves the device without sockets (and it panics on the next
//!   packet), and binding with `SO_REUSEADDR` silently shares a port: the port is checked first,
//!   and a device whose configuration fails is discarded;
//! - moving to another listen port leaves the old one bound: a port change recreates the device
//!   (so its addresses and routes must be applied again, as after any `ensure`);
//! - its TUN, epoll, eventfd and timerfd descriptors lack close-on-exec: we set it, else child
//!   processes would keep interfaces alive;
//! - it never closes a device's 2 eventfds and 2 timerfds: 4 descriptors leak per device
//!   created (not per reconfiguration). Raise `RLIMIT_NOFILE` in long-running processes;
//! - moving a new device to our listen port forgets its first sockets by numbers it may never
//!   have registered, and panics its event loop when another thread freed a lower descriptor
//!   meanwhile (the device is then dead): the control socket handed to it is placed far above
//!   every open descriptor, which sizes its table past them (`above_open_descriptors`), and a
//!   new device whose configuration fails is tried once more.

use super::uapi::{self, UapiClient, UapiError};
use super::{delete_leftover, list_tunnels};
use crate::nl::route;
use crate::nl::NlSocket;
use crate::{TunnelError, Tunnels, WgConfig};
use boringtun::device::{DeviceConfig, DeviceHandle, Error as BtError};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};
use tollway_core::{IfName, TunnelStats};

/// Settings of the embedded boringtun devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserspaceOptions {
    /// Worker threads per device. One is 1.5–2× faster than four on a 2-core router.
    pub threads: usize,
    /// Let boringtun open a connected UDP socket per peer (its default).
    pub use_connected_socket: bool,
    /// How long to wait for a device to answer a control request.
    pub control_timeout: Duration,
    /// How long [`Tunnels::remove`] waits for a device's threads to exit.
    pub remove_timeout: Duration,
}

impl Default for UserspaceOptions {
    fn default() -> Self {
        UserspaceOptions {
            threads: 1,
            use_connected_socket: true,
            control_timeout: Duration::from_secs(2),
            remove_timeout: Duration::from_secs(3),
        }
    }
}

struct Device {
    handle: DeviceHandle,
    control: UapiClient,
    /// The index the interface got when we created it: if the name now has another index (or
    /// none), someone deleted our interface.
    ifindex: u32,
    /// The configuration last applied successfully.
    applied: Option<WgConfig>,
}

/// Userspace WireGuard tunnels (boringtun, in-process).
pub struct UserspaceTunnels {
    opts: UserspaceOptions,
    devices: HashMap<IfName, Device>,
}

impl UserspaceTunnels {
    pub fn new(opts: UserspaceOptions) -> UserspaceTunnels {
        UserspaceTunnels { opts, devices: HashMap::new() }
    }

    fn create(&self, name: &IfName) -> Result<Device, TunnelError> {
        let create_err = |source| TunnelError::Create { ifname: name.clone(), source };
        // A leftover of the same name: a tunnel device (ours from an earlier run, by the
        // naming scheme) is replaced; anything else is refused.
        delete_leftover(name).map_err(create_err)?;

        let (ours, theirs) = UnixStream::pair().map_err(create_err)?;
        let theirs = above_open_descriptors(theirs.into_raw_fd());
        let config = DeviceConfig {
            n_threads: self.opts.threads.max(1),
            use_connected_socket: self.opts.use_connected_socket,
            use_multi_queue: false,
            uapi_fd: theirs,
        };
        let handle = match DeviceHandle::new(name.as_str(), config) {
            Ok(h) => h,
            Err(e) => {
                if !uapi_fd_taken(&e) {
                    // SAFETY: boringtun failed before taking ownership of `theirs`, which we
                    // created above and nobody else has.
                    unsafe { libc::close(theirs) };
                }
                return Err(create_err(io::Error::other(e.to_string())));
            }
        };
        mark_boringtun_fds_cloexec();
        let control = UapiClient::new(ours, self.opts.control_timeout).map_err(create_err)?;
        let Some(ifindex) = route::ifindex(name.as_str()) else {
            let dev = Device { handle, control, ifindex: 0, applied: None };
            let _ = finish_teardown(name, start_teardown(name, dev), self.opts.remove_timeout);
            return Err(create_err(io::Error::other("boringtun started but the interface is not there")));
        };
        tracing::info!(ifname = %name, ifindex, threads = self.opts.threads, "created userspace WireGuard device");
        Ok(Device { handle, control, ifindex, applied: None })
    }

    /// Create (if needed) and configure one device; on failure nothing is left half-made.
    fn ensure_once(&mut self, cfg: &WgConfig) -> Result<(), TunnelError> {
        let name = &cfg.ifname;
        if let Some(dev) = self.devices.get(name) {
            if route::ifindex(name.as_str()) != Some(dev.ifindex) {
                self.discard(name, "its interface was deleted or replaced");
            } else if dev.applied.as_ref() == Some(cfg) {
                return Ok(());
            } else if dev.applied.as_ref().is_some_and(|a| a.listen_port != cfg.listen_port) {
                // boringtun never closes the sockets of a port it moves away from (its event
                // loop reads clones of them), so the old port would stay bound: start afresh.
                self.discard(name, "its listen port changes");
            }
        }
        let fresh = !self.devices.contains_key(name);
        if fresh {
            let dev = self.create(name)?;
            self.devices.insert(name.clone(), dev);
        }
        let dev = self.devices.get_mut(name).expect("inserted above");

        let result = if fresh && cfg.listen_port != 0 {
            // boringtun binds with SO_REUSEADDR, so a port held by another of our tunnels would
            // be shared silently, and a failed bind leaves it without sockets (it then panics
            // on the next packet): check first.
            port_is_free(cfg.listen_port).map_err(|e| format!("listen port {}: {e}", cfg.listen_port))
        } else {
            Ok(())
        };
        let previous_peer = dev.applied.as_ref().map(|a| a.peer_key);
        let result = result.and_then(|()| {
            if let Some(old) = previous_peer {
                dev.control.set(&uapi::remove_peer_request(&old)).map_err(|e| format!("removing the old peer: {e}"))?;
            }
            dev.control.set(&uapi::set_request(cfg, fresh)).map_err(|e| e.to_string())
        });
        match result {
            Ok(()) => {
                dev.applied = Some(cfg.clone());
                tracing::debug!(ifname = %name, "applied WireGuard configuration");
                Ok(())
            }
            Err(detail) => {
                // Leave nothing half-configured: the next ensure starts from scratch.
                self.discard(name, "configuring it failed");
                Err(TunnelError::Configure { ifname: name.clone(), detail })
            }
        }
    }

    /// Forget a device and stop it, logging (not returning) failures: used when the device is
    /// already known to be broken.
    fn discard(&mut self, name: &IfName, why: &str) {
        if let Some(dev) = self.devices.remove(name) {
            tracing::warn!(ifname = %name, "discarding userspace WireGuard device: {why}");
            if let Err(e) = finish_teardown(name, start_teardown(name, dev), self.opts.remove_timeout) {
                tracing::warn!(ifname = %name, "stopping it: {e}");
            }
        }
    }
}

impl Tunnels for UserspaceTunnels {
    fn backend(&self) -> &'static str {
        "userspace"
    }

    fn ensure(&mut self, cfg: &WgConfig) -> Result<(), TunnelError> {
        match self.ensure_once(cfg) {
            // boringtun 0.7's event loop can die while moving a new device to its listen port:
            // it forgets the sockets of the random port it started on by the numbers of their
            // originals, not of the clones it registered, and indexes past its table when
            // another thread of ours reused a lower descriptor meanwhile. The device has then
            // been discarded; a fresh one almost always succeeds, so try once more.
            Err(TunnelError::Configure { ifname, detail }) if !self.devices.contains_key(&cfg.ifname) => {
                tracing::warn!(%ifname, "configuring a new WireGuard device failed ({detail}); trying once more");
                self.ensure_once(cfg)
            }
            other => other,
        }
    }

    fn remove(&mut self, ifname: &IfName) -> Result<(), TunnelError> {
        let remove_err = |source| TunnelError::Remove { ifname: ifname.clone(), source };
        let Some(dev) = self.devices.remove(ifname) else {
            // Not ours (a leftover of an earlier run, say): delete it if it is a tunnel.
            return delete_leftover(ifname).map_err(remove_err);
        };
        let (ifindex, started) = (dev.ifindex, Instant::now());
        let stopped = finish_teardown(ifname, start_teardown(ifname, dev), self.opts.remove_timeout);
        if route::ifindex(ifname.as_str()) == Some(ifindex) {
            // Our interface is still there: its threads are stuck. Deleting the interface
            // makes their reads fail, which ends them.
            let mut sock = NlSocket::route().map_err(remove_err)?;
            route::delete_link(&mut sock, ifindex).map_err(remove_err)?;
            tracing::warn!(ifname = %ifname, "device threads did not stop ({stopped:?}); deleted the interface through netlink");
        } else {
            tracing::info!(ifname = %ifname, elapsed = ?started.elapsed(), "removed userspace WireGuard device");
        }
        Ok(())
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, TunnelError> {
        list_tunnels(prefix)
    }

    fn stats(&mut self, ifname: &IfName) -> Result<TunnelStats, TunnelError> {
        let dev = self.devices.get_mut(ifname).ok_or_else(|| TunnelError::Missing(ifname.clone()))?;
        let state = match dev.control.get() {
            Ok(s) => s,
            Err(e @ (UapiError::Closed | UapiError::Timeout(_))) => {
                // Its thread is gone or wedged: drop it so that the next ensure recreates it.
                self.discard(ifname, "it stopped answering");
                return Err(TunnelError::Read { ifname: ifname.clone(), detail: e.to_string() });
            }
            Err(e) => return Err(TunnelError::Read { ifname: ifname.clone(), detail: e.to_string() }),
        };
        let peer = dev.applied.as_ref().and_then(|a| state.peer(&a.peer_key.0)).or(state.peers.first());
        let now = SystemTime::now();
        Ok(peer
            .map(|p| TunnelStats {
                last_handshake_secs: p.last_handshake.map(|h| h.age(now).as_secs()),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .unwrap_or_default())
    }
}

impl Drop for UserspaceTunnels {
    /// Stop every device, all at once, waiting (bounded) for their interfaces to go.
    fn drop(&mut self) {
        let pending: Vec<_> = self.devices.drain().map(|(name, dev)| (start_teardown(&name, dev), name)).collect();
        for (rx, name) in pending {
            if let Err(e) = finish_teardown(&name, rx, self.opts.remove_timeout) {
                tracing::warn!(ifname = %name, "stopping userspace WireGuard device: {e}");
            }
        }
    }
}

/// Whether boringtun took ownership of the control fd before failing. `Device::new` opens the
/// TUN device (errors `Socket`, `IOCtl`, `FCntl`, `InvalidTunnelName`) before it registers the
/// fd; later failures (`Timer`, `IoError`) happen after. `EventQueue` can come from either side,
/// so we leave the fd alone then: leaking one fd beats closing a number that may be reused.
fn uapi_fd_taken(e: &BtError) -> bool {
    !matches!(e, BtError::Socket(_) | BtError::IOCtl(_) | BtError::FCntl(_) | BtError::InvalidTunnelName)
}

/// Begin stopping a device: close our end of its control socket (boringtun's event loop sees
/// the hang-up and exits), then join its threads and drop the handle on a reaper thread, so
/// that a wedged device cannot hang the caller. Dropping the handle closes the TUN fd, which
/// makes the kernel delete the interface.
fn start_teardown(name: &IfName, dev: Device) -> mpsc::Receiver<bool> {
    let Device { handle, control, .. } = dev;
    drop(control);
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new().name(format!("reap-{name}")).spawn(move || {
        let mut handle = handle;
        // `DeviceHandle::wait` unwraps each join: a device thread that panicked panics here.
        let clean = panic::catch_unwind(AssertUnwindSafe(|| handle.wait())).is_ok();
        drop(handle);
        let _ = tx.send(clean);
    });
    if let Err(e) = spawned {
        tracing::warn!(ifname = %name, "cannot spawn a reaper thread ({e}); the device's threads were told to exit");
    }
    rx
}

fn finish_teardown(name: &IfName, rx: mpsc::Receiver<bool>, timeout: Duration) -> io::Result<()> {
    match rx.recv_timeout(timeout) {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!(ifname = %name, "a boringtun thread of this device had panicked");
            Ok(())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("threads still running after {timeout:?}")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other("reaper thread failed")),
    }
}

/// True if nothing in this namespace is bound to UDP `port` (binding without `SO_REUSEADDR`
/// conflicts with any socket on the port, with or without it).
fn port_is_free(port: u16) -> io::Result<()> {
    drop(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?);
    drop(UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))?);
    Ok(())
}

/// boringtun opens `/dev/net/tun`, its epoll, eventfds and timerfds without close-on-exec, so
/// every process we spawn afterwards (`ip`, `nft`, babeld…) would inherit them, and a
/// long-lived child holding a TUN fd keeps the interface alive after the device is stopped, or
/// after the daemon dies. Mark every such descriptor of the process close-on-exec; descriptors
/// of these kinds are never meant to be inherited. (A child forked during the few
/// milliseconds between boringtun opening them and this call still inherits them.)
/// Headroom between the highest descriptor open now and the control socket given to boringtun.
const UAPI_FD_HEADROOM: i32 = 512;

/// Move the control socket (whose number boringtun registers in its event table, sizing the
/// table to it) above every descriptor open now, with room to spare.
///
/// boringtun 0.7 moves a new device from the random port it starts on to ours by forgetting
/// the random port's sockets under the numbers of the originals it kept, while its table holds
/// the clones it registered; when another thread of ours freed a lower number in between, the
/// clones land below the originals and the lookup indexes past the table's end: its event loop
/// panics and the device is dead. With the control socket high, the table always reaches past
/// the originals (a look-up of a number it never registered is then a harmless no-op). Falls
/// back to the descriptor as it is when the process may not open that many.
fn above_open_descriptors(fd: RawFd) -> RawFd {
    let highest = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok())).max().unwrap_or(fd)
        })
        .unwrap_or(fd);
    let wanted = highest.max(fd).saturating_add(UAPI_FD_HEADROOM);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid pointer to an rlimit struct.
    let limit_ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && (wanted as u64) < lim.rlim_cur;
    if !limit_ok {
        tracing::debug!(fd, wanted, "cannot move the WireGuard control socket up (descriptor limit)");
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own; on success we close the original,
    // which nobody else refers to.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, wanted);
        if high < 0 {
            return fd;
        }
        libc::close(fd);
        high
    }
}

fn mark_boringtun_fds_cloexec() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if fd <= 2 {
            continue;
        }
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy();
        let ours = target == "/dev/net/tun"
            || ["anon_inode:[eventpoll]", "anon_inode:[eventfd]", "anon_inode:[timerfd]"].contains(&target.as_ref());
        if !ours {
            continue;
        }
        // SAFETY: F_GETFD/F_SETFD only change the descriptor's flags; a descriptor closed
        // meanwhile makes them fail harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
