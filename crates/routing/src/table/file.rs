//! The routes file a central controller writes (`routing.kind = "controller"`).
//!
//! ```json
//! {
//!   "version": 7,
//!   "routes": [
//!     { "prefix": "0.0.0.0/0", "via": "<node id, 64 hex digits>", "metric": 10 },
//!     { "prefix": "::/0",      "via": "<node id>" },
//!     { "prefix": "fd12:3456::/48", "via": "<node id>", "metric": 5 }
//!   ]
//! }
//! ```
//!
//! `version` is the controller's own number for this set of routes (shown in the log and
//! status); `metric` defaults to 0. Several routes may name one prefix: the one with the lowest
//! metric through a neighbor that is connected is installed (for a prefix the speed tests take,
//! the one through the best-ranked neighbor first: see the module above). Unknown fields are errors, and so
//! are a prefix with host bits set, a malformed node id, a duplicate (prefix, via) pair and more
//! than [`MAX_ROUTES`] routes: a file with any error is rejected whole, with the line and column
//! (or the route) and the problem, and the routes in force stay.

use super::Candidate;
use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeSet;
use tollway_core::NodeId;

/// Most routes a file may hold.
pub const MAX_ROUTES: usize = 100_000;
/// Largest file read (bytes).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A valid routes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesFile {
    pub version: u64,
    pub routes: Vec<Candidate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u64,
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Prefix,
    via: Via,
    #[serde(default)]
    metric: u32,
}

/// A prefix checked while parsing, so that serde_json's error carries the line and column.
struct Prefix(IpNet);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        let p: IpNet = s.parse().map_err(|_| de::Error::custom(format!("{s:?} is not a prefix like \"fd00::/8\"")))?;
        if p.trunc() != p {
            return Err(de::Error::custom(format!("{p} has host bits set (did you mean {}?)", p.trunc())));
        }
        Ok(Prefix(p))
    }
}

struct Via(NodeId);

impl<'de> Deserialize<'de> for Via {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Via, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Via).map_err(|e| de::Error::custom(format!("via {s:?}: {e}")))
    }
}

/// Parse a routes file's text; the error names the line and column, or the route, and what is
/// wrong.
pub fn parse(text: &str) -> Result<RoutesFile, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if raw.routes.len() > MAX_ROUTES {
        return Err(format!("{} routes, more than the {MAX_ROUTES} allowed", raw.routes.len()));
    }
    let mut seen = BTreeSet::new();
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        if !seen.insert((r.prefix.0, r.via.0)) {
            return Err(format!("route #{} ({} via {}) repeats an earlier route", i + 1, r.prefix.0, r.via.0.short()));
        }
        routes.push(Candidate { prefix: r.prefix.0, via: r.via.0, metric: r.metric });
    }
    Ok(RoutesFile { version: raw.version, routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> String {
        NodeId([b; 32]).to_string()
    }

    #[test]
    fn a_valid_file_parses_with_default_metrics() {
        let text = format!(
            r#"{{"version": 3, "routes": [
  {{"prefix": "0.0.0.0/0", "via": "{}", "metric": 10}},
  {{"prefix": "0.0.0.0/0", "via": "{}"}},
  {{"prefix": "fd12::/48", "via": "{}"}}
]}}"#,
            id(1),
            id(2),
            id(1)
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.routes.len(), 3);
        assert_eq!(f.routes[1].metric, 0);
        assert_eq!(f.routes[2].prefix.to_string(), "fd12::/48");
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let good = id(1);
        let cases = [
            ("", "EOF while parsing"),
            ("{\"version\": 1}", "missing field `routes`"),
            ("{\"version\": 1, \"routes\": [], \"extra\": 1}", "unknown field `extra`"),
            ("{\"version\": -1, \"routes\": []}", "invalid value"),
            (
                &format!("{{\"version\": 1,\n\"routes\": [\n{{\"prefix\": \"fd00::1/8\", \"via\": \"{good}\"}}]}}"),
                "has host bits set (did you mean fd00::/8?) at line 3",
            ),
            (&format!("{{\"version\": 1, \"routes\": [{{\"prefix\": \"banana\", \"via\": \"{good}\"}}]}}"), "is not a prefix"),
            ("{\"version\": 1, \"routes\": [{\"prefix\": \"fd00::/8\", \"via\": \"abc\"}]}", "via \"abc\""),
            (
                &format!("{{\"version\": 1, \"routes\": [{{\"prefix\": \"fd00::/8\", \"via\": \"{good}\", \"metric\": 1, \"weight\": 2}}]}}"),
                "unknown field `weight`",
            ),
            (
                &format!(
                    "{{\"version\": 1, \"routes\": [{{\"prefix\": \"fd00::/8\", \"via\": \"{good}\"}}, {{\"prefix\": \"fd00::/8\", \"via\": \"{good}\", \"metric\": 4}}]}}"
                ),
                "route #2 (fd00::/8 via 010101010101) repeats",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e:?} should contain {want:?}");
        }
    }
}
