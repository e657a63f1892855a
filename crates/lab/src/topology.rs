//! The topology file: nodes, links between them, and daemon config overrides.
//!
//! ```toml
//! name = "chain3"              # optional; default: the file stem
//! [defaults]                   # optional
//! mtu = 1500                   # veth MTU for links that don't set one
//! config = { discovery = { announce_interval_secs = 2 } }   # merged into every node's config
//! [[node]]
//! name = "a"
//! config = { }                 # optional, merged into this node's config after the defaults
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
//! Everything is validated at load; errors name the field and the problem.

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: NodeName,
    /// `[node] config`: merged into this node's generated daemon config after the defaults.
    pub config: toml::Table,
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
    #[error("link #{link} field `{end}` names node {name:?}, which is not a [[node]]")]
    UnknownNode { link: usize, end: &'static str, name: String },
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
            check_reserved(&n.config, &format!("node #{num} ({name}) config"))?;
            nodes.push(NodeSpec { name, config: n.config });
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
        Ok(Topology { name, nodes, links, defaults_config: raw.defaults.config })
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
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
        ];
        for (text, expected) in cases {
            let e = Topology::parse(&text, "t.toml").unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("topology t.toml: "), "{msg}");
            assert!(msg.contains(expected), "for input:\n{text}\nexpected {expected:?} in {msg:?}");
            assert!(!msg.contains('\n'), "one-line message: {msg:?}");
        }
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab");
        for (file, nodes, links) in [("chain3.toml", 3, 2), ("diamond4.toml", 4, 4), ("mesh10.toml", 10, 15)] {
            let t = Topology::load(&dir.join(file)).unwrap();
            assert_eq!((t.nodes.len(), t.links.len()), (nodes, links), "{file}");
        }
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
