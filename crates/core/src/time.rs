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
