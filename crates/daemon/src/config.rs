//! The daemon's configuration file (TOML). Every field is documented here and in
//! `docs/config.md`; unknown fields are rejected; values are validated at load with errors that
//! name the field and the problem.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tollway_core::market::{Amount, BidPolicy, Currency, EnforcementPolicy, MarketConfig, Price};
use tollway_core::{CoreConfig, IfName, Millis, NodeId};
use tollway_traffic::{Admission, LocalService};

/// Echo requests (ping) accepted from each neighbor per second, IPv4 and IPv6 together (burst twice
/// that); more are dropped as unsolicited.
pub const ECHO_REQUESTS_PER_SEC: u32 = 10;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the node's secret key (and, later, its ledger). Created mode 0700.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Unix socket of the operator API. Created mode 0600; its directory is created 0700.
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// Physical interfaces on which to find neighbors. Required, at least one.
    pub interfaces: Vec<String>,
    /// Log filter used when the RUST_LOG environment variable is not set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub discovery: Discovery,
    #[serde(default)]
    pub tunnel: Tunnel,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub market: Market,
    /// The node's mesh IPv4 address; default: derived from its key, in 100.64.0.0/10.
    pub mesh_ipv4: Option<String>,
    #[serde(default)]
    pub routing: crate::mesh_config::Routing,
    pub uplink: Option<crate::mesh_config::Uplink>,
    pub lan: Option<crate::mesh_config::Lan>,
    #[serde(default)]
    pub firewall: Firewall,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub speedtest: Speedtest,
    #[serde(default)]
    pub quality: crate::quality_config::Quality,
}

/// Speed tests (docs/speedtest.md): the servers this node trusts, and whether it serves tests
/// itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Speedtest {
    /// Serve speed tests to other nodes, signed with this node's own key (they pin its node id).
    pub serve: bool,
    /// Address and port to serve on (when `serve`).
    pub listen: String,
    /// Servers this node trusts: address and public key.
    pub servers: Vec<PinnedServer>,
}

impl Default for Speedtest {
    fn default() -> Self {
        Speedtest { serve: false, listen: "[::]:7479".into(), servers: Vec::new() }
    }
}

/// A speed-test server this node trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedServer {
    /// Address and port, e.g. `"[2001:db8::1]:7479"`.
    pub address: String,
    /// Its Ed25519 public key, 64 hex digits (as `tollway speedtest-server` prints it).
    pub key: String,
}

impl Speedtest {
    /// The address to serve on (validated at load).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.listen.parse().expect("validated at load")
    }

    /// The pinned servers (validated at load).
    pub fn pins(&self) -> Vec<(std::net::SocketAddr, NodeId)> {
        self.servers
            .iter()
            .map(|p| (p.address.parse().expect("validated at load"), p.key.trim().parse().expect("validated at load")))
            .collect()
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| ("speedtest.listen", format!("{:?}: {e} (e.g. \"[::]:7479\")", self.listen)))?;
        let mut seen = Vec::new();
        for p in &self.servers {
            let addr: std::net::SocketAddr = p.address.parse().map_err(|e| {
                ("speedtest.servers", format!("address {:?}: {e} (e.g. \"[2001:db8::1]:7479\")", p.address))
            })?;
            let key: NodeId = p
                .key
                .trim()
                .parse()
                .map_err(|e| ("speedtest.servers", format!("key of {}: {e} (64 hex digits)", p.address)))?;
            if seen.contains(&(addr, key)) {
                return Err(("speedtest.servers", format!("{addr} with key {key} is listed twice")));
            }
            seen.push((addr, key));
        }
        crate::destinations::destinations(&seen).map_err(|e| ("speedtest.servers", e))?;
        Ok(())
    }
}

/// The HTTP listener: the dashboard (`/`), its JSON API (`/api/…`) and `/metrics` (Prometheus).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Serve at all.
    pub enabled: bool,
    /// Address and port. Anything but a loopback address needs `token`.
    pub listen: String,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for Http {
    fn default() -> Self {
        Http { enabled: true, listen: "127.0.0.1:7480".into(), token: None }
    }
}

