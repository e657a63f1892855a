//! What babeld is given: its configuration file (written once per start) and the interface
//! lines sent over the control socket. Pure functions of [`BabelSettings`].
//!
//! Facts of Debian 12's babeld 1.12.1 that shape them (read in its source, checked by running
//! it; see docs/routing.md):
//! - it refuses to start without an interface, so the file names one that can never exist
//!   ([`IDLE_INTERFACE`]: Linux rejects ':' in interface names); the tunnels come over the
//!   socket;
//! - it writes the table number of the routes it installs into the 8-bit `rtm_table` field only
//!   (no `RTA_TABLE`), so an export table above 255 silently becomes another table (7474 → 50):
//!   the export table must be 1..=252;
//! - `max-rtt-penalty 0` is a parse error (the value must be positive) and `type tunnel` forces
//!   a penalty of 96: interfaces are `type wired` with timestamps off, which adds no RTT cost;
//! - `link-quality true` is what lets this node alone set a floor on a neighbor's cost (see
//!   [`interface_line`]);
//! - when a redistributed route disappears, `check_xroutes` retracts and reinstalls the prefix
//!   at the wrong index (fixed in 1.12.2, "Reinstall the right route in check_xroutes"): the
//!   withdrawn prefix is not retracted and neighbors keep using it until it expires (16 s
//!   here). A metric change goes through a correct path, so an export is withdrawn in two
//!   steps: its import-table route moves to protocol [`PROTO_WITHDRAWN`], which is announced
//!   with metric 65534 (infinite after any hop), and is deleted a few update intervals later;
//! - `skip-kernel-setup true`: otherwise babeld sets forwarding, `rp_filter` and redirect
//!   sysctls at start and restores them at a clean exit (not after kill -9); the daemon owns
//!   the forwarding switches instead.

use crate::plan::LinkCost;
use crate::RoutingError;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tollway_core::{IfName, NodeId};
use tollway_kernel::PROTO_TOLLWAY;

/// The placeholder interface of the configuration file: babeld 1.12.1 will not start with
/// none, and no Linux interface can have this name, so it stays down forever.
pub const IDLE_INTERFACE: &str = "tollway:idle";

/// The lowest rxcost we configure: with link quality on, a neighbor's cost is
/// max(its claim, 256) × max(our rxcost, 256) / 256, so below 256 the neighbor's claim alone
/// would decide.
pub const MIN_RXCOST: u16 = 256;

/// The protocol number of an import-table route being withdrawn: announced with metric
/// 65534, which every neighbor reads as unreachable (see the module notes).
pub const PROTO_WITHDRAWN: u8 = 252;
/// The metric babeld gives routes of [`PROTO_WITHDRAWN`]: the largest finite one, so the
/// change is announced as an update, not handled as a removal.
pub const WITHDRAWN_METRIC: u16 = 65534;

/// A babel router-id: 8 bytes, written as a modified EUI-64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouterId(pub [u8; 8]);

impl RouterId {
    /// The first 8 bytes of the node id (a public key: as unique as the node), with the
    /// multicast and locally-administered bits cleared as babeld does for random ids.
    pub fn for_node(node: &NodeId) -> RouterId {
        let mut id = [0u8; 8];
        id.copy_from_slice(&node.0[..8]);
        id[0] &= !3;
        RouterId(id)
    }
}

impl std::fmt::Display for RouterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        f.write_str(&parts.join(":"))
    }
}

/// Everything the daemon decides about its babeld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BabelSettings {
    /// The babeld program (`/usr/sbin/babeld`).
    pub program: PathBuf,
    /// Where babeld's files go (the daemon's runtime directory, e.g. `/run/tollway`).
    pub runtime_dir: PathBuf,
    pub router_id: RouterId,
    /// The node's mesh addresses (on `lo`): announced, and the source of packets it sends into
    /// the mesh.
    pub mesh_ipv6: Ipv6Addr,
    pub mesh_ipv4: Option<Ipv4Addr>,
    /// Where babeld installs routes (1..=252; see the module notes).
    pub export_table: u32,
    /// Where the router writes the exports of the plan for babeld to announce.
    pub import_table: u32,
    pub hello_interval: Duration,
    /// Full route dumps to each neighbor. Recovery after a restart waits for the neighbor's
    /// next one, so this bounds it: keep it at about 2 × `hello_interval`.
    pub update_interval: Duration,
    /// Probe addresses (speed tests forced through one neighbor): none by default.
    pub probe: Option<ProbeSettings>,
}

