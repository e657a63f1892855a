//! The mesh settings of the config file: the node's mesh IPv4 address, `[routing]` (which
//! router, its table, static routes, the controller's file), `[uplink]` and `[lan]`. Read as
//! strings by serde, parsed once into [`MeshSettings`] at load (errors name the field).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use tollway_core::{IfName, NodeId};

/// The routing table mesh routes go into by default (never `main`).
pub const DEFAULT_TABLE: u32 = 7474;

/// 100.64.0.0/10, where derived mesh IPv4 addresses live.
pub fn mesh_ipv4_range() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).expect("valid")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingKind {
    /// Stock babeld, driven over its control socket.
    Babel,
    /// Routes from `[[routing.static]]`.
    Static,
    /// Routes from a file a central controller writes.
    Controller,
    /// No routing: only direct neighbors are reachable (as before multi-hop).
    None,
}

impl RoutingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingKind::Babel => "babel",
            RoutingKind::Static => "static",
            RoutingKind::Controller => "controller",
            RoutingKind::None => "none",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// "babel" (default), "static", "controller" or "none".
    pub kind: RoutingKind,
    /// Kernel routing table for mesh routes (1–4294967295, not 253–255: default, main, local).
    pub table: u32,
    /// The babeld program.
    pub babeld: PathBuf,
    /// Babel hello interval on tunnels, in milliseconds.
    pub hello_interval_ms: u32,
    /// `kind = "static"`: routes, each through a neighbor.
    #[serde(rename = "static")]
    pub static_routes: Vec<RawStaticRoute>,
    /// `kind = "controller"`: the routes file the controller writes.
    pub controller_file: Option<PathBuf>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            kind: RoutingKind::Babel,
            table: DEFAULT_TABLE,
            babeld: "/usr/sbin/babeld".into(),
            hello_interval_ms: 1000,
            static_routes: Vec::new(),
            controller_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticRoute {
    /// A prefix, e.g. "0.0.0.0/0", "fd12:3456::/48".
    pub prefix: String,
    /// The neighbor it goes through: its node id (64 hex digits).
    pub via: String,
    /// Among several routes for one prefix, the lowest metric through a connected neighbor is
    /// used.
    #[serde(default)]
    pub metric: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ipv6Nat {
    /// Mesh and LAN sources (ULAs) leaving the uplink take the uplink's address.
    Masquerade,
    /// No translation: the operator routes a global prefix into the mesh.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// The interface with internet access.
    pub interface: String,
    /// "masquerade" (default) or "none". IPv4 leaving the uplink is always masqueraded.
    #[serde(default = "default_ipv6_nat")]
    pub ipv6_nat: Ipv6Nat,
}

fn default_ipv6_nat() -> Ipv6Nat {
    Ipv6Nat::Masquerade
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lan {
    /// The interface devices are on (addresses and DHCP are the router's own business).
    pub interface: String,
    /// The LAN's IPv6 prefix; default: derived from the node key (a /64 in fd00::/8).
    pub ipv6_prefix: Option<String>,
    /// The LAN's IPv4 prefix (no IPv4 LAN without it). Must not overlap 100.64.0.0/10.
    pub ipv4_prefix: Option<String>,
}

/// A static route, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub prefix: IpNet,
    pub via: NodeId,
    pub metric: u32,
}

/// The uplink, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSettings {
    pub ifname: IfName,
    pub ipv6_nat: Ipv6Nat,
}

/// The LAN, parsed: its prefixes are announced into the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanSettings {
    pub ifname: IfName,
    pub ipv6: Ipv6Net,
    pub ipv4: Option<Ipv4Net>,
}

/// Everything mesh-related, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    pub mesh_ipv4: Ipv4Addr,
    pub kind: RoutingKind,
    pub table: u32,
    pub babeld: PathBuf,
    pub hello_interval_ms: u32,
    pub static_routes: Vec<StaticRoute>,
    pub controller_file: Option<PathBuf>,
    pub uplink: Option<UplinkSettings>,
    pub lan: Option<LanSettings>,
}

impl MeshSettings {
    /// The node's own prefixes: announced by babel, and never accepted from others.
    pub fn own_prefixes(&self, id: &NodeId) -> Vec<IpNet> {
        let mut p = vec![
            IpNet::new(IpAddr::V6(id.mesh_ip()), 128).expect("valid"),
            IpNet::new(IpAddr::V4(self.mesh_ipv4), 32).expect("valid"),
        ];
        if let Some(lan) = &self.lan {
            p.push(IpNet::V6(lan.ipv6));
            p.extend(lan.ipv4.map(IpNet::V4));
        }
        p
    }
}

