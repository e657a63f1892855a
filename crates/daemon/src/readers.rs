//! What readers of the node's state (the operator API, the dashboard, metrics scrapes) use
//! instead of the driver: the status the driver publishes after each sample, and a read-only
//! connection to the ledger for history. Neither waits on the thread that owns the core, and
//! the core never waits on them.

use crate::driver::Input;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};
use tollway_api::{Chart, ChartSeries, Ledger, PaymentRow, PriceRow, Reply, Request, Status, UsageRow};
use tollway_core::market::Currency;
use tollway_core::NodeId;
use tollway_store::{
    ChangedBy, HistoryQuery, HistoryReader, PaymentDirection, PaymentRecord, PriceChange, PriceSubject, UsageMinute,
    MINUTE_MS,
};

/// The status as of the driver's last sample (`None` until the first).
pub type View = watch::Receiver<Option<Arc<Status>>>;

/// Most history rows one query returns.
pub const MAX_HISTORY_ROWS: u32 = 10_000;

/// Shared by every reader; cheap to clone.
#[derive(Clone)]
pub struct Readers {
    pub view: View,
    history: Option<Arc<Mutex<HistoryReader>>>,
    currency: Currency,
    to_driver: Sender<Input>,
}

impl Readers {
    /// `history` is `None` when the ledger could not be opened read-only: history queries are
    /// then answered by the driver (slower for it, but still answered).
    pub fn new(view: View, history: Option<HistoryReader>, currency: Currency, to_driver: Sender<Input>) -> Readers {
        Readers { view, history: history.map(|h| Arc::new(Mutex::new(h))), currency, to_driver }
    }

    /// The last published status.
    pub fn status(&self) -> Option<Arc<Status>> {
        self.view.borrow().clone()
    }

    /// Answer a request: `status` from the published status, `ledger` from the read-only ledger;
    /// changes, `routes` (a fresh dump of the router, which the driver owns) and a status asked
    /// for before the first sample go to the driver.
    pub async fn answer(&self, req: Request) -> Reply {
        match req {
            Request::Status => match self.status() {
                Some(s) => ok(s.as_ref()),
                None => self.ask_driver(Request::Status).await,
            },
            Request::Ledger { neighbor, limit, since_ms } if self.history.is_some() => {
                match self.ledger(neighbor, limit, since_ms).await {
                    Ok(l) => ok(l),
                    Err(e) => Reply { ok: false, result: None, error: Some(e) },
                }
            }
            other => self.ask_driver(other).await,
        }
    }

    /// Send `req` to the driver and wait for its reply.
    pub async fn ask_driver(&self, req: Request) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.to_driver.send(Input::Api { req, reply: tx }).is_err() {
            return Reply { ok: false, result: None, error: Some("daemon stopping".into()) };
        }
        rx.await.unwrap_or(Reply { ok: false, result: None, error: Some("daemon stopping".into()) })
    }

    /// Ledger history from the read-only connection, on a blocking thread.
    pub async fn ledger(
        &self,
        neighbor: Option<String>,
        limit: Option<u32>,
        since_ms: Option<u64>,
    ) -> Result<Ledger, String> {
        let Some(history) = self.history.clone() else {
            return Err("the ledger history is not available (see the daemon's log)".into());
        };
        let mut q = HistoryQuery::newest(limit.unwrap_or(100).clamp(1, MAX_HISTORY_ROWS));
        if let Some(since) = since_ms {
            q = q.between(since, i64::MAX as u64);
        }
        if let Some(n) = &neighbor {
            let known: Vec<String> =
                self.status().map(|s| s.neighbors.iter().map(|n| n.id.clone()).collect()).unwrap_or_default();
            q = q.neighbor(resolve_neighbor(n, &known)?);
        }
        let currency = self.currency.clone();
        tokio::task::spawn_blocking(move || {
            let h = history.lock().unwrap_or_else(|p| p.into_inner());
            let err = |e: tollway_store::StoreError| e.to_string();
            Ok(ledger(
                &currency,
                h.usage(&q).map_err(err)?,
                h.payments(&q).map_err(err)?,
                h.price_changes(&q).map_err(err)?,
            ))
        })
        .await
        .map_err(|e| format!("history query failed: {e}"))?
    }
}

/// Most minutes one chart query covers (a day).
pub const MAX_CHART_MINUTES: u64 = 1440;