/// The node's probe prefix (a /120 whose address `k` is on `lo` while the neighbor in slot
/// `k` is up) and how many slots to write filters for. Each address is announced only through
/// the tunnel carrying the altname [`probe_altname`]`(k)`, so the mesh routes replies to it back
/// through that neighbor alone.
///
/// With it come the quality penalties: for each `(destination, prefix)` in `penalized` (the
/// routes to the pinned speed-test servers: the default routes for servers on the internet,
/// destination 0; a /128 for each server inside the mesh), each slot and each level of
/// `tollway_core::quality::PENALTY_LEVELS` above 0, an input filter adds that level to the
/// metric of the prefix learned through the tunnel carrying the altname
/// [`penalty_altname`]`(slot, destination, level)`. The driver moves a tunnel's altname when its ranking
/// changes, and the router then re-adds the tunnel, which makes babeld look the names up again.
/// Input filters change only this node's choice: the neighbor does not see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    pub prefix: Ipv6Addr,
    /// Slots 0..slots (at most 256: a /120).
    pub slots: u16,
    pub penalized: Vec<(u8, ipnet::IpNet)>,
}

/// The altname that selects the penalty filter of `level` (an index into
/// `tollway_core::quality::PENALTY_LEVELS`, 1 or more) for routes to `destination` through the
/// neighbor in `slot` (at most 12 bytes: `if_nametoindex` reads 15).
pub fn penalty_altname(slot: u8, destination: u8, level: usize) -> String {
    format!("twq{slot}d{destination}l{level}")
}

/// The altname the tunnel of the neighbor in `slot` carries for babeld's filters (at most 10
/// bytes: `if_nametoindex` reads 15).
pub fn probe_altname(slot: u8) -> String {
    format!("twprobe{slot}")
}

impl BabelSettings {
    /// Settings with the defaults: `/usr/sbin/babeld`, tables 74 and 75, hello 1 s, updates
    /// every 2 s.
    pub fn new(runtime_dir: PathBuf, router_id: RouterId, mesh_ipv6: Ipv6Addr, mesh_ipv4: Option<Ipv4Addr>) -> Self {
        BabelSettings {
            program: PathBuf::from("/usr/sbin/babeld"),
            runtime_dir,
            router_id,
            mesh_ipv6,
            mesh_ipv4,
            export_table: 74,
            import_table: 75,
            hello_interval: Duration::from_secs(1),
            update_interval: Duration::from_secs(2),
            probe: None,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.runtime_dir.join("babeld.conf")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("babeld.sock")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.runtime_dir.join("babeld.pid")
    }
    pub fn state_path(&self) -> PathBuf {
        self.runtime_dir.join("babeld.state")
    }
    pub fn log_path(&self) -> PathBuf {
        self.runtime_dir.join("babeld.log")
    }

    /// Reject what babeld would misread or refuse, naming the setting.
    pub fn validate(&self) -> Result<(), RoutingError> {
        let bad = |m: String| Err(RoutingError::Settings(m));
        if !(1..=252).contains(&self.export_table) {
            return bad(format!(
                "mesh table {} cannot be used with babel: babeld 1.12 writes table numbers in 8 bits, so it must \
                 be 1..=252",
                self.export_table
            ));
        }
        if self.import_table == self.export_table || self.import_table == 0 || (253..=255).contains(&self.import_table)
        {
            return bad(format!(
                "import table {} must differ from the mesh table and from 0, 253, 254, 255",
                self.import_table
            ));
        }
        for (name, d) in [("hello interval", self.hello_interval), ("update interval", self.update_interval)] {
            // babeld: positive, at most 655.35 s, in milliseconds.
            if d < Duration::from_millis(10) || d > Duration::from_millis(655_350) {
                return bad(format!("{name} {d:?} is outside 10 ms..655 s"));
            }
        }
        // sockaddr_un holds 107 bytes of path.
        let sock = self.socket_path();
        if sock.as_os_str().len() > 107 {
            return bad(format!("control socket path {} is longer than 107 bytes", sock.display()));
        }
        for p in [self.config_path(), sock, self.pid_path(), self.state_path(), self.log_path()] {
            if !is_plain_word(&p) {
                return bad(format!("path {} must not contain whitespace, '#' or '\"'", p.display()));
            }
        }
        if self.router_id.0 == [0; 8] {
            return bad("router-id is all zeros".into());
        }
        Ok(())
    }
}

/// A path babeld's config parser reads as one word.
fn is_plain_word(p: &Path) -> bool {
    p.to_str().is_some_and(|s| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '#' || c == '"'))
}

