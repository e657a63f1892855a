//! The operator's history: usage per neighbor per minute, payments, and price changes. Bounded
//! by a retention period and pruned a little at each commit.
//!
//! Each table grows by a bounded number of rows per neighbor per minute, however often a busy
//! or hostile neighbor pays or changes its prices (a payer over its threshold pays at every
//! sampling tick; a neighbor may send dozens of messages a second): usage is summed per minute;
//! a payment continuing the previous row of the same neighbor, direction and rail in the same
//! minute extends that row (`notes` counts them); so does a price change continuing the previous
//! change of the same price by the same party, except changes by the operator or the config,
//! which are kept one by one. Merging loses no money: a payment row still says from which
//! cumulative total to which, and the newest note itself is kept in the neighbor's state.

use crate::codec::{bound_to_sql, from_sql, node_from_blob, to_sql, U64_ADD};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use std::sync::OnceLock;
use tollway_core::market::{Amount, Price};
use tollway_core::NodeId;

/// Length of a usage bucket.
pub const MINUTE_MS: u64 = 60_000;

/// Longest accepted payment rail name, in bytes.
pub const MAX_RAIL_LEN: usize = 64;

/// Usage with one neighbor during one sampling tick, added to the bucket of the minute that
/// contains `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRecord {
    /// When the tick was sampled (Unix ms).
    pub at_ms: u64,
    /// The neighbor; it must be stored, or upserted in the same batch.
    pub node: NodeId,
    /// Bytes received from the neighbor.
    pub bytes_in: u64,
    /// Bytes sent to the neighbor.
    pub bytes_out: u64,
    /// What the neighbor came to owe us, in smallest units.
    pub earned: Amount,
    /// What we came to owe the neighbor, in smallest units.
    pub spent: Amount,
    /// Bytes the neighbor claimed beyond what we sent (disputed, never priced).
    pub disputed_bytes: u64,
}

/// Usage with one neighbor summed over one minute. Sums saturate at `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageMinute {
    /// Start of the minute (Unix ms, a multiple of [`MINUTE_MS`]).
    pub minute_ms: u64,
    /// The neighbor.
    pub node: NodeId,
    /// Bytes received from the neighbor.
    pub bytes_in: u64,
    /// Bytes sent to the neighbor.
    pub bytes_out: u64,
    /// What the neighbor came to owe us, in smallest units.
    pub earned: Amount,
    /// What we came to owe the neighbor, in smallest units.
    pub spent: Amount,
    /// Bytes the neighbor claimed beyond what we sent (disputed, never priced).
    pub disputed_bytes: u64,
}

/// Whether a payment went to a neighbor or came from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentDirection {
    /// We issued a note to the neighbor.
    Sent,
    /// The neighbor issued a valid note to us.
    Received,
}

/// One payment: a note issued to a neighbor, or a valid note received from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// When the note was issued or accepted (Unix ms).
    pub at_ms: u64,
    /// The neighbor; it must be stored, or upserted in the same batch.
    pub node: NodeId,
    /// Whether we paid or were paid.
    pub direction: PaymentDirection,
    /// Cumulative amount on the channel before this payment.
    pub cumulative_before: Amount,
    /// Cumulative amount on the channel after it; the payment is the difference.
    pub cumulative_after: Amount,
    /// The payment rail's name (1 to [`MAX_RAIL_LEN`] bytes), e.g. "notes".
    pub rail: String,
    /// How many notes this stands for (at least 1): a record continuing the newest stored row of
    /// the same neighbor, direction and rail within the same minute is merged into it.
    pub notes: u32,
}

/// Which price changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriceSubject {
    /// Our ask, advertised to every neighbor.
    OurAsk,
    /// Our bid for this neighbor.
    OurBid(NodeId),
    /// This neighbor's ask.
    TheirAsk(NodeId),
    /// This neighbor's bid for us.
    TheirBid(NodeId),
}

impl PriceSubject {
    /// The neighbor concerned, `None` for our own ask.
    pub fn node(&self) -> Option<NodeId> {
        match *self {
            PriceSubject::OurAsk => None,
            PriceSubject::OurBid(n) | PriceSubject::TheirAsk(n) | PriceSubject::TheirBid(n) => Some(n),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            PriceSubject::OurAsk => "our_ask",
            PriceSubject::OurBid(_) => "our_bid",
            PriceSubject::TheirAsk(_) => "their_ask",
            PriceSubject::TheirBid(_) => "their_bid",
        }
    }

