//! Issue 9 on a simulated mesh: a node that tests through each neighbor ranks them by what
//! they deliver, so a liar that advertises a far better route than it has loses the traffic it
//! attracted, a degrader loses the traffic and the payments within two test cycles and gets
//! them back only when re-tested well after its probation, and tests stay within the budget.
//!
//! The topology is the lab's `diamond4` seen from `d`: two neighbors `b` and `c` offer it a route
//! to the same destination (the internet), each with the metric it advertises. Traffic follows
//! what a distance-vector router would choose from what the core gives routing: the neighbor
//! with the least (link cost + quality penalty + advertised metric); it is sent as a flow to
//! that neighbor, paid for at its ask.

mod common;

use common::*;
use tollway_core::market::{Amount, MarketConfig, OurBid, Price};
use tollway_core::quality::{Goals, QualityConfig};
use tollway_sim::{CoreConfig, Millis, NodeIdx, PathModel, Sim};

const MBIT: u64 = 1_000_000;
/// The metric the liar advertises (it claims to be the uplink itself) and the honest one.
const LIE: u32 = 0;
const HONEST: u32 = 256;
const INTERVAL: Millis = Millis(30_000);

/// d (testing) asks nothing; b and c ask 100 per MB: d pays whichever carries its traffic.
fn node(testing: bool, goals: Goals) -> impl Fn(&mut CoreConfig) {
    move |c: &mut CoreConfig| {
        c.market = MarketConfig {
            ask: Price(if testing { 0 } else { 100 }),
            max_price: Price(5000),
            pay_threshold: Amount(1000),
            credit_limit: Amount(1_000_000),
            capacity_bps: 100 * MBIT,
            ..MarketConfig::default()
        };
        c.quality = QualityConfig {
            testing,
            goals: Goals { min_samples: 2, ..goals },
            test_interval: INTERVAL,
            first_test_delay: Millis(5000),
            probation: Millis(120_000),
            // Tests every 30 s through each of two neighbors: ~500 MB an hour at 2 MB each way.
            budget_bytes_per_hour: 1_000_000_000,
            ..QualityConfig::default()
        };
    }
}

struct Diamond {
    sim: Sim,
    d: NodeIdx,
    b: NodeIdx,
    c: NodeIdx,
    /// What each of b and c advertises for the destination.
    advertised: [(NodeIdx, u32); 2],
    /// The traffic d offers, bit/s.
    demand_bps: u64,
}

impl Diamond {
    fn new(seed: u64, goals: Goals, b_metric: u32) -> Diamond {
        Diamond::with_capacity(seed, goals, b_metric, [None, None])
    }

    /// The same with the data capacity of d's links to b and c (bit/s): what live traffic
    /// through each really gets, whatever tests through it read.
    fn with_capacity(seed: u64, goals: Goals, b_metric: u32, capacity: [Option<u64>; 2]) -> Diamond {
        let mut sim = Sim::new(seed);
        let d = sim.add_node("d", node(true, goals));
        let b = sim.add_node("b", node(false, Goals::default()));
        let c = sim.add_node("c", node(false, Goals::default()));
        let opts = |capacity_bps| tollway_sim::LinkOptions { capacity_bps, ..Default::default() };
        sim.link_with(d, b, opts(capacity[0]));
        sim.link_with(d, c, opts(capacity[1]));
        converge(&mut sim, secs(30), "diamond");
        within(&mut sim, secs(30), "d bids for b and c", |s| s.routing(d).len() == 2);
        Diamond { sim, d, b, c, advertised: [(b, b_metric), (c, HONEST)], demand_bps: 10 * MBIT }
    }

    /// The neighbor d's traffic goes through now, if any: least link cost + advertised metric.
    fn next_hop(&self) -> Option<NodeIdx> {
        let routed = self.sim.routing(self.d);
        self.advertised
            .iter()
            .filter_map(|(n, metric)| {
                let id = self.sim.node_id(*n);
                routed
                    .iter()
                    .find(|r| r.neighbor == id)
                    .map(|r| (r.cost.0 as u32 + metric + r.penalty.of(0) as u32, *n))
            })
            .min()
            .map(|(_, n)| n)
    }

