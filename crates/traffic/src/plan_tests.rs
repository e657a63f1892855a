use super::*;

pub(crate) fn neighbor(key: &str, tunnel: &str, rate: u64, ceil: u64, ingress: IngressPolicy) -> NeighborTraffic {
    NeighborTraffic {
        key: NeighborKey::new(key).unwrap(),
        tunnel: IfName::new(tunnel).unwrap(),
        rate: BitRate(rate),
        ceil: BitRate(ceil),
        ingress,
    }
}

fn plan() -> TrafficPlan {
    TrafficPlan {
        control: ControlTraffic { tcp_port: 7000, rate: BitRate::kbit(200) },
        groups: vec![ShaperGroup {
            id: GroupId(0),
            capacity: BitRate::mbit(20),
            neighbors: vec![
                neighbor("aa", "twa", 15_000_000, 20_000_000, IngressPolicy::Open),
                neighbor("bb", "twb", 64_000, 64_000, IngressPolicy::Police { bits_per_sec: BitRate::kbit(64) }),
            ],
        }],
        admission: Admission::default(),
    }
}

#[test]
fn keys_are_validated() {
    assert!(NeighborKey::new("0123456789ab").is_ok());
    assert!(NeighborKey::new("a_b").is_ok());
    for bad in ["", "A", "a-b", "a b", "é", &"a".repeat(25)] {
        assert_eq!(NeighborKey::new(bad), Err(PlanError::BadKey(bad.to_string())), "{bad:?}");
    }
    let id = NodeId([0xab; 32]);
    assert_eq!(NeighborKey::of(&id).as_str(), "abababababab");
}

#[test]
fn a_good_plan_validates() {
    assert_eq!(plan().validate(), Ok(()));
    let mut p = plan();
    p.admission.uplinks = vec![IfName::new("wan").unwrap()];
    p.admission.lans = vec![IfName::new("br-lan").unwrap()];
    p.admission.open_tcp = vec![22];
    p.admission.tunnel_prefix = Some("tw0a1b2c".into());
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(TrafficPlan::empty(plan().control).validate(), Ok(()));
}

#[test]
fn bad_plans_are_rejected_with_what_is_wrong() {
    type Case = (fn(&mut TrafficPlan), fn(&PlanError) -> bool);
    let cases: Vec<Case> = vec![
        (|p| p.control.tcp_port = 0, |e| matches!(e, PlanError::NoControlPort)),
        (|p| p.groups.push(p.groups[0].clone()), |e| matches!(e, PlanError::DuplicateGroup(GroupId(0)))),
        (|p| p.groups[0].capacity = BitRate(999), |e| matches!(e, PlanError::CapacityTooLow { .. })),
        (|p| p.control.rate = BitRate::mbit(21), |e| matches!(e, PlanError::BadControlRate { .. })),
        (
            |p| p.groups[0].neighbors[1].key = NeighborKey::new("aa").unwrap(),
            |e| matches!(e, PlanError::DuplicateKey(k) if k.as_str() == "aa"),
        ),
        (
            |p| p.groups[0].neighbors[1].tunnel = IfName::new("twa").unwrap(),
            |e| matches!(e, PlanError::DuplicateTunnel(_)),
        ),
        (|p| p.groups[0].neighbors[0].rate = BitRate(21_000_000), |e| matches!(e, PlanError::BadRates { .. })),
        (|p| p.groups[0].neighbors[0].ceil = BitRate(21_000_000), |e| matches!(e, PlanError::BadRates { .. })),
        (|p| p.groups[0].neighbors[0].rate = BitRate(10), |e| matches!(e, PlanError::BadRates { .. })),
        (
            |p| p.groups[0].neighbors[1].ingress = IngressPolicy::Police { bits_per_sec: BitRate(0) },
            |e| matches!(e, PlanError::BadPoliceRate { .. }),
        ),
        (|p| p.admission.services[0].port = 0, |e| matches!(e, PlanError::ServicePort { name } if name == "babel")),
        (
            |p| p.admission.services[0].scope = ServiceScope::LinkLocal { groups: vec!["ff05::2".parse().unwrap()] },
            |e| matches!(e, PlanError::ServiceGroup { .. }),
        ),
        (|p| p.admission.open_udp = vec![53, 0], |e| matches!(e, PlanError::OpenPortZero(Protocol::Udp))),
        (
            |p| p.admission.uplinks = vec![IfName::new("twa").unwrap()],
            |e| matches!(e, PlanError::InterfaceRoles { first: "tunnel", second: "uplink", .. }),
        ),
        (
            |p| {
                p.admission.uplinks = vec![IfName::new("eth0").unwrap()];
                p.admission.lans = vec![IfName::new("eth0").unwrap()];
            },
            |e| matches!(e, PlanError::InterfaceRoles { first: "uplink", second: "lan", .. }),
        ),
        (|p| p.admission.tunnel_prefix = Some("tw*".into()), |e| matches!(e, PlanError::BadTunnelPrefix(_))),
        (|p| p.admission.tunnel_prefix = Some("a".repeat(15)), |e| matches!(e, PlanError::BadTunnelPrefix(_))),
    ];
    for (i, (break_it, expect)) in cases.into_iter().enumerate() {
        let mut p = plan();
        break_it(&mut p);
        let err = p.validate().expect_err(&format!("case {i} should fail"));
        assert!(expect(&err), "case {i}: unexpected {err:?}");
        assert!(!err.to_string().is_empty());
    }
    // A key in two different groups is a duplicate too.
    let mut p = plan();
    let mut g = p.groups[0].clone();
    g.id = GroupId(1);
    g.neighbors.truncate(1);
    g.neighbors[0].tunnel = IfName::new("twc").unwrap();
    p.groups.push(g);
    assert!(matches!(p.validate(), Err(PlanError::DuplicateKey(_))));
}

