//! Operator requests from the API, answered by the driver (which owns the core and the store).

use super::Driver;
use tollway_api::{Ledger, Reply, Request};
use tollway_core::market::{BidPolicy, Price};
use tollway_store::{HistoryQuery, OperatorSettings};

fn ok(v: impl serde::Serialize) -> Reply {
    Reply { ok: true, result: Some(serde_json::to_value(v).expect("replies serialize")), error: None }
}

fn refuse(e: impl std::fmt::Display) -> Reply {
    Reply { ok: false, result: None, error: Some(e.to_string()) }
}

impl Driver {
    pub(super) fn request(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => ok(crate::status::build_full(self)),
            Request::Routes => {
                let (routing, routes) = crate::status::routing(self);
                ok(tollway_api::Routes { routing, routes })
            }
            Request::PriceSet { ask, max_price, bid } => match self.set_prices(ask, max_price, bid) {
                Ok(()) => ok(crate::status::build(self).node.market),
                Err(e) => refuse(e),
            },
            Request::Payments { paused } => {
                let o = OperatorSettings { payments_paused: Some(paused), ..self.overrides };
                match self.store_overrides(o) {
                    Ok(()) => ok(crate::status::build(self).node.market),
                    Err(e) => refuse(e),
                }
            }
            Request::PriceReset => match self.store_overrides(OperatorSettings::default()) {
                Ok(()) => {
                    tracing::info!("settings changed at run time reset: the config file's apply");
                    ok(crate::status::build(self).node.market)
                }
                Err(e) => refuse(e),
            },
            Request::Ledger { neighbor, limit, since_ms } => match self.ledger(neighbor, limit, since_ms) {
                Ok(l) => ok(l),
                Err(e) => refuse(e),
            },
        }
    }

    /// Validate all three first, then apply: a refused request changes nothing.
    fn set_prices(
        &mut self,
        ask: Option<String>,
        max_price: Option<String>,
        bid: Option<String>,
    ) -> Result<(), String> {
        let c = self.currency.clone();
        let parse = |field: &str, t: &str| c.parse(t).map(Price).map_err(|e| format!("{field}: {e}"));
        let cfg = self.node.market_config().clone();
        let ask = ask.as_deref().map(|t| parse("ask", t)).transpose()?;
        let max_price = max_price.as_deref().map(|t| parse("max_price", t)).transpose()?.unwrap_or(cfg.max_price);
        let policy = match bid.as_deref().map(str::trim) {
            None => cfg.bid_policy,
            Some("ask") => BidPolicy::PayAsk,
            Some(t) => BidPolicy::Fixed(parse("bid", t).map_err(|e| format!("{e} (or \"ask\")"))?),
        };
        if let BidPolicy::Fixed(p) = policy {
            if p > max_price {
                return Err(format!("bid {} is above max_price {}", c.format(p.0), c.format(max_price.0)));
            }
        }
        if max_price != cfg.max_price || policy != cfg.bid_policy {
            tracing::info!(max_price = max_price.0, ?policy, "bidding changed by the operator");
        }
        let mut o = self.overrides;
        o.ask = ask.map(|a| a.0).or(o.ask);
        if max_price != cfg.max_price {
            o.max_price = Some(max_price.0);
        }
        if policy != cfg.bid_policy {
            o.bid = Some(match policy {
                BidPolicy::PayAsk => None,
                BidPolicy::Fixed(p) => Some(p.0),
            });
        }
        self.store_overrides(o)
    }

    /// Store the operator's run-time settings, then apply them (stored before used: a restart
    /// keeps what the operator was told took effect). A store that refuses changes nothing.
    fn store_overrides(&mut self, o: OperatorSettings) -> Result<(), String> {
        if let Err(e) = self.k.store.save_settings(&o) {
            tracing::error!(error = %e, "cannot store the operator's settings; not changed");
            return Err(format!("not changed: {e}"));
        }
        self.overrides = o;
        self.apply_overrides();
        Ok(())
    }

    /// Set the node's market settings to the config file's with the overrides on top.
    pub(super) fn apply_overrides(&mut self) {
        let (c, o) = (&self.config_market, self.overrides);
        let ask = Price(o.ask.unwrap_or(c.ask.0));
        let max_price = Price(o.max_price.unwrap_or(c.max_price.0));
        let policy = match o.bid {
            None => c.bid_policy,
            Some(None) => BidPolicy::PayAsk,
            Some(Some(p)) => BidPolicy::Fixed(Price(p)),
        };
        let paused = o.payments_paused.unwrap_or(c.payments_paused);
        let now = self.clock.now();
        let cur = self.node.market_config().clone();
        if cur.ask != ask {
            self.node.set_ask(now, ask);
        }
        if cur.max_price != max_price || cur.bid_policy != policy {
            self.node.set_bidding(now, max_price, policy);
        }
        if cur.payments_paused != paused {
            self.node.set_payments_paused(now, paused);
        }
        self.execute_actions();
    }

    /// The overrides as the operator reads them: `ask 0.001800 (config 0.002000)`.
    pub(crate) fn describe_overrides(&self) -> Vec<String> {
        let (c, o, cur) = (&self.config_market, self.overrides, &self.currency);
        let bid = |b: BidPolicy| match b {
            BidPolicy::PayAsk => "ask".to_owned(),
            BidPolicy::Fixed(p) => cur.format(p.0),
        };
        let mut out = Vec::new();
        if let Some(a) = o.ask {
            out.push(format!("ask {} (config {})", cur.format(a), cur.format(c.ask.0)));
        }
        if let Some(m) = o.max_price {
            out.push(format!("max_price {} (config {})", cur.format(m), cur.format(c.max_price.0)));
        }
        if let Some(b) = o.bid {
            let now = b.map_or(BidPolicy::PayAsk, |p| BidPolicy::Fixed(Price(p)));
            out.push(format!("bid {} (config {})", bid(now), bid(c.bid_policy)));
        }
        if let Some(p) = o.payments_paused {
            let word = |p: bool| if p { "paused" } else { "running" };
            out.push(format!("payments {} (config {})", word(p), word(c.payments_paused)));
        }
        out
    }

    fn ledger(&self, neighbor: Option<String>, limit: Option<u32>, since_ms: Option<u64>) -> Result<Ledger, String> {
        let mut q = HistoryQuery::newest(limit.unwrap_or(100).clamp(1, crate::readers::MAX_HISTORY_ROWS));
        if let Some(since) = since_ms {
            q = q.between(since, i64::MAX as u64);
        }
        if let Some(n) = &neighbor {
            let current: Vec<String> = self.node.neighbors().map(|n| n.id.to_string()).collect();
            q = q.neighbor(crate::readers::resolve_neighbor(n, &current)?);
        }
        let s = &self.k.store;
        let err = |e: tollway_store::StoreError| e.to_string();
        Ok(crate::readers::ledger(
            &self.currency,
            s.usage(&q).map_err(err)?,
            s.payments(&q).map_err(err)?,
            s.price_changes(&q).map_err(err)?,
        ))
    }
}
