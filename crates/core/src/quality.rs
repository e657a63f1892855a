//! The quality of a neighbor's service as we measured it, what the operator accepts for the
//! price, and what that makes each link cost routing.
//!
//! Pure logic (issue 9's policy): measurements come in as [`Sample`]s (a speed test through the
//! neighbor against a pinned server, whose signed receipt the driver has checked, or figures
//! taken from live traffic); [`Quality`] keeps a smoothed view and how much of it we have;
//! [`judge`] compares it with the operator's [`Goals`] at the neighbor's ask; [`penalty`]
//! turns the verdicts of all neighbors into what routing adds to the tested destinations'
//! metrics through each, so that the neighbor that delivers most for its price carries the
//! traffic, whatever metric the others advertise.
//!
//! The node (`node::quality`) schedules the tests within a [`TestBudget`], records their
//! samples, withdraws its bid from a neighbor judged [`Verdict::Below`] for a probation time,
//! and hands routing the [`penalty`] of each neighbor.

use crate::live_check::{capped_value, LiveCap};
use crate::market::Price;
use crate::time::Millis;

/// One measurement of a neighbor's path: goodput each way, round-trip time, loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Millis,
    pub down_kbit: u64,
    pub up_kbit: u64,
    pub rtt_us: u32,
    /// Retransmitted or lost packets, parts per million.
    pub loss_ppm: u32,
}

/// What we know of a neighbor's quality: an exponentially weighted mean of its samples (each new
/// sample weighs one half; shown to the operator), how many there have been, and the last two.
/// Judging and ranking use the better of the last two ([`Quality::judged`]): one bad test
/// (a moment of congestion) condemns nobody, two in a row do, within two test cycles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quality {
    pub samples: u32,
    pub last: Option<Millis>,
    pub down_kbit: u64,
    pub up_kbit: u64,
    pub rtt_us: u32,
    pub loss_ppm: u32,
    /// The newest sample and the one before.
    pub recent: [Option<Sample>; 2],
}

impl Quality {
    pub fn record(&mut self, s: Sample) {
        if self.samples == 0 {
            (self.down_kbit, self.up_kbit, self.rtt_us, self.loss_ppm) = (s.down_kbit, s.up_kbit, s.rtt_us, s.loss_ppm);
        } else {
            self.down_kbit = self.down_kbit / 2 + s.down_kbit / 2;
            self.up_kbit = self.up_kbit / 2 + s.up_kbit / 2;
            self.rtt_us = self.rtt_us / 2 + s.rtt_us / 2;
            self.loss_ppm = self.loss_ppm / 2 + s.loss_ppm / 2;
        }
        self.samples = self.samples.saturating_add(1);
        self.last = Some(self.last.map_or(s.at, |l| l.max(s.at)));
        self.recent = [Some(s), self.recent[0]];
    }

    /// What the neighbor is judged and ranked on: the better of its last two samples in each
    /// respect (the one sample, if only one).
    pub fn judged(&self) -> Sample {
        match self.recent {
            [Some(a), Some(b)] => Sample {
                at: a.at.max(b.at),
                down_kbit: a.down_kbit.max(b.down_kbit),
                up_kbit: a.up_kbit.max(b.up_kbit),
                rtt_us: a.rtt_us.min(b.rtt_us),
                loss_ppm: a.loss_ppm.min(b.loss_ppm),
            },
            [Some(a), None] | [None, Some(a)] => a,
            [None, None] => Sample { at: Millis(0), down_kbit: 0, up_kbit: 0, rtt_us: 0, loss_ppm: 0 },
        }
    }
}

/// Length of one window of live traffic: its bytes over its length give one delivered rate.
pub const LIVE_WINDOW: Millis = Millis(10_000);
/// The peak delivered rate is the highest window of the current and the previous period of
/// this length (so a peak is remembered for one to two hours).
pub const LIVE_PEAK_PERIOD: Millis = Millis(3_600_000);

