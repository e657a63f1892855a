//! The store: opening (permissions, pragmas, migrations), loading, committing batches, and
//! history queries.

use crate::codec::{register_functions, time_to_sql};
use crate::error::StoreError;
use crate::history::{self, HistoryQuery, PaymentRecord, PriceChange, UsageMinute, UsageRecord, MAX_RAIL_LEN};
use crate::neighbor::{self, NeighborRecord};
use crate::schema;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tollway_core::NodeId;

/// How a [`Store`] behaves; [`Default`] gives the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long history rows are kept, measured back from [`Batch::now_ms`]; `None` keeps them
    /// forever. Default: 90 days. Neighbor state is never pruned.
    pub retention: Option<Duration>,
    /// At most this many expired rows are deleted from each history table per commit, so a
    /// commit stays fast even after the retention is shortened. The default of 1,000 removes a
    /// day of 64 busy neighbors' usage in under two minutes of one commit per second.
    pub prune_per_commit: u32,
    /// How long to wait for a lock held by another connection before failing. Default: 5 s.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Some(Duration::from_secs(90 * 24 * 3600)),
            prune_per_commit: 1000,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Every neighbor's stored state, as [`Store::load`] found it, ordered by node id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One record per stored neighbor, in node id order.
    pub neighbors: Vec<NeighborRecord>,
}

impl Snapshot {
    /// The stored state of `node`, if any.
    pub fn get(&self, node: &NodeId) -> Option<&NeighborRecord> {
        self.neighbors.binary_search_by(|r| r.node.cmp(node)).ok().map(|i| &self.neighbors[i])
    }
}

/// Changes applied together by [`Store::commit`]: all of them, or none.
///
/// Neighbor upserts are applied first, in order (a later record for the same node wins), then
/// the history records. History may only name neighbors that are stored or upserted in the same
/// batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The wall clock (Unix ms) at this commit; history older than `now_ms` minus the retention
    /// is pruned. Zero prunes nothing.
    pub now_ms: u64,
    /// Neighbor states to insert or replace.
    pub neighbors: Vec<NeighborRecord>,
    /// Usage to add to the per-minute sums.
    pub usage: Vec<UsageRecord>,
    /// Payments to append (or merge, see [`PaymentRecord::notes`]).
    pub payments: Vec<PaymentRecord>,
    /// Price changes to append (or merge, see [`PriceChange::changes`]).
    pub price_changes: Vec<PriceChange>,
}

impl Batch {
    /// An empty batch for a commit at `now_ms`.
    pub fn new(now_ms: u64) -> Batch {
        Batch { now_ms, ..Default::default() }
    }

    /// Add a neighbor state to insert or replace.
    pub fn upsert(&mut self, record: NeighborRecord) -> &mut Batch {
        self.neighbors.push(record);
        self
    }

    /// Add usage of one tick.
    pub fn usage(&mut self, record: UsageRecord) -> &mut Batch {
        self.usage.push(record);
        self
    }

    /// Add a payment.
    pub fn payment(&mut self, record: PaymentRecord) -> &mut Batch {
        self.payments.push(record);
        self
    }

    /// Add a price change.
    pub fn price_change(&mut self, record: PriceChange) -> &mut Batch {
        self.price_changes.push(record);
        self
    }

    /// Whether the batch changes nothing (it may still prune).
    pub fn is_empty(&self) -> bool {
        self.neighbors.is_empty() && self.usage.is_empty() && self.payments.is_empty() && self.price_changes.is_empty()
    }

    /// Why this batch cannot be stored, if it cannot.
    pub(crate) fn invalid(&self) -> Option<String> {
        let time = |what: &str, t: u64| (t > i64::MAX as u64).then(|| format!("{what} time {t} is out of range"));
        time("batch", self.now_ms)
            .or_else(|| self.neighbors.iter().find_map(|r| r.invalid()))
            .or_else(|| self.usage.iter().find_map(|u| time("usage", u.at_ms)))
            .or_else(|| {
                self.price_changes.iter().find_map(|c| {
                    time("price change", c.at_ms)
                        .or_else(|| (c.changes == 0).then(|| "a price change standing for 0 changes".to_owned()))
                })
            })
            .or_else(|| {
                self.payments.iter().find_map(|p| {
                    time("payment", p.at_ms)
                        .or_else(|| {
                            (p.rail.is_empty() || p.rail.len() > MAX_RAIL_LEN)
                                .then(|| format!("rail name {:?} is not 1 to {MAX_RAIL_LEN} bytes", p.rail))
                        })
                        .or_else(|| (p.notes == 0).then(|| "a payment standing for 0 notes".to_owned()))
                })
            })
    }
}

