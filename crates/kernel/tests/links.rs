//! `NetlinkLinks` against the real kernel, in a namespace made by the test, checking kernel
//! state through `ip -j`. Skipped when not root.

mod common;

use common::{skip, unique};
use serde_json::Value;
use std::net::Ipv6Addr;
use tollway_core::IfName;
use tollway_kernel::netns::NetNs;
use tollway_kernel::{LinkError, Links, NetlinkLinks, Route6};

fn ip_json(ns: &NetNs, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ns.exec("ip", &full).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]))
}

fn link_json(ns: &NetNs, name: &IfName) -> Value {
    ip_json(ns, &["link", "show", "dev", name.as_str()])[0].clone()
}

fn addresses(ns: &NetNs, name: &IfName) -> Vec<(String, u64, bool)> {
    let v = ip_json(ns, &["-6", "addr", "show", "dev", name.as_str()]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["local"].as_str().unwrap().to_string(),
                a["prefixlen"].as_u64().unwrap(),
                a["nodad"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn routes_to(ns: &NetNs, dst: &str) -> Vec<Value> {
    ip_json(ns, &["-6", "route", "show", "to", dst]).as_array().cloned().unwrap_or_default()
}

#[test]
fn links_addresses_routes_and_counters() {
    if skip("links_addresses_routes_and_counters", &["ping"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let (x, y) = (unique("lx"), unique("ly"));
    ns.exec("ip", &["link", "add", x.as_str(), "type", "veth", "peer", "name", y.as_str()]).unwrap();

    ns.run(|| {
        let mut l = NetlinkLinks::new();
        // index_of
        let ix = l.index_of(&x).unwrap().expect("x exists");
        assert_eq!(link_json(&ns, &x)["ifindex"].as_u64(), Some(u64::from(ix)));
        assert_eq!(l.index_of(&unique("none")).unwrap(), None);

        // set_up with an MTU, twice.
        l.set_up(&x, Some(1400)).unwrap();
        l.set_up(&x, Some(1400)).unwrap();
        l.set_up(&y, None).unwrap();
        let j = link_json(&ns, &x);
        assert_eq!(j["mtu"].as_u64(), Some(1400));
        assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{j}");
        assert!(matches!(l.set_up(&unique("none"), None), Err(LinkError::NoSuchLink(_))));

        // ensure_altname: the interface answers to its second name (as babeld's `if` filters
        // find it), twice is fine, a name another interface holds is refused.
        let alt = format!("tp{}", x.as_str());
        l.ensure_altname(&x, &alt).unwrap();
        l.ensure_altname(&x, &alt).unwrap();
        assert_eq!(link_json(&ns, &x)["altnames"][0].as_str(), Some(alt.as_str()));
        let c = std::ffi::CString::new(alt.clone()).unwrap();
        // SAFETY: a valid NUL-terminated string.
        assert_eq!(unsafe { libc::if_nametoindex(c.as_ptr()) }, ix);
        assert!(l.ensure_altname(&y, &alt).is_err(), "the name belongs to x");
        assert!(matches!(l.ensure_altname(&unique("none"), "x1"), Err(LinkError::NoSuchLink(_))));
        // Removed, and removing it again (or a name it never had) is fine.
        l.remove_altname(&x, &alt).unwrap();
        l.remove_altname(&x, &alt).unwrap();
        assert!(link_json(&ns, &x)["altnames"].is_null(), "{}", link_json(&ns, &x));
        assert_eq!(unsafe { libc::if_nametoindex(c.as_ptr()) }, 0);
        l.ensure_altname(&y, &alt).unwrap();
        // A name if_nametoindex cannot look up (16 bytes or more) is refused before the kernel.
        assert!(l.ensure_altname(&x, "tollway-probe-0001").unwrap_err().to_string().contains("15 bytes"));

        // ensure_address: without DAD, idempotent.
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let ll: Ipv6Addr = "fe80::1234".parse().unwrap();
        l.ensure_address(&x, a, 64).unwrap();
        l.ensure_address(&x, a, 64).unwrap();
        l.ensure_address(&x, ll, 64).unwrap();
        let addrs = addresses(&ns, &x);
        assert!(addrs.contains(&("fd00::1".into(), 64, true)), "{addrs:?}");
        assert!(addrs.contains(&("fe80::1234".into(), 64, true)), "{addrs:?}");
        assert_eq!(addrs.iter().filter(|(s, _, _)| s == "fd00::1").count(), 1);
        let err = l.ensure_address(&unique("none"), a, 64).unwrap_err();
        assert!(matches!(err, LinkError::NoSuchLink(_)), "{err}");
        // remove_address: only with its own prefix length; idempotent; no interface is fine.
        let gone: Ipv6Addr = "fd00::3".parse().unwrap();
        l.ensure_address(&x, gone, 128).unwrap();
        l.remove_address(&x, gone, 64).unwrap();
        assert!(addresses(&ns, &x).contains(&("fd00::3".into(), 128, true)), "another prefix length: still there");
        l.remove_address(&x, gone, 128).unwrap();
        assert!(!addresses(&ns, &x).iter().any(|(s, _, _)| s == "fd00::3"), "{:?}", addresses(&ns, &x));
        l.remove_address(&x, gone, 128).unwrap();
        l.remove_address(&unique("none"), gone, 128).unwrap();
        assert!(addresses(&ns, &x).contains(&("fd00::1".into(), 64, true)), "the others stay");

        // ensure_route with a preferred source; replacing it changes the source.
        let src2: Ipv6Addr = "fd00::2".parse().unwrap();
        l.ensure_address(&x, src2, 128).unwrap();
        let mut r = Route6 { dst: "fd00:99::7".parse().unwrap(), prefix_len: 128, dev: x.clone(), src: Some(a) };
        l.ensure_route(&r).unwrap();
        l.ensure_route(&r).unwrap();
        let got = routes_to(&ns, "fd00:99::7");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["dev"], x.as_str());
        assert_eq!(got[0]["prefsrc"], "fd00::1");
        r.src = Some(src2);
        l.ensure_route(&r).unwrap();
        let got = routes_to(&ns, "fd00:99::7");
        assert_eq!(got.len(), 1, "replaced, not added: {got:?}");
        assert_eq!(got[0]["prefsrc"], "fd00::2");
        // Moving the route to the other device replaces it as well.
        l.ensure_route(&Route6 { dev: y.clone(), src: None, ..r.clone() }).unwrap();
        let got = routes_to(&ns, "fd00:99::7");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["dev"], y.as_str());
        // An error names the operation and the interface.
        let bad = Route6 { src: Some("fd00:dead::1".parse().unwrap()), ..r.clone() };
        let err = l.ensure_route(&bad).unwrap_err().to_string();
        assert!(err.contains("installing route") && err.contains(x.as_str()), "{err}");

        // remove_route: idempotent; removing via the wrong device leaves it.
        l.remove_route(&r).unwrap();
        assert_eq!(routes_to(&ns, "fd00:99::7").len(), 1, "the route is via y, not x");
        let via_y = Route6 { dev: y.clone(), ..r.clone() };
        l.remove_route(&via_y).unwrap();
        l.remove_route(&via_y).unwrap();
        assert!(routes_to(&ns, "fd00:99::7").is_empty());
        l.remove_route(&Route6 { dev: unique("none"), ..r.clone() }).unwrap();

        // list by prefix.
        let prefix = &x.as_str()[..2];
        assert_eq!(l.list(prefix).unwrap(), vec![x.clone()]);
        let mut want = vec![IfName::new("lo").unwrap(), x.clone(), y.clone()];
        want.sort();
        assert_eq!(l.list("l").unwrap(), want, "sorted, every interface with the prefix");

        // stats rise with traffic (ping y's address from x's side of the pair).
        let yl: Ipv6Addr = "fe80::5678".parse().unwrap();
        l.ensure_address(&y, yl, 64).unwrap();
        let before = l.stats(&x).unwrap().unwrap();
        let target = format!("{yl}%{x}");
        let ok = ns.exec_unchecked("ping", &["-6", "-c2", "-i0.2", "-W2", &target]).unwrap();
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
        let after = l.stats(&x).unwrap().unwrap();
        assert!(after.tx_packets >= before.tx_packets + 2, "{before:?} then {after:?}");
        assert!(after.tx_bytes > before.tx_bytes && after.rx_bytes > before.rx_bytes);
        assert_eq!(l.stats(&unique("none")).unwrap(), None);

        // delete: idempotent, takes the peer of a veth with it.
        l.delete(&x).unwrap();
        l.delete(&x).unwrap();
        assert_eq!(l.index_of(&x).unwrap(), None);
        assert_eq!(l.index_of(&y).unwrap(), None);
        assert!(l.list(prefix).unwrap().is_empty());
    })
    .unwrap();
}

#[test]
fn a_new_namespace_is_prepared_and_isolated() {
    if skip("a_new_namespace_is_prepared_and_isolated", &["sysctl"]) {
        return;
    }
    let ns = NetNs::new().unwrap();
    let sysctl = |key: &str| {
        let out = ns.exec("sysctl", &["-n", key]).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(sysctl("net.ipv6.conf.all.accept_dad"), "0");
    assert_eq!(sysctl("net.ipv6.conf.default.accept_dad"), "0");
    assert_eq!(sysctl("net.ipv6.conf.all.keep_addr_on_down"), "1");
    assert_eq!(sysctl("net.ipv6.conf.default.keep_addr_on_down"), "1");
    let lo = link_json(&ns, &IfName::new("lo").unwrap());
    assert!(lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{lo}");

    // Code run inside sees only the namespace's interfaces.
    let names = ns.run(|| NetlinkLinks::new().list("").unwrap()).unwrap();
    assert_eq!(names, vec![IfName::new("lo").unwrap()]);

    // A process started in it is killed when the namespace goes, and the namespace is deleted.
    let name = ns.name().to_string();
    let pid = ns.spawn("sleep", &["60"]).unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(ns);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z")).unwrap_or(true);
    assert!(gone, "the spawned process was killed");
}