/// What live traffic tells us of a neighbor's path, with no test: the round-trip time of the
/// control session's keepalives (a Ping every few seconds, answered by a Pong, through the
/// tunnel and whatever queue the neighbor keeps for us), smoothed like TCP's SRTT (each sample
/// weighs one eighth) with the newest and the least kept apart; and the rate at which live
/// traffic crossed its tunnel each way, per 10-s window, the latest and the peak. Windows in
/// which a speed test ran through the neighbor are left out: their bytes are the test's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passive {
    pub rtt_samples: u32,
    pub last: Option<Millis>,
    pub rtt_us: u32,
    pub rtt_last_us: u32,
    pub rtt_min_us: u32,
    /// The latest complete window without a test: kbit/s it delivered to us (down) and that
    /// we sent through it (up).
    pub live: Option<LiveRate>,
    /// The window before `live` (a check wants steady traffic: both).
    pub live_prev: Option<LiveRate>,
    /// The highest window of the current and the previous hour.
    pub live_peak: Option<LiveRate>,
    /// Windows measured (with no test in them).
    pub live_windows: u32,
    window: Option<Window>,
    peaks: [Option<LiveRate>; 2],
    peak_period_start: Option<Millis>,
    was_testing: bool,
}

/// A delivered rate each way, in kbit/s (1,000 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveRate {
    pub down_kbit: u64,
    pub up_kbit: u64,
}

impl LiveRate {
    fn max(self, other: LiveRate) -> LiveRate {
        LiveRate { down_kbit: self.down_kbit.max(other.down_kbit), up_kbit: self.up_kbit.max(other.up_kbit) }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    start: Millis,
    rx: u64,
    tx: u64,
    tested: bool,
}

impl Passive {
    /// A Pong came back `rtt` after its Ping.
    pub fn record_rtt(&mut self, at: Millis, rtt: Millis) {
        let us = u32::try_from(rtt.0.saturating_mul(1000)).unwrap_or(u32::MAX);
        if self.rtt_samples == 0 {
            self.rtt_us = us;
            self.rtt_min_us = us;
        } else {
            self.rtt_us = ((self.rtt_us as u64 * 7 + us as u64) / 8) as u32;
            self.rtt_min_us = self.rtt_min_us.min(us);
        }
        self.rtt_last_us = us;
        self.rtt_samples = self.rtt_samples.saturating_add(1);
        self.last = Some(at);
    }

    /// One counter sample: `rx` bytes it delivered to us and `tx` bytes we sent through it
    /// since the previous sample; `testing` when a speed test through it is running now (that
    /// window, and the one a test ends in, are not live traffic).
    pub fn record_traffic(&mut self, at: Millis, rx: u64, tx: u64, testing: bool) {
        let tested = testing || self.was_testing;
        self.was_testing = testing;
        let Some(w) = self.window.as_mut() else {
            // The first sample only starts the clock: what it counted accrued over an unknown time.
            self.window = Some(Window { start: at, rx: 0, tx: 0, tested });
            return;
        };
        w.rx = w.rx.saturating_add(rx);
        w.tx = w.tx.saturating_add(tx);
        w.tested |= tested;
        let span = at.since(w.start);
        if span < LIVE_WINDOW {
            return;
        }
        let done = *w;
        self.window = Some(Window { start: at, rx: 0, tx: 0, tested: testing });
        if done.tested {
            return;
        }
        let kbit = |bytes: u64| (bytes as u128 * 8 / span.0.max(1) as u128).min(u64::MAX as u128) as u64;
        let rate = LiveRate { down_kbit: kbit(done.rx), up_kbit: kbit(done.tx) };
        self.live_prev = self.live;
        self.live = Some(rate);
        self.live_windows = self.live_windows.saturating_add(1);
        match self.peak_period_start {
            Some(start) if at.since(start) < LIVE_PEAK_PERIOD => {}
            Some(start) if at.since(start) < LIVE_PEAK_PERIOD + LIVE_PEAK_PERIOD => {
                self.peaks = [None, self.peaks[1]];
                self.peaks.swap(0, 1);
                self.peak_period_start = Some(start + LIVE_PEAK_PERIOD);
            }
            _ => {
                self.peaks = [None, None];
                self.peak_period_start = Some(at);
            }
        }
        self.peaks[1] = Some(self.peaks[1].map_or(rate, |p| p.max(rate)));
        self.live_peak = match self.peaks {
            [Some(a), Some(b)] => Some(a.max(b)),
            [a, b] => a.or(b),
        };
    }
}

/// How the node measures its neighbors and what it does with the measurements (`[quality]` in
/// the daemon's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualityConfig {
    /// Test through each neighbor (set by the daemon when at least one speed-test server is
    /// pinned and `[quality] tests` is on).
    pub testing: bool,
    pub goals: Goals,
    /// Test bytes (both directions, all neighbors) allowed in any hour.
    pub budget_bytes_per_hour: u64,
    /// The most bytes one test moves each way.
    pub test_max_bytes: u64,
    /// Mean time between two tests through one neighbor (each wait is drawn from half to one
    /// and a half times this).
    pub test_interval: Millis,
    /// Wait before a new neighbor's first test (drawn the same way).
    pub first_test_delay: Millis,
    /// How long a neighbor judged below the goals goes unpaid before it is bid on and tested
    /// again; also how long a live check's cap on a neighbor's tests lasts.
    pub probation: Millis,
    /// Least time between two live checks of one neighbor (`crate::live_check`); zero: none.
    pub live_check_interval: Millis,
}