type Problem = (&'static str, String);

/// Parse and check the mesh settings for the node `id`.
pub fn parse(
    mesh_ipv4: Option<&str>,
    routing: &Routing,
    uplink: Option<&Uplink>,
    lan: Option<&Lan>,
    id: &NodeId,
) -> Result<MeshSettings, Problem> {
    let mesh_ipv4 = match mesh_ipv4 {
        None => id.mesh_ipv4(),
        Some(text) => {
            let a: Ipv4Addr = text.parse().map_err(|_| ("mesh_ipv4", format!("{text:?} is not an IPv4 address")))?;
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                return Err(("mesh_ipv4", format!("{a} cannot be a node's address")));
            }
            a
        }
    };
    if matches!(routing.table, 0 | 253..=255) {
        return Err(("routing.table", format!("{} is reserved (unspec, default, main, local)", routing.table)));
    }
    if !(50..=60_000).contains(&routing.hello_interval_ms) {
        return Err(("routing.hello_interval_ms", "must be between 50 and 60000".into()));
    }
    let mut static_routes = Vec::new();
    for (i, r) in routing.static_routes.iter().enumerate() {
        let prefix: IpNet = r.prefix.parse().map_err(|_| {
            ("routing.static", format!("route #{}: prefix {:?} is not a prefix like fd00::/8", i + 1, r.prefix))
        })?;
        if prefix.trunc() != prefix {
            return Err((
                "routing.static",
                format!("route #{}: {prefix} has host bits set (did you mean {}?)", i + 1, prefix.trunc()),
            ));
        }
        let via: NodeId =
            r.via.parse().map_err(|e| ("routing.static", format!("route #{}: via {:?}: {e}", i + 1, r.via)))?;
        if via == *id {
            return Err(("routing.static", format!("route #{}: via is this node itself", i + 1)));
        }
        static_routes.push(StaticRoute { prefix, via, metric: r.metric });
    }
    match routing.kind {
        RoutingKind::Static if static_routes.is_empty() => {
            return Err((
                "routing.static",
                "routing.kind = \"static\" needs at least one [[routing.static]] route".into(),
            ))
        }
        RoutingKind::Controller if routing.controller_file.is_none() => {
            return Err(("routing.controller_file", "routing.kind = \"controller\" needs the routes file".into()))
        }
        RoutingKind::Babel | RoutingKind::None | RoutingKind::Controller if !static_routes.is_empty() => {
            return Err((
                "routing.static",
                format!(
                    "static routes are only used with routing.kind = \"static\" (it is {:?})",
                    routing.kind.as_str()
                ),
            ))
        }
        _ => {}
    }
    if let Some(f) = &routing.controller_file {
        if !f.is_absolute() {
            return Err(("routing.controller_file", "must be an absolute path".into()));
        }
    }
    let uplink = match uplink {
        None => None,
        Some(u) => Some(UplinkSettings {
            ifname: IfName::new(u.interface.as_str()).map_err(|e| ("uplink.interface", e.to_string()))?,
            ipv6_nat: u.ipv6_nat,
        }),
    };
    let lan = match lan {
        None => None,
        Some(l) => {
            let ifname = IfName::new(l.interface.as_str()).map_err(|e| ("lan.interface", e.to_string()))?;
            let ipv6 = match &l.ipv6_prefix {
                None => Ipv6Net::new(id.lan_prefix_v6(), 64).expect("valid"),
                Some(t) => {
                    let p: Ipv6Net =
                        t.parse().map_err(|_| ("lan.ipv6_prefix", format!("{t:?} is not an IPv6 prefix")))?;
                    if p.prefix_len() > 64 || p.trunc() != p {
                        return Err(("lan.ipv6_prefix", format!("{p}: use a /64 or shorter prefix without host bits")));
                    }
                    p
                }
            };
            let ipv4 = match &l.ipv4_prefix {
                None => None,
                Some(t) => {
                    let p: Ipv4Net =
                        t.parse().map_err(|_| ("lan.ipv4_prefix", format!("{t:?} is not an IPv4 prefix")))?;
                    if p.trunc() != p || p.prefix_len() > 30 {
                        return Err(("lan.ipv4_prefix", format!("{p}: use a /30 or shorter prefix without host bits")));
                    }
                    if mesh_ipv4_range().contains(&p.network()) || p.contains(&mesh_ipv4_range().network()) {
                        return Err((
                            "lan.ipv4_prefix",
                            format!("{p} overlaps 100.64.0.0/10, where mesh node addresses live"),
                        ));
                    }
                    if p.contains(&mesh_ipv4) {
                        return Err(("lan.ipv4_prefix", format!("{p} contains mesh_ipv4 {mesh_ipv4}")));
                    }
                    Some(p)
                }
            };
            if uplink.as_ref().is_some_and(|u| u.ifname == ifname) {
                return Err(("lan.interface", format!("{ifname} is also the uplink")));
            }
            Some(LanSettings { ifname, ipv6, ipv4 })
        }
    };
    Ok(MeshSettings {
        mesh_ipv4,
        kind: routing.kind,
        table: routing.table,
        babeld: routing.babeld.clone(),
        hello_interval_ms: routing.hello_interval_ms,
        static_routes,
        controller_file: routing.controller_file.clone(),
        uplink,
        lan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        NodeId([3; 32])
    }

    fn lan(v6: Option<&str>, v4: Option<&str>) -> Lan {
        Lan { interface: "br-lan".into(), ipv6_prefix: v6.map(Into::into), ipv4_prefix: v4.map(Into::into) }
    }

    #[test]
    fn defaults_are_babel_in_table_7474_with_derived_addresses() {
        let m = parse(None, &Routing::default(), None, None, &id()).unwrap();
        assert_eq!(m.kind, RoutingKind::Babel);
        assert_eq!(m.table, 7474);
        assert_eq!(m.mesh_ipv4, id().mesh_ipv4());
        assert_eq!(m.own_prefixes(&id()).len(), 2);
        let l = parse(None, &Routing::default(), None, Some(&lan(None, Some("192.168.3.0/24"))), &id()).unwrap();
        let lan = l.lan.unwrap();
        assert_eq!(lan.ipv6, Ipv6Net::new(id().lan_prefix_v6(), 64).unwrap());
        assert_eq!(lan.ipv4.unwrap().to_string(), "192.168.3.0/24");
    }

    #[test]
    fn bad_mesh_settings_name_the_field_and_the_problem() {
        let r = Routing::default();
        let stat = |prefix: &str, via: &str| Routing {
            kind: RoutingKind::Static,
            static_routes: vec![RawStaticRoute { prefix: prefix.into(), via: via.into(), metric: 0 }],
            ..Routing::default()
        };
        let other = NodeId([4; 32]).to_string();
        let cases: Vec<(Result<MeshSettings, Problem>, &str, &str)> = vec![
            (parse(Some("nope"), &r, None, None, &id()), "mesh_ipv4", "not an IPv4"),
            (parse(Some("127.0.0.1"), &r, None, None, &id()), "mesh_ipv4", "cannot be"),
            (parse(None, &Routing { table: 254, ..r.clone() }, None, None, &id()), "routing.table", "reserved"),
            (
                parse(None, &Routing { kind: RoutingKind::Static, ..r.clone() }, None, None, &id()),
                "routing.static",
                "at least one",
            ),
            (parse(None, &stat("fd00::1/8", &other), None, None, &id()), "routing.static", "host bits"),
            (parse(None, &stat("banana", &other), None, None, &id()), "routing.static", "not a prefix"),
            (parse(None, &stat("fd00::/8", "abc"), None, None, &id()), "routing.static", "via"),
            (parse(None, &stat("fd00::/8", &id().to_string()), None, None, &id()), "routing.static", "itself"),
            (
                parse(None, &Routing { kind: RoutingKind::Controller, ..r.clone() }, None, None, &id()),
                "routing.controller_file",
                "needs",
            ),
            (parse(None, &r, None, Some(&lan(None, Some("100.64.1.0/24"))), &id()), "lan.ipv4_prefix", "overlaps"),
            (parse(None, &r, None, Some(&lan(None, Some("10.0.0.1/24"))), &id()), "lan.ipv4_prefix", "host bits"),
            (parse(None, &r, None, Some(&lan(Some("fd00::/72"), None)), &id()), "lan.ipv6_prefix", "/64 or shorter"),
            (
                parse(
                    None,
                    &r,
                    Some(&Uplink { interface: "br-lan".into(), ipv6_nat: Ipv6Nat::None }),
                    Some(&lan(None, None)),
                    &id(),
                ),
                "lan.interface",
                "also the uplink",
            ),
        ];
        for (got, field, problem) in cases {
            let (f, p) = got.expect_err(field);
            assert_eq!(f, field, "{p}");
            assert!(p.contains(problem), "{field}: {p:?} should say {problem:?}");
        }
        let ok = parse(None, &stat("0.0.0.0/0", &other), None, None, &id()).unwrap();
        assert_eq!(ok.static_routes[0].via, NodeId([4; 32]));
    }
}
