//! Live checks: tests checked against the traffic a neighbor really carries.
//!
//! A forwarder can favor the speed-test server's traffic and throttle everything else: its tests
//! then read far more than it delivers. Counters alone cannot tell a neighbor that carries little
//! because it throttles from one that carries little because little is asked of it. Moving the
//! traffic can: when the best-ranked neighbor carries steady live traffic at a small fraction of
//! what its tests read, and another acceptable neighbor tested fast enough to tell the
//! difference, the node sends the traffic through that other neighbor for a few windows. If the
//! same traffic then flows much faster there, the first neighbor was holding it back: its tests
//! are capped, for ranking and for the goals, at what it really carried (a `LiveCap`) until its
//! probation time has passed. If the traffic flows as before, demand was the limit and nothing
//! changes. Pure logic here; the node (`node::quality`) runs the check.

use crate::quality::{LiveRate, Sample};
use crate::time::Millis;

/// Steady live traffic below this (kbit/s, in both of the last two windows) is not checked.
pub const MIN_LIVE_KBIT: u64 = 1000;
/// Tests must read at least this many times what live traffic carried for a check.
pub const OVERSTATED: u64 = 3;
/// The other neighbor must have tested at least this many times what live traffic carried.
pub const CHALLENGER_MARGIN: u64 = 2;
/// The traffic moved must flow at least this much faster (in halves: 3/2 = 1.5 times) through
/// the other neighbor for the first one's tests to be capped.
pub const CONFIRM_HALVES: u64 = 3;
/// Windows of the other neighbor's live traffic measured before deciding: the first may still
/// hold traffic from before the move, so the decision reads the lesser of the last two (a
/// sender catching up after the move's hiccup bursts for a moment, which must not count).
pub const CHECK_WINDOWS: u32 = 3;
/// A check that has not measured its windows by then is given up (no decision).
pub const CHECK_DEADLINE: Millis = Millis(90_000);

/// The direction of traffic through a neighbor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What it delivers to us.
    Down,
    /// What we send through it.
    Up,
}

impl Direction {
    pub fn of(self, r: LiveRate) -> u64 {
        match self {
            Direction::Down => r.down_kbit,
            Direction::Up => r.up_kbit,
        }
    }

    pub fn of_sample(self, s: &Sample) -> u64 {
        match self {
            Direction::Down => s.down_kbit,
            Direction::Up => s.up_kbit,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Down => "download",
            Direction::Up => "upload",
        }
    }
}

/// A neighbor's tests capped at what its live traffic showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCap {
    pub direction: Direction,
    /// What it carried (kbit/s) before the check.
    pub kbit: u64,
    /// What the same traffic reached through the other neighbor.
    pub elsewhere_kbit: u64,
    pub since: Millis,
}

impl LiveCap {
    /// The tested sample with the capped direction lowered to what live traffic showed.
    pub fn apply(&self, mut s: Sample) -> Sample {
        match self.direction {
            Direction::Down => s.down_kbit = s.down_kbit.min(self.kbit),
            Direction::Up => s.up_kbit = s.up_kbit.min(self.kbit),
        }
        s
    }
}

/// Whether the best neighbor's live traffic calls for a check, and in which direction: steady
/// (both of its last two windows) at or above `MIN_LIVE_KBIT`, a `OVERSTATED`-th or less of
/// what its tests read, while the other neighbor tested at least `CHALLENGER_MARGIN` times
/// what it carried. Upload first.
pub fn wanted(tested: &Sample, live: LiveRate, previous: LiveRate, challenger: &Sample) -> Option<(Direction, u64)> {
    [Direction::Up, Direction::Down].into_iter().find_map(|d| {
        let carried = d.of(live).min(d.of(previous));
        let steady = carried >= MIN_LIVE_KBIT;
        let overstated = d.of_sample(tested) >= carried.saturating_mul(OVERSTATED);
        let worth_it = d.of_sample(challenger) >= carried.saturating_mul(CHALLENGER_MARGIN);
        (steady && overstated && worth_it).then_some((d, carried))
    })
}