/// A duration as babeld reads it: seconds with up to three decimals.
fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The configuration file. Announce only the node's mesh addresses among local ones, plus what
/// the router puts into the import table (protocol 251); install every learned route into the
/// export table with the node's mesh address as preferred source (otherwise the kernel may pick
/// a tunnel's link-local address, and replies cannot come back). No interfaces but the
/// placeholder: tunnels are added over the control socket.
pub fn render_config(s: &BabelSettings) -> String {
    let mut c = String::new();
    let p = |p: PathBuf| p.display().to_string();
    let _ = writeln!(c, "# Written by tollway at each start of babeld; changes are lost.");
    let _ = writeln!(c, "router-id {}", s.router_id);
    let _ = writeln!(c, "local-path-readwrite {}", p(s.socket_path()));
    let _ = writeln!(c, "pid-file {}", p(s.pid_path()));
    let _ = writeln!(c, "state-file {}", p(s.state_path()));
    let _ = writeln!(c, "log-file {}", p(s.log_path()));
    let _ = writeln!(c, "export-table {}", s.export_table);
    let _ = writeln!(c, "import-table {}", s.import_table);
    let _ = writeln!(c, "skip-kernel-setup true");
    let _ = writeln!(c, "redistribute local ip {}/128 allow", s.mesh_ipv6);
    if let Some(v4) = s.mesh_ipv4 {
        let _ = writeln!(c, "redistribute local ip {v4}/32 allow");
    }
    if let Some(p) = &s.probe {
        let _ = writeln!(c, "redistribute local ip {}/120 allow", p.prefix);
    }
    let _ = writeln!(c, "redistribute local deny");
    let _ = writeln!(c, "redistribute proto {PROTO_TOLLWAY} allow");
    let _ = writeln!(c, "redistribute proto {PROTO_WITHDRAWN} metric {WITHDRAWN_METRIC}");
    let _ = writeln!(c, "redistribute deny");
    let _ = writeln!(c, "install pref-src {}", s.mesh_ipv6);
    if let Some(v4) = s.mesh_ipv4 {
        let _ = writeln!(c, "install pref-src {v4}");
    }
    if let Some(p) = &s.probe {
        // babeld resolves `if` names whenever an interface appears, so tunnels added later
        // (with their altname set first) match.
        let mut b = p.prefix.octets();
        for slot in 0..p.slots.min(256) {
            b[15] = slot as u8;
            let _ = writeln!(c, "out ip {}/128 if {} allow", Ipv6Addr::from(b), probe_altname(slot as u8));
        }
        let _ = writeln!(c, "out ip {}/120 deny", p.prefix);
        for (destination, prefix) in &p.penalized {
            for slot in 0..p.slots.min(256) {
                for (level, add) in tollway_core::quality::PENALTY_LEVELS.iter().enumerate().skip(1) {
                    let name = penalty_altname(slot as u8, *destination, level);
                    let _ = writeln!(c, "in ip {prefix} eq {} if {name} metric {add}", prefix.prefix_len());
                }
            }
        }
    }
    let _ = writeln!(c, "interface {IDLE_INTERFACE}");
    c
}

