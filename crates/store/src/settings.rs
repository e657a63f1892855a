//! The operator's settings changed at run time (`tollway price set`, `tollway payments pause`):
//! kept in the store so that a restart does not undo them. They override the config file until
//! the operator resets them (`tollway price reset`).

use crate::codec::{from_sql, to_sql};
use crate::error::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// Run-time overrides of the config's market settings; `None` follows the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorSettings {
    /// Our ask, in units per MB.
    pub ask: Option<u64>,
    /// The most we pay per MB, in units.
    pub max_price: Option<u64>,
    /// Our bid: `Some(None)` pays each neighbor's ask, `Some(Some(p))` bids `p` units per MB.
    pub bid: Option<Option<u64>>,
    /// Outgoing payments paused (`true`) or resumed (`false`) by the operator.
    pub payments_paused: Option<bool>,
}

impl OperatorSettings {
    /// Whether nothing overrides the config.
    pub fn is_empty(&self) -> bool {
        *self == OperatorSettings::default()
    }
}

/// Names of the rows of table `setting` (its CHECK constraint lists the same).
const ASK: &str = "ask";
const MAX_PRICE: &str = "max_price";
const BID_FIXED: &str = "bid_fixed";
const BID_PAYS_ASK: &str = "bid_pays_ask";
const PAYMENTS_PAUSED: &str = "payments_paused";

pub(crate) fn load(conn: &Connection, path: &Path) -> Result<OperatorSettings, StoreError> {
    let err = StoreError::sqlite;
    let mut stmt =
        conn.prepare_cached("SELECT name, value FROM setting").map_err(err("loading settings from", path))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(err("loading settings from", path))?;
    let mut s = OperatorSettings::default();
    for row in rows {
        let (name, value) = row.map_err(err("loading settings from", path))?;
        match name.as_str() {
            ASK => s.ask = Some(from_sql(value)),
            MAX_PRICE => s.max_price = Some(from_sql(value)),
            BID_FIXED => s.bid = Some(Some(from_sql(value))),
            BID_PAYS_ASK => s.bid = Some(None),
            PAYMENTS_PAUSED => s.payments_paused = Some(value != 0),
            other => {
                return Err(StoreError::Corrupt { path: path.to_owned(), what: format!("unknown setting {other:?}") })
            }
        }
    }
    Ok(s)
}

/// Replace every stored setting with `s`, in one transaction.
pub(crate) fn save(conn: &mut Connection, path: &Path, s: &OperatorSettings) -> Result<(), StoreError> {
    let err = StoreError::sqlite;
    let tx = conn.transaction().map_err(err("saving settings to", path))?;
    tx.execute("DELETE FROM setting", []).map_err(err("saving settings to", path))?;
    let mut rows: Vec<(&str, i64)> = Vec::new();
    if let Some(a) = s.ask {
        rows.push((ASK, to_sql(a)));
    }
    if let Some(m) = s.max_price {
        rows.push((MAX_PRICE, to_sql(m)));
    }
    match s.bid {
        Some(Some(b)) => rows.push((BID_FIXED, to_sql(b))),
        Some(None) => rows.push((BID_PAYS_ASK, 1)),
        None => {}
    }
    if let Some(p) = s.payments_paused {
        rows.push((PAYMENTS_PAUSED, p as i64));
    }
    for (name, value) in rows {
        tx.execute("INSERT INTO setting (name, value) VALUES (?1, ?2)", rusqlite::params![name, value])
            .map_err(err("saving settings to", path))?;
    }
    tx.commit().map_err(err("saving settings to", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn settings_survive_reopening_and_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        {
            let mut store = Store::open(&path).unwrap();
            assert!(store.settings().unwrap().is_empty(), "nothing stored: the config rules");
            let s = OperatorSettings {
                ask: Some(1800),
                max_price: Some(u64::MAX),
                bid: Some(None),
                payments_paused: Some(true),
            };
            store.save_settings(&s).unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let s = store.settings().unwrap();
        assert_eq!(
            s,
            OperatorSettings {
                ask: Some(1800),
                max_price: Some(u64::MAX),
                bid: Some(None),
                payments_paused: Some(true)
            }
        );
        let fixed = OperatorSettings { bid: Some(Some(4000)), ..OperatorSettings::default() };
        store.save_settings(&fixed).unwrap();
        assert_eq!(store.settings().unwrap(), fixed, "the rest was reset");
        store.save_settings(&OperatorSettings::default()).unwrap();
        assert!(store.settings().unwrap().is_empty());
    }
}
