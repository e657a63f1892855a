//! The topology file: nodes, links between them, and daemon config overrides.
//!
//! ```toml
//! name = "chain3"              # optional; default: the file stem
//! [defaults]                   # optional
//! mtu = 1500                   # veth MTU for links (and uplink/LAN veths) that don't set one
//! config = { discovery = { announce_interval_secs = 2 } }   # merged into every node's config
//! [[node]]
//! name = "a"                   # a-z then up to 7 of a-z0-9; not `internet` or `lan`
//! uplink = true                # optional: a veth `v-internet` to the lab's `internet` host
//! lan = true                   # optional: a veth `v-lan` to a host namespace `<node>-lan`
//! config = { }                 # optional, merged into this node's config after the defaults
//! misbehave = { metric_lie = true }   # optional: make the node cheat (see crate::misbehave)
//! [[node]]
//! name = "b"
//! [[link]]
//! a = "a"
//! b = "b"
//! rate_mbit = 100              # optional: HTB on both ends' egress
//! loss_permille = 10           # optional: random drop on both ends' ingress (nftables)
//! mtu = 1500                   # optional
//! ```
//!
//! `uplink = true` links the node to the lab's one `internet` host (created when any node has
//! an uplink), which answers at 2001:db8::1 and 192.0.2.1; the node gets default routes
//! toward it and its daemon config gets `[uplink] interface = "v-internet"`. `lan = true`
//! gives the node a LAN host `<node>-lan` with a lab-chosen IPv4 /24 and IPv6 /64; the daemon
//! config gets `[lan] interface = "v-lan"` with those prefixes. Addresses are numbered by the
//! node's position in the file (see [`crate::hosts`]), so only nodes #1–#63 can have an uplink
//! and #1–#155 a LAN. A node's own `config` is merged over what the lab generates, so
//! `config = { uplink = { ipv6_nat = "none" } }` adds to the generated `[uplink]`.
//!
//! `misbehave` makes a node cheat without changing its daemon ([`crate::misbehave`]):
//! `metric_lie` (it announces a default route it does not have, with metric 0; not with
//! `uplink = true`), `degrade_after_secs` + `degrade_to_mbit` (after that delay it sends
//! everything at that rate), `junk_mbit` (it sends that much unsolicited UDP to its neighbors)
//! and `prioritize_tests` (it polices what it forwards, except speed tests):
//!
//! ```toml
//! misbehave = { metric_lie = true, degrade_after_secs = 60, degrade_to_mbit = 2, junk_mbit = 5, prioritize_tests = true }
//! ```
//!
//! Everything is validated at load; errors name the field and the problem.

use crate::hosts::{self, MAX_LAN_POSITION, MAX_UPLINK_POSITION, RESERVED_NODE_NAMES};
use crate::names::{LabName, NameError, NodeName};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Veth MTU when neither the link nor `[defaults]` sets one.
pub const DEFAULT_MTU: u32 = 1500;
/// Config keys the lab sets itself and a topology may not override.
pub const RESERVED_CONFIG_KEYS: [&str; 2] = ["data_dir", "api_socket"];

/// A validated topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The `name` field, if present.
    pub name: Option<LabName>,
    pub nodes: Vec<NodeSpec>,
    pub links: Vec<LinkSpec>,
    /// `[defaults] config`: merged into every node's generated daemon config first.
    pub defaults_config: toml::Table,
    /// `[defaults] mtu`, else [`DEFAULT_MTU`]: links without their own MTU, and the veths to
    /// the internet and LAN hosts.
    pub default_mtu: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: NodeName,
    /// `[node] config`: merged into this node's generated daemon config after the defaults.
    pub config: toml::Table,
    /// `uplink = true`: a veth to the lab's internet host, and default routes over it.
    pub uplink: bool,
    /// `lan = true`: a LAN host namespace `<node>-lan` behind the node.
    pub lan: bool,
    /// `misbehave = {...}`: how the lab makes the node cheat.
    pub misbehave: Option<Misbehave>,
}

/// How a node is to misbehave ([`crate::misbehave`]). Every field is off when left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Misbehave {
    /// Announce routes cheaper than they are.
    pub metric_lie: bool,
    /// Serve well at first, then degrade.
    pub degrade: Option<Degrade>,
    /// Send this much junk traffic to neighbors, Mbit/s.
    pub junk_mbit: Option<u32>,
    /// Treat recognisable measurement traffic better than other traffic.
    pub prioritize_tests: bool,
}