/// The node's transactional store: one SQLite database in WAL mode with `synchronous=FULL`, so a
/// commit that returned survives a crash of the process or of the machine, and one that did not
/// return is either wholly there or wholly absent.
///
/// A `Store` is one connection; it is `Send` but not `Sync`. Commits block on `fsync`: call them
/// from a thread that may block (e.g. `spawn_blocking`), never from an async task directly.
/// Other processes (e.g. a read-only inspection) may open the same file concurrently.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    options: StoreOptions,
    /// Row ids of stored neighbors. Only filled after a commit succeeded, and rows are never
    /// deleted, so an entry is never stale.
    ids: HashMap<NodeId, i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("options", &self.options).finish_non_exhaustive()
    }
}

impl Store {
    /// Open the store at `path` with default [`StoreOptions`], creating it (mode 0600, and its
    /// parent directories mode 0700) if missing, and migrating its schema forward.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    ///
    /// Fails with [`StoreError::TooNew`] for a database written by a newer schema and with
    /// [`StoreError::NotOurs`] for another application's SQLite file.
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Store, StoreError> {
        let path = path.as_ref().to_owned();
        create_private_file(&path)?;
        let err = |op| StoreError::sqlite(op, &path);
        let mut conn = Connection::open(&path).map_err(err("opening"))?;
        conn.busy_timeout(options.busy_timeout).map_err(err("setting the busy timeout on"))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err("enabling WAL mode on"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid {
                op: "enabling WAL mode on",
                path,
                why: format!("SQLite kept journal mode {mode:?}"),
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF; \
             PRAGMA journal_size_limit = 16777216;",
        )
        .map_err(err("setting pragmas on"))?;
        let (sync, fk): (i64, i64) = conn
            .query_row("SELECT * FROM pragma_synchronous, pragma_foreign_keys", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err("reading pragmas of"))?;
        if sync != 2 || fk != 1 {
            return Err(StoreError::Invalid {
                op: "setting pragmas on",
                path,
                why: format!("synchronous is {sync} and foreign_keys {fk}, expected 2 (FULL) and 1"),
            });
        }
        register_functions(&conn).map_err(err("registering SQL functions on"))?;
        conn.set_prepared_statement_cache_capacity(64);
        let found = schema::migrate(&mut conn, &path)?;
        tracing::debug!(path = %path.display(), found, version = schema::SCHEMA_VERSION, "store opened");
        Ok(Store { conn, path, options, ids: HashMap::new() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Every neighbor's stored state (one consistent read: a single statement sees one
    /// snapshot of the database).
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let err = |e| StoreError::sqlite("loading neighbors from", &self.path)(e);
        let mut stmt = self.conn.prepare_cached(&neighbor::select_all_sql()).map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut neighbors = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            match neighbor::decode(row).map_err(err)? {
                Ok(r) => neighbors.push(r),
                Err(what) => return Err(StoreError::Corrupt { path: self.path.clone(), what }),
            }
        }
        Ok(Snapshot { neighbors })
    }

    /// The operator's run-time settings (none stored: all `None`).
    pub fn settings(&self) -> Result<crate::OperatorSettings, StoreError> {
        crate::settings::load(&self.conn, &self.path)
    }

    /// Replace the operator's run-time settings, durably, in one transaction.
    pub fn save_settings(&mut self, s: &crate::OperatorSettings) -> Result<(), StoreError> {
        crate::settings::save(&mut self.conn, &self.path, s)
    }

    /// Apply `batch` in one transaction, durably: when this returns `Ok` the batch survives a
    /// crash; when it returns an error nothing of it was applied. Also prunes a bounded number
    /// of expired history rows in the same transaction.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        const OP: &str = "committing a batch to";
        if let Some(why) = batch.invalid() {
            return Err(StoreError::Invalid { op: OP, path: self.path.clone(), why });
        }
        let path = &self.path;
        let err = |source| StoreError::Sqlite { op: OP, path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut new_ids = HashMap::new();
        for r in &batch.neighbors {
            let id = neighbor::upsert(&tx, r).map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) if is_trigger_abort(&e) => {
                    StoreError::ChannelChanged { path: path.clone(), node: r.node }
                }
                _ => err(e),
            })?;
            new_ids.insert(r.node, id);
        }
        let mut id_of = |node: NodeId| -> Result<i64, StoreError> {
            if let Some(id) = new_ids.get(&node).or_else(|| self.ids.get(&node)) {
                return Ok(*id);
            }
            let id: Option<i64> = tx
                .prepare_cached("SELECT id FROM neighbor WHERE node = ?1")
                .and_then(|mut s| s.query_row([&node.0[..]], |r| r.get(0)).optional())
                .map_err(err)?;
            let id = id.ok_or_else(|| StoreError::Invalid {
                op: OP,
                path: path.clone(),
                why: format!("history for neighbor {node}, which is neither stored nor in the batch"),
            })?;
            new_ids.insert(node, id);
            Ok(id)
        };
        for u in &batch.usage {
            history::add_usage(&tx, id_of(u.node)?, u).map_err(err)?;
        }
        for p in &batch.payments {
            history::add_payment(&tx, id_of(p.node)?, p).map_err(err)?;
        }
        for c in &batch.price_changes {
            let nid = c.subject.node().map(&mut id_of).transpose()?;
            history::add_price_change(&tx, nid, c).map_err(err)?;
        }
        if let (Some(keep), Some(now)) = (self.options.retention, time_to_sql(batch.now_ms)) {
            let cutoff = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            if batch.now_ms > 0 && cutoff > 0 {
                let pruned = history::prune(&tx, cutoff, self.options.prune_per_commit).map_err(err)?;
                if pruned > 0 {
                    tracing::debug!(path = %path.display(), pruned, cutoff, "pruned expired history");
                }
            }
        }
        tx.commit().map_err(err)?;
        self.ids.extend(new_ids);
        Ok(())
    }

    /// Usage per neighbor per minute, newest first.
    pub fn usage(&self, q: &HistoryQuery) -> Result<Vec<UsageMinute>, StoreError> {
        self.history("querying usage in", &history::USAGE, q)
    }

    /// Payments sent and received, newest first.
    pub fn payments(&self, q: &HistoryQuery) -> Result<Vec<PaymentRecord>, StoreError> {
        self.history("querying payments in", &history::PAYMENTS, q)
    }

    /// Price and bid changes, newest first.
    pub fn price_changes(&self, q: &HistoryQuery) -> Result<Vec<PriceChange>, StoreError> {
        self.history("querying price changes in", &history::PRICE_CHANGES, q)
    }

    fn history<T>(&self, op: &'static str, table: &history::Table<T>, q: &HistoryQuery) -> Result<Vec<T>, StoreError> {
        crate::reader::query_history(&self.conn, &self.path, op, table, q)
    }

    /// Copy the WAL into the main database file and truncate the WAL (the daemon may call it at
    /// shutdown; SQLite also does this on its own as the WAL grows).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(StoreError::sqlite("checkpointing", &self.path))
    }

    /// The schema version of the open database (always [`SCHEMA_VERSION`](crate::SCHEMA_VERSION)
    /// after a successful open).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(StoreError::sqlite("reading the schema version of", &self.path))
    }
}

/// Whether `e` is a `RAISE(ABORT, …)` from a trigger (the only trigger guards the channel id).
fn is_trigger_abort(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER)
}

/// Create `path` (mode 0600) and its missing parent directories (mode 0700) if it does not
/// exist; tighten an existing file that others can read. The directory entry is synced so a
/// newly created store survives a power loss.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(StoreError::io("creating directory", dir))?;
    }
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => {
            f.sync_all().map_err(StoreError::io("syncing", path))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("syncing directory", dir))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // SQLite gives the -wal and -shm files the database's mode when it creates them.
            for file in ["", "-wal", "-shm"].map(|s| PathBuf::from(format!("{}{s}", path.display()))) {
                let mode = match fs::metadata(&file) {
                    Ok(m) => m.permissions().mode(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && file != path => continue,
                    Err(e) => return Err(StoreError::io("reading metadata of", &file)(e)),
                };
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %file.display(), mode = format!("{:o}", mode & 0o777),
                        "store file is accessible by group or others; fixing to 0600");
                    fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                        .map_err(StoreError::io("chmod", &file))?;
                }
            }
        }
        Err(e) => return Err(StoreError::io("creating", path)(e)),
    }
    Ok(())
}
