//! The daemon's own health figures for `/metrics`, updated by the driver as things happen and
//! read by scrapes without a lock on the driver (prometheus-client's metrics are shared atomics;
//! a clone is another handle on the same figures).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Upper bounds of the store commit latency buckets, in seconds (a commit is one fsync'd
/// SQLite transaction: ~1 ms on an SSD, tens of ms on slow flash).
pub const COMMIT_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone, Debug)]
pub struct Health {
    store_commit: Histogram,
    store_commit_failures: Counter,
    sessions_opened: Counter,
    sessions_closed: Counter,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            store_commit: Histogram::new(COMMIT_BUCKETS),
            store_commit_failures: Counter::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Counter::default(),
        }
    }
}

impl Health {
    /// A ledger commit took `took` (`ok`: it was stored).
    pub fn commit(&self, took: Duration, ok: bool) {
        self.store_commit.observe(took.as_secs_f64());
        if !ok {
            self.store_commit_failures.inc();
        }
    }

    /// A control session with a neighbor was established (either side opened it).
    pub fn session_opened(&self) {
        self.sessions_opened.inc();
    }

    /// A control session ended.
    pub fn session_closed(&self) {
        self.sessions_closed.inc();
    }

    /// Add the figures to `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "tollway_store_commit_duration",
            "Time to commit one batch to the ledger (one fsync'd transaction)",
            prometheus_client::registry::Unit::Seconds,
            self.store_commit.clone(),
        );
        r.register(
            "tollway_store_commit_failures",
            "Ledger commits refused by the store (the daemon stops at the first)",
            self.store_commit_failures.clone(),
        );
        r.register(
            "tollway_control_sessions_opened",
            "Control session connections to or from neighbors made since start",
            self.sessions_opened.clone(),
        );
        r.register(
            "tollway_control_sessions_closed",
            "Control session connections ended since start",
            self.sessions_closed.clone(),
        );
    }
}
