use super::*;
use crate::plan::*;
use crate::tc::spec::{group_spec, LeafKind};

const CLSACT_PARENT: u32 = 0xffff_fff1;

fn plan(neighbors: &[(&str, u64)]) -> TrafficPlan {
    TrafficPlan {
        control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(200) },
        groups: vec![ShaperGroup {
            id: GroupId(0),
            capacity: BitRate::mbit(20),
            neighbors: neighbors
                .iter()
                .map(|(k, rate)| NeighborTraffic {
                    key: NeighborKey::new(*k).unwrap(),
                    tunnel: IfName::new(format!("tw{k}")).unwrap(),
                    rate: BitRate(*rate),
                    ceil: BitRate::mbit(20),
                    ingress: IngressPolicy::Open,
                })
                .collect(),
        }],
        admission: Admission::default(),
    }
}

fn specs(p: &TrafficPlan) -> Vec<GroupSpec> {
    p.groups.iter().map(|g| group_spec(p, g, "twi", LeafKind::Pfifo)).collect()
}

fn link(index: u32, name: &str) -> LinkSummary {
    LinkSummary { index, name: name.into(), kind: None, up: true, mtu: None, stats: None }
}

/// Links: the IFB is index 100, tunnels twa.. get 10, 11, …
fn links(names: &[&str]) -> Vec<LinkSummary> {
    let mut v = vec![link(100, "twi0")];
    v.extend(names.iter().enumerate().map(|(i, n)| link(10 + i as u32, n)));
    v
}

/// The state the kernel would be in after applying `groups` completely.
fn applied(groups: &[GroupSpec], tunnels: &[&str]) -> Observed {
    let mut o = Observed { links: links(tunnels), ..Default::default() };
    for g in groups {
        let ifb = o.link(g.ifb.as_str()).unwrap().index;
        o.qdiscs.push(QdiscObs {
            ifindex: ifb,
            handle: 0x10000,
            parent: TC_H_ROOT,
            kind: "htb".into(),
            htb_default: Some(3),
            fifo_limit: None,
        });
        let classes = g
            .classes
            .iter()
            .map(|c| {
                if let Some(Leaf::Pfifo(n)) = c.leaf {
                    o.qdiscs.push(QdiscObs {
                        ifindex: ifb,
                        handle: (c.id.minor as u32) << 16,
                        parent: c.id.raw(),
                        kind: "pfifo".into(),
                        htb_default: None,
                        fifo_limit: Some(n),
                    });
                }
                ClassObs {
                    id: c.id.raw(),
                    parent: c.parent.map_or(TC_H_ROOT, ClassId::raw),
                    rate: c.rate,
                    ceil: c.ceil,
                    prio: c.prio,
                    quantum: c.quantum,
                    ..Default::default()
                }
            })
            .collect();
        o.classes.insert(ifb, classes);
        for m in &g.members {
            let t = o.link(m.as_str()).unwrap().index;
            add_redirect(&mut o, t, ifb);
        }
    }
    o
}

fn add_redirect(o: &mut Observed, tunnel: u32, target: u32) {
    o.qdiscs.push(QdiscObs {
        ifindex: tunnel,
        handle: CLSACT_HANDLE,
        parent: CLSACT_PARENT,
        kind: "clsact".into(),
        htb_default: None,
        fifo_limit: None,
    });
    o.filters.insert(
        tunnel,
        vec![
            FilterObs { pref: 1, kind: "u32".into(), mirred: vec![] },
            FilterObs { pref: 1, kind: "u32".into(), mirred: vec![(true, target)] },
        ],
    );
}

fn ours() -> BTreeSet<u32> {
    [100].into()
}