impl Default for QualityConfig {
    fn default() -> QualityConfig {
        QualityConfig {
            testing: false,
            goals: Goals::default(),
            budget_bytes_per_hour: 100_000_000,
            test_max_bytes: 2_000_000,
            test_interval: Millis::from_secs(600),
            first_test_delay: Millis::from_secs(10),
            probation: Millis::from_secs(900),
            live_check_interval: Millis::from_secs(900),
        }
    }
}

impl QualityConfig {
    /// The most one test can cost: its bytes each way.
    pub fn test_cost(&self) -> u64 {
        self.test_max_bytes.saturating_mul(2)
    }
}

/// The test bytes spent in the last hour: a test starts only if its whole cost still fits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestBudget {
    spent: std::collections::VecDeque<(Millis, u64)>,
    /// Every test byte since the start (shown to the operator).
    pub total: u64,
}

/// A window entry per test; more than this in an hour means tests are tiny: the oldest are
/// merged into their successor, so the window never undercounts.
const MAX_BUDGET_ENTRIES: usize = 4096;
const HOUR: Millis = Millis(3_600_000);

impl TestBudget {
    fn expire(&mut self, now: Millis) {
        while self.spent.front().is_some_and(|(at, _)| now.since(*at) >= HOUR) {
            self.spent.pop_front();
        }
    }

    /// Bytes spent in the hour before `now`.
    pub fn spent(&mut self, now: Millis) -> u64 {
        self.expire(now);
        self.spent_at(now)
    }

    /// The same, without forgetting what left the window.
    pub fn spent_at(&self, now: Millis) -> u64 {
        self.spent.iter().filter(|(at, _)| now.since(*at) < HOUR).map(|(_, b)| *b).fold(0u64, u64::saturating_add)
    }

    /// Whether a test that may cost `cost` bytes fits in `per_hour` now.
    pub fn allows(&mut self, now: Millis, cost: u64, per_hour: u64) -> bool {
        self.spent(now).saturating_add(cost) <= per_hour
    }

    /// When the window next frees bytes (the oldest entry's hour ends).
    pub fn next_release(&self) -> Option<Millis> {
        self.spent.front().map(|(at, _)| *at + HOUR)
    }

    pub fn record(&mut self, now: Millis, bytes: u64) {
        self.expire(now);
        if self.spent.len() >= MAX_BUDGET_ENTRIES {
            if let Some((_, b)) = self.spent.pop_front() {
                if let Some(front) = self.spent.front_mut() {
                    front.1 = front.1.saturating_add(b);
                }
            }
        }
        self.spent.push_back((now, bytes));
        self.total = self.total.saturating_add(bytes);
    }
}

/// What the operator accepts for its money. A zero (or `None`) bound is no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goals {
    pub min_down_kbit: u64,
    pub min_up_kbit: u64,
    pub max_rtt_us: u32,
    pub max_loss_ppm: u32,
    /// The most we pay per MB for each Mbit/s of download goodput delivered: a neighbor asking
    /// `ask` and delivering `d` Mbit/s is too dear when `ask / d` exceeds it.
    pub max_price_per_mbit: Option<Price>,
    /// Samples needed before a neighbor is judged at all (until then it is unknown).
    pub min_samples: u32,
    /// A quality older than this is unknown again (milliseconds).
    pub max_age_ms: u64,
    /// Set by the daemon, not the operator: the tests force only the upload through the tested
    /// neighbor (static and controller routing), the download comes back by the operator's routes
    /// whichever neighbor is tested. The download then says nothing about the neighbor: it is
    /// not held to `min_down_kbit`, and the price per Mbit/s and the ranking value go by upload.
    pub upload_only: bool,
}

