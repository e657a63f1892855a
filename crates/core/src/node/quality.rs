//! Issue 9's loop: speed tests through each neighbor at random times within the operator's
//! byte budget, their samples judged against the operator's goals at the neighbor's price, the
//! bid withdrawn from a neighbor below them (for a probation time, then bid on and tested
//! again), and routing costs that follow the ranking.

use super::Node;
use crate::action::Action;
use crate::ids::NodeId;
use crate::live_check::{self, Direction, LiveCap};
use crate::market::{OurBid, Price};
use crate::quality::{best_value, judge_capped, penalty, Quality, Sample, Verdict, PENALTY_LEVELS};
use crate::time::{LogLimit, Millis, Now};
use crate::timer::Timer;
use crate::wire::control::ControlMessage;
use crate::wire::market::MarketMessage;
use rand_core::RngCore;

/// A test the driver has not reported after this long is given up (the driver reports every
/// test, so this only guards the schedule against a lost report).
pub const TEST_DEADLINE: Millis = Millis(120_000);
/// How often the schedule is looked at while testing is on.
const TICK: Millis = Millis(1000);

/// What speed tests through one neighbor measured, and what we decided from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighborTests {
    pub quality: Quality,
    pub verdict: Verdict,
    /// When its next test is due (set once its control session is up).
    pub next_test: Option<Millis>,
    pub tests: u32,
    pub failures: u32,
    /// Test bytes sent and received through it, all tests together.
    pub bytes: u64,
    pub last_error: Option<String>,
    /// Its last test found no route to a tested server through it: it is not ranked (its cost
    /// follows its price alone).
    pub no_route: bool,
    /// "No route" reports in a row. The router re-adds a tunnel to babeld when its penalty
    /// changes, which drops the routes learned through it for a moment: one report of no route
    /// from a neighbor that had one is retried soon; two in a row mean it.
    pub no_route_reports: u32,
    /// Since when our bid is withdrawn because its quality fell below the goals.
    pub withdrawn_since: Option<Millis>,
    pub(crate) withdrawn_reason: Option<String>,
    /// Its tests capped at what its live traffic showed (a live check found it held traffic
    /// back), until the probation time has passed.
    pub live_cap: Option<LiveCap>,
    /// When it was last the subject of a live check.
    pub last_live_check: Option<Millis>,
    /// Its tests against each destination alone (numbered by the daemon: see
    /// `crate::routing::Penalty`), which rank it for that destination.
    pub destinations: std::collections::BTreeMap<u8, DestinationTests>,
}

/// The tests through one neighbor against one destination, and their verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationTests {
    pub quality: Quality,
    pub verdict: Verdict,
}

impl NeighborTests {
    /// Why our bid is withdrawn, while it is.
    pub fn withdrawn_reason(&self) -> Option<&str> {
        self.withdrawn_reason.as_deref()
    }
}

/// The node's side of testing: the budget and the one test running.
#[derive(Debug, Default)]
pub(crate) struct QualityState {
    pub(crate) budget: crate::quality::TestBudget,
    running: Option<Running>,
    next_test_id: u64,
    budget_log: LogLimit,
    /// The live check under way: routing prefers `challenger` over `incumbent` meanwhile.
    pub(crate) live_check: Option<LiveCheck>,
}

/// A live check under way (`crate::live_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCheck {
    /// The best-ranked neighbor, whose tests are checked.
    pub incumbent: NodeId,
    /// The neighbor the traffic is moved to meanwhile.
    pub challenger: NodeId,
    pub direction: Direction,
    /// What the incumbent carried (kbit/s, the lesser of its last two windows).
    pub carried_kbit: u64,
    pub started: Millis,
    /// The challenger's measured windows when the check started.
    challenger_windows: u32,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    test: u64,
    neighbor: NodeId,
    deadline: Millis,
}

/// How a test through a neighbor ended, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// A verified receipt: the sample it gives, the bytes it moved, and the destination whose
    /// server gave it (0: the internet; see `crate::routing::Penalty`).
    Measured { sample: Sample, bytes: u64, destination: u8 },
    /// No pinned server is reachable through this neighbor (it offers no route to one).
    NoRoute(String),
    /// The test failed (timeout, refused, bad receipt): no sample. `bytes` were moved anyway.
    Failed { error: String, bytes: u64 },
}