/// The rxcost babeld is given for a link of this cost (at least [`MIN_RXCOST`]).
pub fn rxcost(cost: LinkCost) -> u16 {
    cost.get().max(MIN_RXCOST)
}

/// The control-socket line that adds one tunnel, every parameter spelled out (babeld keeps
/// the parameters of an interface it knows; a cost change is a flush and a new line).
///
/// With `link-quality true` babeld computes the cost of a neighbor as
/// max(txcost, 256) × max(rxcost, 256) / 256 (plus an RTT term, zero here), where txcost is
/// what the neighbor claims and rxcost is ours, scaled up by lost hellos: a neighbor can raise
/// its cost but never bring it below our rxcost.
pub fn interface_line(ifname: &IfName, cost: LinkCost, s: &BabelSettings) -> String {
    format!(
        "interface {ifname} type wired link-quality true split-horizon true rxcost {} hello-interval {} \
         update-interval {} enable-timestamps false v4-via-v6 true",
        rxcost(cost),
        seconds(s.hello_interval),
        seconds(s.update_interval),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BabelSettings {
        BabelSettings::new(
            PathBuf::from("/run/tollway"),
            RouterId([0x02, 0, 0, 0, 0, 0, 0, 0x0a]),
            "fd12:3456::1".parse().unwrap(),
            Some("100.64.1.2".parse().unwrap()),
        )
    }

    #[test]
    fn config_announces_only_the_mesh_addresses_and_the_import_table() {
        let c = render_config(&settings());
        let lines: Vec<&str> = c.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "router-id 02:00:00:00:00:00:00:0a",
                "local-path-readwrite /run/tollway/babeld.sock",
                "pid-file /run/tollway/babeld.pid",
                "state-file /run/tollway/babeld.state",
                "log-file /run/tollway/babeld.log",
                "export-table 74",
                "import-table 75",
                "skip-kernel-setup true",
                "redistribute local ip fd12:3456::1/128 allow",
                "redistribute local ip 100.64.1.2/32 allow",
                "redistribute local deny",
                "redistribute proto 251 allow",
                "redistribute proto 252 metric 65534",
                "redistribute deny",
                "install pref-src fd12:3456::1",
                "install pref-src 100.64.1.2",
                "interface tollway:idle",
            ]
        );
        // No tunnel in the file: they come over the socket.
        assert_eq!(c.matches("interface ").count(), 1);
    }

    #[test]
    fn probe_addresses_are_announced_each_only_through_its_own_tunnel() {
        let prefix: Ipv6Addr = "fd01:2345:6789:abcd:ef01:2345:6789:ab00".parse().unwrap();
        let s = BabelSettings {
            probe: Some(ProbeSettings {
                prefix,
                slots: 3,
                penalized: vec![
                    (0, "::/0".parse().unwrap()),
                    (0, "0.0.0.0/0".parse().unwrap()),
                    (1, "fd00::1/128".parse().unwrap()),
                ],
            }),
            ..settings()
        };
        let c = render_config(&s);
        let lines: Vec<&str> = c.lines().collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("{l:?} missing:\n{c}"));
        assert!(
            at("redistribute local ip fd01:2345:6789:abcd:ef01:2345:6789:ab00/120 allow")
                < at("redistribute local deny")
        );
        let allow1 = at("out ip fd01:2345:6789:abcd:ef01:2345:6789:ab01/128 if twprobe1 allow");
        assert!(at("out ip fd01:2345:6789:abcd:ef01:2345:6789:ab00/128 if twprobe0 allow") < allow1);
        let deny = at("out ip fd01:2345:6789:abcd:ef01:2345:6789:ab00/120 deny");
        assert!(at("out ip fd01:2345:6789:abcd:ef01:2345:6789:ab02/128 if twprobe2 allow") < deny, "allows first");
        assert_eq!(c.matches("out ip").count(), 4);
        assert!(deny < at("interface tollway:idle"));
        // Penalties: each slot, each level above 0, each tested prefix, named by its
        // destination; this node's view only.
        assert!(at("in ip ::/0 eq 0 if twq0d0l1 metric 256") < at("interface tollway:idle"));
        at("in ip ::/0 eq 0 if twq2d0l6 metric 3840");
        at("in ip 0.0.0.0/0 eq 0 if twq1d0l3 metric 768");
        at("in ip fd00::1/128 eq 128 if twq1d1l3 metric 768");
        assert_eq!(c.matches("in ip").count(), 3 * 3 * 6);
        assert!(penalty_altname(255, 255, 6).len() <= 15);
        assert_eq!(probe_altname(255), "twprobe255");
        assert!(probe_altname(255).len() <= 15);
        // Without probes, no filter at all.
        assert!(!render_config(&settings()).contains("out "));
    }

    #[test]
    fn without_ipv4_nothing_ipv4_is_announced_or_installed_with_a_source() {
        let s = BabelSettings { mesh_ipv4: None, ..settings() };
        let c = render_config(&s);
        assert!(!c.contains("/32"), "{c}");
        assert_eq!(c.matches("pref-src").count(), 1);
        assert!(c.contains("redistribute local deny"));
    }

    #[test]
    fn interface_lines_spell_out_every_parameter_and_floor_the_cost() {
        let s = BabelSettings { hello_interval: Duration::from_millis(500), ..settings() };
        let tw = IfName::new("tw0a0b0c0d0e0f").unwrap();
        assert_eq!(
            interface_line(&tw, LinkCost(1024), &s),
            "interface tw0a0b0c0d0e0f type wired link-quality true split-horizon true rxcost 1024 \
             hello-interval 0.500 update-interval 2.000 enable-timestamps false v4-via-v6 true"
        );
        assert!(interface_line(&tw, LinkCost(1), &s).contains(" rxcost 256 "), "floored at 256");
        assert!(interface_line(&tw, LinkCost::UNUSABLE, &s).contains(" rxcost 65535 "));
        assert!(!interface_line(&tw, LinkCost::GOOD, &s).contains("max-rtt-penalty"));
    }

    #[test]
    fn settings_babeld_would_misread_are_rejected_by_name() {
        let ok = settings();
        ok.validate().unwrap();
        let err = |s: BabelSettings| s.validate().unwrap_err().to_string();
        assert!(err(BabelSettings { export_table: 7474, ..ok.clone() }).contains("8 bits"));
        assert!(err(BabelSettings { export_table: 254, ..ok.clone() }).contains("1..=252"));
        assert!(err(BabelSettings { import_table: 74, ..ok.clone() }).contains("import table 74"));
        assert!(err(BabelSettings { hello_interval: Duration::ZERO, ..ok.clone() }).contains("hello interval"));
        let long = PathBuf::from(format!("/run/{}", "x".repeat(100)));
        assert!(err(BabelSettings { runtime_dir: long, ..ok.clone() }).contains("107 bytes"));
        assert!(err(BabelSettings { runtime_dir: "/run/a b".into(), ..ok.clone() }).contains("whitespace"));
        assert!(err(BabelSettings { router_id: RouterId([0; 8]), ..ok.clone() }).contains("router-id"));
        // The import table may be above 255: babeld reads it from RTA_TABLE.
        BabelSettings { import_table: 7475, ..ok }.validate().unwrap();
    }

    #[test]
    fn router_ids_come_from_the_node_id_with_babelds_bits_cleared() {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&[0xff, 1, 2, 3, 4, 5, 6, 7]);
        let id = RouterId::for_node(&NodeId(key));
        assert_eq!(id.to_string(), "fc:01:02:03:04:05:06:07");
    }
}
