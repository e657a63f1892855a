//! A read-only connection to the store for history queries, so that readers (the operator API,
//! the dashboard) never wait on, or make wait, the connection the daemon commits through.
//! SQLite's WAL mode lets it read a consistent snapshot while the writer commits.

use crate::error::StoreError;
use crate::history::{self, HistoryQuery, PaymentRecord, PriceChange, UsageMinute};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A read-only view of a store another connection writes. Blocking: call it from a thread that
/// may block (e.g. `spawn_blocking`).
pub struct HistoryReader {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryReader").field("path", &self.path).finish_non_exhaustive()
    }
}

impl HistoryReader {
    /// Open the existing store at `path` read-only (it must have been created by [`crate::Store`]).
    pub fn open(path: impl AsRef<Path>) -> Result<HistoryReader, StoreError> {
        let path = path.as_ref().to_owned();
        let err = |op| StoreError::sqlite(op, &path);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(err("opening read-only"))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err("setting the busy timeout on"))?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA trusted_schema = OFF;")
            .map_err(err("setting pragmas on"))?;
        crate::codec::register_functions(&conn).map_err(err("registering SQL functions on"))?;
        conn.set_prepared_statement_cache_capacity(16);
        let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err("reading"))?;
        if found != crate::SCHEMA_VERSION {
            return Err(StoreError::Invalid {
                op: "opening read-only",
                path,
                why: format!("schema version {found}, expected {}", crate::SCHEMA_VERSION),
            });
        }
        Ok(HistoryReader { conn, path })
    }

    /// Usage per neighbor per minute, newest first.
    pub fn usage(&self, q: &HistoryQuery) -> Result<Vec<UsageMinute>, StoreError> {
        query_history(&self.conn, &self.path, "querying usage in", &history::USAGE, q)
    }

    /// Payments sent and received, newest first.
    pub fn payments(&self, q: &HistoryQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        query_history(&self.conn, &self.path, "querying payments in", &history::PAYMENTS, q)
    }

    /// Price and bid changes, newest first.
    pub fn price_changes(&self, q: &HistoryQuery) -> Result<Vec<PriceChange>, StoreError> {
        query_history(&self.conn, &self.path, "querying price changes in", &history::PRICE_CHANGES, q)
    }
}

/// Run a history query on `conn` (the writer's or a reader's).
pub(crate) fn query_history<T>(
    conn: &Connection,
    path: &Path,
    op: &'static str,
    table: &history::Table<T>,
    q: &HistoryQuery,
) -> Result<Vec<T>, StoreError> {
    let err = |e| StoreError::sqlite(op, path)(e);
    let nid = match q.node {
        None => None,
        Some(node) => {
            let id = conn
                .prepare_cached("SELECT id FROM neighbor WHERE node = ?1")
                .and_then(|mut s| s.query_row([&node.0[..]], |r| r.get::<_, i64>(0)).optional())
                .map_err(err)?;
            match id {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            }
        }
    };
    history::query(conn, table, q, nid)
        .map_err(err)?
        .map_err(|what| StoreError::Corrupt { path: path.to_owned(), what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Store, UsageRecord};
    use tollway_core::market::Amount;
    use tollway_core::NodeId;

    #[test]
    fn a_reader_sees_what_the_writer_committed_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut store = Store::open(&path).unwrap();
        let reader = HistoryReader::open(&path).unwrap();
        let node = NodeId([7; 32]);
        let mut b = Batch::new(120_000);
        b.upsert(crate::NeighborRecord::new(node, 1));
        b.usage(UsageRecord {
            node,
            at_ms: 120_000,
            bytes_in: 1000,
            bytes_out: 2000,
            earned: Amount(5),
            spent: Amount(6),
            disputed_bytes: 0,
        });
        store.commit(&b).unwrap();
        let rows = reader.usage(&HistoryQuery::newest(10)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].bytes_in, rows[0].bytes_out), (1000, 2000));
        assert_eq!(reader.usage(&HistoryQuery::newest(10).neighbor(NodeId([8; 32]))).unwrap().len(), 0);
        let e = reader.conn.execute("DELETE FROM neighbor", []).unwrap_err();
        assert!(e.to_string().contains("readonly") || e.to_string().contains("read"), "{e}");
    }

    #[test]
    fn a_missing_store_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = HistoryReader::open(dir.path().join("nope.sqlite")).unwrap_err().to_string();
        assert!(e.contains("nope.sqlite"), "{e}");
    }
}