impl Node {
    /// Test bytes spent in the hour before `now` and since the start.
    pub fn test_budget(&self, now: Millis) -> (u64, u64) {
        (self.quality.budget.spent_at(now), self.quality.budget.total)
    }

    /// The driver's report of a test started by `RunSpeedTest`.
    pub fn handle_speed_test(&mut self, now: Now, test: u64, outcome: TestOutcome) {
        self.last_now = now;
        let Some(run) = self.quality.running.filter(|r| r.test == test) else {
            tracing::debug!(test, "report of a speed test no longer waited for; ignored");
            return;
        };
        self.quality.running = None;
        let bytes = match &outcome {
            TestOutcome::Measured { bytes, .. } | TestOutcome::Failed { bytes, .. } => *bytes,
            TestOutcome::NoRoute(_) => 0,
        };
        self.quality.budget.record(now.mono, bytes);
        let interval = self.config.quality.test_interval;
        let wait = self.random_wait(interval);
        let Some(n) = self.neighbors.get_mut(&run.neighbor) else { return };
        let t = &mut n.tests;
        t.bytes = t.bytes.saturating_add(bytes);
        t.next_test = Some(now.mono + wait);
        match outcome {
            TestOutcome::Measured { sample, destination, .. } => {
                t.tests = t.tests.saturating_add(1);
                t.no_route = false;
                t.no_route_reports = 0;
                t.last_error = None;
                t.quality.record(sample);
                t.destinations.entry(destination).or_default().quality.record(sample);
                tracing::info!(
                    neighbor = %run.neighbor.short(),
                    destination,
                    down_kbit = sample.down_kbit,
                    up_kbit = sample.up_kbit,
                    rtt_ms = sample.rtt_us / 1000,
                    loss_ppm = sample.loss_ppm,
                    bytes,
                    "speed test through neighbor"
                );
            }
            TestOutcome::NoRoute(why) => {
                t.no_route_reports = t.no_route_reports.saturating_add(1);
                if t.no_route_reports == 1 && t.quality.samples > 0 {
                    // Had a route: most likely a moment's flush (see `no_route_reports`).
                    tracing::debug!(neighbor = %run.neighbor.short(), reason = %why, "no route through neighbor for now; retrying soon");
                    let soon = self.random_wait(self.config.quality.first_test_delay.max(Millis(2000)));
                    if let Some(n) = self.neighbors.get_mut(&run.neighbor) {
                        n.tests.next_test = Some(now.mono + soon);
                    }
                    return;
                }
                if !t.no_route {
                    tracing::info!(neighbor = %run.neighbor.short(), reason = %why, "not testing through neighbor: no route to a test server through it");
                }
                t.no_route = true;
                t.last_error = Some(why);
            }
            TestOutcome::Failed { error, .. } => {
                t.failures = t.failures.saturating_add(1);
                tracing::warn!(neighbor = %run.neighbor.short(), %error, bytes, "speed test through neighbor failed");
                t.last_error = Some(error);
            }
        }
        self.judge_quality(now);
    }

    /// A wait drawn from half to one and a half times `mean`.
    fn random_wait(&mut self, mean: Millis) -> Millis {
        let half = mean.0 / 2;
        Millis(half + self.rng.next_u64() % (mean.0.max(1)))
    }

    /// Whether a speed test through this neighbor is running now.
    pub(super) fn test_running_through(&self, id: &NodeId) -> bool {
        self.quality.running.is_some_and(|r| r.neighbor == *id)
    }

