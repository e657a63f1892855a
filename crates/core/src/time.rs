//! Time as the core sees it: always passed in, never read from a clock.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Monotonic milliseconds since an arbitrary origin chosen by the driver (or the simulator).
/// Used for every timer and timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    pub fn from_secs(s: u64) -> Millis {
        Millis(s.saturating_mul(1000))
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn since(self, earlier: Millis) -> Millis {
        Millis(self.0.saturating_sub(earlier.0))
    }

    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }
}

impl Add<Duration> for Millis {
    type Output = Millis;
    fn add(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis().min(u64::MAX as u128) as u64))
    }
}

impl Add<Millis> for Millis {
    type Output = Millis;
    fn add(self, d: Millis) -> Millis {
        Millis(self.0.saturating_add(d.0))
    }
}

impl Sub<Millis> for Millis {
    type Output = Millis;
    fn sub(self, d: Millis) -> Millis {
        self.since(d)
    }
}

/// The two clocks every input carries: a monotonic one for timers and the wall clock (Unix
/// milliseconds) for signed timestamps that other nodes check for freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Millis,
    pub unix_ms: u64,
}

impl Now {
    pub fn new(mono: Millis, unix_ms: u64) -> Now {
        Now { mono, unix_ms }
    }

    /// Both clocks advanced by `d`.
    pub fn advance(self, d: Duration) -> Now {
        Now { mono: self.mono + d, unix_ms: self.unix_ms.saturating_add(d.as_millis() as u64) }
    }
}

/// Lets a recurring log line through at most `burst` times per `window`, counting the ones held
/// back so the next line let through can say how many there were. Neighbors decide how often
/// some lines would be written (a rejected message, a price flipped 50 times a second): this
/// keeps the operator's log readable and bounded without hiding that it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLimit {
    window_start: Option<Millis>,
    used: u32,
    held: u64,
}

impl LogLimit {
    /// Whether to write the line at `now`; if so, how many were held back since the last one
    /// written.
    pub fn admit(&mut self, now: Millis, burst: u32, window: Millis) -> Option<u64> {
        if self.window_start.is_none_or(|s| now.since(s) >= window) {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < burst {
            self.used += 1;
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_limit_lets_a_burst_through_per_window_and_counts_the_rest() {
        let mut l = LogLimit::default();
        let w = Millis::from_secs(60);
        let admitted: Vec<_> = (0..100).map(|i| l.admit(Millis(i * 100), 5, w)).collect();
        assert_eq!(admitted[..5], [Some(0); 5]);
        assert!(admitted[5..].iter().all(Option::is_none));
        // The window restarts with the next line after it ends, which reports the 95 held back.
        assert_eq!(l.admit(Millis(60_000), 5, w), Some(95));
        assert_eq!(l.admit(Millis(60_001), 5, w), Some(0));
        // A burst of one is "at most once per window".
        let mut once = LogLimit::default();
        assert_eq!(once.admit(Millis(0), 1, Millis(10_000)), Some(0));
        assert_eq!(once.admit(Millis(9_999), 1, Millis(10_000)), None);
        assert_eq!(once.admit(Millis(10_000), 1, Millis(10_000)), Some(1));
    }
}
