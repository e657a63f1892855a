//! Kernel facilities behind one trait each, with verbs that are whole operations.
//!
//! - [`Tunnels`]: WireGuard devices, one peer each (kernel WireGuard via netlink, or userspace).
//! - [`Links`]: interface state, addresses and routes (rtnetlink).
//! - [`Routes`]: routes in any table (both families, v4-via-v6 next hops) and policy rules,
//!   for mesh routing; [`sysctl`] has the forwarding switches.
//!
//! Every trait has a real implementation and an in-memory fake for unit tests of the driver.
//! Calls are synchronous: the driver thread that owns the core calls them directly, holding no
//! lock. Implementations act on the network namespace of the calling thread.
//!
//! - [`KernelTunnels`], [`UserspaceTunnels`] (boringtun in-process), chosen by
//!   [`open_tunnels`] with a [`TunnelBackend`]; [`probe_kernel_wireguard`].
//! - [`NetlinkLinks`], [`NetlinkRoutes`].
//! - [`fake::FakeTunnels`], [`fake::FakeLinks`] sharing a [`fake::FakeKernel`];
//!   [`fake::FakeRoutes`].
//! - [`netns`]: throw-away network namespaces for tests.

pub mod fake;
mod link;
pub mod netns;
pub mod nl;
pub mod routes;
pub mod sysctl;
mod tunnel;

pub use link::NetlinkLinks;
pub use routes::{
    Family, NetlinkRoutes, RouteError, RouteTarget, Routes, Rule, TableRoute, PROTO_BABEL, PROTO_TOLLWAY,
};
pub use tunnel::uapi;
pub use tunnel::{
    open_tunnels, probe_kernel_wireguard, KernelTunnels, ParseBackendError, TunnelBackend, UserspaceOptions,
    UserspaceTunnels,
};

use std::net::{Ipv6Addr, SocketAddrV6};
use tollway_core::{IfName, TunnelStats, WgPublicKey};

/// The WireGuard side of one neighbor's tunnel. Its `Debug` output leaves out the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct WgConfig {
    pub ifname: IfName,
    pub private_key: [u8; 32],
    pub listen_port: u16,
    pub peer_key: WgPublicKey,
    /// With the scope id of the physical interface set.
    pub endpoint: Option<SocketAddrV6>,
    pub keepalive_secs: u16,
}

impl std::fmt::Debug for WgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgConfig")
            .field("ifname", &self.ifname)
            .field("private_key", &"(redacted)")
            .field("listen_port", &self.listen_port)
            .field("peer_key", &self.peer_key)
            .field("endpoint", &self.endpoint)
            .field("keepalive_secs", &self.keepalive_secs)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("creating tunnel {ifname}: {source}")]
    Create { ifname: IfName, source: std::io::Error },
    #[error("configuring WireGuard on {ifname}: {detail}")]
    Configure { ifname: IfName, detail: String },
    #[error("removing tunnel {ifname}: {source}")]
    Remove { ifname: IfName, source: std::io::Error },
    #[error("reading WireGuard state of {ifname}: {detail}")]
    Read { ifname: IfName, detail: String },
    #[error("no tunnel named {0}")]
    Missing(IfName),
    #[error("listing tunnels: {0}")]
    List(std::io::Error),
    #[error("{backend} tunnels are not available: {detail}")]
    Unavailable { backend: &'static str, detail: String },
}

/// WireGuard tunnels, one peer per device.
pub trait Tunnels: Send {
    /// Which implementation this is, for logs and status ("kernel", "userspace", "fake").
    fn backend(&self) -> &'static str;

    /// Create the device if missing and make its WireGuard state match `cfg`: private key,
    /// listen port, exactly one peer with allowed IPs `::/0` and `0.0.0.0/0`, the endpoint (if
    /// known) and the persistent keepalive. Idempotent, and cheap when nothing changed.
    /// Addresses, MTU and link state are [`Links`]' business: `ensure` may recreate the
    /// interface (when someone deleted it, or for a new listen port in userspace), which drops
    /// them, so apply them again after each `ensure`.
    fn ensure(&mut self, cfg: &WgConfig) -> Result<(), TunnelError>;