    /// `Timer::Quality`: start a due test if none is running and the budget allows, and judge
    /// again (qualities go stale, probations end).
    pub(super) fn quality_tick(&mut self, now: Now) {
        let cfg = self.config.quality;
        if !cfg.testing {
            return;
        }
        self.timers.set(Timer::Quality, now.mono + TICK);
        // Schedule the first test of neighbors that came up; forget the schedule of those down.
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in &ids {
            let up = self.neighbors[id].session_established_since().is_some();
            let first = self.random_wait(cfg.first_test_delay);
            let t = &mut self.neighbors.get_mut(id).expect("exists").tests;
            match (up, t.next_test) {
                (true, None) => t.next_test = Some(now.mono + first),
                (false, Some(_)) => t.next_test = None,
                _ => {}
            }
        }
        if let Some(r) = self.quality.running {
            if now.mono < r.deadline {
                self.judge_quality(now);
                return;
            }
            tracing::warn!(neighbor = %r.neighbor.short(), "speed test not reported in time; given up");
            self.quality.running = None;
        }
        // A live check measures the traffic of the two neighbors it involves: no test through
        // them meanwhile (a window with a test in it is not live traffic).
        let checked = |id: &NodeId| self.quality.live_check.is_some_and(|c| c.incumbent == *id || c.challenger == *id);
        let due = self
            .neighbors
            .values()
            .filter(|n| n.session_established_since().is_some() && n.tests.withdrawn_since.is_none())
            .filter(|n| !checked(&n.id))
            .filter_map(|n| n.tests.next_test.filter(|t| *t <= now.mono).map(|t| (t, n.id)))
            .min();
        if let Some((_, id)) = due {
            if self.quality.budget.allows(now.mono, cfg.test_cost(), cfg.budget_bytes_per_hour) {
                let n = &self.neighbors[&id];
                let test = self.quality.next_test_id;
                self.quality.next_test_id += 1;
                self.quality.running = Some(Running { test, neighbor: id, deadline: now.mono + TEST_DEADLINE });
                self.actions.push_back(Action::RunSpeedTest {
                    test,
                    neighbor: id,
                    ifname: n.ifname.clone(),
                    slot: n.slot,
                    max_bytes: cfg.test_max_bytes,
                });
            } else if let Some(held) = self.quality.budget_log.admit(now.mono, 1, Millis::from_secs(600)) {
                let spent = self.quality.budget.spent(now.mono);
                tracing::warn!(
                    spent_last_hour = spent,
                    budget = cfg.budget_bytes_per_hour,
                    not_logged = held,
                    "speed tests held back: the hour's test budget is spent"
                );
            }
        }
        self.judge_quality(now);
    }

    /// Judge every neighbor; withdraw our bid from those below the goals, bid again on those
    /// whose probation ended, and give routing the costs that follow.
    pub(super) fn judge_quality(&mut self, now: Now) {
        let cfg = self.config.quality;
        self.live_check_tick(now);
        let ids: Vec<NodeId> = self.neighbors.keys().copied().collect();
        for id in &ids {
            let n = self.neighbors.get_mut(id).expect("exists");
            let ask = n.market.their_ask.map_or(Price(0), |(_, p)| p);
            if let Some(since) = n.tests.withdrawn_since {
                if now.mono.since(since) < cfg.probation {
                    continue;
                }
                // Probation over: what we knew is forgotten; it is bid on and tested again.
                tracing::info!(neighbor = %id.short(), "quality probation over: bidding again and testing again");
                n.tests.withdrawn_since = None;
                n.tests.withdrawn_reason = None;
                n.tests.quality = Quality::default();
                n.tests.verdict = Verdict::Unknown;
                n.tests.destinations.clear();
                n.tests.next_test = Some(now.mono);
                if let (Some((seq, price)), Some(session)) = (n.market.their_ask, self.established_session(id)) {
                    self.answer_ask(now, id, session, seq, price, false);
                } else {
                    let n = self.neighbors.get_mut(id).expect("exists");
                    if matches!(n.market.our_bid, OurBid::Declined(_)) {
                        n.market.set_our_bid(now.mono, OurBid::NoAsk);
                    }
                }
                continue;
            }
            // A cap lasts the probation, and at least until the neighbor may be checked again
            // (else it would win the traffic back between two checks).
            let cap_time = cfg.probation.max(cfg.live_check_interval);
            if n.tests.live_cap.is_some_and(|c| now.mono.since(c.since) >= cap_time) {
                tracing::info!(neighbor = %id.short(), "live-check cap over: its tests count in full until checked again");
                n.tests.live_cap = None;
            }
            let (no_route, cap) = (n.tests.no_route, n.tests.live_cap);
            let judge = |q: &Quality| {
                if no_route {
                    Verdict::Unknown
                } else {
                    judge_capped(q, ask, &cfg.goals, now.mono, cap.as_ref())
                }
            };
            // Per destination: for ranking only (stopping payment goes by all tests together).
            for (destination, d) in n.tests.destinations.iter_mut() {
                let verdict = judge(&d.quality);
                if verdict != d.verdict {
                    tracing::debug!(neighbor = %id.short(), destination, ?verdict, "neighbor's verdict for one destination");
                    d.verdict = verdict;
                }
            }
            let verdict = judge(&n.tests.quality);
            if verdict != n.tests.verdict {
                match verdict {
                    Verdict::Acceptable { value } => {
                        tracing::info!(neighbor = %id.short(), score = value, "neighbor's measured quality is acceptable")
                    }
                    Verdict::Unknown => {
                        tracing::info!(neighbor = %id.short(), "neighbor's quality is unknown (too few or too old tests)")
                    }
                    Verdict::Below(_) => {}
                }
                n.tests.verdict = verdict;
            }
            if let Verdict::Below(shortfall) = verdict {
                let reason = format!("quality below our goals: {shortfall}");
                tracing::warn!(neighbor = %id.short(), %reason, probation_secs = cfg.probation.as_secs(), "withdrawing our bid");
                n.tests.withdrawn_since = Some(now.mono);
                n.tests.withdrawn_reason = Some(reason.clone());
                n.market.set_our_bid(now.mono, OurBid::Declined(reason.clone()));
                let seq = n.market.their_ask.map(|(s, _)| s);
                if let (Some(ask_seq), Some(session)) = (seq, self.established_session(id)) {
                    self.actions.push_back(Action::SendControl {
                        session,
                        msg: ControlMessage::Market(MarketMessage::Decline { ask_seq, reason }),
                    });
                }
            }
        }
        self.update_routing();
    }

