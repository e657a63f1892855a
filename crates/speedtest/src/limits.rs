//! Per-key rate limits (token buckets in a bounded table) and a limit on log lines, so that
//! no client can make a server work, or write, without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most `per_minute` events per key per minute, in bursts of up to `per_minute`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_minute: u32,
    max_keys: usize,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_minute: u32, max_keys: usize) -> RateLimiter<K> {
        RateLimiter { per_minute: per_minute.max(1), max_keys: max_keys.max(1), buckets: HashMap::new() }
    }

    fn refill(&self, tokens: f64, last: Instant, now: Instant) -> f64 {
        let per_sec = self.per_minute as f64 / 60.0;
        (tokens + now.saturating_duration_since(last).as_secs_f64() * per_sec).min(self.per_minute as f64)
    }

    /// Take one token for `key`, or say how long until one is there. A full table first forgets
    /// the keys whose buckets have refilled; if none has, a new key waits like a limited one.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let full = self.per_minute as f64;
            let buckets = std::mem::take(&mut self.buckets);
            self.buckets = buckets.into_iter().filter(|(_, (t, last))| self.refill(*t, *last, now) < full).collect();
            if self.buckets.len() >= self.max_keys {
                return Err(Duration::from_secs(60 / self.per_minute.min(60) as u64));
            }
        }
        let (tokens, last) = self.buckets.get(key).copied().unwrap_or((self.per_minute as f64, now));
        let tokens = self.refill(tokens, last, now);
        if tokens >= 1.0 {
            self.buckets.insert(key.clone(), (tokens - 1.0, now));
            Ok(())
        } else {
            self.buckets.insert(key.clone(), (tokens, now));
            Err(Duration::from_secs_f64((1.0 - tokens) * 60.0 / self.per_minute as f64))
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// At most `per_minute` lines a minute; the next line after a gap says how many were dropped.
#[derive(Debug)]
pub struct LogLimiter {
    per_minute: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(per_minute: u32) -> LogLimiter {
        LogLimiter { per_minute, window_start: None, in_window: 0, suppressed: 0 }
    }

    /// `Some(number of lines suppressed before this one)` if this line may be written.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(60) => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window < self.per_minute {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_for_refill() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(6, 100);
        for _ in 0..6 {
            assert_eq!(r.check(&"a", t0), Ok(()));
        }
        let wait = r.check(&"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(r.check(&"b", t0), Ok(()), "other keys are not affected");
        assert!(r.check(&"a", t0 + Duration::from_secs(9)).is_err());
        assert_eq!(r.check(&"a", t0 + Duration::from_secs(11)), Ok(()));
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(2, 3);
        for k in 0..3 {
            r.check(&k, t0).unwrap();
        }
        // Full, and nobody's bucket has refilled: a new key is refused.
        assert!(r.check(&99, t0).is_err());
        assert_eq!(r.len(), 3);
        // A minute later every bucket is full again: forgotten, and the new key gets in.
        assert_eq!(r.check(&99, t0 + Duration::from_secs(60)), Ok(()));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn log_lines_are_limited_and_the_gap_is_counted() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2);
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(61)), Some(2));
    }
}