    fn parse(name: &str, node: Option<NodeId>) -> Option<PriceSubject> {
        match (name, node) {
            ("our_ask", None) => Some(PriceSubject::OurAsk),
            ("our_bid", Some(n)) => Some(PriceSubject::OurBid(n)),
            ("their_ask", Some(n)) => Some(PriceSubject::TheirAsk(n)),
            ("their_bid", Some(n)) => Some(PriceSubject::TheirBid(n)),
            _ => None,
        }
    }
}

/// Who changed a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedBy {
    /// The operator, through the API or CLI.
    Operator,
    /// A configuration (re)load.
    Config,
    /// Automatic pricing or bidding.
    Automatic,
    /// The neighbor (its own ask or bid).
    Neighbor,
}

impl ChangedBy {
    /// Whether changes by this party are merged within a minute (see [`PriceChange::changes`]).
    fn merged(self) -> bool {
        matches!(self, ChangedBy::Automatic | ChangedBy::Neighbor)
    }

    fn name(&self) -> &'static str {
        match self {
            ChangedBy::Operator => "operator",
            ChangedBy::Config => "config",
            ChangedBy::Automatic => "automatic",
            ChangedBy::Neighbor => "neighbor",
        }
    }

    fn parse(name: &str) -> Option<ChangedBy> {
        [ChangedBy::Operator, ChangedBy::Config, ChangedBy::Automatic, ChangedBy::Neighbor]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// One price change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceChange {
    /// When the price changed (Unix ms).
    pub at_ms: u64,
    /// Which price; a neighbor it names must be stored, or upserted in the same batch.
    pub subject: PriceSubject,
    /// The price before, `None` if there was none (first advertisement).
    pub old: Option<Price>,
    /// The price after.
    pub new: Price,
    /// Who changed it.
    pub by: ChangedBy,
    /// How many changes this stands for (at least 1): a change continuing the newest stored
    /// change of the same price by the same party within the same minute is merged into it
    /// (`old` stays the first old price, `new` becomes the latest), unless made by the operator
    /// or the config.
    pub changes: u32,
}

/// Which history rows to return: those whose time (for usage: the minute's start) lies in
/// `from_ms..until_ms`, optionally of one neighbor only, newest first, at most `limit`.
///
/// With a neighbor filter, price changes of our own ask (which concern no neighbor) are left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Earliest time included (Unix ms).
    pub from_ms: u64,
    /// First time excluded (Unix ms).
    pub until_ms: u64,
    /// Only rows of this neighbor.
    pub node: Option<NodeId>,
    /// At most this many rows.
    pub limit: u32,
}

impl Default for HistoryQuery {
    /// The newest 100 rows of all neighbors.
    fn default() -> Self {
        HistoryQuery { from_ms: 0, until_ms: u64::MAX, node: None, limit: 100 }
    }
}

impl HistoryQuery {
    /// The newest `limit` rows of all time and all neighbors.
    pub fn newest(limit: u32) -> HistoryQuery {
        HistoryQuery { limit, ..Default::default() }
    }

    /// Only rows in `from_ms..until_ms`.
    pub fn between(self, from_ms: u64, until_ms: u64) -> HistoryQuery {
        HistoryQuery { from_ms, until_ms, ..self }
    }

    /// Only rows of `node`.
    pub fn neighbor(self, node: NodeId) -> HistoryQuery {
        HistoryQuery { node: Some(node), ..self }
    }
}

/// The neighbor row id of each history record is resolved by the caller.
pub(crate) fn add_usage(tx: &Transaction<'_>, nid: i64, u: &UsageRecord) -> rusqlite::Result<()> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "INSERT INTO usage_minute (minute_ms, neighbor, bytes_in, bytes_out, earned, spent, disputed_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (minute_ms, neighbor) DO UPDATE SET \
             bytes_in = {U64_ADD}(bytes_in, excluded.bytes_in), bytes_out = {U64_ADD}(bytes_out, excluded.bytes_out), \
             earned = {U64_ADD}(earned, excluded.earned), spent = {U64_ADD}(spent, excluded.spent), \
             disputed_bytes = {U64_ADD}(disputed_bytes, excluded.disputed_bytes)"
        )
    });
    let minute = (u.at_ms - u.at_ms % MINUTE_MS) as i64;
    tx.prepare_cached(sql)?.execute(params![
        minute,
        nid,
        to_sql(u.bytes_in),
        to_sql(u.bytes_out),
        to_sql(u.earned.0),
        to_sql(u.spent.0),
        to_sql(u.disputed_bytes)
    ])?;
    Ok(())
}