    /// Run the live check: decide one under way once the challenger has measured its windows
    /// (or give it up), else start one if the best neighbor's steady traffic is far below its
    /// tests and another acceptable neighbor could show the difference.
    fn live_check_tick(&mut self, now: Now) {
        let interval = self.config.quality.live_check_interval;
        if let Some(c) = self.quality.live_check {
            let challenger = self
                .neighbors
                .get(&c.challenger)
                .filter(|n| n.session_established_since().is_some() && n.tests.withdrawn_since.is_none());
            let incumbent_here = self.neighbors.contains_key(&c.incumbent);
            let measured =
                challenger.filter(|n| n.passive.live_windows >= c.challenger_windows + live_check::CHECK_WINDOWS);
            if let (Some(ch), true) = (measured, incumbent_here) {
                let window = |r: Option<crate::quality::LiveRate>| r.map_or(0, |r| c.direction.of(r));
                let elsewhere = window(ch.passive.live).min(window(ch.passive.live_prev));
                if live_check::confirmed(c.carried_kbit, elsewhere) {
                    tracing::warn!(
                        neighbor = %c.incumbent.short(), elsewhere = %c.challenger.short(), direction = c.direction.as_str(),
                        carried_kbit = c.carried_kbit, elsewhere_kbit = elsewhere,
                        "live check: the neighbor held traffic back (its tests overstate it); its tests are capped at what it carried"
                    );
                    let n = self.neighbors.get_mut(&c.incumbent).expect("checked above");
                    n.tests.live_cap = Some(LiveCap {
                        direction: c.direction,
                        kbit: c.carried_kbit,
                        elsewhere_kbit: elsewhere,
                        since: now.mono,
                    });
                } else {
                    tracing::info!(
                        neighbor = %c.incumbent.short(), elsewhere = %c.challenger.short(), direction = c.direction.as_str(),
                        carried_kbit = c.carried_kbit, elsewhere_kbit = elsewhere,
                        "live check: the traffic flowed no faster elsewhere (demand was the limit); nothing changes"
                    );
                }
                self.quality.live_check = None;
            } else if challenger.is_none() || !incumbent_here || now.mono.since(c.started) >= live_check::CHECK_DEADLINE
            {
                tracing::info!(neighbor = %c.incumbent.short(), elsewhere = %c.challenger.short(), "live check given up (no measurement in time)");
                self.quality.live_check = None;
            }
            return;
        }
        if interval == Millis(0) {
            return;
        }
        let usable = |n: &&super::Neighbor| {
            n.session_established_since().is_some()
                && n.tests.withdrawn_since.is_none()
                && n.tests.live_cap.is_none()
                && matches!(n.tests.verdict, Verdict::Acceptable { .. })
        };
        let best = best_value(self.neighbors.values().filter(usable).map(|n| &n.tests.verdict));
        let Some(incumbent) =
            self.neighbors.values().filter(usable).find(|n| n.tests.verdict == Verdict::Acceptable { value: best })
        else {
            return;
        };
        if incumbent.tests.last_live_check.is_some_and(|t| now.mono.since(t) < interval)
            || self.test_running_through(&incumbent.id)
        {
            return;
        }
        let (Some(live), Some(previous)) = (incumbent.passive.live, incumbent.passive.live_prev) else { return };
        let tested = incumbent.tests.quality.judged();
        let challengers = self.neighbors.values().filter(usable).filter(|n| n.id != incumbent.id);
        let Some((direction, carried, challenger)) = challengers
            .filter_map(|n| {
                live_check::wanted(&tested, live, previous, &n.tests.quality.judged()).map(|(d, k)| (d, k, n))
            })
            .max_by_key(|(d, _, n)| d.of_sample(&n.tests.quality.judged()))
        else {
            return;
        };
        let check = LiveCheck {
            incumbent: incumbent.id,
            challenger: challenger.id,
            direction,
            carried_kbit: carried,
            started: now.mono,
            challenger_windows: challenger.passive.live_windows,
        };
        tracing::info!(
            neighbor = %check.incumbent.short(), elsewhere = %check.challenger.short(), direction = direction.as_str(),
            carried_kbit = carried, tested_kbit = direction.of_sample(&tested),
            "live check: steady traffic far below the neighbor's tests; moving it to another neighbor for a few windows"
        );
        self.neighbors.get_mut(&check.incumbent).expect("exists").tests.last_live_check = Some(now.mono);
        self.quality.live_check = Some(check);
    }