/// `degrade_after_secs` and `degrade_to_mbit`, which only make sense together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degrade {
    pub after_secs: u32,
    pub to_mbit: u32,
}

/// An undirected veth link. Inside `a` the veth is `v-<b>`, inside `b` it is `v-<a>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    pub a: NodeName,
    pub b: NodeName,
    pub mtu: u32,
    /// Rate limit applied to each end's egress (so each direction), in Mbit/s.
    pub rate_mbit: Option<u32>,
    /// Probability, in thousandths, that a packet is dropped in each direction (1..=1000).
    pub loss_permille: Option<u16>,
}

/// A topology that could not be read or is not valid. `file` is the file (or what the text
/// was called); `problem` says what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[error("topology {file}: {problem}")]
pub struct TopologyError {
    pub file: String,
    pub problem: TopologyProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyProblem {
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// TOML syntax, a wrong type, a missing field or an unknown field (with line and column).
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("there are no [[node]] entries")]
    NoNodes,
    #[error("node #{second} name {name:?} is already used by node #{first}")]
    DuplicateNode { name: String, first: usize, second: usize },
    #[error("link #{link} field `{end}` names node {name:?}, which is not a [[node]]{}", host_hint(.name))]
    UnknownNode { link: usize, end: &'static str, name: String },
    #[error("node #{node} name {name:?} is reserved: {why}")]
    ReservedName { node: usize, name: String, why: &'static str },
    #[error("node #{node} ({name}) sets `{field} = true`, but {why}")]
    Position { node: usize, name: String, field: &'static str, why: String },
    #[error("{field} sets `{set}` without `{missing}`: the two go together")]
    Unpaired { field: String, set: &'static str, missing: &'static str },
    #[error("link #{link} connects node {node:?} to itself")]
    SelfLink { link: usize, node: String },
    #[error("link #{link} ({a}–{b}) duplicates link #{first}: there can be one link per pair of nodes (the veth in {a} is named v-{b})")]
    DuplicateLink { link: usize, first: usize, a: String, b: String },
    #[error("{field} = {value} is not valid: {rule}")]
    BadValue { field: String, value: i64, rule: &'static str },
    #[error("{field} sets `{key}`, which the lab sets itself")]
    ReservedKey { field: String, key: &'static str },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Option<String>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    link: Vec<RawLink>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    mtu: Option<i64>,
    #[serde(default)]
    config: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    uplink: bool,
    #[serde(default)]
    lan: bool,
    misbehave: Option<RawMisbehave>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMisbehave {
    #[serde(default)]
    metric_lie: bool,
    degrade_after_secs: Option<i64>,
    degrade_to_mbit: Option<i64>,
    junk_mbit: Option<i64>,
    #[serde(default)]
    prioritize_tests: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    a: String,
    b: String,
    mtu: Option<i64>,
    rate_mbit: Option<i64>,
    loss_permille: Option<i64>,
}

impl Topology {
    /// Read and validate a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TopologyError { file: path.display().to_string(), problem: TopologyProblem::Read(e) })?;
        Topology::parse(&text, &path.display().to_string())
    }

    /// Parse and validate topology text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Topology, TopologyError> {
        Topology::parse_inner(text).map_err(|problem| TopologyError { file: source.to_owned(), problem })
    }

    fn parse_inner(text: &str) -> Result<Topology, TopologyProblem> {
        let raw: RawTopology = toml::from_str(text).map_err(|e| TopologyProblem::Syntax(one_line(&e, text)))?;
        let name = raw.name.as_deref().map(|n| LabName::parse_as(n, "`name`")).transpose()?;
        check_reserved(&raw.defaults.config, "[defaults] config")?;
        let default_mtu = match raw.defaults.mtu {
            Some(m) => check_mtu(m, "[defaults] mtu")?,
            None => DEFAULT_MTU,
        };
        if raw.node.is_empty() {
            return Err(TopologyProblem::NoNodes);
        }
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(raw.node.len());
        for (i, n) in raw.node.into_iter().enumerate() {
            let num = i + 1;
            let name = NodeName::parse_as(&n.name, &format!("node #{num} name"))?;
            if let Some(first) = nodes.iter().position(|o| o.name == name) {
                return Err(TopologyProblem::DuplicateNode { name: n.name, first: first + 1, second: num });
            }
            if let Some(reserved) = RESERVED_NODE_NAMES.iter().find(|r| **r == name.as_str()) {
                let why = if *reserved == hosts::INTERNET {
                    "it is the lab's internet host (give a node `uplink = true` to link it there)"
                } else {
                    "the veth to a node's LAN host is named v-lan"
                };
                return Err(TopologyProblem::ReservedName { node: num, name: n.name, why });
            }
            check_reserved(&n.config, &format!("node #{num} ({name}) config"))?;
            if n.uplink && num > MAX_UPLINK_POSITION {
                return Err(TopologyProblem::Position {
                    node: num,
                    name: n.name,
                    field: "uplink",
                    why: format!("uplink subnets are numbered by node position (198.51.100.<4×#>/30): only nodes #1 to #{MAX_UPLINK_POSITION} can have an uplink; move the node up the file"),
                });
            }
            if n.lan && num > MAX_LAN_POSITION {
                return Err(TopologyProblem::Position {
                    node: num,
                    name: n.name,
                    field: "lan",
                    why: format!("LAN prefixes are numbered by node position (10.<100+#>.0.0/24): only nodes #1 to #{MAX_LAN_POSITION} can have a LAN; move the node up the file"),
                });
            }
            let misbehave =
                n.misbehave.map(|m| check_misbehave(m, &format!("node #{num} ({name}) misbehave"))).transpose()?;
            if n.uplink && misbehave.is_some_and(|m| m.metric_lie) {
                return Err(TopologyProblem::Position {
                    node: num,
                    name: name.to_string(),
                    field: "uplink",
                    why: "`misbehave = { metric_lie = true }` gives the node a fake uplink of its own: a liar has no real one".into(),
                });
            }
            nodes.push(NodeSpec { name, config: n.config, uplink: n.uplink, lan: n.lan, misbehave });
        }
        let mut links: Vec<LinkSpec> = Vec::with_capacity(raw.link.len());
        let mut pairs = Vec::<BTreeSet<NodeName>>::new();
        for (i, l) in raw.link.into_iter().enumerate() {
            let num = i + 1;
            let end = |name: &str, end: &'static str| {
                nodes
                    .iter()
                    .find(|n| n.name.as_str() == name)
                    .map(|n| n.name.clone())
                    .ok_or_else(|| TopologyProblem::UnknownNode { link: num, end, name: name.to_owned() })
            };
            let a = end(&l.a, "a")?;
            let b = end(&l.b, "b")?;
            if a == b {
                return Err(TopologyProblem::SelfLink { link: num, node: l.a });
            }
            let pair: BTreeSet<NodeName> = [a.clone(), b.clone()].into();
            if let Some(first) = pairs.iter().position(|p| *p == pair) {
                return Err(TopologyProblem::DuplicateLink { link: num, first: first + 1, a: l.a, b: l.b });
            }
            pairs.push(pair);
            let mtu = match l.mtu {
                Some(m) => check_mtu(m, &format!("link #{num} mtu"))?,
                None => default_mtu,
            };
            let rate_mbit = match l.rate_mbit {
                Some(r) if (1..=100_000).contains(&r) => Some(r as u32),
                Some(r) => {
                    return Err(TopologyProblem::BadValue {
                        field: format!("link #{num} rate_mbit"),
                        value: r,
                        rule: "a rate is 1 to 100000 Mbit/s (leave it out for no limit)",
                    })
                }
                None => None,
            };
            let loss_permille = match l.loss_permille {
                Some(0) | None => None,
                Some(p) if (1..=1000).contains(&p) => Some(p as u16),
                Some(p) => {
                    return Err(TopologyProblem::BadValue {
                        field: format!("link #{num} loss_permille"),
                        value: p,
                        rule: "loss is 0 to 1000 thousandths",
                    })
                }
            };
            links.push(LinkSpec { a, b, mtu, rate_mbit, loss_permille });
        }
        Ok(Topology { name, nodes, links, defaults_config: raw.defaults.config, default_mtu })
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    /// A node's position in the file, 1 for the first `[[node]]` (what addresses of uplinks
    /// and LANs are numbered by).
    pub fn position(&self, name: &NodeName) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == *name).map(|i| i + 1)
    }

    /// True if some node has `uplink = true` (so the lab has an internet host).
    pub fn has_internet(&self) -> bool {
        self.nodes.iter().any(|n| n.uplink)
    }

    /// The links that have `node` at one end, each with the neighbor at the other end.
    pub fn links_of<'a>(&'a self, node: &'a NodeName) -> impl Iterator<Item = (&'a LinkSpec, &'a NodeName)> + 'a {
        self.links.iter().filter_map(move |l| {
            if l.a == *node {
                Some((l, &l.b))
            } else if l.b == *node {
                Some((l, &l.a))
            } else {
                None
            }
        })
    }

    /// The interfaces inside `node`'s namespace, in link order: `v-<neighbor>` for each link.
    pub fn interfaces_of(&self, node: &NodeName) -> Vec<String> {
        self.links_of(node).map(|(_, peer)| peer.veth_toward()).collect()
    }

    /// The lab name to use when none is given: the `name` field, else the file stem.
    pub fn lab_name_for(&self, path: &Path) -> Result<LabName, NameError> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        LabName::parse_as(
            &stem,
            &format!("lab name (taken from the file name of {}; set `name` or pass --name)", path.display()),
        )
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.a, self.b)
    }
}