    /// Run `secs` seconds with d's traffic (10 Mbit/s unless set) following its routing,
    /// second by second; how many seconds it went through each of b and c.
    fn run(&mut self, secs: u64) -> (u64, u64) {
        let (mut through_b, mut through_c) = (0, 0);
        for _ in 0..secs {
            let hop = self.next_hop();
            for n in [self.b, self.c] {
                if Some(n) == hop {
                    self.sim.start_flow(self.d, n, self.demand_bps);
                } else {
                    self.sim.stop_flow(self.d, n);
                }
            }
            through_b += u64::from(hop == Some(self.b));
            through_c += u64::from(hop == Some(self.c));
            self.sim.run_for(Millis(1000));
        }
        (through_b, through_c)
    }

    fn paid(&self, to: NodeIdx) -> u64 {
        self.sim.market(self.d, to).expect("neighbor").record.ledger.paid.0
    }

    fn tests(&self, via: NodeIdx) -> tollway_core::node::NeighborTests {
        self.sim.node(self.d).neighbor(&self.sim.node_id(via)).expect("neighbor").tests.clone()
    }
}

#[test]
fn a_liar_loses_the_traffic_its_lie_attracted_once_tests_rank_it() {
    for seed in [1, 2, 3] {
        let mut m = Diamond::new(seed, Goals::default(), LIE);
        // b delivers a tenth of what c does, but claims to be one hop from the destination.
        m.sim.set_path(m.d, m.b, PathModel::new(5_000));
        m.sim.set_path(m.d, m.c, PathModel::new(50_000));
        // Before any test the lie wins: equal link costs, b's metric is lower.
        assert_eq!(m.next_hop(), Some(m.b), "seed {seed}: the lie attracts the traffic at first");
        // Two tests of each (first after 2.5–7.5 s, then every 15–45 s, one at a time).
        let (before_b, _) = m.run(120);
        assert!(before_b > 0);
        let tb = m.tests(m.b);
        assert!(tb.tests >= 2 && m.tests(m.c).tests >= 2, "seed {seed}: {tb:?}");
        let (after_b, after_c) = m.run(600);
        let share = after_b as f64 / (after_b + after_c) as f64;
        assert!(share <= 0.10, "seed {seed}: the liar still carries {:.0} % of the traffic", share * 100.0);
        assert_eq!(after_b, 0, "seed {seed}: ranked, b's cost outweighs what its lie hides");
        // Nobody was declined: b is slow, not below any goal; it stays a (costly) fallback.
        assert!(matches!(m.sim.market(m.d, m.b).unwrap().our_bid, OurBid::Bid(_)));
        let routed = m.sim.routing(m.d);
        let metric = |n: NodeIdx| {
            let r = routed.iter().find(|r| r.neighbor == m.sim.node_id(n)).unwrap();
            r.cost.0 as u32 + r.penalty.of(0) as u32
        };
        assert!(metric(m.b) + LIE > metric(m.c) + HONEST, "{routed:?}");
    }
}