#[test]
fn a_fresh_ifb_gets_the_whole_structure_and_tunnels_their_redirect() {
    let p = plan(&[("a", 15_000_000), ("b", 5_000_000)]);
    let o = Observed { links: links(&["twa", "twb"]), ..Default::default() };
    let d = diff(&specs(&p), &o, &ours(), &BTreeSet::new());
    let l = &d.lines;
    assert_eq!(l[0], "qdisc replace dev twi0 root handle 1: htb default 3 r2q 13");
    assert!(l[1].starts_with("class add dev twi0 parent 1: classid 1:1 htb rate 20000000bit"));
    assert!(l[2].starts_with("class add dev twi0 parent 1:1 classid 1:2 htb rate 200000bit"));
    assert_eq!(l[3], "qdisc replace dev twi0 parent 1:2 handle 2: pfifo limit 166");
    assert_eq!(l.iter().filter(|s| s.starts_with("class add")).count(), 5);
    assert_eq!(l.iter().filter(|s| s.starts_with("qdisc replace") && s.contains("pfifo")).count(), 4);
    assert!(l.contains(&"qdisc add dev twa clsact".to_string()));
    let redirect =
        "filter add dev twb egress protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev twi0";
    assert!(l.contains(&redirect.to_string()));
    assert!(d.missing_tunnels.is_empty());
}

#[test]
fn nothing_changed_means_no_commands() {
    let p = plan(&[("a", 15_000_000), ("b", 5_000_000)]);
    let s = specs(&p);
    let d = diff(&s, &applied(&s, &["twa", "twb"]), &ours(), &BTreeSet::new());
    assert_eq!(d, TcDiff::default());
}

#[test]
fn the_parent_class_quantum_is_not_compared() {
    // HTB keeps an inner class's quantum from when it was a leaf; `class change` does not update it.
    let s = specs(&plan(&[("a", 15_000_000)]));
    let mut o = applied(&s, &["twa"]);
    o.classes.get_mut(&100).unwrap()[0].quantum = 12_345;
    o.classes.get_mut(&100).unwrap()[0].prio = 3;
    assert_eq!(diff(&s, &o, &ours(), &BTreeSet::new()), TcDiff::default());
    o.classes.get_mut(&100).unwrap()[1].quantum = 12_345;
    assert_eq!(diff(&s, &o, &ours(), &BTreeSet::new()).lines.len(), 1, "a leaf's quantum is");
}

#[test]
fn a_rate_change_changes_that_class_only() {
    let before = specs(&plan(&[("a", 15_000_000), ("b", 5_000_000)]));
    let o = applied(&before, &["twa", "twb"]);
    let after = plan(&[("a", 10_000_000), ("b", 5_000_000)]);
    let d = diff(&specs(&after), &o, &ours(), &BTreeSet::new());
    let class_a = after.groups[0].classes()[&NeighborKey::new("a").unwrap()];
    assert_eq!(d.lines.len(), 1, "{:?}", d.lines);
    assert!(d.lines[0].starts_with(&format!("class change dev twi0 parent 1:1 classid {class_a} htb rate 10000000bit")));
}

#[test]
fn a_ceiling_change_also_resizes_the_fifo() {
    let before = specs(&plan(&[("a", 15_000_000)]));
    let o = applied(&before, &["twa"]);
    let mut after = plan(&[("a", 64_000)]);
    after.groups[0].neighbors[0].ceil = BitRate::kbit(64);
    let d = diff(&specs(&after), &o, &ours(), &BTreeSet::new());
    assert_eq!(d.lines.len(), 2, "{:?}", d.lines);
    assert!(d.lines[0].starts_with("class change"));
    assert!(d.lines[1].ends_with("pfifo limit 16"), "{}", d.lines[1]);
}

#[test]
fn a_gone_neighbor_loses_class_and_redirect_after_everything_else() {
    let before = specs(&plan(&[("a", 15_000_000), ("b", 5_000_000)]));
    let o = applied(&before, &["twa", "twb"]);
    let after = plan(&[("a", 15_000_000)]);
    let d = diff(&specs(&after), &o, &ours(), &BTreeSet::new());
    let class_b = plan(&[("b", 1000)]).groups[0].classes()[&NeighborKey::new("b").unwrap()];
    assert_eq!(d.lines, ["qdisc del dev twb clsact".to_string(), format!("class del dev twi0 classid {class_b}")]);
}