/// Whether the traffic moved flowed enough faster elsewhere to cap the first neighbor.
pub fn confirmed(carried_kbit: u64, elsewhere_kbit: u64) -> bool {
    elsewhere_kbit.saturating_mul(2) >= carried_kbit.saturating_mul(CONFIRM_HALVES) && elsewhere_kbit > carried_kbit
}

/// A ranking value scaled down as much as the cap lowers the capped direction's tested rate
/// (the value counts download goodput: a capped upload lowers it in proportion).
pub fn capped_value(value: u64, tested: &Sample, cap: &LiveCap) -> u64 {
    match cap.direction {
        // The value was computed from the capped download already.
        Direction::Down => value,
        Direction::Up => {
            let tested = tested.up_kbit.max(1);
            (value as u128 * cap.kbit.min(tested) as u128 / tested as u128) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(down: u64, up: u64) -> Sample {
        Sample { at: Millis(0), down_kbit: down, up_kbit: up, rtt_us: 1000, loss_ppm: 0 }
    }
    fn rate(down: u64, up: u64) -> LiveRate {
        LiveRate { down_kbit: down, up_kbit: up }
    }

    #[test]
    fn a_check_is_wanted_only_for_steady_traffic_far_below_the_tests_with_a_fast_enough_alternative() {
        use Direction::*;
        // (tested, live, previous window, challenger tested) → wanted
        let cases = [
            // The test prioritizer: tests 88 Mbit/s up, live 2.6, the other tested 8.9.
            (sample(75_000, 88_000), rate(100, 2_600), rate(90, 2_500), sample(9_000, 8_900), Some((Up, 2_500))),
            // Not steady: the previous window was idle.
            (sample(75_000, 88_000), rate(100, 2_600), rate(0, 0), sample(9_000, 8_900), None),
            // Too little to tell.
            (sample(75_000, 88_000), rate(100, 900), rate(100, 900), sample(9_000, 8_900), None),
            // Carries a third or more of its tests: nothing to check.
            (sample(9_000, 9_000), rate(100, 3_100), rate(100, 3_100), sample(30_000, 30_000), None),
            // The other is not fast enough to tell the difference.
            (sample(75_000, 88_000), rate(100, 5_300), rate(100, 5_300), sample(9_000, 9_000), None),
            // Download traffic, checked the same way.
            (sample(88_000, 88_000), rate(2_600, 100), rate(2_700, 100), sample(9_000, 9_000), Some((Down, 2_600))),
        ];
        for (i, (tested, live, prev, challenger, want)) in cases.into_iter().enumerate() {
            assert_eq!(wanted(&tested, live, prev, &challenger), want, "case {i}");
        }
    }

    #[test]
    fn the_cap_needs_the_moved_traffic_half_again_as_fast_and_lowers_only_its_direction() {
        assert!(confirmed(2_600, 8_900));
        assert!(confirmed(2_000, 3_000));
        assert!(!confirmed(2_000, 2_900), "less than 1.5 times: demand was the limit");
        assert!(!confirmed(5_300, 5_300));
        assert!(!confirmed(0, 0));
        let cap = LiveCap { direction: Direction::Up, kbit: 2_600, elsewhere_kbit: 8_900, since: Millis(0) };
        let tested = sample(75_000, 88_000);
        assert_eq!(cap.apply(tested), sample(75_000, 2_600));
        assert_eq!(capped_value(75_000, &tested, &cap), 75_000 * 2_600 / 88_000);
        let down = LiveCap { direction: Direction::Down, ..cap };
        assert_eq!(down.apply(tested), sample(2_600, 88_000));
        assert_eq!(capped_value(2_600, &tested, &down), 2_600, "the value already counts the capped download");
        // A cap above what was tested lowers nothing.
        let high = LiveCap { kbit: 100_000, ..cap };
        assert_eq!(capped_value(75_000, &tested, &high), 75_000);
    }
}