#[test]
fn a_degrader_loses_traffic_and_payments_within_two_test_cycles_and_regains_them_when_retested_well() {
    let goals = Goals { min_down_kbit: 10_000, ..Goals::default() };
    let mut m = Diamond::new(7, goals, HONEST);
    // Both honest and good; c is more than twice better, so it carries the traffic.
    m.sim.set_path(m.d, m.b, PathModel::new(25_000));
    m.sim.set_path(m.d, m.c, PathModel::new(60_000));
    m.run(150);
    assert_eq!(m.next_hop(), Some(m.c));
    let paid_before = m.paid(m.c);
    assert!(paid_before > 0, "d pays c for carrying its traffic");
    // c degrades to 1 Mbit/s.
    let degraded_at = m.sim.now();
    m.sim.set_path(m.d, m.c, PathModel { degrade: Some((degraded_at, 1_000)), ..PathModel::new(60_000) });
    let mut moved = None;
    for _ in 0..300 {
        m.run(1);
        if moved.is_none() && m.next_hop() == Some(m.b) {
            moved = Some(m.sim.now().since(degraded_at));
        }
        if matches!(m.sim.market(m.d, m.c).unwrap().our_bid, OurBid::Declined(_)) {
            break;
        }
    }
    let withdrawn = m.sim.now().since(degraded_at);
    let two_cycles = Millis(2 * INTERVAL.0 * 3 / 2 + 2 * tollway_sim::TEST_TIME.0);
    let OurBid::Declined(reason) = &m.sim.market(m.d, m.c).unwrap().our_bid else {
        panic!("bid not withdrawn {} s after degrading", withdrawn.as_secs())
    };
    assert!(reason.contains("below our goals") && reason.contains("download"), "{reason}");
    assert!(withdrawn <= two_cycles, "withdrawn after {withdrawn:?}, two test cycles are {two_cycles:?}");
    let moved = moved.expect("traffic moved to b");
    assert!(moved <= withdrawn, "traffic left c ({moved:?}) no later than the bid ({withdrawn:?})");
    assert!(m.sim.routing(m.d).iter().all(|r| r.neighbor != m.sim.node_id(m.c)), "c carries nothing");
    // Payments to c stop: what was owed is settled, nothing more accrues.
    m.run(20);
    let settled = m.paid(m.c);
    m.run(60);
    assert_eq!(m.paid(m.c), settled, "no payment to c after it was withdrawn");
    assert_eq!(m.next_hop(), Some(m.b));
    // Probation (120 s) ends: c is bid on again, unknown, tested again; still degraded, it is
    // withdrawn again.
    let tests_before = m.tests(m.c).tests;
    m.run(200);
    assert!(m.tests(m.c).tests > tests_before, "re-tested after probation");
    // c recovers; after its probation it is bid on again, re-tested, and once its tests show it
    // better than b again it carries the traffic again.
    m.sim.set_path(m.d, m.c, PathModel::new(60_000));
    let (d, b, c) = (m.d, m.b, m.c);
    let back = within(&mut m.sim, secs(900), "c bid on again and ranked first", |s| {
        let n = s.node(d).neighbor(&s.node_id(c)).unwrap();
        let cost =
            |x: NodeIdx| s.routing(d).iter().find(|r| r.neighbor == s.node_id(x)).map(|r| r.cost.0 + r.penalty.of(0));
        matches!(n.market.our_bid, OurBid::Bid(_)) && cost(c).is_some() && cost(c) < cost(b)
    });
    assert!(back <= secs(900));
    assert_eq!(m.next_hop(), Some(m.c), "the recovered neighbor carries the traffic again");
    let paid = m.paid(m.c);
    m.run(60);
    assert!(m.paid(m.c) > paid, "and is paid again");
}

#[test]
fn a_test_prioritizer_loses_the_traffic_to_a_live_check_and_stays_capped_until_checked_again() {
    for seed in [1, 2, 3] {
        // c's tests read 50 Mbit/s, but live traffic through it gets 2 (it favors the tests);
        // b is honest at 10.
        let mut m = Diamond::with_capacity(seed, Goals::default(), HONEST, [Some(10 * MBIT), Some(2 * MBIT)]);
        m.sim.set_path(m.d, m.b, PathModel::new(10_000));
        m.sim.set_path(m.d, m.c, PathModel::new(50_000));
        // Once both are tested, c ranks first and carries d's traffic at 2 Mbit/s, a 25th of
        // its tests: a live check moves it to b for three windows, it flows at 10 there, and
        // c's tests are capped.
        let (d, c) = (m.d, m.c);
        let mut capped_after = None;
        for s in 0..450 {
            m.run(1);
            if m.sim.node(d).neighbor(&m.sim.node_id(c)).unwrap().tests.live_cap.is_some() {
                capped_after = Some(s);
                break;
            }
        }
        let capped_after = capped_after.unwrap_or_else(|| panic!("seed {seed}: c never capped: {:?}", m.tests(m.c)));
        assert!(m.tests(m.c).tests >= 2 && m.tests(m.b).tests >= 2, "seed {seed}: both tested");
        let cap = m.tests(m.c).live_cap.unwrap();
        assert!((1_500..=2_500).contains(&cap.kbit) && cap.elsewhere_kbit >= 9_000, "seed {seed}: {cap:?}");
        // From then on b carries it, until c may be checked again (the cap lasts that long).
        let (through_b, through_c) = m.run(700);
        assert_eq!(through_c, 0, "seed {seed}: capped c carries nothing ({through_b} s through b)");
        assert!(m.tests(m.c).live_cap.is_some(), "seed {seed}: still capped");
        eprintln!(
            "seed {seed}: c capped {capped_after} s after d's traffic started; it carried nothing for the next 700 s"
        );
    }
}