    /// Remove the device and everything it holds. Removing a missing device is not an error.
    fn remove(&mut self, ifname: &IfName) -> Result<(), TunnelError>;

    /// Tunnel devices present whose name starts with `prefix` (including ones left behind by a
    /// previous run of this node, for clean-up).
    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, TunnelError>;

    /// Handshake age and inner byte counts of the device's peer.
    fn stats(&mut self, ifname: &IfName) -> Result<TunnelStats, TunnelError>;
}

/// Byte and packet counts of an interface, as the kernel keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// The interface's index: a new index means a new interface (its counters restarted).
    pub ifindex: u32,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// A route to `dst/prefix_len` out of `dev`, optionally preferring source `src`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    pub dst: Ipv6Addr,
    pub prefix_len: u8,
    pub dev: IfName,
    pub src: Option<Ipv6Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no interface named {0}")]
    NoSuchLink(IfName),
    #[error("{op} on {ifname}: {source}")]
    Netlink { op: &'static str, ifname: String, source: std::io::Error },
}

/// Interface state, addresses and routes.
pub trait Links: Send {
    /// The interface index, or `None` if no such interface exists.
    fn index_of(&mut self, ifname: &IfName) -> Result<Option<u32>, LinkError>;

    /// Bring the interface up, setting its MTU first if given.
    fn set_up(&mut self, ifname: &IfName, mtu: Option<u32>) -> Result<(), LinkError>;

    /// Stop the kernel from adding IPv6 addresses of its own to the interface (it gives
    /// address-less devices such as tunnels a random link-local address when they come up).
    /// Call before `set_up`.
    fn disable_ipv6_autoconf(&mut self, ifname: &IfName) -> Result<(), LinkError>;

    /// Make sure `addr/prefix_len` is on the interface (added without duplicate address
    /// detection). Idempotent.
    fn ensure_address(&mut self, ifname: &IfName, addr: Ipv6Addr, prefix_len: u8) -> Result<(), LinkError>;

    /// Make sure `addr/prefix_len` is not on the interface (as the kernel, the prefix length
    /// must match). Idempotent: a missing address or interface is not an error.
    fn remove_address(&mut self, ifname: &IfName, addr: Ipv6Addr, prefix_len: u8) -> Result<(), LinkError>;

    /// Make sure the IPv4 address `addr/prefix_len` is on the interface. Idempotent.
    fn ensure_address_v4(&mut self, ifname: &IfName, addr: std::net::Ipv4Addr, prefix_len: u8)
        -> Result<(), LinkError>;

    /// Make sure the route exists exactly as given (replacing one to the same destination).
    fn ensure_route(&mut self, route: &Route6) -> Result<(), LinkError>;

    /// Remove the route if present.
    fn remove_route(&mut self, route: &Route6) -> Result<(), LinkError>;

    /// Names of interfaces whose name starts with `prefix`.
    fn list(&mut self, prefix: &str) -> Result<Vec<IfName>, LinkError>;

    /// Delete an interface; deleting a missing one is not an error.
    fn delete(&mut self, ifname: &IfName) -> Result<(), LinkError>;

    /// The kernel's byte and packet counters of an interface, if it exists.
    fn stats(&mut self, ifname: &IfName) -> Result<Option<LinkStats>, LinkError>;

    /// Give the interface a second name (an altname: `if_nametoindex` and netlink find the
    /// interface by it, as babeld's filters do). At most 15 bytes, as `if_nametoindex` reads
    /// names. Idempotent; gone with the interface.
    fn ensure_altname(&mut self, ifname: &IfName, altname: &str) -> Result<(), LinkError>;

    /// Remove an altname of the interface; one it does not have is fine.
    fn remove_altname(&mut self, ifname: &IfName, altname: &str) -> Result<(), LinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_private_key() {
        let cfg = WgConfig {
            ifname: IfName::new("tw0").unwrap(),
            private_key: [0xab; 32],
            listen_port: 1,
            peer_key: WgPublicKey([0xcd; 32]),
            endpoint: None,
            keepalive_secs: 0,
        };
        let s = format!("{cfg:?}");
        assert!(!s.contains("ab, ") && !s.contains("171") && !s.to_lowercase().contains("abab"), "{s}");
        assert!(s.contains("redacted") && s.contains("tw0"));
    }
}
