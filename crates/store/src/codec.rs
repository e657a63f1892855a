//! How Rust values map to SQLite columns.
//!
//! SQLite integers are signed 64-bit. Every `u64` (bytes, sequence numbers, money, counter
//! values and instances) is stored as the `i64` with the same bits: exact over the whole range,
//! and values below 2^63 (all realistic ones) read naturally in the `sqlite3` shell. Values from
//! 2^63 up look negative to SQL, so the store never compares, orders or sums such columns in
//! SQL; it sums per-minute usage with [`U64_ADD`], a saturating `u64` addition on the bits.
//!
//! Timestamps (Unix milliseconds) are the exception: they are ordered and compared in SQL for
//! range queries and pruning, so they must lie in `0..=i64::MAX` (until the year 292 million);
//! larger values are refused before anything is written.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::Connection;
use tollway_core::NodeId;

/// Name of the SQL function `tollway_u64_add(a, b)`: `a + b` on u64 bit patterns, saturating.
pub(crate) const U64_ADD: &str = "tollway_u64_add";

pub(crate) fn to_sql(v: u64) -> i64 {
    v as i64
}

pub(crate) fn from_sql(v: i64) -> u64 {
    v as u64
}

/// A timestamp as SQL can order it, or `None` when it is beyond `i64::MAX`.
pub(crate) fn time_to_sql(ms: u64) -> Option<i64> {
    i64::try_from(ms).ok()
}

/// A query bound: saturates instead of failing, since "until u64::MAX" means "until the end".
pub(crate) fn bound_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

pub(crate) fn node_from_blob(b: &[u8]) -> Option<NodeId> {
    <[u8; 32]>::try_from(b).ok().map(NodeId)
}

/// Register the store's SQL functions on a connection.
pub(crate) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        U64_ADD,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_DIRECTONLY,
        |ctx: &Context<'_>| {
            let a = from_sql(ctx.get::<i64>(0)?);
            let b = from_sql(ctx.get::<i64>(1)?);
            Ok(to_sql(a.saturating_add(b)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_bits_round_trip_at_the_extremes() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX] {
            assert_eq!(from_sql(to_sql(v)), v);
        }
    }

    #[test]
    fn sql_addition_is_u64_and_saturates() {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        let add = |a: u64, b: u64| -> u64 {
            from_sql(conn.query_row("SELECT tollway_u64_add(?1, ?2)", [to_sql(a), to_sql(b)], |r| r.get(0)).unwrap())
        };
        assert_eq!(add(2, 3), 5);
        assert_eq!(add(i64::MAX as u64, 1), i64::MAX as u64 + 1, "crosses 2^63 without turning into a float");
        assert_eq!(add(u64::MAX - 1, 1), u64::MAX);
        assert_eq!(add(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn timestamps_beyond_i64_are_refused_but_bounds_saturate() {
        assert_eq!(time_to_sql(i64::MAX as u64), Some(i64::MAX));
        assert_eq!(time_to_sql(i64::MAX as u64 + 1), None);
        assert_eq!(bound_to_sql(u64::MAX), i64::MAX);
    }
}