#[test]
fn an_honest_neighbor_with_little_demand_is_checked_and_keeps_its_traffic() {
    // c is honest and fast; d only asks 2 Mbit/s of it, a 25th of its tests: a check moves
    // the traffic to b, where it flows no faster, so nothing changes.
    let mut m = Diamond::new(5, Goals::default(), HONEST);
    m.demand_bps = 2 * MBIT;
    m.sim.set_path(m.d, m.b, PathModel::new(10_000));
    m.sim.set_path(m.d, m.c, PathModel::new(50_000));
    m.run(150);
    let (through_b, through_c) = m.run(1200);
    let tc = m.tests(m.c);
    assert!(tc.last_live_check.is_some(), "c's steady traffic far below its tests was checked");
    assert!(tc.live_cap.is_none(), "demand was the limit: c is not capped: {tc:?}");
    let share_c = through_c as f64 / (through_b + through_c) as f64;
    assert!(share_c >= 0.9, "c keeps the traffic but for the checks: {:.1} %", share_c * 100.0);
    eprintln!("honest c carried {:.1} % of 1,200 s (checked, not capped)", share_c * 100.0);
}

#[test]
fn a_moment_without_a_route_is_retried_soon_and_only_a_lasting_one_unranks_the_neighbor() {
    let mut m = Diamond::new(9, Goals::default(), HONEST);
    m.sim.set_path(m.d, m.b, PathModel::new(10_000));
    m.sim.set_path(m.d, m.c, PathModel::new(50_000));
    m.run(150);
    let acceptable =
        |t: &tollway_core::node::NeighborTests| matches!(t.verdict, tollway_core::quality::Verdict::Acceptable { .. });
    assert!(acceptable(&m.tests(m.c)), "{:?}", m.tests(m.c));
    // The route through c goes for a moment (as when the router re-adds its tunnel).
    m.sim.remove_path(m.d, m.c);
    let mut waited = 0;
    while m.tests(m.c).no_route_reports == 0 {
        m.run(1);
        waited += 1;
        assert!(waited < 120, "no test through c in {waited} s");
    }
    let t = m.tests(m.c);
    assert!(!t.no_route && acceptable(&t), "one report does not unrank c: {t:?}");
    m.sim.set_path(m.d, m.c, PathModel::new(50_000));
    let tests = t.tests;
    m.run(10);
    let t = m.tests(m.c);
    assert!(t.tests > tests, "retried within seconds, not a test interval: {t:?}");
    assert!(t.no_route_reports == 0 && acceptable(&t), "{t:?}");
    // A lasting loss: the retry finds no route either, and c is not ranked.
    m.sim.remove_path(m.d, m.c);
    let (d, c) = (m.d, m.c);
    within(&mut m.sim, secs(120), "c unranked after two reports of no route", |s| {
        s.node(d).neighbor(&s.node_id(c)).unwrap().tests.no_route
    });
    assert!(!acceptable(&m.tests(m.c)));
}

#[test]
fn tests_never_spend_more_than_the_budget_in_any_hour() {
    let mut sim = Sim::new(11);
    let test_max_bytes = 1_000_000;
    // Room for three tests an hour among five neighbors that all want one every 30 s.
    let budget = 3 * 2 * test_max_bytes;
    let d = sim.add_node("d", |c| {
        node(true, Goals::default())(c);
        c.quality.budget_bytes_per_hour = budget;
        c.quality.test_max_bytes = test_max_bytes;
    });
    let others: Vec<NodeIdx> = (0..5).map(|i| sim.add_node(&format!("n{i}"), node(false, Goals::default()))).collect();
    for &o in &others {
        sim.link(d, o);
    }
    converge(&mut sim, secs(30), "star");
    for &o in &others {
        sim.set_path(d, o, PathModel::new(100_000));
    }
    let mut worst = 0;
    for _ in 0..(3 * 3600 / 10) {
        sim.run_for(secs(10));
        worst = worst.max(sim.test_budget(d).0);
    }
    let (_, total) = sim.test_budget(d);
    assert!(worst <= budget, "{worst} spent in an hour, budget {budget}");
    // Three hours, three tests an hour at most (one more may start as the window slides).
    let tests: u32 = others.iter().map(|o| sim.node(d).neighbor(&sim.node_id(*o)).unwrap().tests.tests).sum();
    assert!((8..=10).contains(&tests), "{tests} tests in three hours");
    assert_eq!(total, tests as u64 * 2 * test_max_bytes, "every test's bytes are counted");
}