fn same_minute(a_ms: u64, b_ms: u64) -> bool {
    a_ms / MINUTE_MS == b_ms / MINUTE_MS
}

pub(crate) fn add_payment(tx: &Transaction<'_>, nid: i64, p: &PaymentRecord) -> rusqlite::Result<()> {
    let dir = match p.direction {
        PaymentDirection::Sent => "sent",
        PaymentDirection::Received => "received",
    };
    let newest = tx
        .prepare_cached(
            "SELECT id, at_ms, cumulative_after, rail FROM payment WHERE neighbor = ?1 AND direction = ?2 \
             ORDER BY at_ms DESC, id DESC LIMIT 1",
        )?
        .query_row(params![nid, dir], |r| {
            Ok((r.get::<_, i64>(0)?, from_sql(r.get(1)?), from_sql(r.get(2)?), r.get::<_, String>(3)?))
        })
        .optional()?;
    if let Some((id, at_ms, after, rail)) = newest {
        if same_minute(at_ms, p.at_ms) && after == p.cumulative_before.0 && rail == p.rail {
            tx.prepare_cached(
                "UPDATE payment SET at_ms = max(at_ms, ?2), cumulative_after = ?3, notes = notes + ?4 WHERE id = ?1",
            )?
            .execute(params![id, p.at_ms as i64, to_sql(p.cumulative_after.0), p.notes])?;
            return Ok(());
        }
    }
    tx.prepare_cached(
        "INSERT INTO payment (at_ms, neighbor, direction, cumulative_before, cumulative_after, rail, notes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        p.at_ms as i64,
        nid,
        dir,
        to_sql(p.cumulative_before.0),
        to_sql(p.cumulative_after.0),
        p.rail,
        p.notes
    ])?;
    Ok(())
}

pub(crate) fn add_price_change(tx: &Transaction<'_>, nid: Option<i64>, c: &PriceChange) -> rusqlite::Result<()> {
    if c.by.merged() {
        let newest = tx
            .prepare_cached(
                "SELECT id, at_ms, new_price, changed_by FROM price_change WHERE neighbor IS ?1 AND subject = ?2 \
                 ORDER BY at_ms DESC, id DESC LIMIT 1",
            )?
            .query_row(params![nid, c.subject.name()], |r| {
                Ok((r.get::<_, i64>(0)?, from_sql(r.get(1)?), from_sql(r.get(2)?), r.get::<_, String>(3)?))
            })
            .optional()?;
        if let Some((id, at_ms, new, by)) = newest {
            if same_minute(at_ms, c.at_ms) && c.old == Some(Price(new)) && by == c.by.name() {
                tx.prepare_cached(
                    "UPDATE price_change SET at_ms = max(at_ms, ?2), new_price = ?3, changes = changes + ?4 \
                     WHERE id = ?1",
                )?
                .execute(params![id, c.at_ms as i64, to_sql(c.new.0), c.changes])?;
                return Ok(());
            }
        }
    }
    tx.prepare_cached(
        "INSERT INTO price_change (at_ms, neighbor, subject, old_price, new_price, changed_by, changes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        c.at_ms as i64,
        nid,
        c.subject.name(),
        c.old.map(|p| to_sql(p.0)),
        to_sql(c.new.0),
        c.by.name(),
        c.changes
    ])?;
    Ok(())
}

/// Delete up to `limit` rows older than `cutoff_ms` from each history table, oldest first.
/// Returns how many rows went.
pub(crate) fn prune(tx: &Transaction<'_>, cutoff_ms: i64, limit: u32) -> rusqlite::Result<usize> {
    let mut n = tx
        .prepare_cached(
            "DELETE FROM usage_minute WHERE (minute_ms, neighbor) IN \
             (SELECT minute_ms, neighbor FROM usage_minute WHERE minute_ms < ?1 ORDER BY minute_ms LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, limit])?;
    for table in ["payment", "price_change"] {
        n += tx
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)"
            ))?
            .execute(params![cutoff_ms, limit])?;
    }
    Ok(n)
}