impl Readers {
    /// Per-neighbor figures per minute from `since_ms` (at most [`MAX_CHART_MINUTES`] back) to
    /// now, from the read-only ledger.
    pub async fn chart(&self, since_ms: Option<u64>, now_ms: u64) -> Result<Chart, String> {
        let Some(history) = self.history.clone() else {
            return Err("the ledger history is not available (see the daemon's log)".into());
        };
        let last = now_ms / MINUTE_MS * MINUTE_MS;
        let oldest = last.saturating_sub((MAX_CHART_MINUTES - 1) * MINUTE_MS);
        let first = since_ms.unwrap_or(last.saturating_sub(60 * MINUTE_MS)).max(oldest) / MINUTE_MS * MINUTE_MS;
        let balances: Vec<(String, String)> = self
            .status()
            .map(|s| s.neighbors.iter().map(|n| (n.id.clone(), n.balance.clone())).collect())
            .unwrap_or_default();
        let currency = self.currency.clone();
        tokio::task::spawn_blocking(move || {
            let q = HistoryQuery::newest(u32::MAX).between(first, last + MINUTE_MS - 1);
            let h = history.lock().unwrap_or_else(|p| p.into_inner());
            let err = |e: tollway_store::StoreError| e.to_string();
            let usage = h.usage(&q).map_err(err)?;
            let payments = h.payments(&q).map_err(err)?;
            drop(h);
            Ok(chart(&currency, first, last, &usage, &payments, &balances))
        })
        .await
        .map_err(|e| format!("chart query failed: {e}"))?
    }
}

/// The chart from history rows (see [`Chart`]); `balances` are the current ones by neighbor id.
pub fn chart(
    c: &Currency,
    first: u64,
    last: u64,
    usage: &[UsageMinute],
    payments: &[PaymentRecord],
    balances: &[(String, String)],
) -> Chart {
    let minutes: Vec<u64> = (first..=last).step_by(MINUTE_MS as usize).collect();
    let n = minutes.len();
    let slot = |t: u64| (t >= first && t < last + MINUTE_MS).then(|| ((t - first) / MINUTE_MS) as usize);
    let unit = 10f64.powi(c.decimals as i32);
    // Per neighbor: bytes in/out, earned, spent, payments received/sent (smallest units).
    struct Acc {
        bin: Vec<u64>,
        bout: Vec<u64>,
        earned: Vec<u64>,
        spent: Vec<u64>,
        got: Vec<u64>,
        sent: Vec<u64>,
    }
    let mut by: std::collections::BTreeMap<String, Acc> = Default::default();
    let new = || Acc {
        bin: vec![0; n],
        bout: vec![0; n],
        earned: vec![0; n],
        spent: vec![0; n],
        got: vec![0; n],
        sent: vec![0; n],
    };
    for u in usage {
        if let Some(i) = slot(u.minute_ms) {
            let a = by.entry(u.node.to_string()).or_insert_with(new);
            a.bin[i] = a.bin[i].saturating_add(u.bytes_in);
            a.bout[i] = a.bout[i].saturating_add(u.bytes_out);
            a.earned[i] = a.earned[i].saturating_add(u.earned.0);
            a.spent[i] = a.spent[i].saturating_add(u.spent.0);
        }
    }
    for p in payments {
        if let Some(i) = slot(p.at_ms) {
            let a = by.entry(p.node.to_string()).or_insert_with(new);
            let amount = p.cumulative_after.0.saturating_sub(p.cumulative_before.0);
            match p.direction {
                PaymentDirection::Sent => a.sent[i] = a.sent[i].saturating_add(amount),
                PaymentDirection::Received => a.got[i] = a.got[i].saturating_add(amount),
            }
        }
    }
    let neighbors = by
        .into_iter()
        .map(|(id, a)| {
            let current = balances.iter().find(|(b, _)| *b == id).and_then(|(_, v)| v.trim().parse::<f64>().ok());
            let balance = match current {
                None => Vec::new(),
                Some(now) => {
                    // Back from now: each minute's change is earned - spent - received + sent.
                    let mut out = vec![0.0; n];
                    let mut b = now;
                    for i in (0..n).rev() {
                        out[i] = b;
                        let delta = a.earned[i] as i128 - a.spent[i] as i128 - a.got[i] as i128 + a.sent[i] as i128;
                        b -= delta as f64 / unit;
                    }
                    out
                }
            };
            ChartSeries {
                id,
                earned: a.earned.iter().map(|v| *v as f64 / unit).collect(),
                spent: a.spent.iter().map(|v| *v as f64 / unit).collect(),
                bytes_in: a.bin,
                bytes_out: a.bout,
                balance,
            }
        })
        .collect();
    Chart { currency: c.name.clone(), minutes, neighbors }
}

fn ok(v: impl serde::Serialize) -> Reply {
    Reply { ok: true, result: Some(serde_json::to_value(v).expect("replies serialize")), error: None }
}

/// A neighbor given by full id or by a unique prefix of a current neighbor's id.
pub fn resolve_neighbor(text: &str, current: &[String]) -> Result<NodeId, String> {
    if let Ok(id) = text.parse::<NodeId>() {
        return Ok(id);
    }
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Err("an empty neighbor id".into());
    }
    let mut found = current.iter().filter(|id| id.starts_with(&t));
    match (found.next(), found.next()) {
        (Some(id), None) => id.parse().map_err(|_| format!("bad neighbor id {id:?}")),
        (None, _) => Err(format!("no current neighbor's id starts with {text:?}")),
        (Some(_), Some(_)) => Err(format!("{text:?} matches several neighbors; give more digits")),
    }
}

