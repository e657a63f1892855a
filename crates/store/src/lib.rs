//! # tollway-store
//!
//! Everything a tollway node must not lose, in one SQLite database: per neighbor the
//! [`LinkLedger`](tollway_core::market::LinkLedger), the counter baselines it was computed from
//! and the payment state ([`NeighborRecord`]); and the operator's history: usage per neighbor
//! per minute, payments, and price changes.
//!
//! Guarantees:
//! - **Crash safety.** The database runs in WAL mode with `synchronous=FULL`. A [`Batch`] is
//!   applied by [`Store::commit`] in one transaction: after `kill -9` (or a power loss) at any
//!   moment, each batch is either wholly present or wholly absent, and a commit that returned
//!   `Ok` is present. The daemon commits one batch per sampling tick holding the ledgers,
//!   baselines and history of that tick together, so ledger and baseline never disagree and no
//!   byte is counted twice after a restart.
//! - **Exact numbers.** Every `u64` round-trips over its whole range (see the `codec` module
//!   docs for how it is laid out in SQLite's signed integers).
//! - **Bounded history.** Rows older than the retention ([`StoreOptions::retention`], 90 days by
//!   default) are pruned a bounded number at a time in each commit.
//! - **Versioned schema.** Migrations run forward on open; a database from a newer version is
//!   refused with [`StoreError::TooNew`].
//!
//! The daemon uses the store through the [`LedgerStore`] trait; [`fake::FakeStore`] is an
//! in-memory one for unit tests that can refuse commits from the Nth on.
//!
//! ```no_run
//! use tollway_store::{Batch, NeighborRecord, Store};
//! # fn main() -> Result<(), tollway_store::StoreError> {
//! # let node = tollway_core::NodeId([1; 32]);
//! let mut store = Store::open("/var/lib/tollway/state.db")?;
//! let snapshot = store.load()?;
//! let mut record = snapshot.get(&node).cloned().unwrap_or_else(|| NeighborRecord::new(node, 1_700_000_000_000));
//! record.ledger.paid.0 += 10;
//! let mut batch = Batch::new(1_700_000_001_000);
//! batch.upsert(record);
//! store.commit(&batch)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod codec;
mod error;
pub mod fake;
mod history;
mod ledger_store;
mod neighbor;
mod reader;
mod schema;
mod settings;
mod store;

pub use error::StoreError;
pub use history::{
    ChangedBy, HistoryQuery, PaymentDirection, PaymentRecord, PriceChange, PriceSubject, UsageMinute, UsageRecord,
    MAX_RAIL_LEN, MINUTE_MS,
};
pub use ledger_store::LedgerStore;
pub use neighbor::{ChannelId, IssuedNote, NeighborRecord, PaymentState, ReceivedNote, MAX_NOTE_BYTES};
pub use reader::HistoryReader;
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use settings::OperatorSettings;
pub use store::{Batch, Snapshot, Store, StoreOptions};