impl Default for Goals {
    fn default() -> Goals {
        Goals {
            min_down_kbit: 0,
            min_up_kbit: 0,
            max_rtt_us: 0,
            max_loss_ppm: 0,
            max_price_per_mbit: None,
            min_samples: 2,
            max_age_ms: 6 * 3_600_000,
            upload_only: false,
        }
    }
}

/// Why a neighbor's quality is not acceptable at its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    DownTooSlow {
        got_kbit: u64,
        want_kbit: u64,
    },
    UpTooSlow {
        got_kbit: u64,
        want_kbit: u64,
    },
    RttTooHigh {
        got_us: u32,
        max_us: u32,
    },
    LossTooHigh {
        got_ppm: u32,
        max_ppm: u32,
    },
    /// Its ask per Mbit/s of measured download goodput is above what we pay.
    TooDear {
        per_mbit: Price,
        max: Price,
    },
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Shortfall::DownTooSlow { got_kbit, want_kbit } => {
                write!(f, "download {got_kbit} kbit/s measured, below the {want_kbit} kbit/s wanted")
            }
            Shortfall::UpTooSlow { got_kbit, want_kbit } => {
                write!(f, "upload {got_kbit} kbit/s measured, below the {want_kbit} kbit/s wanted")
            }
            Shortfall::RttTooHigh { got_us, max_us } => {
                write!(f, "round trip {} ms measured, above the {} ms accepted", got_us / 1000, max_us / 1000)
            }
            Shortfall::LossTooHigh { got_ppm, max_ppm } => write!(
                f,
                "loss {:.2} % measured, above the {:.2} % accepted",
                got_ppm as f64 / 10_000.0,
                max_ppm as f64 / 10_000.0
            ),
            Shortfall::TooDear { per_mbit, max } => {
                write!(f, "asks {} units per MB per Mbit/s delivered, above the {} accepted", per_mbit.0, max.0)
            }
        }
    }
}

/// The judgement of one neighbor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Too few or too old measurements: not trusted, not condemned.
    #[default]
    Unknown,
    /// Acceptable; `value` ranks it against the others (download goodput for the price).
    Acceptable {
        value: u64,
    },
    Below(Shortfall),
}

/// Judge a neighbor's quality against the goals at the price it asks us.
pub fn judge(q: &Quality, ask: Price, goals: &Goals, now: Millis) -> Verdict {
    judge_capped(q, ask, goals, now, None)
}

/// The same, with the tests capped where live traffic showed they overstate the neighbor
/// (`crate::live_check`): the goals see the capped rate, and the ranking value shrinks with it.
pub fn judge_capped(q: &Quality, ask: Price, goals: &Goals, now: Millis, cap: Option<&LiveCap>) -> Verdict {
    let fresh = q.last.is_some_and(|l| now.0.saturating_sub(l.0) <= goals.max_age_ms);
    if q.samples < goals.min_samples.max(1) || !fresh {
        return Verdict::Unknown;
    }
    let tested = q.judged();
    let q = cap.map_or(tested, |c| c.apply(tested));
    // The goodput this node's choice of neighbor changes.
    let chosen_kbit = if goals.upload_only { q.up_kbit } else { q.down_kbit };
    if !goals.upload_only && q.down_kbit < goals.min_down_kbit {
        return Verdict::Below(Shortfall::DownTooSlow { got_kbit: q.down_kbit, want_kbit: goals.min_down_kbit });
    }
    if q.up_kbit < goals.min_up_kbit {
        return Verdict::Below(Shortfall::UpTooSlow { got_kbit: q.up_kbit, want_kbit: goals.min_up_kbit });
    }
    if goals.max_rtt_us > 0 && q.rtt_us > goals.max_rtt_us {
        return Verdict::Below(Shortfall::RttTooHigh { got_us: q.rtt_us, max_us: goals.max_rtt_us });
    }
    if goals.max_loss_ppm > 0 && q.loss_ppm > goals.max_loss_ppm {
        return Verdict::Below(Shortfall::LossTooHigh { got_ppm: q.loss_ppm, max_ppm: goals.max_loss_ppm });
    }
    if let Some(max) = goals.max_price_per_mbit {
        // ask per Mbit/s, rounded up: a neighbor delivering next to nothing is infinitely dear.
        let per_mbit = if chosen_kbit == 0 {
            u64::MAX
        } else {
            ((ask.0 as u128 * 1000).div_ceil(chosen_kbit as u128)).min(u64::MAX as u128) as u64
        };
        if ask.0 > 0 && per_mbit > max.0 {
            return Verdict::Below(Shortfall::TooDear { per_mbit: Price(per_mbit), max });
        }
    }
    let v = value(chosen_kbit, ask, goals);
    // Upload only: the value was computed from the capped upload already (and a download
    // cap does not concern it).
    Verdict::Acceptable { value: cap.filter(|_| !goals.upload_only).map_or(v, |c| capped_value(v, &tested, c)) }
}

