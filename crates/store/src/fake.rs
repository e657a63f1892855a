//! An in-memory [`LedgerStore`] for unit tests of the daemon's driver, which can be told to
//! refuse commits as a full disk would.
//!
//! A [`FakeStore`] is a cheap handle on shared state: give one clone to the code under test (as
//! `Box<dyn LedgerStore>`) and keep another to inspect what was committed, inject failures, or
//! "restart" on the same data by handing a fresh clone to a new driver.
//!
//! It keeps the real store's rules that the driver could break: a batch is applied whole or not
//! at all, a neighbor's payment channel never changes, and history may only name neighbors that
//! are stored or upserted in the same batch. History is kept as committed (successive payments
//! within a minute are not merged as the SQLite store merges them).

use crate::error::StoreError;
use crate::history::{HistoryQuery, PaymentRecord, PriceChange, UsageMinute, MINUTE_MS};
use crate::ledger_store::LedgerStore;
use crate::neighbor::NeighborRecord;
use crate::store::{Batch, Snapshot};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tollway_core::NodeId;

const OP: &str = "committing a batch to";

/// One commit attempt, as an observer set with [`FakeStore::observe`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitAttempt {
    /// 1 for the first attempt on this store, counting refused ones.
    pub number: u32,
    /// Whether the batch was stored.
    pub stored: bool,
}

type Observer = Box<dyn FnMut(CommitAttempt, &Batch) + Send>;

#[derive(Default)]
struct State {
    neighbors: BTreeMap<NodeId, NeighborRecord>,
    usage: Vec<crate::history::UsageRecord>,
    payments: Vec<PaymentRecord>,
    price_changes: Vec<PriceChange>,
    /// Every batch stored, in order.
    committed: Vec<Batch>,
    attempts: u32,
    /// Attempts with this number and later ones fail.
    fail_from: Option<u32>,
    fail_load: bool,
    observer: Option<Observer>,
    settings: crate::OperatorSettings,
}

