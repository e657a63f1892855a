//! Routes in any table, both families, and "lookup table" policy rules: the kernel side of
//! mesh routing. [`NetlinkRoutes`] speaks typed rtnetlink in the calling thread's namespace;
//! [`FakeRoutes`](crate::fake::FakeRoutes) keeps them in memory for unit tests.

mod netlink;

pub use netlink::NetlinkRoutes;

use ipnet::IpNet;
use std::fmt;
use std::io;
use std::net::IpAddr;
use tollway_core::IfName;

/// `RTPROT_BABEL`: the protocol number babeld gives the routes it installs.
pub const PROTO_BABEL: u8 = 42;
/// The protocol number of routes tollway installs itself (static and controller routers, and
/// the announcements it puts into babeld's import table).
pub const PROTO_TOLLWAY: u8 = 251;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What a route does with the packets it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Out of `dev`, through `gateway` if given. An IPv6 gateway on an IPv4 route is a
    /// v4-via-v6 next hop (`RTA_VIA`): tunnels carry IPv4 without IPv4 addresses.
    Dev { dev: IfName, gateway: Option<IpAddr> },
    /// Drop silently. Also how a route that exists only to be announced is written (babeld's
    /// import table, which no rule looks up).
    Blackhole,
    /// Drop with "network unreachable".
    Unreachable,
    /// A type we do not build (prohibit, throw, multipath…), by its kernel number; only seen in
    /// listings.
    Other(u8),
}

/// One route in one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRoute {
    pub dst: IpNet,
    pub table: u32,
    /// Who installed it: [`PROTO_BABEL`], [`PROTO_TOLLWAY`], or another number.
    pub protocol: u8,
    pub target: RouteTarget,
    /// The source address the kernel picks for packets this node sends along the route.
    pub pref_src: Option<IpAddr>,
    /// The route's priority (lower wins); the kernel stores 0 on an IPv6 route as 1024.
    pub metric: u32,
}

impl TableRoute {
    pub fn family(&self) -> Family {
        Family::of(&self.dst.addr())
    }

    /// Check that the parts agree: a gateway of the route's family or an IPv6 one (v4-via-v6),
    /// a preferred source of the route's family, a type we can build.
    pub fn validate(&self) -> Result<(), RouteError> {
        let invalid = |reason| Err(RouteError::Invalid { route: self.to_string(), reason });
        match (&self.target, self.family()) {
            (RouteTarget::Dev { gateway: Some(IpAddr::V4(_)), .. }, Family::V6) => {
                return invalid("an IPv6 route cannot have an IPv4 gateway")
            }
            (RouteTarget::Other(_), _) => return invalid("only unicast, blackhole and unreachable routes can be made"),
            _ => {}
        }
        if let Some(src) = self.pref_src {
            if Family::of(&src) != self.family() {
                return invalid("the preferred source must be of the route's family");
            }
        }
        if self.table == 0 {
            return invalid("table 0 is not a table");
        }
        Ok(())
    }
}

impl fmt::Display for TableRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            RouteTarget::Dev { dev, gateway: Some(gw) } => write!(f, "{} via {gw} dev {dev}", self.dst)?,
            RouteTarget::Dev { dev, gateway: None } => write!(f, "{} dev {dev}", self.dst)?,
            RouteTarget::Blackhole => write!(f, "blackhole {}", self.dst)?,
            RouteTarget::Unreachable => write!(f, "unreachable {}", self.dst)?,
            RouteTarget::Other(t) => write!(f, "type {t} {}", self.dst)?,
        }
        write!(f, " table {} proto {}", self.table, self.protocol)?;
        if let Some(src) = self.pref_src {
            write!(f, " src {src}")?;
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

/// A policy rule "from all lookup `table`" (or from one source prefix: `from`, or for one
/// firewall mark: `fwmark`), with an
/// optional `suppress_prefixlength`: a route found in the table whose prefix is no longer than
/// that is ignored and the next rule is tried (`suppress_prefixlength 0` ignores only default
/// routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    pub suppress_prefixlength: Option<u32>,
    /// Only packets from this source prefix (of the rule's family).
    pub from: Option<IpNet>,
    /// Only packets carrying exactly this firewall mark (a socket's `SO_MARK`).
    pub fwmark: Option<u32>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}:", self.family, self.priority)?;
        if let Some(from) = self.from {
            write!(f, " from {from}")?;
        }
        if let Some(mark) = self.fwmark {
            write!(f, " fwmark {mark:#x}")?;
        }
        write!(f, " lookup {}", self.table)?;
        if let Some(len) = self.suppress_prefixlength {
            write!(f, " suppress_prefixlength {len}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no interface named {0}")]
    NoSuchLink(IfName),
    #[error("invalid route {route}: {reason}")]
    Invalid { route: String, reason: &'static str },
    #[error("route {0} exists already")]
    Exists(String),
    #[error("{op} {what}: {source}")]
    Netlink { op: &'static str, what: String, source: io::Error },
}

/// Routes and policy rules of the calling thread's network namespace.
pub trait Routes: Send {
    /// Add the route; [`RouteError::Exists`] if one with the same destination, table and
    /// metric is there.
    fn add(&mut self, route: &TableRoute) -> Result<(), RouteError>;

    /// Add the route, or replace the one with the same destination, table and metric.
    fn replace(&mut self, route: &TableRoute) -> Result<(), RouteError>;

    /// Remove the route (matched on destination, table, protocol, target and metric). A
    /// missing route, or one whose interface is gone, is not an error.
    fn delete(&mut self, route: &TableRoute) -> Result<(), RouteError>;

    /// Every route of both families in `table`, only those of `protocol` if given.
    fn list(&mut self, table: u32, protocol: Option<u8>) -> Result<Vec<TableRoute>, RouteError>;

    /// Add the rule unless an equal one exists (idempotent; never a duplicate).
    fn add_rule(&mut self, rule: &Rule) -> Result<(), RouteError>;

    /// Remove the rule; a missing one is not an error.
    fn delete_rule(&mut self, rule: &Rule) -> Result<(), RouteError>;

    /// Every "lookup table" rule of both families (rules with other selectors or actions are
    /// left out), sorted by family then priority.
    fn list_rules(&mut self) -> Result<Vec<Rule>, RouteError>;
}
