//! Lab and node names: validated once, then used to derive namespace and interface names.
//!
//! Lab names contain no `-`, so the namespace prefix `tw-<lab>-` of one lab never matches
//! another lab's namespaces. Node names contain no `-` either, so a host's namespace
//! `tw-<lab>-<node>-lan` never equals a node's.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a lab or node name is not valid. `what` names the field it came from (e.g. `lab name`,
/// `node #2 name`), so the message points at the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {rule}")]
pub struct NameError {
    pub what: String,
    pub value: String,
    pub rule: &'static str,
}

/// A lab's name: `[a-z0-9]{1,10}`. Namespaces are `tw-<lab>-<node>`, state lives in
/// `/run/tollway-lab/<lab>/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabName(String);

/// A node's name within a lab: `[a-z][a-z0-9]{0,7}`. The veth toward node `b` is `v-b`
/// (at most 10 characters, well within the 15 the kernel allows).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl LabName {
    pub const RULE: &'static str = "a lab name is 1 to 10 characters of a-z and 0-9";

    /// Validate `value`; `what` names the field in the error.
    pub fn parse_as(value: &str, what: &str) -> Result<LabName, NameError> {
        let ok = (1..=10).contains(&value.len()) && value.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(LabName(value.to_owned()))
        } else {
            Err(NameError { what: what.to_owned(), value: value.to_owned(), rule: Self::RULE })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NodeName {
    pub const RULE: &'static str = "a node name is a-z followed by at most 7 characters of a-z and 0-9";

    /// Validate `value`; `what` names the field in the error.
    pub fn parse_as(value: &str, what: &str) -> Result<NodeName, NameError> {
        let b = value.as_bytes();
        let ok = (1..=8).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(NodeName(value.to_owned()))
        } else {
            Err(NameError { what: what.to_owned(), value: value.to_owned(), rule: Self::RULE })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the veth that leads to this node, as seen from its neighbor: `v-<name>`.
    pub fn veth_toward(&self) -> String {
        format!("v-{}", self.0)
    }
}

/// The network namespace of `node` in `lab`: `tw-<lab>-<node>`.
pub fn namespace_name(lab: &LabName, node: &NodeName) -> String {
    format!("tw-{}-{}", lab.0, node.0)
}

/// The network namespace of a host (`internet`, `<node>-lan`) in `lab`: `tw-<lab>-<host>`.
/// Distinct from every node's: no node is named `internet` (the topology reserves it) and no
/// node name contains `-`.
pub fn host_namespace_name(lab: &LabName, host: &str) -> String {
    format!("tw-{}-{}", lab.0, host)
}

macro_rules! string_newtype {
    ($t:ident, $what:literal) => {
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $t::parse_as(s, $what)
            }
        }
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $t::parse_as(&s, $what)
            }
        }
        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype!(LabName, "lab name");
string_newtype!(NodeName, "node name");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names() {
        for ok in ["a", "chain3", "0", "abcdefghij", "x1y2"] {
            assert_eq!(ok.parse::<LabName>().unwrap().as_str(), ok);
        }
        for bad in ["", "abcdefghijk", "Chain", "a-b", "a_b", "a b", "é", "../x"] {
            let e = bad.parse::<LabName>().unwrap_err();
            assert_eq!(e.what, "lab name");
            assert!(e.to_string().contains("lab name"), "{e}");
        }
    }

    #[test]
    fn node_names() {
        for ok in ["a", "b2", "abcdefgh", "r0"] {
            assert_eq!(ok.parse::<NodeName>().unwrap().as_str(), ok);
        }
        for bad in ["", "1a", "abcdefghi", "A", "a-b", "a.b", " a"] {
            let e = NodeName::parse_as(bad, "node #3 name").unwrap_err();
            assert_eq!(e.to_string(), format!("node #3 name {bad:?} is not valid: {}", NodeName::RULE));
        }
    }

    #[test]
    fn derived_names() {
        let lab: LabName = "x1".parse().unwrap();
        let node: NodeName = "abcdefgh".parse().unwrap();
        assert_eq!(namespace_name(&lab, &node), "tw-x1-abcdefgh");
        assert_eq!(node.veth_toward(), "v-abcdefgh");
        assert_eq!(host_namespace_name(&lab, "internet"), "tw-x1-internet");
        assert_eq!(host_namespace_name(&lab, "abcdefgh-lan"), "tw-x1-abcdefgh-lan");
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<NodeName>("\"Bad\"").is_err());
        assert_eq!(serde_json::from_str::<NodeName>("\"ok\"").unwrap().as_str(), "ok");
    }
}
