//! NftFirewall against the real kernel, over a veth pair (the tunnel type does not matter for
//! the table's life cycle): counters survive re-applies and plan changes, are deleted with
//! their neighbor, come back under a new identity after a flush; `remove_all` touches nothing
//! but our table.

mod common;

use common::*;
use tollway_traffic::*;

fn ping(ns: &str, ip: std::net::Ipv4Addr, count: u32) {
    must(&ns_exec(ns, &["ping", "-q", "-c", &count.to_string(), "-i", "0.05", "-W", "2", &ip.to_string()]));
}

fn key(k: &str) -> NeighborKey {
    NeighborKey::new(k).unwrap()
}

#[test]
fn counters_survive_reapplies_and_changes_and_are_recreated_after_a_flush() {
    if skip("counters_survive_reapplies_and_changes_and_are_recreated_after_a_flush", &["ping"]) {
        return;
    }
    let mut lab = Lab::new("fc");
    let (a, b) = (lab.netns_ipv4("a"), lab.netns_ipv4("b"));
    let l = lab.veth(&a, &b);
    let other = lab.ifname(9, "x"); // a neighbor whose tunnel does not exist: rules by name are fine
    let open = IngressPolicy::Open;
    let p1 = plan(7000, BitRate::mbit(100), &[("nb", &l.a_if, BitRate::mbit(50), BitRate::mbit(100), open)]);
    let mut fw = NftFirewall::new();

    let r = in_ns(&a, || fw.apply(&p1)).unwrap();
    assert!(r.created_table && r.counters_added == [key("nb")], "{r:?}");
    ping(&b, l.a_ip, 5);
    let c1 = in_ns(&a, || fw.read_counters()).unwrap()[&key("nb")];
    assert_eq!(c1.packets, 5, "5 echo requests counted: {c1:?}");
    assert_eq!(c1.bytes, 5 * 84);

    // The same plan: nothing sent to the kernel, nothing reset.
    let r = in_ns(&a, || fw.apply(&p1)).unwrap();
    assert!(r.is_noop(), "{r:?}");
    assert_eq!(in_ns(&a, || fw.read_counters()).unwrap()[&key("nb")], c1);

    // A changed plan (policy, rates, a new neighbor): rules rewritten, counter kept.
    let police = IngressPolicy::Police { bits_per_sec: BitRate::mbit(1) };
    let p2 = plan(
        7000,
        BitRate::mbit(100),
        &[
            ("nb", &l.a_if, BitRate::mbit(10), BitRate::mbit(10), police),
            ("other", &other, BitRate::mbit(50), BitRate::mbit(100), open),
        ],
    );
    let r = in_ns(&a, || fw.apply(&p2)).unwrap();
    assert_eq!(r.counters_added, [key("other")]);
    assert!(r.chains_written.contains(&"acc_nb".to_string()), "{r:?}");
    ping(&b, l.a_ip, 2);
    let c2 = in_ns(&a, || fw.read_counters()).unwrap();
    assert_eq!(c2[&key("nb")].handle, c1.handle, "same counter object");
    assert_eq!(c2[&key("nb")].packets, 7, "kept its 5 and counted 2 more");
    assert_eq!(c2[&key("other")].bytes, 0);

    // Back to p1: the gone neighbor's counter is deleted, ours still kept.
    let r = in_ns(&a, || fw.apply(&p1)).unwrap();
    assert_eq!(r.counters_deleted, [key("other")]);
    let c3 = in_ns(&a, || fw.read_counters()).unwrap();
    assert_eq!(c3.keys().collect::<Vec<_>>(), [&key("nb")]);
    assert_eq!(c3[&key("nb")].packets, 7);

    // Someone flushes the ruleset: the next apply rebuilds; the counter is a new object.
    must(&ns_exec(&a, &["nft", "flush", "ruleset"]));
    assert!(in_ns(&a, || fw.read_counters()).unwrap().is_empty());
    let r = in_ns(&a, || fw.apply(&p1)).unwrap();
    assert!(r.created_table, "{r:?}");
    let c4 = in_ns(&a, || fw.read_counters()).unwrap()[&key("nb")];
    assert_eq!(c4.bytes, 0);
    assert_ne!(c4.handle, c1.handle, "a re-created counter has a new identity");
    assert_ne!(c4.handle.table, c1.handle.table);
    eprintln!("handles: before flush {:?}, after {:?}", c1.handle, c4.handle);

    // `nft flush table` keeps chains and counters but drops rules: repaired, counter kept.
    ping(&b, l.a_ip, 1);
    must(&ns_exec(&a, &["nft", "flush", "table", "inet", "tollway"]));
    let r = in_ns(&a, || fw.apply(&p1)).unwrap();
    assert!(!r.created_table && r.counters_added.is_empty() && r.chains_written.len() == 11, "{r:?}");
    ping(&b, l.a_ip, 1);
    let c5 = in_ns(&a, || fw.read_counters()).unwrap()[&key("nb")];
    assert_eq!((c5.packets, c5.handle), (2, c4.handle));
}

#[test]
fn remove_all_deletes_our_table_only_and_tolerates_its_absence() {
    if skip("remove_all_deletes_our_table_only_and_tolerates_its_absence", &[]) {
        return;
    }
    let mut lab = Lab::new("fr");
    let a = lab.netns("a");
    must(&ns_exec(&a, &["nft", "add", "table", "inet", "other"]));
    must(&ns_exec(&a, &["nft", "add", "table", "ip", "tollway"]));
    let mut fw = NftFirewall::new();
    // Nothing to remove yet, nothing to read.
    in_ns(&a, || fw.remove_all()).unwrap();
    assert!(in_ns(&a, || fw.read_counters()).unwrap().is_empty());
    let t = lab.ifname(1, "t");
    let p =
        plan(7000, BitRate::mbit(1), &[("n1", &t, BitRate::kbit(500), BitRate::mbit(1), IngressPolicy::ControlOnly)]);
    in_ns(&a, || fw.apply(&p)).unwrap();
    in_ns(&a, || fw.remove_all()).unwrap();
    let tables = must(&ns_exec(&a, &["nft", "list", "tables"]));
    assert!(tables.contains("table inet other") && tables.contains("table ip tollway"), "{tables}");
    assert!(!tables.contains("table inet tollway"), "{tables}");
    in_ns(&a, || fw.remove_all()).unwrap();
}

#[test]
fn an_invalid_plan_is_refused_before_touching_the_kernel() {
    if skip("an_invalid_plan_is_refused_before_touching_the_kernel", &[]) {
        return;
    }
    let mut lab = Lab::new("fi");
    let a = lab.netns("a");
    let t = lab.ifname(1, "t");
    let bad = plan(7000, BitRate::mbit(1), &[("n1", &t, BitRate::mbit(2), BitRate::mbit(1), IngressPolicy::Open)]);
    let e = in_ns(&a, || NftFirewall::new().apply(&bad)).unwrap_err();
    assert!(matches!(e, FirewallApplyError::Plan(PlanError::BadRates { .. })), "{e}");
    assert!(!must(&ns_exec(&a, &["nft", "list", "tables"])).contains("tollway"));
}