fn check_mtu(m: i64, field: &str) -> Result<u32, TopologyProblem> {
    if (1280..=65535).contains(&m) {
        Ok(m as u32)
    } else {
        Err(TopologyProblem::BadValue {
            field: field.to_owned(),
            value: m,
            rule: "an MTU is 1280 (the IPv6 minimum) to 65535",
        })
    }
}

fn check_misbehave(m: RawMisbehave, field: &str) -> Result<Misbehave, TopologyProblem> {
    let mbit = |v: Option<i64>, key: &str| match v {
        None => Ok(None),
        Some(r) if (1..=100_000).contains(&r) => Ok(Some(r as u32)),
        Some(r) => Err(TopologyProblem::BadValue {
            field: format!("{field} {key}"),
            value: r,
            rule: "a rate is 1 to 100000 Mbit/s (leave it out for none)",
        }),
    };
    let after = match m.degrade_after_secs {
        None => None,
        Some(s) if (0..=86_400 * 365).contains(&s) => Some(s as u32),
        Some(s) => {
            return Err(TopologyProblem::BadValue {
                field: format!("{field} degrade_after_secs"),
                value: s,
                rule: "a delay is 0 to 31536000 seconds (a year)",
            })
        }
    };
    let to = mbit(m.degrade_to_mbit, "degrade_to_mbit")?;
    let degrade = match (after, to) {
        (Some(after_secs), Some(to_mbit)) => Some(Degrade { after_secs, to_mbit }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(TopologyProblem::Unpaired {
                field: field.to_owned(),
                set: "degrade_after_secs",
                missing: "degrade_to_mbit",
            })
        }
        (None, Some(_)) => {
            return Err(TopologyProblem::Unpaired {
                field: field.to_owned(),
                set: "degrade_to_mbit",
                missing: "degrade_after_secs",
            })
        }
    };
    Ok(Misbehave {
        metric_lie: m.metric_lie,
        degrade,
        junk_mbit: mbit(m.junk_mbit, "junk_mbit")?,
        prioritize_tests: m.prioritize_tests,
    })
}

