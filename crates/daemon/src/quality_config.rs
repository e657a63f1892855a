//! `[quality]`: speed tests through each neighbor, the operator's goals, and what follows
//! (docs/config.md). Parsed once into the core's [`QualityConfig`] at load; errors name the
//! field.

use serde::Deserialize;
use tollway_core::market::{Currency, Price};
use tollway_core::quality::{Goals, QualityConfig};
use tollway_core::Millis;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quality {
    /// Test through each neighbor against the pinned `[speedtest] servers` (nothing is tested
    /// without one).
    pub tests: bool,
    /// Test bytes (both directions, all neighbors) allowed in any hour, in MB.
    pub budget_mb_per_hour: u64,
    /// The most one test moves each way, in kB.
    pub test_max_kb: u64,
    /// Mean time between two tests through one neighbor (each wait is random, 0.5–1.5×).
    pub test_interval_secs: u64,
    /// Wait before a new neighbor's first test (random the same way).
    pub first_test_delay_secs: u64,
    /// How long a neighbor below the goals goes unpaid before it is bid on and tested again
    /// (and how long a live check's cap on a neighbor's tests lasts).
    pub probation_secs: u64,
    /// Least time between two live checks of one neighbor (its steady traffic moved to another
    /// for a few windows to see whether it was holding it back); 0 turns live checks off.
    pub live_check_interval_secs: u64,
    /// Tests needed before a neighbor is judged or ranked (until then it is unknown).
    pub min_tests: u32,
    /// A quality older than this is unknown again.
    pub max_age_secs: u64,
    /// Goals; 0 (or "" for the price) is no bound.
    pub min_down_kbit: u64,
    pub min_up_kbit: u64,
    pub max_rtt_ms: u32,
    /// Loss, in parts per million (10,000 = 1 %).
    pub max_loss_ppm: u32,
    /// The most we pay per MB for each Mbit/s of download goodput a neighbor delivers (a
    /// decimal in the market's currency): a neighbor asking more for what it delivers is not
    /// paid. Also how price is traded against goodput when ranking.
    pub max_price_per_mbit: String,
}

impl Default for Quality {
    fn default() -> Quality {
        let c = QualityConfig::default();
        Quality {
            tests: true,
            budget_mb_per_hour: c.budget_bytes_per_hour / 1_000_000,
            test_max_kb: c.test_max_bytes / 1000,
            test_interval_secs: c.test_interval.as_secs(),
            first_test_delay_secs: c.first_test_delay.as_secs(),
            probation_secs: c.probation.as_secs(),
            live_check_interval_secs: c.live_check_interval.as_secs(),
            min_tests: c.goals.min_samples,
            max_age_secs: c.goals.max_age_ms / 1000,
            min_down_kbit: 0,
            min_up_kbit: 0,
            max_rtt_ms: 0,
            max_loss_ppm: 0,
            max_price_per_mbit: String::new(),
        }
    }
}

impl Quality {
    /// The core's settings; `servers` is whether any speed-test server is pinned.
    pub fn to_core(&self, currency: &Currency, servers: bool) -> Result<QualityConfig, (&'static str, String)> {
        let at_least = |v: u64, min: u64, field: &'static str| {
            if v < min {
                Err((field, format!("must be at least {min}")))
            } else {
                Ok(v)
            }
        };
        let test_max_kb = at_least(self.test_max_kb, 10, "quality.test_max_kb")?;
        if test_max_kb > 1_000_000 {
            return Err(("quality.test_max_kb", "must be at most 1,000,000 (1 GB each way)".into()));
        }
        let budget = self.budget_mb_per_hour.saturating_mul(1_000_000);
        if self.tests && servers && budget < test_max_kb * 2000 {
            return Err((
                "quality.budget_mb_per_hour",
                format!(
                    "{} MB cannot pay for one test of {} kB each way: raise it, lower quality.test_max_kb, or set \
                     quality.tests = false",
                    self.budget_mb_per_hour, test_max_kb
                ),
            ));
        }
        let max_price_per_mbit = match self.max_price_per_mbit.trim() {
            "" => None,
            text => Some(Price(currency.parse(text).map_err(|e| ("quality.max_price_per_mbit", e.to_string()))?)),
        };
        Ok(QualityConfig {
            testing: self.tests && servers,
            goals: Goals {
                min_down_kbit: self.min_down_kbit,
                min_up_kbit: self.min_up_kbit,
                max_rtt_us: self.max_rtt_ms.saturating_mul(1000),
                max_loss_ppm: self.max_loss_ppm,
                max_price_per_mbit,
                min_samples: at_least(self.min_tests as u64, 1, "quality.min_tests")? as u32,
                max_age_ms: at_least(self.max_age_secs, 1, "quality.max_age_secs")?.saturating_mul(1000),
                upload_only: false, // set by `Config::core_config` for static and controller routing
            },
            budget_bytes_per_hour: budget,
            test_max_bytes: test_max_kb * 1000,
            test_interval: Millis::from_secs(at_least(self.test_interval_secs, 1, "quality.test_interval_secs")?),
            first_test_delay: Millis::from_secs(self.first_test_delay_secs),
            probation: Millis::from_secs(at_least(self.probation_secs, 1, "quality.probation_secs")?),
            live_check_interval: Millis::from_secs(self.live_check_interval_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xtw() -> Currency {
        Currency { name: "XTW".into(), decimals: 6 }
    }

    #[test]
    fn defaults_test_only_with_a_pinned_server_and_judge_nothing_below() {
        let q = Quality::default();
        let off = q.to_core(&xtw(), false).unwrap();
        assert!(!off.testing, "no server, no tests");
        let on = q.to_core(&xtw(), true).unwrap();
        assert!(on.testing);
        assert_eq!(on, QualityConfig { testing: true, ..QualityConfig::default() });
        assert_eq!(on.budget_bytes_per_hour, 100_000_000);
        assert_eq!(on.goals, Goals::default(), "no goals: rank, never withdraw");
    }

    #[test]
    fn goals_and_prices_are_parsed_and_bad_values_named() {
        let q = Quality {
            min_down_kbit: 10_000,
            max_rtt_ms: 80,
            max_loss_ppm: 20_000,
            max_price_per_mbit: "0.0001".into(),
            ..Quality::default()
        };
        let c = q.to_core(&xtw(), true).unwrap();
        assert_eq!(c.goals.max_rtt_us, 80_000);
        assert_eq!(c.goals.max_price_per_mbit, Some(Price(100)));
        let err = |q: Quality| q.to_core(&xtw(), true).unwrap_err().0;
        assert_eq!(
            err(Quality { max_price_per_mbit: "0.0000001".into(), ..Quality::default() }),
            "quality.max_price_per_mbit"
        );
        assert_eq!(
            err(Quality { budget_mb_per_hour: 1, test_max_kb: 1000, ..Quality::default() }),
            "quality.budget_mb_per_hour"
        );
        assert_eq!(err(Quality { test_max_kb: 5, ..Quality::default() }), "quality.test_max_kb");
        assert_eq!(err(Quality { min_tests: 0, ..Quality::default() }), "quality.min_tests");
        assert_eq!(err(Quality { probation_secs: 0, ..Quality::default() }), "quality.probation_secs");
        // With tests off, a budget too small for a test is no error.
        Quality { tests: false, budget_mb_per_hour: 0, ..Quality::default() }.to_core(&xtw(), true).unwrap();
    }
}
