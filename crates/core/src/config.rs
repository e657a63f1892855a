//! The settings the core needs, already validated by the daemon's config loader.

use crate::ids::IfName;
use crate::market::MarketConfig;
use crate::time::Millis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// Physical interfaces to discover neighbors on.
    pub interfaces: Vec<IfName>,
    /// How often to multicast an Announce (and unicast a Hello to each neighbor).
    pub announce_interval: Millis,
    /// A neighbor not heard from (discovery or control) for this long is removed.
    pub neighbor_timeout: Millis,
    /// A neighbor whose tunnel has not come up this long after discovery is removed and ignored
    /// for `penalty` (stops identities that announce but never complete a handshake).
    pub pending_timeout: Millis,
    pub penalty: Millis,
    /// Cap on pending + active neighbors (and so on tunnel interfaces).
    pub max_neighbors: usize,
    /// New neighbors admitted per second at most (bounds interface churn under a flood).
    pub max_new_neighbors_per_sec: u32,
    /// Discovery messages whose timestamp differs from our clock by more are stale.
    pub max_clock_skew: Millis,
    /// Tunnel for the neighbor in slot `i` listens on `tunnel_port_base + i`.
    pub tunnel_port_base: u16,
    pub tunnel_mtu: u32,
    /// WireGuard persistent keepalive, also what makes the first handshake happen at once.
    pub tunnel_keepalive_secs: u16,
    /// TCP port of the control session inside tunnels.
    pub control_port: u16,
    pub keepalive_interval: Millis,
    /// An established session with nothing received for this long is closed.
    pub session_timeout: Millis,
    /// The session handshake must complete within this.
    pub handshake_timeout: Millis,
    /// How often kernel tunnel state is sampled.
    pub sample_interval: Millis,
    /// Prices, payments and enforcement.
    pub market: MarketConfig,
    /// Speed tests through each neighbor, the operator's goals, and what follows from them.
    pub quality: crate::quality::QualityConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            interfaces: Vec::new(),
            announce_interval: Millis::from_secs(5),
            neighbor_timeout: Millis::from_secs(30),
            pending_timeout: Millis::from_secs(30),
            penalty: Millis::from_secs(120),
            max_neighbors: 64,
            max_new_neighbors_per_sec: 10,
            max_clock_skew: Millis::from_secs(300),
            tunnel_port_base: 31000,
            tunnel_mtu: 1320,
            tunnel_keepalive_secs: 15,
            control_port: 7478,
            keepalive_interval: Millis::from_secs(5),
            session_timeout: Millis::from_secs(20),
            handshake_timeout: Millis::from_secs(10),
            sample_interval: Millis(1000),
            market: MarketConfig::default(),
            quality: Default::default(),
        }
    }
}