/// A hint for a link naming one of the lab's hosts, which are not nodes.
fn host_hint(name: &str) -> &'static str {
    if name == hosts::INTERNET {
        " (the internet host is linked with `uplink = true` on a node)"
    } else if name.ends_with(hosts::LAN_SUFFIX) {
        " (a LAN host is made with `lan = true` on its node)"
    } else {
        ""
    }
}

fn check_reserved(config: &toml::Table, field: &str) -> Result<(), TopologyProblem> {
    match RESERVED_CONFIG_KEYS.iter().find(|k| config.contains_key(**k)) {
        Some(key) => Err(TopologyProblem::ReservedKey { field: field.to_owned(), key }),
        None => Ok(()),
    }
}

/// toml's errors span several lines (with a source excerpt); keep them readable in one message.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg,
    }
}

/// Where a topology came from, for state and messages.
pub fn describe_source(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: &str = r#"
name = "chain3"
[defaults]
config = { discovery = { announce_interval_secs = 2 } }
[[node]]
name = "a"
config = { price = 3 }
[[node]]
name = "b"
[[node]]
name = "c"
[[link]]
a = "a"
b = "b"
rate_mbit = 100
[[link]]
a = "c"
b = "b"
mtu = 9000
loss_permille = 5
"#;

    #[test]
    fn parses_a_valid_topology() {
        let t = Topology::parse(CHAIN, "test").unwrap();
        assert_eq!(t.name.as_ref().unwrap().as_str(), "chain3");
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[0].config.get("price").and_then(|v| v.as_integer()), Some(3));
        assert!(t.nodes[1].config.is_empty());
        assert_eq!(
            t.links[0],
            LinkSpec { a: nn("a"), b: nn("b"), mtu: 1500, rate_mbit: Some(100), loss_permille: None }
        );
        assert_eq!(t.links[1], LinkSpec { a: nn("c"), b: nn("b"), mtu: 9000, rate_mbit: None, loss_permille: Some(5) });
        assert_eq!(t.interfaces_of(&nn("b")), vec!["v-a", "v-c"]);
        assert_eq!(t.interfaces_of(&nn("a")), vec!["v-b"]);
        assert!(t.defaults_config.contains_key("discovery"));
        assert_eq!(t.lab_name_for(Path::new("/x/other.toml")).unwrap().as_str(), "chain3");
    }

    #[test]
    fn lab_name_defaults_to_the_file_stem() {
        let t = Topology::parse("[[node]]\nname = \"a\"\n", "t").unwrap();
        assert_eq!(t.lab_name_for(Path::new("/x/ring5.toml")).unwrap().as_str(), "ring5");
        let e = t.lab_name_for(Path::new("/x/my-lab.toml")).unwrap_err();
        assert!(e.to_string().contains("file name of /x/my-lab.toml"), "{e}");
    }

    #[test]
    fn a_single_node_without_links_is_fine() {
        let t = Topology::parse("[[node]]\nname = \"solo\"\n", "t").unwrap();
        assert!(t.links.is_empty());
        assert!(t.interfaces_of(&nn("solo")).is_empty());
    }

    fn nn(s: &str) -> NodeName {
        s.parse().unwrap()
    }

    #[test]
    fn invalid_topologies_are_rejected_with_the_field_named() {
        let two = "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n";
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "there are no [[node]] entries"),
            ("name = \"Big-Lab\"\n[[node]]\nname = \"a\"\n".into(), "`name` \"Big-Lab\" is not valid: a lab name"),
            ("[[node]]\nname = \"1a\"\n".into(), "node #1 name \"1a\" is not valid: a node name"),
            ("[[node]]\nname = \"toolongname\"\n".into(), "node #1 name \"toolongname\" is not valid"),
            (format!("{two}[[node]]\nname = \"a\"\n"), "node #3 name \"a\" is already used by node #1"),
            (
                format!("{two}[[link]]\na = \"a\"\nb = \"z\"\n"),
                "link #1 field `b` names node \"z\", which is not a [[node]]",
            ),
            (format!("{two}[[link]]\na = \"b\"\nb = \"b\"\n"), "link #1 connects node \"b\" to itself"),
            (
                format!("{two}[[link]]\na = \"a\"\nb = \"b\"\n[[link]]\na = \"b\"\nb = \"a\"\n"),
                "link #2 (b–a) duplicates link #1",
            ),
            (format!("{two}[[link]]\na = \"a\"\nb = \"b\"\nrate_mbit = 0\n"), "link #1 rate_mbit = 0 is not valid"),
            (format!("{two}[[link]]\na = \"a\"\nb = \"b\"\nloss_permille = 1001\n"), "link #1 loss_permille = 1001"),
            (format!("{two}[[link]]\na = \"a\"\nb = \"b\"\nmtu = 1000\n"), "link #1 mtu = 1000 is not valid: an MTU"),
            (format!("[defaults]\nmtu = 70000\n{two}"), "[defaults] mtu = 70000 is not valid"),
            (format!("{two}[[link]]\na = \"a\"\nb = \"b\"\ndelay_ms = 5\n"), "unknown field `delay_ms`"),
            (format!("colour = 1\n{two}"), "unknown field `colour`"),
            ("[[node]]\nname = \"a\"\nrole = \"x\"\n".into(), "unknown field `role`"),
            ("[[node]]\nnom = \"a\"\n".into(), "unknown field `nom`"),
            (format!("{two}[[link]]\na = \"a\"\n"), "missing field `b`"),
            (format!("{two}[[link]]\na = \"a\"\nb = \"b\"\nrate_mbit = 1.5\n"), "invalid type: floating point"),
            ("[[node]]\nname = \"a\"\nconfig = { data_dir = \"/\" }\n".into(), "node #1 (a) config sets `data_dir`"),
            ("[defaults]\nconfig = { api_socket = \"/x\" }\n".into(), "[defaults] config sets `api_socket`"),
            ("[[node]]\nname = \"a\"\nconfig = 3\n".into(), "invalid type: integer"),
            ("[[node]\n".into(), "invalid table header"),
            // Hosts, uplinks and LANs.
            ("[[node]]\nname = \"internet\"\n".into(), "node #1 name \"internet\" is reserved: it is the lab's internet host"),
            (format!("{two}[[node]]\nname = \"lan\"\n"), "node #3 name \"lan\" is reserved: the veth to a node's LAN host is named v-lan"),
            ("[[node]]\nname = \"a\"\nuplink = \"yes\"\n".into(), "line 3, column 10: invalid type: string \"yes\", expected a boolean"),
            ("[[node]]\nname = \"a\"\nlan = 1\n".into(), "invalid type: integer `1`, expected a boolean"),
            ("[[node]]\nname = \"a\"\nwan = true\n".into(), "unknown field `wan`"),
            (
                format!("{two}[[link]]\na = \"a\"\nb = \"internet\"\n"),
                "link #1 field `b` names node \"internet\", which is not a [[node]] (the internet host is linked with `uplink = true` on a node)",
            ),
            (
                format!("{two}[[link]]\na = \"a-lan\"\nb = \"b\"\n"),
                "names node \"a-lan\", which is not a [[node]] (a LAN host is made with `lan = true` on its node)",
            ),
            (many_nodes(64, "uplink = true"), "node #64 (n64) sets `uplink = true`, but uplink subnets are numbered by node position (198.51.100.<4×#>/30): only nodes #1 to #63"),
            (many_nodes(156, "lan = true"), "node #156 (n156) sets `lan = true`, but LAN prefixes are numbered by node position (10.<100+#>.0.0/24): only nodes #1 to #155"),
            // misbehave: reserved, but checked.
            ("[[node]]\nname = \"a\"\nmisbehave = { lie = true }\n".into(), "unknown field `lie`, expected one of `metric_lie`"),
            ("[[node]]\nname = \"a\"\nmisbehave = { metric_lie = 1 }\n".into(), "invalid type: integer `1`, expected a boolean"),
            ("[[node]]\nname = \"a\"\nmisbehave = { junk_mbit = 0 }\n".into(), "node #1 (a) misbehave junk_mbit = 0 is not valid: a rate is 1 to 100000"),
            (
                "[[node]]\nname = \"a\"\nmisbehave = { degrade_after_secs = 10 }\n".into(),
                "node #1 (a) misbehave sets `degrade_after_secs` without `degrade_to_mbit`: the two go together",
            ),
            (
                "[[node]]\nname = \"a\"\nmisbehave = { degrade_to_mbit = 10 }\n".into(),
                "node #1 (a) misbehave sets `degrade_to_mbit` without `degrade_after_secs`",
            ),
            (
                "[[node]]\nname = \"a\"\nmisbehave = { degrade_after_secs = -1, degrade_to_mbit = 1 }\n".into(),
                "node #1 (a) misbehave degrade_after_secs = -1 is not valid",
            ),
            (
                "[[node]]\nname = \"a\"\nmisbehave = { degrade_after_secs = 1, degrade_to_mbit = 100001 }\n".into(),
                "node #1 (a) misbehave degrade_to_mbit = 100001 is not valid",
            ),
            ("[[node]]\nname = \"a\"\nmisbehave = true\n".into(), "invalid type: boolean `true`, expected struct RawMisbehave"),
            (
                "[[node]]\nname = \"a\"\nuplink = true\nmisbehave = { metric_lie = true }\n".into(),
                "node #1 (a) sets `uplink = true`, but `misbehave = { metric_lie = true }` gives the node a fake uplink",
            ),
        ];
        for (text, expected) in cases {
            let e = Topology::parse(&text, "t.toml").unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("topology t.toml: "), "{msg}");
            assert!(msg.contains(expected), "for input:\n{text}\nexpected {expected:?} in {msg:?}");
            assert!(!msg.contains('\n'), "one-line message: {msg:?}");
        }
    }

    /// `count` nodes n1..n<count>, the last one with `last_line`.
    fn many_nodes(count: usize, last_line: &str) -> String {
        (1..=count)
            .map(|i| {
                format!(
                    "[[node]]\nname = \"n{i}\"\n{}",
                    if i == count { format!("{last_line}\n") } else { String::new() }
                )
            })
            .collect()
    }

    #[test]
    fn uplink_lan_and_misbehave_are_parsed() {
        let t = Topology::parse(
            r#"
[defaults]
mtu = 1400
[[node]]
name = "a"
uplink = true
[[node]]
name = "b"
uplink = false
misbehave = { metric_lie = true, degrade_after_secs = 30, degrade_to_mbit = 2, junk_mbit = 5, prioritize_tests = true }
[[node]]
name = "c"
lan = true
misbehave = {}
"#,
            "t",
        )
        .unwrap();
        let [a, b, c] = [&t.nodes[0], &t.nodes[1], &t.nodes[2]];
        assert!(a.uplink && !a.lan && a.misbehave.is_none());
        assert!(!b.uplink && !b.lan);
        assert_eq!(
            b.misbehave,
            Some(Misbehave {
                metric_lie: true,
                degrade: Some(Degrade { after_secs: 30, to_mbit: 2 }),
                junk_mbit: Some(5),
                prioritize_tests: true
            })
        );
        assert!(c.lan && !c.uplink);
        assert_eq!(c.misbehave, Some(Misbehave::default()), "an empty table is all off");
        assert!(t.has_internet());
        assert_eq!(t.position(&nn("c")), Some(3));
        assert_eq!(t.default_mtu, 1400);
        // The last addressable positions are accepted.
        let t = Topology::parse(&many_nodes(63, "uplink = true"), "t").unwrap();
        assert!(t.nodes[62].uplink);
        let t = Topology::parse(&many_nodes(155, "lan = true"), "t").unwrap();
        assert!(t.nodes[154].lan && !t.has_internet());
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab");
        for (file, nodes, links) in [("chain3.toml", 3, 2), ("diamond4.toml", 4, 4), ("mesh10.toml", 10, 15)] {
            let t = Topology::load(&dir.join(file)).unwrap();
            assert_eq!((t.nodes.len(), t.links.len()), (nodes, links), "{file}");
        }
        let with_hosts = |file: &str| {
            let t = Topology::load(&dir.join(file)).unwrap();
            let names = |f: fn(&NodeSpec) -> bool| -> Vec<String> {
                t.nodes.iter().filter(|n| f(n)).map(|n| n.name.to_string()).collect()
            };
            (names(|n| n.uplink), names(|n| n.lan))
        };
        assert_eq!(with_hosts("chain3.toml"), (vec!["a".to_string()], vec!["c".to_string()]));
        assert_eq!(with_hosts("diamond4.toml"), (vec!["a".to_string()], vec!["d".to_string()]));
        let mesh = Topology::load(&dir.join("mesh10.toml")).unwrap();
        for n in &mesh.nodes {
            let degree = mesh.links_of(&n.name).count();
            assert!((2..=4).contains(&degree), "{} has {degree} links", n.name);
        }
        // connected: walk from the first node
        let mut seen = vec![mesh.nodes[0].name.clone()];
        let mut i = 0;
        while i < seen.len() {
            let here = seen[i].clone();
            for (_, peer) in mesh.links_of(&here) {
                if !seen.contains(peer) {
                    seen.push(peer.clone());
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), 10);
    }
}
