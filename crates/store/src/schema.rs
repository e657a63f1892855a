//! The schema and its forward migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`; the file is marked as a tollway store
//! by `PRAGMA application_id`. Migration `i` (0-based) takes version `i` to `i + 1` and runs in
//! one transaction together with the version bump, so a crash mid-migration leaves the old
//! version intact and the next open runs it again. Migrations are only ever appended; a shipped
//! one is never edited. A database whose version is newer than [`SCHEMA_VERSION`] is refused.
//!
//! Foreign keys are enforced during migrations: a migration that rebuilds a table (SQLite's
//! create-copy-drop-rename) must start with `PRAGMA defer_foreign_keys = ON` so the checks run at
//! its commit.

use crate::error::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// `PRAGMA application_id` of a tollway store: "tlwy".
pub const APPLICATION_ID: i32 = i32::from_be_bytes(*b"tlwy");

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Forward migrations, in order. Version N is the schema after the first N have run.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// Version 1: neighbor state and the three history tables.
///
/// Every `u64` is stored as the i64 with the same bits (see `codec`); columns that hold such
/// values are marked `-- u64`. Times are Unix milliseconds.
const V1: &str = "
CREATE TABLE neighbor (
    id                      INTEGER PRIMARY KEY,
    node                    BLOB NOT NULL UNIQUE CHECK (length(node) = 32),
    first_seen_ms           INTEGER NOT NULL CHECK (first_seen_ms >= 0),
    updated_ms              INTEGER NOT NULL CHECK (updated_ms >= 0),
    -- LinkLedger.inbound: bytes we received, our statement
    in_seq                  INTEGER NOT NULL, -- u64
    in_bytes                INTEGER NOT NULL, -- u64
    in_receiver_owes_units  INTEGER NOT NULL, -- u64
    in_receiver_owes_micros INTEGER NOT NULL CHECK (in_receiver_owes_micros BETWEEN 0 AND 999999),
    in_sender_owes_units    INTEGER NOT NULL, -- u64
    in_sender_owes_micros   INTEGER NOT NULL CHECK (in_sender_owes_micros BETWEEN 0 AND 999999),
    -- LinkLedger.outbound: bytes the neighbor received, its latest statement
    out_seq                 INTEGER NOT NULL, -- u64
    out_bytes               INTEGER NOT NULL, -- u64
    out_receiver_owes_units INTEGER NOT NULL, -- u64
    out_receiver_owes_micros INTEGER NOT NULL CHECK (out_receiver_owes_micros BETWEEN 0 AND 999999),
    out_sender_owes_units   INTEGER NOT NULL, -- u64
    out_sender_owes_micros  INTEGER NOT NULL CHECK (out_sender_owes_micros BETWEEN 0 AND 999999),
    paid                    INTEGER NOT NULL, -- u64
    received                INTEGER NOT NULL, -- u64
    -- counter baselines the ledger was computed from
    rx_counter_instance     INTEGER NOT NULL, -- u64, nftables inbound counter
    rx_counter_value        INTEGER NOT NULL, -- u64
    tx_counter_instance     INTEGER NOT NULL, -- u64, tunnel link tx counter
    tx_counter_value        INTEGER NOT NULL, -- u64
    -- payment state
    channel                 BLOB NOT NULL UNIQUE CHECK (length(channel) = 16),
    issued_cumulative       INTEGER,          -- u64
    issued_note             BLOB CHECK (length(issued_note) <= 1024),
    issued_acked            INTEGER CHECK (issued_acked IN (0, 1)),
    recv_channel            BLOB CHECK (length(recv_channel) = 16),
    recv_cumulative         INTEGER,          -- u64
    recv_note               BLOB CHECK (length(recv_note) <= 1024),
    CHECK ((issued_note IS NULL) = (issued_cumulative IS NULL) AND (issued_note IS NULL) = (issued_acked IS NULL)),
    CHECK ((recv_note IS NULL) = (recv_cumulative IS NULL) AND (recv_note IS NULL) = (recv_channel IS NULL))
) STRICT;

CREATE TRIGGER neighbor_identity_fixed BEFORE UPDATE OF node, channel ON neighbor
WHEN NEW.node IS NOT OLD.node OR NEW.channel IS NOT OLD.channel
BEGIN
    SELECT RAISE(ABORT, 'the node and payment channel id of a stored neighbor never change');
END;