/// Goodput for the price: download kbit/s, divided by up to 4 as the ask goes from nothing to the
/// price at which the goals would refuse a 1 Gbit/s neighbor (or not divided without that bound).
fn value(down_kbit: u64, ask: Price, goals: &Goals) -> u64 {
    let Some(max) = goals.max_price_per_mbit.filter(|m| m.0 > 0) else { return down_kbit };
    let dear = (max.0 as u128).saturating_mul(1000);
    let rel = (ask.0 as u128).min(dear) * 3072 / dear; // 0..=3072
    (down_kbit as u128 * 1024 / (1024 + rel)) as u64
}

/// The penalties routing can add to a tested destination's routes through one neighbor
/// (Babel metric units: 256 is one good hop). Few and fixed: each is a babeld input filter
/// chosen by the tunnel's altname (see `tollway_routing::babel`).
pub const PENALTY_LEVELS: [u16; 7] = [0, 256, 512, 768, 1024, 2048, 3840];

/// What routing adds to the metric of tested destinations (the internet) learned through a
/// neighbor, from its verdict and the best value among all neighbors' verdicts: nothing for
/// the best; for one `k` times worse, `k - 1` good hops (rounded down to a level, at most 15);
/// for an untested one three (a last resort until measured). A neighbor below the goals is
/// not routed at all (its bid is withdrawn). Only our own route choice sees it: unlike a link
/// cost, which Babel shares with the neighbor, a neighbor's opinion of us cannot cancel it.
pub fn penalty(verdict: Verdict, best_value: u64) -> u16 {
    let want = match verdict {
        Verdict::Below(_) => return PENALTY_LEVELS[PENALTY_LEVELS.len() - 1],
        Verdict::Unknown => 768,
        Verdict::Acceptable { value } => {
            let k = best_value.max(value).checked_div(value).unwrap_or(u64::MAX);
            k.saturating_sub(1).saturating_mul(256)
        }
    };
    PENALTY_LEVELS.iter().copied().filter(|l| u64::from(*l) <= want).max().unwrap_or(0)
}