    /// The live check under way, if any.
    pub fn live_check(&self) -> Option<LiveCheck> {
        self.quality.live_check
    }

    /// Why we decline this neighbor whatever it asks (its quality is below our goals), if so.
    pub(super) fn quality_decline(&self, id: &NodeId) -> Option<String> {
        self.neighbors.get(id)?.tests.withdrawn_reason.clone()
    }

    /// What routing adds to tested destinations through `id`: its ranking's penalty once any
    /// neighbor has been measured acceptable (an untested one is then a last resort), else
    /// nothing. A neighbor that offers no route to a tested server is not ranked. Ranked for
    /// each destination some neighbor was tested against on its own: on those tests where it
    /// has a verdict from them, on all its tests where not; for the other destinations, on all
    /// tests.
    pub(super) fn quality_penalty(&self, id: &NodeId) -> crate::routing::Penalty {
        use crate::routing::Penalty;
        if !self.config.quality.testing {
            return Penalty::default();
        }
        if let Some(c) = self.quality.live_check {
            if *id == c.challenger {
                return Penalty::default();
            }
            if *id == c.incumbent {
                return Penalty::uniform(PENALTY_LEVELS[PENALTY_LEVELS.len() - 1]);
            }
        }
        let ranked = |n: &&super::Neighbor| !n.tests.no_route || n.tests.quality.samples > 0;
        let Some(me) = self.neighbors.get(id).filter(ranked) else { return Penalty::default() };
        let rank = |verdict_of: &dyn Fn(&super::Neighbor) -> Verdict| {
            let best = best_value(self.neighbors.values().filter(ranked).map(verdict_of).collect::<Vec<_>>().iter());
            if best > 0 {
                penalty(verdict_of(me), best)
            } else {
                0
            }
        };
        let global = rank(&|n| n.tests.verdict);
        let destinations: std::collections::BTreeSet<u8> =
            self.neighbors.values().filter(ranked).flat_map(|n| n.tests.destinations.keys().copied()).collect();
        let mut out = Penalty { global, destinations: Vec::new() };
        for d in destinations {
            let p = rank(&|n| destination_verdict(&n.tests, d));
            if p != global {
                out.destinations.push((d, p));
            }
        }
        out
    }
}

/// A neighbor's verdict for one destination: from its tests against it alone when they give
/// one, else from all its tests.
pub fn destination_verdict(t: &NeighborTests, destination: u8) -> Verdict {
    match t.destinations.get(&destination).map(|d| d.verdict) {
        Some(v) if v != Verdict::Unknown => v,
        _ => t.verdict,
    }
}