/// See the [module docs](self).
#[derive(Clone)]
pub struct FakeStore {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FakeStore {
    /// An empty store that pretends to live at `path` (nothing is written there).
    pub fn new(path: impl Into<PathBuf>) -> FakeStore {
        FakeStore { path: path.into(), state: Arc::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make commit attempt number `n` (counting from 1 since the store was created, refused
    /// attempts included) and every later one fail, as on a disk that filled up.
    pub fn fail_from_commit(&self, n: u32) {
        self.state().fail_from = Some(n);
    }

    /// Make the next commit attempt and every later one fail.
    pub fn fail_from_next_commit(&self) {
        let mut s = self.state();
        s.fail_from = Some(s.attempts + 1);
    }

    /// Make [`LedgerStore::load`] fail (a damaged or unreadable file).
    pub fn fail_load(&self, fail: bool) {
        self.state().fail_load = fail;
    }

    /// Accept commits again (space was freed).
    pub fn heal(&self) {
        let mut s = self.state();
        s.fail_from = None;
        s.fail_load = false;
    }

    /// Call `f` on every commit attempt, after it succeeded or failed and before `commit`
    /// returns: the moment at which the caller's later actions have not happened yet.
    pub fn observe(&self, f: impl FnMut(CommitAttempt, &Batch) + Send + 'static) {
        self.state().observer = Some(Box::new(f));
    }

    /// Commit attempts so far, refused ones included.
    pub fn attempts(&self) -> u32 {
        self.state().attempts
    }

    /// Every batch stored, in order.
    pub fn committed(&self) -> Vec<Batch> {
        self.state().committed.clone()
    }

    /// The stored state of one neighbor.
    pub fn neighbor(&self, node: &NodeId) -> Option<NeighborRecord> {
        self.state().neighbors.get(node).cloned()
    }

    fn apply(s: &mut State, path: &Path, batch: &Batch) -> Result<(), StoreError> {
        if let Some(why) = batch.invalid() {
            return Err(StoreError::Invalid { op: OP, path: path.to_owned(), why });
        }
        let mut neighbors = s.neighbors.clone();
        for r in &batch.neighbors {
            let mut r = r.clone();
            if let Some(old) = neighbors.get(&r.node) {
                if old.payment.channel != r.payment.channel {
                    return Err(StoreError::ChannelChanged { path: path.to_owned(), node: r.node });
                }
                r.first_seen_ms = old.first_seen_ms;
            }
            neighbors.insert(r.node, r);
        }
        let named = batch
            .usage
            .iter()
            .map(|u| u.node)
            .chain(batch.payments.iter().map(|p| p.node))
            .chain(batch.price_changes.iter().filter_map(|c| c.subject.node()));
        for node in named {
            if !neighbors.contains_key(&node) {
                return Err(StoreError::Invalid {
                    op: OP,
                    path: path.to_owned(),
                    why: format!("history for neighbor {node}, which is neither stored nor in the batch"),
                });
            }
        }
        s.neighbors = neighbors;
        s.usage.extend(batch.usage.iter().cloned());
        s.payments.extend(batch.payments.iter().cloned());
        s.price_changes.extend(batch.price_changes.iter().cloned());
        s.committed.push(batch.clone());
        Ok(())
    }
}

/// Newest first, in the query's time range and of its neighbor, at most `limit`.
fn select<T: Clone>(
    rows: &[T],
    q: &HistoryQuery,
    at: impl Fn(&T) -> u64,
    node: impl Fn(&T) -> Option<NodeId>,
) -> Vec<T> {
    let mut out: Vec<T> = rows
        .iter()
        .filter(|r| (q.from_ms..q.until_ms).contains(&at(r)))
        .filter(|r| q.node.is_none() || node(r) == q.node)
        .cloned()
        .collect();
    out.reverse();
    out.sort_by_key(|r| std::cmp::Reverse(at(r)));
    out.truncate(q.limit as usize);
    out
}

impl LedgerStore for FakeStore {
    fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let s = self.state();
        if s.fail_load {
            return Err(StoreError::Corrupt { path: self.path.clone(), what: "injected failure to load".into() });
        }
        Ok(Snapshot { neighbors: s.neighbors.values().cloned().collect() })
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let (attempt, result, observer) = {
            let mut s = self.state();
            s.attempts += 1;
            let number = s.attempts;
            let result = if s.fail_from.is_some_and(|n| number >= n) {
                Err(StoreError::Io {
                    op: OP,
                    path: self.path.clone(),
                    source: std::io::Error::from_raw_os_error(28), // ENOSPC
                })
            } else {
                FakeStore::apply(&mut s, &self.path, batch)
            };
            (CommitAttempt { number, stored: result.is_ok() }, result, s.observer.take())
        };
        if let Some(mut f) = observer {
            f(attempt, batch);
            let mut s = self.state();
            if s.observer.is_none() {
                s.observer = Some(f);
            }
        }
        result
    }

    fn usage(&self, q: &HistoryQuery) -> Result<Vec<UsageMinute>, StoreError> {
        let s = self.state();
        let mut minutes: BTreeMap<(u64, NodeId), UsageMinute> = BTreeMap::new();
        for u in &s.usage {
            let minute_ms = u.at_ms - u.at_ms % MINUTE_MS;
            let m = minutes.entry((minute_ms, u.node)).or_insert(UsageMinute {
                minute_ms,
                node: u.node,
                bytes_in: 0,
                bytes_out: 0,
                earned: Default::default(),
                spent: Default::default(),
                disputed_bytes: 0,
            });
            m.bytes_in = m.bytes_in.saturating_add(u.bytes_in);
            m.bytes_out = m.bytes_out.saturating_add(u.bytes_out);
            m.earned.0 = m.earned.0.saturating_add(u.earned.0);
            m.spent.0 = m.spent.0.saturating_add(u.spent.0);
            m.disputed_bytes = m.disputed_bytes.saturating_add(u.disputed_bytes);
        }
        let rows: Vec<UsageMinute> = minutes.into_values().collect();
        Ok(select(&rows, q, |m| m.minute_ms, |m| Some(m.node)))
    }

    fn payments(&self, q: &HistoryQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        Ok(select(&self.state().payments, q, |p| p.at_ms, |p| Some(p.node)))
    }

    fn price_changes(&self, q: &HistoryQuery) -> Result<Vec<PriceChange>, StoreError> {
        Ok(select(&self.state().price_changes, q, |c| c.at_ms, |c| c.subject.node()))
    }

    fn settings(&self) -> Result<crate::OperatorSettings, StoreError> {
        Ok(self.state().settings)
    }

    fn save_settings(&mut self, settings: &crate::OperatorSettings) -> Result<(), StoreError> {
        let mut s = self.state();
        // Refused when the next commit would be.
        if s.fail_from.is_some_and(|n| s.attempts + 1 >= n) {
            return Err(StoreError::Io {
                op: "saving settings to",
                path: self.path.clone(),
                source: std::io::Error::from_raw_os_error(28), // ENOSPC
            });
        }
        s.settings = *settings;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{PaymentDirection, UsageRecord};
    use tollway_core::market::Amount;

    fn payment(node: NodeId, at_ms: u64, after: u64) -> PaymentRecord {
        PaymentRecord {
            at_ms,
            node,
            direction: PaymentDirection::Sent,
            cumulative_before: Amount(0),
            cumulative_after: Amount(after),
            rail: "notes".into(),
            notes: 1,
        }
    }

    #[test]
    fn refuses_from_the_nth_commit_until_healed_and_applies_nothing_of_a_refused_batch() {
        let node = NodeId([1; 32]);
        let handle = FakeStore::new("/var/lib/tollway/ledger.db");
        let mut store: Box<dyn LedgerStore> = Box::new(handle.clone());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        handle.observe(move |a, _| log.lock().unwrap().push(a));
        handle.fail_from_commit(2);
        let mut b = Batch::new(1_000);
        b.upsert(NeighborRecord::new(node, 1_000));
        store.commit(&b).unwrap();
        let mut b2 = Batch::new(2_000);
        b2.payment(payment(node, 2_000, 5));
        let err = store.commit(&b2).unwrap_err().to_string();
        assert!(err.contains("/var/lib/tollway/ledger.db") && err.contains("No space left"), "{err}");
        assert!(store.commit(&b2).is_err(), "later commits fail too");
        assert!(store.payments(&HistoryQuery::default()).unwrap().is_empty(), "nothing of the refused batch");
        handle.heal();
        store.commit(&b2).unwrap();
        assert_eq!(store.payments(&HistoryQuery::default()).unwrap().len(), 1);
        assert_eq!(handle.committed().len(), 2);
        let numbers: Vec<(u32, bool)> = seen.lock().unwrap().iter().map(|a| (a.number, a.stored)).collect();
        assert_eq!(numbers, vec![(1, true), (2, false), (3, false), (4, true)]);
    }

    #[test]
    fn keeps_the_real_stores_rules() {
        let node = NodeId([1; 32]);
        let mut store = FakeStore::new("/x/ledger.db");
        let mut orphan = Batch::new(1_000);
        orphan.usage(UsageRecord {
            at_ms: 1_000,
            node,
            bytes_in: 1,
            bytes_out: 0,
            earned: Amount(0),
            spent: Amount(0),
            disputed_bytes: 0,
        });
        assert!(matches!(store.commit(&orphan), Err(StoreError::Invalid { .. })));
        let rec = NeighborRecord::new(node, 1_000);
        store.commit(Batch::new(1_000).upsert(rec.clone())).unwrap();
        let mut changed = rec.clone();
        changed.payment.channel = crate::ChannelId([9; 16]);
        assert!(matches!(store.commit(Batch::new(2_000).upsert(changed)), Err(StoreError::ChannelChanged { .. })));
        assert_eq!(store.load().unwrap().neighbors, vec![rec]);
    }
}