#[test]
fn class_ids_display_like_tc() {
    assert_eq!(ClassId::htb(0x10).to_string(), "1:10");
    assert_eq!(ClassId::control().to_string(), "1:2");
    assert_eq!(ClassId::htb(0xa3f0).raw(), 0x0001_a3f0);
}

#[test]
fn classes_are_stable_distinct_and_in_range() {
    let g = &plan().groups[0];
    let a = g.classes();
    assert_eq!(a.len(), 2);
    // Adding neighbors does not move existing ones (barring a collision, absent here).
    let mut bigger = g.clone();
    for i in 0..40 {
        bigger.neighbors.push(neighbor(&format!("n{i}"), &format!("tw{i}"), 1000, 1000, IngressPolicy::Open));
    }
    let b = bigger.classes();
    assert_eq!(b.len(), 42);
    for (k, c) in &a {
        assert_eq!(b[k], *c);
    }
    let distinct: BTreeSet<_> = b.values().collect();
    assert_eq!(distinct.len(), 42);
    assert!(b.values().all(|c| c.major == 1 && (FIRST_NEIGHBOR_MINOR..=LAST_NEIGHBOR_MINOR).contains(&c.minor)));
}

#[test]
fn colliding_keys_get_the_next_free_class() {
    // Find two keys with the same preferred slot.
    let span = (LAST_NEIGHBOR_MINOR - FIRST_NEIGHBOR_MINOR) as u32 + 1;
    let mut seen = BTreeMap::new();
    let (k1, k2) = (0..)
        .find_map(|i| {
            let k = format!("k{i}");
            let slot = fnv1a32(k.as_bytes()) % span;
            seen.insert(slot, k.clone()).map(|other| (other, k))
        })
        .unwrap();
    let g = ShaperGroup {
        id: GroupId(0),
        capacity: BitRate::mbit(1),
        neighbors: vec![
            neighbor(&k2, "t2", 1000, 1000, IngressPolicy::Open),
            neighbor(&k1, "t1", 1000, 1000, IngressPolicy::Open),
        ],
    };
    let c = g.classes();
    let (lo, hi) = if k1 < k2 { (&k1, &k2) } else { (&k2, &k1) };
    let c_lo = c[&NeighborKey::new(lo.as_str()).unwrap()].minor;
    let c_hi = c[&NeighborKey::new(hi.as_str()).unwrap()].minor;
    assert_eq!(c_lo as u32, FIRST_NEIGHBOR_MINOR as u32 + fnv1a32(lo.as_bytes()) % span);
    let expect_hi = FIRST_NEIGHBOR_MINOR as u32 + (fnv1a32(hi.as_bytes()) % span + 1) % span;
    assert_eq!(c_hi as u32, expect_hi);
}

#[test]
fn rates_convert_to_bytes_rounding_down() {
    assert_eq!(BitRate::kbit(64).bytes_per_sec(), 8000);
    assert_eq!(BitRate(1001).bytes_per_sec(), 125);
    assert_eq!(BitRate::mbit(20).to_string(), "20000000bit/s");
}
