//! `NetlinkRoutes` against the real kernel, in namespaces made by the test: routes in a
//! numbered table (IPv4 through an IPv6 link-local next hop), the four mesh policy rules, and
//! the forwarding switches. Kernel state is checked through `ip -j` and with pings. Skipped
//! when not root.

mod common;

use common::{skip, unique};
use serde_json::Value;
use std::net::IpAddr;
use tollway_core::IfName;
use tollway_kernel::netns::{self, NetNs};
use tollway_kernel::sysctl::{self, Forwarding};
use tollway_kernel::{
    Family, Links, NetlinkLinks, NetlinkRoutes, RouteError, RouteTarget, Routes, Rule, TableRoute, PROTO_TOLLWAY,
};

const TABLE: u32 = 7474;

fn ip_json(ns: &NetNs, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ns.exec("ip", &full).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]))
}

fn ping(ns: &NetNs, addr: &str) -> bool {
    ns.exec_unchecked("ping", &["-c1", "-W2", addr]).map(|o| o.status.success()).unwrap_or(false)
}

/// `ip route get <addr>`: the device the kernel would send through, and the table it found.
fn route_get(ns: &NetNs, addr: &str) -> (String, String) {
    let v = ip_json(ns, &["route", "get", addr]);
    let r = &v[0];
    let table = match &r["table"] {
        Value::Null => "main".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (r["dev"].as_str().unwrap_or("").to_string(), table)
}

/// The four rules of the mesh design, for one family.
fn mesh_rules(family: Family, table: u32) -> [Rule; 4] {
    let rule = |priority, table, suppress| Rule {
        family,
        priority,
        table,
        suppress_prefixlength: suppress,
        from: None,
        fwmark: None,
    };
    [rule(7470, 254, Some(0)), rule(7471, table, Some(0)), rule(7472, 254, None), rule(7473, table, None)]
}

struct Node {
    ns: NetNs,
    veth: IfName,
    ll: &'static str,
    v4: &'static str,
    v6: &'static str,
}

impl Node {
    fn setup(&self) {
        let (veth, ll) = (self.veth.clone(), self.ll);
        let (v4, v6) = (self.v4, self.v6);
        self.ns.exec("ip", &["addr", "add", &format!("{v4}/32"), "dev", "lo"]).unwrap();
        self.ns.exec("ip", &["addr", "add", &format!("{v6}/128"), "dev", "lo"]).unwrap();
        self.ns
            .run(move || {
                let mut l = NetlinkLinks::new();
                l.disable_ipv6_autoconf(&veth).unwrap();
                l.ensure_address(&veth, ll.parse().unwrap(), 64).unwrap();
                l.set_up(&veth, None).unwrap();
            })
            .unwrap();
    }

    /// Routes to `peer`'s addresses in `TABLE`, through its link-local address.
    fn routes_to(&self, peer: &Node) -> Vec<TableRoute> {
        let gw: IpAddr = peer.ll.parse().unwrap();
        let route = |dst: &str, src: &str| TableRoute {
            dst: dst.parse().unwrap(),
            table: TABLE,
            protocol: PROTO_TOLLWAY,
            target: RouteTarget::Dev { dev: self.veth.clone(), gateway: Some(gw) },
            pref_src: Some(src.parse().unwrap()),
            metric: 0,
        };
        vec![route(&format!("{}/32", peer.v4), self.v4), route(&format!("{}/128", peer.v6), self.v6)]
    }
}

fn two_nodes() -> (Node, Node) {
    let (a_ns, b_ns) = (NetNs::new().unwrap(), NetNs::new().unwrap());
    let (a_if, b_if) = (unique("ra"), unique("rb"));
    netns::veth_pair(&a_ns, a_if.as_str(), &b_ns, b_if.as_str()).unwrap();
    let a = Node { ns: a_ns, veth: a_if, ll: "fe80::a", v4: "100.64.0.1", v6: "fd00::1" };
    let b = Node { ns: b_ns, veth: b_if, ll: "fe80::b", v4: "100.64.0.2", v6: "fd00::2" };
    a.setup();
    b.setup();
    (a, b)
}

#[test]
fn ipv4_via_ipv6_link_local_routes_in_a_table_carry_pings_through_the_mesh_rules() {
    if skip("ipv4_via_ipv6_link_local_routes_in_a_table_carry_pings_through_the_mesh_rules", &["ping"]) {
        return;
    }
    let (a, b) = two_nodes();
    for (node, peer) in [(&a, &b), (&b, &a)] {
        let routes = node.routes_to(peer);
        node.ns
            .run(|| {
                let mut r = NetlinkRoutes::new();
                for route in &routes {
                    r.replace(route).unwrap();
                    r.replace(route).unwrap();
                }
            })
            .unwrap();
    }
    // Without the rules nothing looks up the table.
    assert!(!ping(&a.ns, b.v4), "no rule sends anything to table {TABLE} yet");

    for node in [&a, &b] {
        node.ns
            .run(|| {
                let mut r = NetlinkRoutes::new();
                for family in Family::BOTH {
                    for rule in mesh_rules(family, TABLE) {
                        r.add_rule(&rule).unwrap();
                        r.add_rule(&rule).unwrap();
                    }
                }
            })
            .unwrap();
    }
    assert!(ping(&a.ns, b.v4), "IPv4 over a link with only IPv6 link-local addresses");
    assert!(ping(&a.ns, b.v6), "IPv6 through the table");
    assert!(ping(&b.ns, a.v4));

    // The kernel holds exactly what was built: v4-via-v6, table attribute, source, protocol.
    let v4 = ip_json(&a.ns, &["-4", "route", "show", "table", "7474"]);
    assert_eq!(v4.as_array().unwrap().len(), 1, "{v4}");
    assert_eq!(v4[0]["dst"], b.v4);
    assert_eq!(v4[0]["via"]["family"], "inet6", "{v4}");
    assert_eq!(v4[0]["via"]["host"], b.ll);
    assert_eq!(v4[0]["dev"], a.veth.as_str());
    assert_eq!(v4[0]["prefsrc"], a.v4);
    assert_eq!(v4[0]["protocol"], "251", "{v4}");

    // Listing gives back what was installed (IPv6's metric 0 is stored as 1024).
    let listed = a.ns.run(|| NetlinkRoutes::new().list(TABLE, Some(PROTO_TOLLWAY)).unwrap()).unwrap();
    let mut want = a.routes_to(&b);
    want[1].metric = 1024;
    assert_eq!(listed, want);
    assert!(a.ns.run(|| NetlinkRoutes::new().list(TABLE, Some(42)).unwrap()).unwrap().is_empty());

    // Rules: each once, in the order of the design, for both families.
    let rules = a.ns.run(|| NetlinkRoutes::new().list_rules().unwrap()).unwrap();
    for family in Family::BOTH {
        for rule in mesh_rules(family, TABLE) {
            assert_eq!(rules.iter().filter(|r| **r == rule).count(), 1, "{rule} once in {rules:?}");
        }
    }
    let shown = ip_json(&a.ns, &["-6", "rule", "show"]);
    let p7471: Vec<_> = shown.as_array().unwrap().iter().filter(|r| r["priority"] == 7471).collect();
    assert_eq!(p7471.len(), 1, "{shown}");
    assert_eq!(p7471[0]["table"], "7474");
    assert_eq!(p7471[0]["suppress_prefixlen"], 0, "{shown}");

    // Adding a route that exists fails as such; deleting is idempotent and exact.
    let routes = a.routes_to(&b);
    let err = a.ns.run(|| NetlinkRoutes::new().add(&routes[0]).unwrap_err()).unwrap();
    assert!(matches!(err, RouteError::Exists(_)), "{err}");
    a.ns.run(|| {
        let mut r = NetlinkRoutes::new();
        for route in &routes {
            r.delete(route).unwrap();
            r.delete(route).unwrap();
        }
        assert!(r.list(TABLE, None).unwrap().is_empty());
    })
    .unwrap();
    assert!(!ping(&a.ns, b.v4), "the route is gone");

    // Rules go as they came.
    a.ns.run(|| {
        let mut r = NetlinkRoutes::new();
        for family in Family::BOTH {
            for rule in mesh_rules(family, TABLE) {
                r.delete_rule(&rule).unwrap();
                r.delete_rule(&rule).unwrap();
            }
        }
        let left = r.list_rules().unwrap();
        assert!(left.iter().all(|r| !(7470..=7473).contains(&r.priority)), "{left:?}");
        // The kernel's own rules are listed too.
        assert!(left.iter().any(|r| r.priority == 32766 && r.table == 254));
    })
    .unwrap();
}

#[test]
fn mesh_rules_let_main_win_except_for_its_default_which_beats_the_tables_default() {
    if skip("mesh_rules_let_main_win_except_for_its_default_which_beats_the_tables_default", &["ping"]) {
        return;
    }
    let (a, b) = two_nodes();
    // A second interface in `a` stands for the uplink/LAN side that main's routes use.
    let (up, up_peer) = (unique("ru"), unique("rv"));
    a.ns.exec("ip", &["link", "add", up.as_str(), "type", "veth", "peer", "name", up_peer.as_str()]).unwrap();
    a.ns.exec("ip", &["link", "set", up.as_str(), "up"]).unwrap();
    a.ns.exec("ip", &["link", "set", up_peer.as_str(), "up"]).unwrap();
    a.ns.exec("ip", &["addr", "add", "192.0.2.1/24", "dev", up.as_str()]).unwrap();
    a.ns.exec("ip", &["addr", "add", "2001:db8:1::1/64", "dev", up.as_str(), "nodad"]).unwrap();

    let gw_b: IpAddr = b.ll.parse().unwrap();
    let mesh = |dst: &str| TableRoute {
        dst: dst.parse().unwrap(),
        table: TABLE,
        protocol: PROTO_TOLLWAY,
        target: RouteTarget::Dev { dev: a.veth.clone(), gateway: Some(gw_b) },
        pref_src: None,
        metric: 0,
    };
    let table_routes =
        [mesh("198.18.0.0/24"), mesh("0.0.0.0/0"), mesh("2001:db8:77::/64"), mesh("::/0"), mesh("203.0.113.0/24")];
    a.ns.run(|| {
        let mut r = NetlinkRoutes::new();
        for route in &table_routes {
            r.replace(route).unwrap();
        }
        for family in Family::BOTH {
            for rule in mesh_rules(family, TABLE) {
                r.add_rule(&rule).unwrap();
            }
        }
    })
    .unwrap();
    // Main: a broader non-default route covering the table's /24 and /64, and defaults.
    a.ns.exec("ip", &["route", "add", "198.18.0.0/16", "via", "192.0.2.2", "dev", up.as_str()]).unwrap();
    a.ns.exec("ip", &["-6", "route", "add", "2001:db8:77::/48", "via", "2001:db8:1::2", "dev", up.as_str()]).unwrap();
    a.ns.exec("ip", &["route", "add", "default", "via", "192.0.2.2", "dev", up.as_str()]).unwrap();
    a.ns.exec("ip", &["-6", "route", "add", "default", "via", "2001:db8:1::2", "dev", up.as_str()]).unwrap();

    let up_name = up.as_str().to_string();
    let mesh_if = a.veth.as_str().to_string();
    // Main's non-default routes win over the table (rule 7470), even less specific ones.
    assert_eq!(route_get(&a.ns, "198.18.0.5"), (up_name.clone(), "main".into()));
    assert_eq!(route_get(&a.ns, "2001:db8:77::5"), (up_name.clone(), "main".into()));
    // The table's non-default routes beat main's default (rule 7471).
    assert_eq!(route_get(&a.ns, "203.0.113.9"), (mesh_if.clone(), TABLE.to_string()));
    // Main's default beats the table's default (rule 7472 before 7473).
    assert_eq!(route_get(&a.ns, "198.51.100.1"), (up_name.clone(), "main".into()));
    assert_eq!(route_get(&a.ns, "2001:db8:99::1"), (up_name.clone(), "main".into()));
    // Without main's default, the mesh's default carries it.
    a.ns.exec("ip", &["route", "del", "default"]).unwrap();
    a.ns.exec("ip", &["-6", "route", "del", "default"]).unwrap();
    assert_eq!(route_get(&a.ns, "198.51.100.1"), (mesh_if.clone(), TABLE.to_string()));
    assert_eq!(route_get(&a.ns, "2001:db8:99::1"), (mesh_if.clone(), TABLE.to_string()));

    // Blackhole routes (how announcements are written into an import table) list as such.
    let marker = TableRoute {
        dst: "10.55.0.0/24".parse().unwrap(),
        table: 7475,
        protocol: PROTO_TOLLWAY,
        target: RouteTarget::Blackhole,
        pref_src: None,
        metric: 0,
    };
    let listed =
        a.ns.run(|| {
            let mut r = NetlinkRoutes::new();
            r.replace(&marker).unwrap();
            r.list(7475, None).unwrap()
        })
        .unwrap();
    assert_eq!(listed, vec![marker]);
    // A route out of a missing interface is refused by name.
    let ghost = TableRoute { target: RouteTarget::Dev { dev: unique("gh"), gateway: None }, ..mesh("10.1.0.0/16") };
    let err = a.ns.run(|| NetlinkRoutes::new().replace(&ghost).unwrap_err()).unwrap();
    assert!(matches!(err, RouteError::NoSuchLink(_)), "{err}");
}

/// How speed tests go through one chosen neighbor: a rule for the probe address's source sends
/// its packets to a table whose default route leaves through that neighbor's link, while every
/// other packet follows the mesh rules. The rule lists back with its source.
#[test]
fn a_rule_from_a_probe_source_sends_its_packets_through_its_own_table() {
    if skip("a_rule_from_a_probe_source_sends_its_packets_through_its_own_table", &["ping"]) {
        return;
    }
    let (a, b) = two_nodes();
    let (other, other_peer) = (unique("rp"), unique("rq"));
    a.ns.exec("ip", &["link", "add", other.as_str(), "type", "veth", "peer", "name", other_peer.as_str()]).unwrap();
    a.ns.exec("ip", &["link", "set", other.as_str(), "up"]).unwrap();
    a.ns.exec("ip", &["addr", "add", "fe80::c/64", "dev", other.as_str(), "nodad"]).unwrap();
    a.ns.exec("ip", &["addr", "add", "fd77::5/128", "dev", "lo"]).unwrap();
    let gw_b: IpAddr = b.ll.parse().unwrap();
    let default_via = |dev: &IfName, gw: IpAddr, table: u32| TableRoute {
        dst: "::/0".parse().unwrap(),
        table,
        protocol: PROTO_TOLLWAY,
        target: RouteTarget::Dev { dev: dev.clone(), gateway: Some(gw) },
        pref_src: None,
        metric: 0,
    };
    let probe_rule = Rule {
        family: Family::V6,
        priority: 7460,
        table: 7600,
        suppress_prefixlength: None,
        from: Some("fd77::5/128".parse().unwrap()),
        fwmark: None,
    };
    // Static and controller routing select by the test socket's mark instead.
    let mark_rule = Rule { table: 7601, from: None, fwmark: Some(0x746c_0001), ..probe_rule };
    let (mesh_default, probe_default) =
        (default_via(&other, "fe80::d".parse().unwrap(), TABLE), default_via(&a.veth, gw_b, 7600));
    let marked_default = default_via(&a.veth, gw_b, 7601);
    let rules =
        a.ns.run(move || {
            let mut r = NetlinkRoutes::new();
            r.replace(&mesh_default).unwrap();
            r.replace(&probe_default).unwrap();
            for rule in mesh_rules(Family::V6, TABLE) {
                r.add_rule(&rule).unwrap();
            }
            r.add_rule(&probe_rule).unwrap();
            r.add_rule(&probe_rule).unwrap(); // idempotent
            r.replace(&marked_default).unwrap();
            r.add_rule(&mark_rule).unwrap();
            r.list_rules().unwrap()
        })
        .unwrap();
    assert_eq!(rules.iter().filter(|r| **r == probe_rule).count(), 1, "{rules:?}");
    assert_eq!(probe_rule.to_string(), "IPv6 rule 7460: from fd77::5/128 lookup 7600");
    // Everything else takes the mesh's default; the probe source takes the chosen link.
    assert_eq!(route_get(&a.ns, "2001:db8::1"), (other.as_str().to_string(), TABLE.to_string()));
    let v = ip_json(&a.ns, &["route", "get", "2001:db8::1", "from", "fd77::5"]);
    assert_eq!(v[0]["dev"].as_str(), Some(a.veth.as_str()), "{v}");
    assert_eq!(rules.iter().filter(|r| **r == mark_rule).count(), 1, "{rules:?}");
    assert_eq!(mark_rule.to_string(), "IPv6 rule 7460: fwmark 0x746c0001 lookup 7601");
    let v = ip_json(&a.ns, &["route", "get", "2001:db8::1", "mark", "0x746c0001"]);
    assert_eq!(v[0]["dev"].as_str(), Some(a.veth.as_str()), "{v}");
    let v = ip_json(&a.ns, &["route", "get", "2001:db8::1", "mark", "0x746c0002"]);
    assert_eq!(v[0]["dev"].as_str(), Some(other.as_str()), "another mark: {v}");
    // Deleted by the same description.
    let left =
        a.ns.run(move || {
            let mut r = NetlinkRoutes::new();
            r.delete_rule(&probe_rule).unwrap();
            r.delete_rule(&mark_rule).unwrap();
            r.list_rules().unwrap()
        })
        .unwrap();
    assert!(!left.contains(&probe_rule) && !left.contains(&mark_rule), "{left:?}");
}

#[test]
fn forwarding_switches_are_per_namespace() {
    if skip("forwarding_switches_are_per_namespace", &["ping"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let before = ns.run(|| sysctl::forwarding().unwrap()).unwrap();
    assert_eq!(before, Forwarding { ipv4: false, ipv6: false }, "a new namespace forwards nothing");
    ns.run(|| sysctl::set_forwarding(Forwarding { ipv4: true, ipv6: true }).unwrap()).unwrap();
    let read = |key: &str| String::from_utf8(ns.exec("sysctl", &["-n", key]).unwrap().stdout).unwrap();
    assert_eq!(read("net.ipv4.ip_forward").trim(), "1");
    assert_eq!(read("net.ipv6.conf.all.forwarding").trim(), "1");
    ns.run(|| sysctl::set_forwarding(Forwarding { ipv4: false, ipv6: true }).unwrap()).unwrap();
    assert_eq!(ns.run(|| sysctl::forwarding().unwrap()).unwrap(), Forwarding { ipv4: false, ipv6: true });
}
