//! [`LedgerStore`]: what the daemon needs of its store, so that the driver can run on the
//! SQLite [`Store`] or, in unit tests, on the in-memory [`FakeStore`](crate::fake::FakeStore).

use crate::error::StoreError;
use crate::history::{HistoryQuery, PaymentRecord, PriceChange, UsageMinute};
use crate::settings::OperatorSettings;
use crate::store::{Batch, Snapshot, Store};
use std::path::Path;

/// The node's durable ledger: neighbor records loaded at start, batches committed whole, and the
/// operator's history. Every error names the database file ([`LedgerStore::path`]).
pub trait LedgerStore: Send {
    /// The database file (named in logs and in the daemon's error when it stops).
    fn path(&self) -> &Path;
    /// Every neighbor's stored state.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Apply `batch` in one transaction, durably: `Ok` means it survives a crash; an error
    /// means nothing of it was applied.
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;
    /// Usage per neighbor per minute, newest first.
    fn usage(&self, q: &HistoryQuery) -> Result<Vec<UsageMinute>, StoreError>;
    /// Payments sent and received, newest first.
    fn payments(&self, q: &HistoryQuery) -> Result<Vec<PaymentRecord>, StoreError>;
    /// Price and bid changes, newest first.
    fn price_changes(&self, q: &HistoryQuery) -> Result<Vec<PriceChange>, StoreError>;
    /// The operator's run-time settings.
    fn settings(&self) -> Result<OperatorSettings, StoreError>;
    /// Replace the operator's run-time settings, durably.
    fn save_settings(&mut self, s: &OperatorSettings) -> Result<(), StoreError>;
}

impl LedgerStore for Store {
    fn path(&self) -> &Path {
        Store::path(self)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Store::load(self)
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        Store::commit(self, batch)
    }

    fn usage(&self, q: &HistoryQuery) -> Result<Vec<UsageMinute>, StoreError> {
        Store::usage(self, q)
    }

    fn payments(&self, q: &HistoryQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        Store::payments(self, q)
    }

    fn price_changes(&self, q: &HistoryQuery) -> Result<Vec<PriceChange>, StoreError> {
        Store::price_changes(self, q)
    }

    fn settings(&self) -> Result<OperatorSettings, StoreError> {
        Store::settings(self)
    }

    fn save_settings(&mut self, s: &OperatorSettings) -> Result<(), StoreError> {
        Store::save_settings(self, s)
    }
}