/// The best value among verdicts (0 when none is acceptable).
pub fn best_value<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> u64 {
    verdicts
        .into_iter()
        .filter_map(|v| if let Verdict::Acceptable { value } = v { Some(*value) } else { None })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn live_rates_come_from_whole_windows_without_tests_and_peaks_last_one_to_two_hours() {
        let mut p = Passive::default();
        // 1,000,000 bytes a second down, 250,000 up: 8,000 and 2,000 kbit/s.
        let mut t = 0;
        let mut second = |p: &mut Passive, down: u64, up: u64, testing: bool| {
            t += 1000;
            p.record_traffic(Millis(t), down, up, testing);
        };
        second(&mut p, 5_000_000, 5_000_000, false); // starts the clock only
        for _ in 0..9 {
            second(&mut p, 1_000_000, 250_000, false);
        }
        assert_eq!(p.live, None, "no complete window yet");
        second(&mut p, 1_000_000, 250_000, false);
        assert_eq!(p.live, Some(LiveRate { down_kbit: 8_000, up_kbit: 2_000 }));
        assert_eq!((p.live_peak, p.live_windows), (p.live, 1));
        // A window with a test in it is not live traffic.
        for i in 0..10 {
            second(&mut p, 9_000_000, 9_000_000, i == 3);
        }
        assert_eq!(p.live_windows, 1);
        // A test running at a window's last sample: the next window, where its last bytes are
        // counted, is left out as well.
        for i in 0..10 {
            second(&mut p, 1_000_000, 250_000, i == 9);
        }
        for _ in 0..10 {
            second(&mut p, 9_000_000, 9_000_000, false);
        }
        assert_eq!(p.live_windows, 1);
        // Idle windows: live falls to 0, the peak stays.
        for _ in 0..20 {
            second(&mut p, 0, 0, false);
        }
        assert_eq!(p.live, Some(LiveRate::default()));
        assert_eq!(p.live_peak, Some(LiveRate { down_kbit: 8_000, up_kbit: 2_000 }));
        // The peak outlives its hour by one more, then goes.
        let mut q = p;
        q.record_traffic(Millis(t + 3_600_000), 0, 0, false);
        q.record_traffic(Millis(t + 3_610_000), 0, 0, false);
        assert_eq!(q.live_peak, Some(LiveRate { down_kbit: 8_000, up_kbit: 2_000 }), "still within the previous hour");
        q.record_traffic(Millis(t + 7_300_000), 0, 0, false);
        q.record_traffic(Millis(t + 7_310_000), 0, 0, false);
        assert_eq!(q.live_peak, Some(LiveRate::default()), "two hours on, only idle windows remain");
    }

    #[test]
    fn passive_rtt_is_smoothed_with_the_newest_and_least_kept() {
        let mut p = Passive::default();
        p.record_rtt(Millis(1000), Millis(40));
        assert_eq!((p.rtt_samples, p.rtt_us, p.rtt_last_us, p.rtt_min_us), (1, 40_000, 40_000, 40_000));
        p.record_rtt(Millis(6000), Millis(8));
        assert_eq!((p.rtt_samples, p.rtt_us, p.rtt_last_us, p.rtt_min_us), (2, 36_000, 8_000, 8_000));
        assert_eq!(p.last, Some(Millis(6000)));
        p.record_rtt(Millis(7000), Millis(u64::MAX));
        assert_eq!(p.rtt_last_us, u32::MAX, "saturates, never wraps");
    }

    use super::*;

    fn sample(at: u64, down: u64) -> Sample {
        Sample { at: Millis(at), down_kbit: down, up_kbit: down, rtt_us: 20_000, loss_ppm: 1000 }
    }

    fn measured(down: u64) -> Quality {
        let mut q = Quality::default();
        q.record(sample(1000, down));
        q.record(sample(2000, down));
        q
    }

    #[test]
    fn a_new_neighbor_is_unknown_until_measured_enough_and_again_when_stale() {
        let goals = Goals::default();
        let mut q = Quality::default();
        assert_eq!(judge(&q, Price(0), &goals, Millis(0)), Verdict::Unknown);
        q.record(sample(1000, 50_000));
        assert_eq!(judge(&q, Price(0), &goals, Millis(1000)), Verdict::Unknown, "one sample is not enough");
        q.record(sample(2000, 50_000));
        assert!(matches!(judge(&q, Price(0), &goals, Millis(2000)), Verdict::Acceptable { .. }));
        let late = Millis(2000 + goals.max_age_ms + 1);
        assert_eq!(judge(&q, Price(0), &goals, late), Verdict::Unknown);
    }

    #[test]
    fn a_degraded_neighbor_falls_below_within_two_samples_and_one_bad_test_condemns_nobody() {
        let goals = Goals { min_down_kbit: 10_000, ..Goals::default() };
        let mut q = measured(50_000);
        q.record(sample(3000, 1000));
        // One bad sample: the better of the last two is still 50 Mbit/s.
        assert_eq!(judge(&q, Price(0), &goals, Millis(3000)), Verdict::Acceptable { value: 50_000 });
        q.record(sample(4000, 1000));
        assert_eq!(
            judge(&q, Price(0), &goals, Millis(4000)),
            Verdict::Below(Shortfall::DownTooSlow { got_kbit: 1000, want_kbit: 10_000 })
        );
        // The smoothed figure shown to the operator: 50 → 25.5 → 13.25 Mbit/s.
        assert_eq!(q.down_kbit, 13_250);
        // One good test after: acceptable again (the better of the last two).
        q.record(sample(5000, 40_000));
        assert!(matches!(judge(&q, Price(0), &goals, Millis(5000)), Verdict::Acceptable { value: 40_000 }));
    }

    #[test]
    fn verdicts_follow_the_goals_in_a_table_of_cases() {
        let s = Sample { at: Millis(0), down_kbit: 20_000, up_kbit: 5_000, rtt_us: 30_000, loss_ppm: 5_000 };
        let q = Quality {
            samples: 3,
            last: Some(Millis(0)),
            down_kbit: 20_000,
            up_kbit: 5_000,
            rtt_us: 30_000,
            loss_ppm: 5_000,
            recent: [Some(s), Some(s)],
        };
        let base = Goals::default();
        let cases: Vec<(&str, Goals, Price, Result<(), Shortfall>)> = vec![
            ("no goals", base, Price(5000), Ok(())),
            ("down ok", Goals { min_down_kbit: 20_000, ..base }, Price(0), Ok(())),
            (
                "down short",
                Goals { min_down_kbit: 20_001, ..base },
                Price(0),
                Err(Shortfall::DownTooSlow { got_kbit: 20_000, want_kbit: 20_001 }),
            ),
            (
                "up short",
                Goals { min_up_kbit: 6_000, ..base },
                Price(0),
                Err(Shortfall::UpTooSlow { got_kbit: 5_000, want_kbit: 6_000 }),
            ),
            (
                "rtt",
                Goals { max_rtt_us: 25_000, ..base },
                Price(0),
                Err(Shortfall::RttTooHigh { got_us: 30_000, max_us: 25_000 }),
            ),
            ("rtt ok", Goals { max_rtt_us: 30_000, ..base }, Price(0), Ok(())),
            (
                "loss",
                Goals { max_loss_ppm: 1_000, ..base },
                Price(0),
                Err(Shortfall::LossTooHigh { got_ppm: 5_000, max_ppm: 1_000 }),
            ),
            // 2000 units per MB at 20 Mbit/s: 100 per Mbit/s.
            ("price ok", Goals { max_price_per_mbit: Some(Price(100)), ..base }, Price(2000), Ok(())),
            (
                "too dear",
                Goals { max_price_per_mbit: Some(Price(99)), ..base },
                Price(2000),
                Err(Shortfall::TooDear { per_mbit: Price(100), max: Price(99) }),
            ),
            ("free is never too dear", Goals { max_price_per_mbit: Some(Price(1)), ..base }, Price(0), Ok(())),
            // Upload only (static and controller routing): the download is not the neighbor's.
            (
                "upload only: down not held",
                Goals { min_down_kbit: 20_001, upload_only: true, ..base },
                Price(0),
                Ok(()),
            ),
            (
                "upload only: up still held",
                Goals { min_up_kbit: 6_000, upload_only: true, ..base },
                Price(0),
                Err(Shortfall::UpTooSlow { got_kbit: 5_000, want_kbit: 6_000 }),
            ),
            // 2000 units per MB at 5 Mbit/s of upload: 400 per Mbit/s.
            (
                "upload only: price per upload Mbit/s",
                Goals { max_price_per_mbit: Some(Price(399)), upload_only: true, ..base },
                Price(2000),
                Err(Shortfall::TooDear { per_mbit: Price(400), max: Price(399) }),
            ),
            (
                "upload only: price ok",
                Goals { max_price_per_mbit: Some(Price(400)), upload_only: true, ..base },
                Price(2000),
                Ok(()),
            ),
        ];
        for (what, goals, ask, want) in cases {
            let got = judge(&q, ask, &goals, Millis(0));
            match want {
                Ok(()) => assert!(matches!(got, Verdict::Acceptable { .. }), "{what}: {got:?}"),
                Err(s) => assert_eq!(got, Verdict::Below(s), "{what}"),
            }
        }
        // Upload only, the ranking value is the upload goodput.
        assert_eq!(judge(&q, Price(0), &base, Millis(0)), Verdict::Acceptable { value: 20_000 });
        let up = Goals { upload_only: true, ..base };
        assert_eq!(judge(&q, Price(0), &up, Millis(0)), Verdict::Acceptable { value: 5_000 });
    }

    #[test]
    fn the_neighbor_that_delivers_most_for_its_price_gets_no_penalty() {
        let goals = Goals { max_price_per_mbit: Some(Price(1000)), ..Goals::default() };
        // c: 100 Mbit/s at 2000; b: 10 Mbit/s, free; e: 100 Mbit/s at the most the goals accept
        // for that goodput (1000 per Mbit/s).
        let c = judge(&measured(100_000), Price(2000), &goals, Millis(2000));
        let b = judge(&measured(10_000), Price(0), &goals, Millis(2000));
        let e = judge(&measured(100_000), Price(100_000), &goals, Millis(2000));
        let best = best_value([&c, &b, &e]);
        let (pc, pb, pe) = (penalty(c, best), penalty(b, best), penalty(e, best));
        assert_eq!(pc, 0, "{c:?} {b:?} {e:?}");
        assert_eq!(pb, 2048, "free but a tenth of c's goodput: nine hops, rounded down to eight: {b:?}");
        assert_eq!(pe, 0, "same goodput, 50 times the price: less value, but not twice less: {e:?}");
        // Too dear for what it delivers: below.
        let f = judge(&measured(100_000), Price(100_001), &goals, Millis(2000));
        assert_eq!(f, Verdict::Below(Shortfall::TooDear { per_mbit: Price(1001), max: Price(1000) }));
        // Unknown: a last resort behind any measured neighbor up to four times worse.
        assert_eq!(penalty(Verdict::Unknown, best), 768);
        let quarter = judge(&measured(25_000), Price(0), &Goals::default(), Millis(2000));
        assert_eq!(penalty(quarter, 100_000), 768);
        assert_eq!(penalty(judge(&measured(50_000), Price(0), &Goals::default(), Millis(2000)), 100_000), 256);
        // Every penalty is one of the levels; far worse is capped.
        let slow = judge(&measured(100), Price(0), &Goals::default(), Millis(2000));
        assert_eq!(penalty(slow, 100_000), 3840);
        for v in [1, 7, 1000, 33_333, 99_999, 100_000] {
            let p = penalty(Verdict::Acceptable { value: v }, 100_000);
            assert!(PENALTY_LEVELS.contains(&p), "{v}: {p}");
        }
    }

    #[test]
    fn a_liar_ten_times_slower_is_penalized_past_the_metric_it_hides() {
        // b claims to be the exit (metric 0); c is honest, one good hop from it. What counts is
        // what they delivered: b, ten times slower, gets eight hops more for the destination.
        let goals = Goals::default();
        let b = judge(&measured(5_000), Price(0), &goals, Millis(2000));
        let c = judge(&measured(50_000), Price(0), &goals, Millis(2000));
        let best = best_value([&b, &c]);
        assert_eq!(penalty(c, best), 0);
        assert_eq!(penalty(b, best), 2048);
        let (link, lie, honest) = (256u16, 0u16, 256u16);
        assert!(link + lie + penalty(b, best) > link + honest + penalty(c, best));
    }

    #[test]
    fn the_budget_counts_the_last_hour_and_refuses_what_would_exceed_it() {
        let mut b = TestBudget::default();
        let per_hour = 10_000;
        assert!(b.allows(Millis(0), 10_000, per_hour), "a whole hour's budget fits once");
        assert!(!b.allows(Millis(0), 10_001, per_hour));
        b.record(Millis(0), 6_000);
        b.record(Millis(1_800_000), 3_000);
        assert_eq!(b.spent(Millis(1_800_000)), 9_000);
        assert!(b.allows(Millis(1_800_000), 1_000, per_hour));
        assert!(!b.allows(Millis(1_800_000), 1_001, per_hour));
        assert_eq!(b.next_release(), Some(Millis(3_600_000)));
        // The first test's bytes leave the window an hour after it.
        assert!(!b.allows(Millis(3_599_999), 2_000, per_hour));
        assert!(b.allows(Millis(3_600_000), 7_000, per_hour));
        assert_eq!(b.spent(Millis(3_600_000)), 3_000);
        assert_eq!(b.total, 9_000, "the total is never forgotten");
        // Many tiny tests: merged, never undercounted.
        let mut b = TestBudget::default();
        for i in 0..(MAX_BUDGET_ENTRIES as u64 + 100) {
            b.record(Millis(i), 1);
        }
        assert_eq!(b.spent(Millis(5000)), MAX_BUDGET_ENTRIES as u64 + 100);
        assert!(b.spent.len() <= MAX_BUDGET_ENTRIES);
    }

    #[test]
    fn shortfalls_read_as_reasons() {
        let s = Shortfall::LossTooHigh { got_ppm: 25_000, max_ppm: 10_000 };
        assert_eq!(s.to_string(), "loss 2.50 % measured, above the 1.00 % accepted");
        let s = Shortfall::RttTooHigh { got_us: 120_000, max_us: 80_000 };
        assert_eq!(s.to_string(), "round trip 120 ms measured, above the 80 ms accepted");
    }
}