/// Per-destination ranking: d pins the internet's server and a server on a node inside the
/// mesh (destination 1). Through b the internet is slow and the mesh server fast (it is b, or
/// next to it); through c the reverse. Each destination's routes follow the ranking of the tests
/// against it: c for the internet, b for destination 1. Ranked on all tests together (the
/// same penalty everywhere), one of the two would go the slow way.
#[test]
fn each_tested_destination_is_routed_through_the_neighbor_ranked_best_for_it() {
    for seed in [3, 4] {
        let mut m = Diamond::new(seed, Goals::default(), HONEST);
        m.sim.set_path(m.d, m.b, PathModel::new(5_000));
        m.sim.set_path(m.d, m.c, PathModel::new(50_000));
        m.sim.set_destination_path(m.d, m.b, 1, PathModel::new(80_000));
        m.sim.set_destination_path(m.d, m.c, 1, PathModel::new(6_000));
        // Four tests of each neighbor: two against each destination, in turn.
        m.run(240);
        let (tb, tc) = (m.tests(m.b), m.tests(m.c));
        for t in [&tb, &tc] {
            assert!(t.tests >= 4, "seed {seed}: {t:?}");
            for dest in [0, 1] {
                assert!(t.destinations[&dest].quality.samples >= 2, "seed {seed}: destination {dest}: {t:?}");
            }
        }
        let routed = m.sim.routing(m.d);
        let penalty = |n: NodeIdx, dest: u8| {
            routed.iter().find(|r| r.neighbor == m.sim.node_id(n)).expect("routed").penalty.of(dest)
        };
        // The internet: c is best; b, ten times slower, is pushed back.
        assert_eq!(penalty(m.c, 0), 0, "seed {seed}: {routed:?}");
        assert!(penalty(m.b, 0) >= 2048, "seed {seed}: {routed:?}");
        // The mesh server: b is best; c, thirteen times slower, is pushed back.
        assert_eq!(penalty(m.b, 1), 0, "seed {seed}: {routed:?}");
        assert!(penalty(m.c, 1) >= 2048, "seed {seed}: {routed:?}");
        // A destination nobody was tested against alone (2) follows all tests together.
        assert_eq!(penalty(m.b, 2), routed.iter().find(|r| r.neighbor == m.sim.node_id(m.b)).unwrap().penalty.global);
        // d's internet traffic follows the internet's ranking.
        let (via_b, via_c) = m.run(60);
        assert_eq!((via_b, via_c), (0, 60), "seed {seed}");
    }
}

/// BENCHMARKS.md's "test bytes per neighbor per hour at the default budget": the default
/// schedule (a test every 5–15 min per neighbor, 2 MB each way at most) and budget (100 MB an
/// hour), six simulated hours, with 2 and with 8 neighbors whose paths move 100 Mbit/s.
#[test]
fn bench_test_bytes_per_neighbor_per_hour_at_the_defaults() {
    for neighbors in [2usize, 8] {
        let mut sim = Sim::new(21);
        let d = sim.add_node("d", |c| c.quality = QualityConfig { testing: true, ..QualityConfig::default() });
        let others: Vec<NodeIdx> =
            (0..neighbors).map(|i| sim.add_node(&format!("n{i}"), |c| c.quality = QualityConfig::default())).collect();
        for &o in &others {
            sim.link(d, o);
        }
        converge(&mut sim, secs(30), "star");
        for &o in &others {
            sim.set_path(d, o, PathModel::new(100_000));
        }
        let hours = 6;
        let mut worst = 0;
        for _ in 0..(hours * 360) {
            sim.run_for(secs(10));
            worst = worst.max(sim.test_budget(d).0);
        }
        let per_neighbor_hour = sim.test_budget(d).1 as f64 / neighbors as f64 / hours as f64;
        eprintln!(
            "{neighbors} neighbors: {:.1} MB of tests per neighbor per hour; at most {:.1} MB in any hour (budget 100)",
            per_neighbor_hour / 1e6,
            worst as f64 / 1e6
        );
        assert!(worst <= 100_000_000);
        if neighbors == 2 {
            // Six tests an hour of 4 MB each.
            assert!((20e6..=28e6).contains(&per_neighbor_hour), "{per_neighbor_hour}");
        } else {
            assert!(per_neighbor_hour <= 100e6 / 8.0 + 1.0, "the budget caps it: {per_neighbor_hour}");
        }
    }
}