impl Http {
    /// The address to listen on (validated at load).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.listen.parse().expect("validated at load")
    }
}

/// What neighbors may reach on this node and through it, beyond what is always allowed (replies
/// to connections started here, the control port, Babel, pings; forwarding into other tunnels).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Firewall {
    /// TCP ports neighbors may connect to, on every address of this node.
    pub open_tcp: Vec<u16>,
    /// UDP ports neighbors may send to, on every address of this node.
    pub open_udp: Vec<u16>,
    /// Neighbors may start connections to the devices on the LAN interfaces; otherwise only
    /// replies to connections those devices started reach them.
    pub open_lan: bool,
    /// Unsolicited traffic (dropped, never billed) a neighbor may send per `junk_window_secs`
    /// before it is cut off, in kB (1000 bytes); 0: never cut off for it.
    pub junk_limit_kb: u64,
    pub junk_window_secs: u64,
    /// How long a neighbor cut off for junk stays cut off after its last excess.
    pub junk_cut_off_secs: u64,
}

impl Default for Firewall {
    fn default() -> Firewall {
        let d = tollway_core::market::JunkLimit::default();
        Firewall {
            open_tcp: Vec::new(),
            open_udp: Vec::new(),
            open_lan: false,
            junk_limit_kb: d.bytes / 1000,
            junk_window_secs: d.window.as_secs(),
            junk_cut_off_secs: d.cut_off_for.as_secs(),
        }
    }
}

impl Firewall {
    pub fn junk_limit(&self) -> tollway_core::market::JunkLimit {
        tollway_core::market::JunkLimit {
            bytes: self.junk_limit_kb.saturating_mul(1000),
            window: Millis::from_secs(self.junk_window_secs),
            cut_off_for: Millis::from_secs(self.junk_cut_off_secs),
        }
    }
}

/// Prices, payments and enforcement. Amounts are decimal strings in the currency, e.g. "0.002".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Market {
    /// Name of the currency amounts are written in (shown in status and ledger).
    pub currency: String,
    /// Decimals of the currency's smallest unit: amounts with more decimals are rejected.
    pub decimals: u8,
    /// Our price per MB (10^6 bytes) for carrying a neighbor's traffic, both directions bundled.
    pub ask: String,
    /// The most we pay a neighbor per MB; a neighbor asking more is declined.
    pub max_price: String,
    /// "ask" to pay what each neighbor asks, or a fixed amount per MB (at least the ask, at
    /// most max_price) to buy a bigger share of busy neighbors.
    pub bid: String,
    /// We pay a neighbor once we owe it at least this.
    pub pay_threshold: String,
    /// A neighbor owing us more than this is throttled (or cut off).
    pub credit_limit: String,
    /// Rate, in kbit/s, a restricted neighbor keeps in each direction (enough for control and
    /// payment messages), and the least guaranteed rate of any neighbor.
    pub floor_rate_kbit: u64,
    /// "throttle" (to the floor rate, both directions) or "cut_off" (control messages only).
    pub enforcement: String,
    /// Capacity this node sells, in Mbit/s, shared by all neighbors in proportion to their bids.
    pub capacity_mbit: u64,
    /// Physical interfaces with their own capacity (Mbit/s): neighbors reached through one of
    /// them share that capacity instead of `capacity_mbit`.
    pub interface_capacity_mbit: BTreeMap<String, u64>,
    /// Seconds a neighbor may leave our ask unanswered before it is restricted.
    pub negotiation_grace_secs: u64,
    /// Start with outgoing payments paused (`tollway payments resume` to pay).
    pub payments_paused: bool,
    /// Days of ledger history (usage per minute, payments, price changes) kept.
    pub history_days: u32,
    /// Install the nftables and tc rules that filter, count, police and shape neighbors'
    /// traffic. Without them nothing is filtered (`[firewall]`) or counted, so nothing is billed
    /// and nobody is throttled: turn this off only to measure their cost, or where something else
    /// controls the traffic.
    pub traffic_control: bool,
}