#[test]
fn a_new_or_recreated_tunnel_gets_its_redirect() {
    let s = specs(&plan(&[("a", 15_000_000)]));
    let mut o = applied(&s, &["twa"]);
    // Tunnel re-created: new index, no clsact.
    o.links[1].index = 55;
    let d = diff(&s, &o, &ours(), &BTreeSet::new());
    assert_eq!(d.lines[0], "qdisc add dev twa clsact");
    assert_eq!(d.lines.len(), 2);
}

#[test]
fn a_wrong_redirect_is_replaced() {
    let s = specs(&plan(&[("a", 15_000_000)]));
    let mut o = applied(&s, &["twa"]);
    o.filters.get_mut(&10).unwrap()[1].mirred = vec![(true, 999)];
    let d = diff(&s, &o, &ours(), &BTreeSet::new());
    assert_eq!(d.lines[0], "filter del dev twa egress");
    assert!(d.lines[1].starts_with("filter add dev twa egress"));
    // An extra filter of someone else's is removed the same way.
    let mut o = applied(&s, &["twa"]);
    o.filters.get_mut(&10).unwrap().push(FilterObs { pref: 5, kind: "bpf".into(), mirred: vec![] });
    assert_eq!(diff(&s, &o, &ours(), &BTreeSet::new()).lines[0], "filter del dev twa egress");
}

#[test]
fn missing_tunnels_are_reported_not_failed() {
    let s = specs(&plan(&[("a", 15_000_000), ("b", 5_000_000)]));
    let mut o = applied(&s, &["twa", "twb"]);
    o.links.retain(|l| l.name != "twb");
    let d = diff(&s, &o, &ours(), &BTreeSet::new());
    assert!(d.lines.is_empty(), "{:?}", d.lines);
    assert_eq!(d.missing_tunnels, [IfName::new("twb").unwrap()]);
}

#[test]
fn a_foreign_root_qdisc_is_replaced_and_everything_rebuilt() {
    let s = specs(&plan(&[("a", 15_000_000)]));
    let mut o = applied(&s, &["twa"]);
    o.qdiscs.retain(|q| q.ifindex != 100);
    o.qdiscs.push(QdiscObs {
        ifindex: 100,
        handle: 0x10000,
        parent: TC_H_ROOT,
        kind: "htb".into(),
        htb_default: Some(0),
        fifo_limit: None,
    });
    let d = diff(&s, &o, &ours(), &BTreeSet::new());
    assert!(d.lines[0].starts_with("qdisc replace dev twi0 root handle 1: htb"));
    assert_eq!(d.lines.iter().filter(|l| l.starts_with("class add")).count(), 4);
    assert!(!d.lines.iter().any(|l| l.starts_with("class del")));
}

#[test]
fn redirects_of_strangers_are_left_alone_unless_they_point_into_our_ifbs() {
    let s = specs(&plan(&[("a", 15_000_000)]));
    let mut o = applied(&s, &["twa", "eth0", "twold"]);
    add_redirect(&mut o, 11, 42); // eth0 → someone else's ifb
    add_redirect(&mut o, 12, 100); // a former member still redirected into ours
    let d = diff(&s, &o, &ours(), &BTreeSet::new());
    assert_eq!(d.lines, ["qdisc del dev twold clsact"]);
    // A former member whose IFB vanished (dangling redirect) is recognised from the last plan.
    let mut o = applied(&s, &["twa", "twold"]);
    add_redirect(&mut o, 11, 0);
    let prev: BTreeSet<IfName> = [IfName::new("twold").unwrap()].into();
    assert_eq!(diff(&s, &o, &ours(), &prev).lines, ["qdisc del dev twold clsact"]);
}