/// Turns a row (its time and neighbor already decoded) into a `T`, or says why it cannot.
type Decode<T> = fn(&Row<'_>, u64, Option<NodeId>) -> rusqlite::Result<Result<T, String>>;

/// One history table as the queries see it. Each query selects the time, the neighbor's key
/// (NULL for our own ask) and then `columns`, which `decode` turns into a `T`.
pub(crate) struct Table<T> {
    name: &'static str,
    time: &'static str,
    columns: &'static str,
    /// Breaks ties between rows of the same time, newest (or highest neighbor row) first.
    tiebreak: &'static str,
    decode: Decode<T>,
}

pub(crate) const USAGE: Table<UsageMinute> = Table {
    name: "usage_minute",
    time: "minute_ms",
    columns: "bytes_in, bytes_out, earned, spent, disputed_bytes",
    tiebreak: "neighbor",
    decode: |r, minute_ms, node| {
        let u = |i| r.get::<_, i64>(i).map(from_sql);
        let Some(node) = node else { return Ok(Err("usage row without neighbor".into())) };
        Ok(Ok(UsageMinute {
            minute_ms,
            node,
            bytes_in: u(2)?,
            bytes_out: u(3)?,
            earned: Amount(u(4)?),
            spent: Amount(u(5)?),
            disputed_bytes: u(6)?,
        }))
    },
};

pub(crate) const PAYMENTS: Table<PaymentRecord> = Table {
    name: "payment",
    time: "at_ms",
    columns: "direction, cumulative_before, cumulative_after, rail, notes",
    tiebreak: "id",
    decode: |r, at_ms, node| {
        let Some(node) = node else { return Ok(Err("payment row without neighbor".into())) };
        let direction = match r.get_ref(2)?.as_str()? {
            "sent" => PaymentDirection::Sent,
            "received" => PaymentDirection::Received,
            other => return Ok(Err(format!("payment direction {other:?}"))),
        };
        Ok(Ok(PaymentRecord {
            at_ms,
            node,
            direction,
            cumulative_before: Amount(from_sql(r.get(3)?)),
            cumulative_after: Amount(from_sql(r.get(4)?)),
            rail: r.get(5)?,
            notes: r.get(6)?,
        }))
    },
};

pub(crate) const PRICE_CHANGES: Table<PriceChange> = Table {
    name: "price_change",
    time: "at_ms",
    columns: "subject, old_price, new_price, changed_by, changes",
    tiebreak: "id",
    decode: |r, at_ms, node| {
        let subject = r.get_ref(2)?.as_str()?;
        let Some(subject) = PriceSubject::parse(subject, node) else {
            return Ok(Err(format!("price change subject {subject:?} with neighbor {node:?}")));
        };
        let by = r.get_ref(5)?.as_str()?;
        let Some(by) = ChangedBy::parse(by) else { return Ok(Err(format!("price changed by {by:?}"))) };
        Ok(Ok(PriceChange {
            at_ms,
            subject,
            old: r.get::<_, Option<i64>>(3)?.map(|p| Price(from_sql(p))),
            new: Price(from_sql(r.get(4)?)),
            by,
            changes: r.get(6)?,
        }))
    },
};

/// Run `q` against `table`. `nid` is the row id of `q.node`, resolved by the caller; when
/// `q.node` is set but unknown to the store the caller returns nothing without asking.
pub(crate) fn query<T>(
    conn: &Connection,
    table: &Table<T>,
    q: &HistoryQuery,
    nid: Option<i64>,
) -> rusqlite::Result<Result<Vec<T>, String>> {
    let Table { name, time, columns, tiebreak, decode } = table;
    let filter = if nid.is_some() { "AND t.neighbor = ?4" } else { "AND ?4 IS NULL" };
    let sql = format!(
        "SELECT t.{time}, n.node, {columns} FROM {name} t LEFT JOIN neighbor n ON n.id = t.neighbor \
         WHERE t.{time} >= ?1 AND t.{time} < ?2 {filter} ORDER BY t.{time} DESC, t.{tiebreak} DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![bound_to_sql(q.from_ms), bound_to_sql(q.until_ms), q.limit, nid])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let time = from_sql(row.get(0)?);
        let node = match row.get_ref(1)?.as_blob_or_null()? {
            None => None,
            Some(b) => match node_from_blob(b) {
                Some(n) => Some(n),
                None => return Ok(Err(format!("{name}: neighbor key of {} bytes", b.len()))),
            },
        };
        match decode(row, time, node)? {
            Ok(v) => out.push(v),
            Err(e) => return Ok(Err(format!("{name}: {e}"))),
        }
    }
    Ok(Ok(out))
}