impl Default for Market {
    fn default() -> Self {
        Market {
            currency: "XTW".into(),
            decimals: 6,
            ask: "0".into(),
            max_price: "0".into(),
            bid: "ask".into(),
            pay_threshold: "0.001".into(),
            credit_limit: "0.01".into(),
            floor_rate_kbit: 64,
            enforcement: "throttle".into(),
            capacity_mbit: 1000,
            interface_capacity_mbit: BTreeMap::new(),
            negotiation_grace_secs: 5,
            payments_paused: false,
            history_days: 30,
            traffic_control: true,
        }
    }
}

impl Market {
    pub fn currency(&self) -> Currency {
        Currency { name: self.currency.clone(), decimals: self.decimals }
    }

    /// Parse the market settings; errors name the field.
    pub fn to_core(&self) -> Result<MarketConfig, (&'static str, String)> {
        let c = self.currency();
        let amount = |field: &'static str, text: &str| c.parse(text).map_err(|e| (field, e.to_string()));
        let ask = Price(amount("market.ask", &self.ask)?);
        let max_price = Price(amount("market.max_price", &self.max_price)?);
        let bid_policy = match self.bid.trim() {
            "ask" => BidPolicy::PayAsk,
            fixed => {
                let p = Price(amount("market.bid", fixed).map_err(|(f, e)| (f, format!("{e} (or \"ask\")")))?);
                if p > max_price {
                    return Err(("market.bid", format!("{fixed} is above market.max_price {}", self.max_price)));
                }
                BidPolicy::Fixed(p)
            }
        };
        let pay_threshold = Amount(amount("market.pay_threshold", &self.pay_threshold)?);
        let credit_limit = Amount(amount("market.credit_limit", &self.credit_limit)?);
        if credit_limit < pay_threshold {
            return Err((
                "market.credit_limit",
                format!(
                    "{} is below market.pay_threshold {}: paying neighbors would be throttled before they pay",
                    self.credit_limit, self.pay_threshold
                ),
            ));
        }
        let enforcement = match self.enforcement.as_str() {
            "throttle" => EnforcementPolicy::Throttle,
            "cut_off" => EnforcementPolicy::CutOff,
            other => return Err(("market.enforcement", format!("{other:?} is not \"throttle\" or \"cut_off\""))),
        };
        let mut interface_capacity_bps = BTreeMap::new();
        for (name, mbit) in &self.interface_capacity_mbit {
            let ifname = IfName::new(name.as_str()).map_err(|e| ("market.interface_capacity_mbit", e.to_string()))?;
            if *mbit == 0 {
                return Err(("market.interface_capacity_mbit", format!("{name}: must be at least 1")));
            }
            interface_capacity_bps.insert(ifname, mbit.saturating_mul(1_000_000));
        }
        Ok(MarketConfig {
            ask,
            max_price,
            bid_policy,
            pay_threshold,
            credit_limit,
            floor_bps: self.floor_rate_kbit.saturating_mul(1000),
            enforcement,
            capacity_bps: self.capacity_mbit.saturating_mul(1_000_000),
            interface_capacity_bps,
            negotiation_grace: Millis::from_secs(self.negotiation_grace_secs),
            overclaim_slack_bytes: tollway_core::market::DEFAULT_OVERCLAIM_SLACK,
            payments_paused: self.payments_paused,
            // Set from `[firewall]` by `Config::core_config`.
            junk: Default::default(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// UDP port of discovery datagrams (multicast group ff02::7477:6179).
    pub port: u16,
    /// Seconds between Announces (and Hellos to each neighbor).
    pub announce_interval_secs: u64,
    /// A neighbor not heard from for this many seconds is removed with its tunnel.
    pub neighbor_timeout_secs: u64,
    /// A neighbor whose tunnel is not up this many seconds after discovery is removed...
    pub pending_timeout_secs: u64,
    /// ...and ignored for this many seconds.
    pub penalty_secs: u64,
    /// Most neighbors (pending and active together), hence most tunnel interfaces.
    pub max_neighbors: usize,
    /// Most new neighbors admitted per second.
    pub max_new_neighbors_per_sec: u32,
    /// Discovery messages whose timestamp is further than this from our clock are ignored.
    pub max_clock_skew_secs: u64,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            port: 7477,
            announce_interval_secs: 5,
            neighbor_timeout_secs: 30,
            pending_timeout_secs: 30,
            penalty_secs: 120,
            max_neighbors: 64,
            max_new_neighbors_per_sec: 10,
            max_clock_skew_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Kernel WireGuard if the kernel has it, else userspace.
    Auto,
    Kernel,
    Userspace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tunnel {
    /// `auto`, `kernel` or `userspace`.
    pub backend: Backend,
    /// The tunnel for the neighbor in table slot i listens on UDP port_base + i. The default
    /// range (31000–31063) is below Linux's ephemeral ports (32768–60999), so outgoing
    /// connections never take a tunnel's port.
    pub port_base: u16,
    /// MTU of tunnel interfaces: keep it at least 80 below the physical interfaces' MTU.
    pub mtu: u32,
    /// WireGuard persistent keepalive in seconds.
    pub keepalive_secs: u16,
    /// Threads per userspace tunnel.
    pub userspace_threads: usize,
}

impl Default for Tunnel {
    fn default() -> Self {
        Tunnel { backend: Backend::Auto, port_base: 31000, mtu: 1420, keepalive_secs: 15, userspace_threads: 1 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// TCP port of control sessions inside tunnels.
    pub port: u16,
    /// Seconds between keepalive pings on an idle session.
    pub keepalive_secs: u64,
    /// A session with nothing received for this many seconds is closed.
    pub session_timeout_secs: u64,
    /// The session handshake must finish within this many seconds.
    pub handshake_timeout_secs: u64,
}

impl Default for Control {
    fn default() -> Self {
        Control { port: 7478, keepalive_secs: 5, session_timeout_secs: 20, handshake_timeout_secs: 10 }
    }
}

fn default_data_dir() -> PathBuf {
    "/var/lib/tollway".into()
}
fn default_api_socket() -> PathBuf {
    "/run/tollway/tollway.sock".into()
}
fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: field `{field}`: {problem}")]
    Invalid { path: PathBuf, field: &'static str, problem: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        cfg.validate().map_err(|(field, problem)| ConfigError::Invalid { path: path.into(), field, problem })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        fn check(
            ok: bool,
            field: &'static str,
            problem: impl FnOnce() -> String,
        ) -> Result<(), (&'static str, String)> {
            if ok {
                Ok(())
            } else {
                Err((field, problem()))
            }
        }
        check(!self.interfaces.is_empty(), "interfaces", || "list at least one physical interface".into())?;
        match self.http.listen.parse::<std::net::SocketAddr>() {
            Err(e) => return Err(("http.listen", format!("{:?} is not an address and port: {e}", self.http.listen))),
            Ok(a) => check(
                a.ip().is_loopback() || self.http.token.as_deref().is_some_and(|t| t.len() >= 16),
                "http.token",
                || format!("listening on {a} (not loopback) needs a token of at least 16 characters"),
            )?,
        }
        check(self.http.token.as_deref().is_none_or(|t| t.len() >= 16), "http.token", || {
            "at least 16 characters".into()
        })?;
        for (i, name) in self.interfaces.iter().enumerate() {
            IfName::new(name.as_str()).map_err(|e| ("interfaces", e.to_string()))?;
            check(!self.interfaces[..i].contains(name), "interfaces", || format!("{name:?} is listed twice"))?;
        }
        check(self.data_dir.is_absolute(), "data_dir", || "must be an absolute path".into())?;
        check(self.api_socket.is_absolute(), "api_socket", || "must be an absolute path".into())?;
        check(self.api_socket.as_os_str().len() < 100, "api_socket", || "path too long for a unix socket".into())?;
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| ("log_level", e.to_string()))?;

        let d = &self.discovery;
        check(d.port != 0, "discovery.port", || "must not be 0".into())?;
        check(d.announce_interval_secs >= 1, "discovery.announce_interval_secs", || "must be at least 1".into())?;
        check(d.neighbor_timeout_secs >= 2 * d.announce_interval_secs, "discovery.neighbor_timeout_secs", || {
            format!("must be at least twice announce_interval_secs ({})", d.announce_interval_secs)
        })?;
        check(d.pending_timeout_secs >= 1, "discovery.pending_timeout_secs", || "must be at least 1".into())?;
        check((1..=1024).contains(&d.max_neighbors), "discovery.max_neighbors", || {
            "must be between 1 and 1024".into()
        })?;
        check(d.max_new_neighbors_per_sec >= 1, "discovery.max_new_neighbors_per_sec", || "must be at least 1".into())?;
        check(d.max_clock_skew_secs >= 1, "discovery.max_clock_skew_secs", || "must be at least 1".into())?;

        let t = &self.tunnel;
        check(t.port_base != 0, "tunnel.port_base", || "must not be 0".into())?;
        check(t.port_base as usize + d.max_neighbors <= 65536, "tunnel.port_base", || {
            format!("port_base + discovery.max_neighbors ({}) exceeds 65535", d.max_neighbors)
        })?;
        check((1280..=9000).contains(&t.mtu), "tunnel.mtu", || "must be between 1280 (IPv6 minimum) and 9000".into())?;
        check((1..=16).contains(&t.userspace_threads), "tunnel.userspace_threads", || {
            "must be between 1 and 16".into()
        })?;
        let tunnel_ports = t.port_base as usize..t.port_base as usize + d.max_neighbors;
        check(!tunnel_ports.contains(&(d.port as usize)), "discovery.port", || {
            format!("collides with the tunnel ports {}..{}", tunnel_ports.start, tunnel_ports.end)
        })?;

        let c = &self.control;
        check(c.port != 0, "control.port", || "must not be 0".into())?;
        check(c.keepalive_secs >= 1, "control.keepalive_secs", || "must be at least 1".into())?;
        check(c.session_timeout_secs > c.keepalive_secs, "control.session_timeout_secs", || {
            format!("must be longer than control.keepalive_secs ({})", c.keepalive_secs)
        })?;
        check(c.handshake_timeout_secs >= 1, "control.handshake_timeout_secs", || "must be at least 1".into())?;

        let m = &self.market;
        check(m.decimals <= Currency::MAX_DECIMALS, "market.decimals", || {
            format!("must be at most {}", Currency::MAX_DECIMALS)
        })?;
        check(!m.currency.is_empty() && m.currency.len() <= 16, "market.currency", || "1 to 16 characters".into())?;
        check((8..=10_000_000).contains(&m.floor_rate_kbit), "market.floor_rate_kbit", || {
            "must be between 8 and 10,000,000".into()
        })?;
        check(m.capacity_mbit >= 1, "market.capacity_mbit", || "must be at least 1".into())?;
        check(m.capacity_mbit * 1000 >= m.floor_rate_kbit, "market.capacity_mbit", || {
            "must be at least the floor rate".into()
        })?;
        check(m.history_days >= 1, "market.history_days", || "must be at least 1".into())?;
        m.to_core()?;
        self.mesh(&NodeId([0; 32]))?;

        let f = &self.firewall;
        for (ports, field) in [(&f.open_tcp, "firewall.open_tcp"), (&f.open_udp, "firewall.open_udp")] {
            for (i, port) in ports.iter().enumerate() {
                check(*port != 0, field, || "port 0 cannot be opened".into())?;
                check(!ports[..i].contains(port), field, || format!("{port} is listed twice"))?;
            }
        }
        check(f.junk_window_secs >= 1, "firewall.junk_window_secs", || "must be at least 1".into())?;
        self.speedtest.validate()?;
        self.quality.to_core(&self.market.currency(), self.tests_neighbors())?;
        check(f.junk_cut_off_secs >= 1, "firewall.junk_cut_off_secs", || "must be at least 1".into())?;
        Ok(())
    }

    /// The mesh settings for the node `id` (addresses derived from its key where not set).
    pub fn mesh(&self, id: &NodeId) -> Result<crate::mesh_config::MeshSettings, (&'static str, String)> {
        crate::mesh_config::parse(self.mesh_ipv4.as_deref(), &self.routing, self.uplink.as_ref(), self.lan.as_ref(), id)
    }

    pub fn interface_names(&self) -> Vec<IfName> {
        self.interfaces.iter().map(|s| IfName::new(s.as_str()).expect("validated at load")).collect()
    }

    /// What neighbors may send this node (node `own`) and through it: the firewall's part of
    /// every traffic plan.
    pub fn admission(&self, own: &NodeId) -> Admission {
        let mesh = self.mesh(own).ok();
        Admission {
            // Babel's port is open only where babeld runs.
            services: {
                let mut v = match mesh.as_ref().map(|m| m.kind) {
                    Some(crate::mesh_config::RoutingKind::Babel) | None => vec![LocalService::babel()],
                    Some(_) => Vec::new(),
                };
                // Speed tests served to other nodes: on any address of this node.
                if self.speedtest.serve {
                    v.push(LocalService {
                        name: "speedtest".into(),
                        protocol: tollway_traffic::Protocol::Tcp,
                        port: self.speedtest.addr().port(),
                        scope: tollway_traffic::ServiceScope::AnyAddress,
                    });
                }
                v
            },
            open_tcp: self.firewall.open_tcp.clone(),
            open_udp: self.firewall.open_udp.clone(),
            echo_requests_per_sec: ECHO_REQUESTS_PER_SEC,
            // New connections from neighbors are forwarded into other tunnels and out of the
            // uplink; into the LAN only replies, unless `firewall.open_lan`.
            uplinks: mesh.as_ref().and_then(|m| m.uplink.as_ref()).map(|u| vec![u.ifname.clone()]).unwrap_or_default(),
            lans: mesh.as_ref().and_then(|m| m.lan.as_ref()).map(|l| vec![l.ifname.clone()]).unwrap_or_default(),
            lans_open: self.firewall.open_lan,
            tunnel_prefix: Some(IfName::tunnel_prefix(own)),
        }
    }

    /// Whether speed tests can be forced through each neighbor: a server is pinned and there is
    /// mesh routing (babel forces both directions through the tested neighbor; static and
    /// controller routing only the upload, see [`Config::tests_upload_only`]).
    pub fn tests_neighbors(&self) -> bool {
        !self.speedtest.servers.is_empty() && self.routing.kind != crate::mesh_config::RoutingKind::None
    }

    /// Static and controller routing: a test's upload is forced through the tested neighbor,
    /// its download comes back by the operator's routes (nothing announces a per-neighbor
    /// address back to us), so only the upload judges and ranks neighbors.
    pub fn tests_upload_only(&self) -> bool {
        use crate::mesh_config::RoutingKind;
        matches!(self.routing.kind, RoutingKind::Static | RoutingKind::Controller)
    }

    pub fn core_config(&self) -> CoreConfig {
        let d = &self.discovery;
        CoreConfig {
            interfaces: self.interface_names(),
            announce_interval: Millis::from_secs(d.announce_interval_secs),
            neighbor_timeout: Millis::from_secs(d.neighbor_timeout_secs),
            pending_timeout: Millis::from_secs(d.pending_timeout_secs),
            penalty: Millis::from_secs(d.penalty_secs),
            max_neighbors: d.max_neighbors,
            max_new_neighbors_per_sec: d.max_new_neighbors_per_sec,
            max_clock_skew: Millis::from_secs(d.max_clock_skew_secs),
            tunnel_port_base: self.tunnel.port_base,
            tunnel_mtu: self.tunnel.mtu,
            tunnel_keepalive_secs: self.tunnel.keepalive_secs,
            control_port: self.control.port,
            keepalive_interval: Millis::from_secs(self.control.keepalive_secs),
            session_timeout: Millis::from_secs(self.control.session_timeout_secs),
            handshake_timeout: Millis::from_secs(self.control.handshake_timeout_secs),
            sample_interval: Millis(1000),
            market: tollway_core::market::MarketConfig {
                junk: self.firewall.junk_limit(),
                ..self.market.to_core().expect("validated at load")
            },
            quality: {
                let mut q =
                    self.quality.to_core(&self.market.currency(), self.tests_neighbors()).expect("validated at load");
                if self.tests_upload_only() {
                    q.goals.upload_only = true;
                    // A live check moves the traffic off the best neighbor to compare: the
                    // download does not move with static routes, and the check is not built
                    // for the upload alone.
                    q.live_check_interval = Millis(0);
                }
                q
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(r#"interfaces = ["eth0"]"#).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/tollway"));
        assert_eq!(c.discovery.neighbor_timeout_secs, 30);
        assert_eq!(c.discovery.max_neighbors, 64);
        assert_eq!(c.tunnel.backend, Backend::Auto);
        let core = c.core_config();
        assert_eq!(core.neighbor_timeout, Millis::from_secs(30));
        assert_eq!(core.interfaces, vec![IfName::new("eth0").unwrap()]);
        assert_eq!(core.market.ask, Price(0));
        assert_eq!(core.market.floor_bps, 64_000);
        assert!(c.firewall.open_tcp.is_empty() && c.firewall.open_udp.is_empty() && !c.firewall.open_lan);
        let c = parse("interfaces = [\"eth0\"]\n[firewall]\nopen_tcp = [22, 443]\nopen_udp = [53]\nopen_lan = true")
            .unwrap();
        assert_eq!((c.firewall.open_tcp, c.firewall.open_udp, c.firewall.open_lan), (vec![22, 443], vec![53], true));
        let j = parse("interfaces = [\"eth0\"]").unwrap().core_config().market.junk;
        assert_eq!((j.bytes, j.window.as_secs(), j.cut_off_for.as_secs()), (10_000_000, 60, 300));
        let c = parse("interfaces = [\"eth0\"]\n[firewall]\njunk_limit_kb = 50\njunk_cut_off_secs = 20").unwrap();
        let j = c.core_config().market.junk;
        assert_eq!((j.bytes, j.window.as_secs(), j.cut_off_for.as_secs()), (50_000, 60, 20));
    }

    #[test]
    fn market_amounts_convert_exactly() {
        let c = parse(
            "interfaces = [\"eth0\"]\n[market]\nask = \"0.002\"\nmax_price = \"0.005\"\nbid = \"0.004\"\npay_threshold = \"0.01\"\ncredit_limit = \"0.1\"\nenforcement = \"cut_off\"\ncapacity_mbit = 20\ninterface_capacity_mbit = { eth1 = 5 }",
        )
        .unwrap();
        let m = c.core_config().market;
        assert_eq!((m.ask, m.max_price, m.bid_policy), (Price(2000), Price(5000), BidPolicy::Fixed(Price(4000))));
        assert_eq!((m.pay_threshold, m.credit_limit), (Amount(10_000), Amount(100_000)));
        assert_eq!(m.enforcement, EnforcementPolicy::CutOff);
        assert_eq!(m.capacity_bps, 20_000_000);
        assert_eq!(m.interface_capacity_bps[&IfName::new("eth1").unwrap()], 5_000_000);
    }

    #[test]
    fn invalid_configs_name_the_field_and_problem() {
        let cases = [
            ("", "missing field `interfaces`"),
            (r#"interfaces = []"#, "field `interfaces`: list at least one"),
            (r#"interfaces = ["this-name-is-too-long"]"#, "field `interfaces`: interface name"),
            (r#"interfaces = ["a", "a"]"#, "\"a\" is listed twice"),
            ("interfaces = [\"a\"]\ncolour = 1", "unknown field `colour`"),
            ("interfaces = [\"a\"]\ndata_dir = \"rel\"", "field `data_dir`: must be an absolute path"),
            ("interfaces = [\"a\"]\n[discovery]\nneighbor_timeout_secs = 3", "field `discovery.neighbor_timeout_secs`"),
            ("interfaces = [\"a\"]\n[discovery]\nmax_neighbors = 0", "field `discovery.max_neighbors`"),
            ("interfaces = [\"a\"]\n[discovery]\nmax_nieghbors = 3", "unknown field `max_nieghbors`"),
            ("interfaces = [\"a\"]\n[tunnel]\nmtu = 100", "field `tunnel.mtu`"),
            ("interfaces = [\"a\"]\n[tunnel]\nbackend = \"magic\"", "unknown variant `magic`"),
            ("interfaces = [\"a\"]\n[tunnel]\nport_base = 65500", "field `tunnel.port_base`"),
            ("interfaces = [\"a\"]\n[control]\nsession_timeout_secs = 2", "field `control.session_timeout_secs`"),
            ("interfaces = [\"a\"]\nlog_level = \"=[\"", "field `log_level`"),
            (
                "interfaces = [\"a\"]\n[market]\nask = \"0.0000001\"",
                "field `market.ask`: \"0.0000001\" has more than 6 decimals",
            ),
            ("interfaces = [\"a\"]\n[market]\nask = \"-1\"", "field `market.ask`: \"-1\" is negative"),
            ("interfaces = [\"a\"]\n[market]\nmax_price = \"cheap\"", "field `market.max_price`"),
            ("interfaces = [\"a\"]\n[market]\nbid = \"lots\"", "field `market.bid`"),
            ("interfaces = [\"a\"]\n[market]\nbid = \"0.5\"\nmax_price = \"0.1\"", "above market.max_price"),
            ("interfaces = [\"a\"]\n[market]\ncredit_limit = \"0.0001\"", "below market.pay_threshold"),
            ("interfaces = [\"a\"]\n[market]\nenforcement = \"shame\"", "field `market.enforcement`"),
            ("interfaces = [\"a\"]\n[market]\nfloor_rate_kbit = 1", "field `market.floor_rate_kbit`"),
            (
                "interfaces = [\"a\"]\n[market]\ninterface_capacity_mbit = { eth0 = 0 }",
                "field `market.interface_capacity_mbit`",
            ),
            ("interfaces = [\"a\"]\n[market]\ncapacity = 5", "unknown field `capacity`"),
            ("interfaces = [\"a\"]\n[firewall]\nopen_tcp = [22, 0]", "field `firewall.open_tcp`: port 0"),
            ("interfaces = [\"a\"]\n[firewall]\nopen_udp = [53, 53]", "field `firewall.open_udp`: 53 is listed twice"),
            ("interfaces = [\"a\"]\n[firewall]\nopen_tcp = [70000]", "open_tcp"),
            ("interfaces = [\"a\"]\n[firewall]\nopen = [22]", "unknown field `open`"),
            ("interfaces = [\"a\"]\n[firewall]\njunk_window_secs = 0", "firewall.junk_window_secs"),
            ("interfaces = [\"a\"]\n[http]\nlisten = \"7480\"", "field `http.listen`"),
            (
                "interfaces = [\"a\"]\n[http]\nlisten = \"0.0.0.0:7480\"",
                "field `http.token`: listening on 0.0.0.0:7480",
            ),
            ("interfaces = [\"a\"]\n[http]\ntoken = \"short\"", "field `http.token`: at least 16"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "config {text:?}: error {err:?} should contain {want:?}");
            assert!(err.starts_with("config t.toml"), "error should name the file: {err}");
        }
    }

    #[test]
    fn static_and_controller_routing_test_by_upload_only_and_babel_both_ways() {
        let pin = "[[speedtest.servers]]\naddress = \"[2001:db8::1]:7479\"\nkey = \"3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\"\n";
        let with =
            |routing: &str| parse(&format!("interfaces = [\"a\"]\n{routing}\n{pin}")).unwrap().core_config().quality;
        let babel = with("");
        assert!(babel.testing && !babel.goals.upload_only && babel.live_check_interval.0 > 0, "{babel:?}");
        let st = with(
            "[routing]\nkind = \"static\"\n[[routing.static]]\nprefix = \"::/0\"\nvia = \"3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\"",
        );
        assert!(st.testing && st.goals.upload_only, "{st:?}");
        assert_eq!(st.live_check_interval.0, 0, "no live checks: the download does not move with static routes");
        let none = with("[routing]\nkind = \"none\"");
        assert!(!none.testing, "no mesh routing, nothing to rank");
    }
}
