//! What readers of the node's state (the operator API, the dashboard, metrics scrapes) use
//! instead of the driver: the status the driver publishes after each sample, and a read-only
//! connection to the ledger for history. Neither waits on the thread that owns the core, and
//! the core never waits on them.

use crate::driver::Input;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};
use tollway_api::{Ledger, PaymentRow, PriceRow, Reply, Request, Status, UsageRow};
use tollway_core::market::Currency;
use tollway_core::NodeId;
use tollway_store::{
    ChangedBy, HistoryQuery, HistoryReader, PaymentDirection, PaymentRecord, PriceChange, PriceSubject, UsageMinute,
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

    /// Answer a request: reads from the published status and the read-only ledger; changes (and
    /// a status asked for before the first sample) go to the driver.
    pub async fn answer(&self, req: Request) -> Reply {
        match req {
            Request::Status => match self.status() {
                Some(s) => ok(s.as_ref()),
                None => self.ask_driver(Request::Status).await,
            },
            Request::Routes => match self.status() {
                Some(s) => ok(tollway_api::Routes { routing: s.routing.clone(), routes: s.routes.clone() }),
                None => self.ask_driver(Request::Routes).await,
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
    pub async fn ledger(&self, neighbor: Option<String>, limit: Option<u32>, since_ms: Option<u64>) -> Result<Ledger, String> {
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
            Ok(ledger(&currency, h.usage(&q).map_err(err)?, h.payments(&q).map_err(err)?, h.price_changes(&q).map_err(err)?))
        })
        .await
        .map_err(|e| format!("history query failed: {e}"))?
    }
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