CREATE TABLE usage_minute (
    minute_ms   INTEGER NOT NULL CHECK (minute_ms >= 0 AND minute_ms % 60000 = 0),
    neighbor    INTEGER NOT NULL REFERENCES neighbor (id),
    bytes_in    INTEGER NOT NULL, -- u64
    bytes_out   INTEGER NOT NULL, -- u64
    earned      INTEGER NOT NULL, -- u64, smallest units
    spent       INTEGER NOT NULL, -- u64, smallest units
    PRIMARY KEY (minute_ms, neighbor)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_minute_by_neighbor ON usage_minute (neighbor, minute_ms);

CREATE TABLE payment (
    id                  INTEGER PRIMARY KEY,
    at_ms               INTEGER NOT NULL CHECK (at_ms >= 0),
    neighbor            INTEGER NOT NULL REFERENCES neighbor (id),
    direction           TEXT NOT NULL CHECK (direction IN ('sent', 'received')),
    cumulative_before   INTEGER NOT NULL, -- u64
    cumulative_after    INTEGER NOT NULL, -- u64
    rail                TEXT NOT NULL CHECK (length(rail) BETWEEN 1 AND 64)
) STRICT;
CREATE INDEX payment_by_time ON payment (at_ms);
CREATE INDEX payment_by_neighbor ON payment (neighbor, at_ms);

CREATE TABLE price_change (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL CHECK (at_ms >= 0),
    neighbor    INTEGER REFERENCES neighbor (id), -- NULL: our own ask
    subject     TEXT NOT NULL CHECK (subject IN ('our_ask', 'our_bid', 'their_ask', 'their_bid')),
    old_price   INTEGER,          -- u64, NULL: none before
    new_price   INTEGER NOT NULL, -- u64
    changed_by  TEXT NOT NULL CHECK (changed_by IN ('operator', 'config', 'automatic', 'neighbor')),
    CHECK ((subject = 'our_ask') = (neighbor IS NULL))
) STRICT;
CREATE INDEX price_change_by_time ON price_change (at_ms);
CREATE INDEX price_change_by_neighbor ON price_change (neighbor, at_ms);
";

/// Version 2: a payment row and a price change row may each stand for several of the same
/// kind, merged within a minute (see `history`), so the history grows by a bounded number of
/// rows per neighbor per minute however often notes or price changes arrive.
const V2: &str = "
ALTER TABLE payment ADD COLUMN notes INTEGER NOT NULL DEFAULT 1 CHECK (notes >= 1);
ALTER TABLE price_change ADD COLUMN changes INTEGER NOT NULL DEFAULT 1 CHECK (changes >= 1);
";

/// Version 3: what we sent to each neighbor (its statements are accepted up to that), its latest
/// statement as it sent it (the accepted part is `out_*`; the rest is disputed), the recent
/// peak of bytes sent per sample (what a restart may have left uncounted), and the bytes
/// disputed per minute in the history. A migrated neighbor is taken to have been sent what it
/// confirmed, and its claim to be what was accepted.
const V3: &str = "
ALTER TABLE neighbor ADD COLUMN sent_bytes INTEGER NOT NULL DEFAULT 0; -- u64
ALTER TABLE neighbor ADD COLUMN tx_peak INTEGER NOT NULL DEFAULT 0; -- u64
ALTER TABLE neighbor ADD COLUMN claim_seq INTEGER NOT NULL DEFAULT 0; -- u64
ALTER TABLE neighbor ADD COLUMN claim_bytes INTEGER NOT NULL DEFAULT 0; -- u64
ALTER TABLE neighbor ADD COLUMN claim_receiver_owes_units INTEGER NOT NULL DEFAULT 0; -- u64
ALTER TABLE neighbor ADD COLUMN claim_receiver_owes_micros INTEGER NOT NULL DEFAULT 0
    CHECK (claim_receiver_owes_micros BETWEEN 0 AND 999999);
ALTER TABLE neighbor ADD COLUMN claim_sender_owes_units INTEGER NOT NULL DEFAULT 0; -- u64
ALTER TABLE neighbor ADD COLUMN claim_sender_owes_micros INTEGER NOT NULL DEFAULT 0
    CHECK (claim_sender_owes_micros BETWEEN 0 AND 999999);
UPDATE neighbor SET sent_bytes = out_bytes, claim_seq = out_seq, claim_bytes = out_bytes,
    claim_receiver_owes_units = out_receiver_owes_units, claim_receiver_owes_micros = out_receiver_owes_micros,
    claim_sender_owes_units = out_sender_owes_units, claim_sender_owes_micros = out_sender_owes_micros;
ALTER TABLE usage_minute ADD COLUMN disputed_bytes INTEGER NOT NULL DEFAULT 0; -- u64
";

/// Version 4: the operator's settings changed at run time (prices, bid, payments paused), which
/// override the config file until reset (see `settings`).
const V4: &str = "
CREATE TABLE setting (
    name    TEXT PRIMARY KEY
            CHECK (name IN ('ask', 'max_price', 'bid_fixed', 'bid_pays_ask', 'payments_paused')),
    value   INTEGER NOT NULL -- u64 for prices, 0/1 otherwise
) WITHOUT ROWID;
";

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Bring the schema of `conn` up to [`SCHEMA_VERSION`], or refuse a database that is newer or
/// not ours. Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<u32, StoreError> {
    let err = |op| StoreError::sqlite(op, path);
    // Check and migrate under one write lock, so two processes opening a fresh file at once
    // cannot both run the same migration.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err("locking for migration"))?;
    let found = user_version(&tx).map_err(err("reading the schema version of"))?;
    let app: i32 =
        tx.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(err("reading the application id of"))?;
    let tables: i64 =
        tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(err("reading the schema of"))?;
    if app != APPLICATION_ID && !(app == 0 && found == 0 && tables == 0) {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
            why: format!("application id {app:#010x}, schema version {found}, {tables} schema objects"),
        });
    }
    let found = u32::try_from(found)
        .map_err(|_| StoreError::NotOurs { path: path.to_owned(), why: format!("negative schema version {found}") })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { path: path.to_owned(), found, supported: SCHEMA_VERSION });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i as u32 + 1;
        tracing::info!(path = %path.display(), from = i, to, "migrating store schema");
        tx.execute_batch(sql).map_err(err("migrating the schema of"))?;
        tx.pragma_update(None, "user_version", to).map_err(err("setting the schema version of"))?;
    }
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(err("setting the application id of"))?;
    }
    tx.commit().map_err(err("committing the migration of"))?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_leave_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        assert_eq!(migrate(&mut conn, path).unwrap(), 0);
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION as i64);
        assert_eq!(migrate(&mut conn, path).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_store_keeps_its_rows_each_standing_for_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.execute(
            "INSERT INTO price_change (at_ms, neighbor, subject, old_price, new_price, changed_by) \
             VALUES (1, NULL, 'our_ask', NULL, 5, 'operator')",
            [],
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, Path::new(":memory:")).unwrap(), 1);
        let (new, changes): (i64, i64) =
            conn.query_row("SELECT new_price, changes FROM price_change", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((new, changes), (5, 1));
        let e = conn.execute("UPDATE price_change SET changes = 0", []).unwrap_err();
        assert!(e.to_string().contains("CHECK"), "{e}");
    }

    #[test]
    fn a_version_2_neighbor_is_taken_to_have_been_sent_what_it_confirmed_and_to_claim_only_that() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
        conn.execute(
            "INSERT INTO neighbor (node, first_seen_ms, updated_ms, in_seq, in_bytes, in_receiver_owes_units, \
             in_receiver_owes_micros, in_sender_owes_units, in_sender_owes_micros, out_seq, out_bytes, \
             out_receiver_owes_units, out_receiver_owes_micros, out_sender_owes_units, out_sender_owes_micros, \
             paid, received, rx_counter_instance, rx_counter_value, tx_counter_instance, tx_counter_value, channel) \
             VALUES (zeroblob(32), 1, 1, 0, 0, 0, 0, 0, 0, 7, 5000, 11, 12, 13, 14, 0, 0, 0, 0, 0, 0, zeroblob(16))",
            [],
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, Path::new(":memory:")).unwrap(), 2);
        let row: (i64, i64, i64, i64, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT sent_bytes, tx_peak, claim_seq, claim_bytes, claim_receiver_owes_units, \
                 claim_receiver_owes_micros, claim_sender_owes_units, claim_sender_owes_micros FROM neighbor",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
            )
            .unwrap();
        assert_eq!(row, (5000, 0, 7, 5000, 11, 12, 13, 14));
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        let e = migrate(&mut conn, Path::new("x.db")).unwrap_err();
        assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");
    }
}