/// History rows as the API gives them (amounts as decimal strings in `c`).
pub fn ledger(c: &Currency, usage: Vec<UsageMinute>, payments: Vec<PaymentRecord>, prices: Vec<PriceChange>) -> Ledger {
    Ledger {
        currency: c.name.clone(),
        usage: usage
            .into_iter()
            .map(|u| UsageRow {
                minute_unix_ms: u.minute_ms,
                neighbor: u.node.to_string(),
                bytes_in: u.bytes_in,
                bytes_out: u.bytes_out,
                earned: c.format(u.earned.0),
                spent: c.format(u.spent.0),
                disputed_bytes: u.disputed_bytes,
            })
            .collect(),
        payments: payments
            .into_iter()
            .map(|p| PaymentRow {
                unix_ms: p.at_ms,
                neighbor: p.node.to_string(),
                direction: match p.direction {
                    PaymentDirection::Sent => "sent",
                    PaymentDirection::Received => "received",
                }
                .into(),
                amount: c.format(p.cumulative_after.0.saturating_sub(p.cumulative_before.0)),
                cumulative: c.format(p.cumulative_after.0),
                rail: p.rail,
                notes: p.notes,
            })
            .collect(),
        prices: prices
            .into_iter()
            .map(|p| {
                let (what, n) = match p.subject {
                    PriceSubject::OurAsk => ("our_ask", None),
                    PriceSubject::OurBid(n) => ("our_bid", Some(n)),
                    PriceSubject::TheirAsk(n) => ("their_ask", Some(n)),
                    PriceSubject::TheirBid(n) => ("their_bid", Some(n)),
                };
                PriceRow {
                    unix_ms: p.at_ms,
                    what: what.into(),
                    neighbor: n.map(|n| n.to_string()),
                    old: p.old.map(|o| c.format(o.0)),
                    new: c.format(p.new.0),
                    by: match p.by {
                        ChangedBy::Operator => "operator",
                        ChangedBy::Config => "config",
                        ChangedBy::Automatic => "automatic",
                        ChangedBy::Neighbor => "neighbor",
                    }
                    .into(),
                    changes: p.changes,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollway_core::market::Amount;

    #[test]
    fn the_chart_puts_each_row_in_its_minute_and_works_the_balance_back_from_now() {
        let c = Currency { name: "XTW".into(), decimals: 6 };
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let m = |k: u64| 600 * MINUTE_MS + k * MINUTE_MS;
        let usage = |node, k, bin, earned, spent| UsageMinute {
            minute_ms: m(k),
            node,
            bytes_in: bin,
            bytes_out: 2 * bin,
            earned: Amount(earned),
            spent: Amount(spent),
            disputed_bytes: 0,
        };
        let rows = vec![usage(a, 0, 100, 3_000_000, 0), usage(a, 2, 50, 1_000_000, 500_000), usage(b, 1, 7, 0, 0)];
        let pay = PaymentRecord {
            at_ms: m(2) + 30_000,
            node: a,
            direction: PaymentDirection::Received,
            cumulative_before: Amount(1_000_000),
            cumulative_after: Amount(3_000_000),
            rail: "notes".into(),
            notes: 2,
        };
        // A row before the window is left out.
        let old = usage(a, 0, 999, 0, 0);
        let old = UsageMinute { minute_ms: m(0) - MINUTE_MS, ..old };
        let mut all = rows.clone();
        all.push(old);
        let balances = vec![(a.to_string(), "1.500000".to_owned())];
        let ch = chart(&c, m(0), m(2), &all, &[pay], &balances);
        assert_eq!(ch.minutes, vec![m(0), m(1), m(2)]);
        let sa = ch.neighbors.iter().find(|s| s.id == a.to_string()).unwrap();
        assert_eq!(sa.bytes_in, vec![100, 0, 50]);
        assert_eq!(sa.bytes_out, vec![200, 0, 100]);
        assert_eq!(sa.earned, vec![3.0, 0.0, 1.0]);
        assert_eq!(sa.spent, vec![0.0, 0.0, 0.5]);
        // Now 1.5; minute 2 changed it by +1 - 0.5 - 2 (received) = -1.5: 3.0 at the end of
        // minute 1 and 0; minute 0 added 3: 0 before.
        assert_eq!(sa.balance, vec![3.0, 3.0, 1.5]);
        let sb = ch.neighbors.iter().find(|s| s.id == b.to_string()).unwrap();
        assert_eq!(sb.bytes_in, vec![0, 7, 0]);
        assert!(sb.balance.is_empty(), "not a neighbor now: no balance to work back from");
    }
}
