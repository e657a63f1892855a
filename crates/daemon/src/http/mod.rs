//! The daemon's HTTP listener (axum on the I/O runtime): the operator's dashboard at `/`, its
//! JSON API under `/api/`, and `GET /metrics` (Prometheus text). Reads come from the status the
//! driver publishes after each sample and from a read-only ledger connection ([`Readers`]), so
//! a reader never waits for the core and the core never waits for a reader. Changes (prices,
//! bid, payment pause) go to the driver like `tollway price`.
//!
//! Listens on `127.0.0.1:7480` by default (`[http] listen`). A non-loopback address needs
//! `[http] token`. Who may do what:
//! - With a token, every request under `/api/` and `/metrics` must carry
//!   `Authorization: Bearer <token>` (the page asks for it once and keeps it for the tab). A
//!   browser never adds that header by itself, so another site cannot make changes through it.
//! - Without a token (loopback only), reads need a loopback `Host` (so that a web page whose
//!   name was rebound to 127.0.0.1 reads nothing), and changes also need the request to come
//!   from loopback with an `Origin` equal to the listener's own (a cross-site form or script
//!   cannot forge it) and a JSON body (which another origin cannot send without a preflight
//!   that we never grant).

pub mod dashboard;
pub mod metrics;

use crate::readers::Readers;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tollway_api::{Reply, Request, Status};

pub use crate::readers::View;

/// Largest request body accepted (a price change is well under 200 bytes).
const MAX_BODY: usize = 4096;

#[derive(Clone)]
struct App {
    readers: Readers,
    health: crate::health::Health,
    token: Option<Arc<str>>,
}

fn refuse(code: StatusCode, why: &str) -> Response {
    (code, [(header::CACHE_CONTROL, "no-store")], format!("{why}\n")).into_response()
}

/// `Host` names a loopback address (with any port).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl App {
    /// May this request read?
    fn may_read(&self, headers: &HeaderMap) -> Result<(), Response> {
        match &self.token {
            Some(token) => {
                let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                let ok = given.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|t| constant_time_eq(t, token));
                if ok {
                    Ok(())
                } else {
                    Err(refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
                }
            }
            None if loopback_host(headers) => Ok(()),
            None => {
                Err(refuse(StatusCode::FORBIDDEN, "Host is not a loopback address (set [http] token to serve others)"))
            }
        }
    }

    /// May this request change settings? (See the module's documentation.)
    fn may_change(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), Response> {
        self.may_read(headers)?;
        if self.token.is_some() {
            return Ok(());
        }
        if !peer.is_some_and(|p| p.ip().is_loopback()) {
            return Err(refuse(StatusCode::FORBIDDEN, "changes without the token must come from loopback"));
        }
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if origin != Some(format!("http://{host}").as_str()) {
            return Err(refuse(StatusCode::FORBIDDEN, "cross-origin or Origin-less change refused"));
        }
        if headers.get("sec-fetch-site").is_some_and(|v| v != "same-origin") {
            return Err(refuse(StatusCode::FORBIDDEN, "cross-site change refused"));
        }
        Ok(())
    }

    fn status(&self, headers: &HeaderMap) -> Result<Arc<Status>, Response> {
        self.may_read(headers)?;
        self.readers.status().ok_or_else(|| refuse(StatusCode::SERVICE_UNAVAILABLE, "starting: no sample yet"))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.status(&headers) {
        Ok(s) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            metrics::render(&s, &app.health),
        )
            .into_response(),
        Err(r) => r,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(v)).into_response()
}

async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.status(&headers) {
        Ok(s) => json(s.as_ref()),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct HistoryParams {
    since_ms: Option<u64>,
    limit: Option<u32>,
    neighbor: Option<String>,
}

/// `GET /api/history?since_ms=&limit=&neighbor=`: the ledger's history (as `tollway ledger`).
async fn history(State(app): State<App>, headers: HeaderMap, Query(p): Query<HistoryParams>) -> Response {
    if let Err(r) = app.may_read(&headers) {
        return r;
    }
    match app.readers.ledger(p.neighbor, p.limit, p.since_ms).await {
        Ok(l) => json(&l),
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e),
    }
}

#[derive(Deserialize)]
struct ChartParams {
    since_ms: Option<u64>,
}

/// `GET /api/chart?since_ms=`: per-neighbor figures per minute (default: the last hour).
async fn chart(State(app): State<App>, headers: HeaderMap, Query(p): Query<ChartParams>) -> Response {
    if let Err(r) = app.may_read(&headers) {
        return r;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    match app.readers.chart(p.since_ms, now.as_millis() as u64).await {
        Ok(c) => json(&c),
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e),
    }
}

/// A change, answered like the unix API: 200 with the market settings, or 400 with why.
async fn change(app: &App, headers: &HeaderMap, peer: Option<SocketAddr>, req: Request) -> Response {
    if let Err(r) = app.may_change(headers, peer) {
        return r;
    }
    let what = format!("{req:?}");
    match app.readers.ask_driver(req).await {
        Reply { ok: true, result, .. } => {
            tracing::info!(request = %what, "changed through the dashboard");
            json(&result)
        }
        Reply { error, .. } => refuse(StatusCode::BAD_REQUEST, error.as_deref().unwrap_or("refused")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    ask: Option<String>,
    bid: Option<String>,
    max_price: Option<String>,
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn peer(p: Peer) -> Option<SocketAddr> {
    p.map(|Extension(ConnectInfo(a))| a)
}

async fn set_price(State(app): State<App>, p: Peer, headers: HeaderMap, Json(b): Json<PriceBody>) -> Response {
    let req = Request::PriceSet { ask: b.ask, max_price: b.max_price, bid: b.bid };
    change(&app, &headers, peer(p), req).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentsBody {
    paused: bool,
}

async fn set_payments(State(app): State<App>, p: Peer, headers: HeaderMap, Json(b): Json<PaymentsBody>) -> Response {
    change(&app, &headers, peer(p), Request::Payments { paused: b.paused }).await
}

async fn reset(State(app): State<App>, p: Peer, headers: HeaderMap) -> Response {
    change(&app, &headers, peer(p), Request::PriceReset).await
}

/// The routes, for the server and for tests.
fn router(readers: Readers, token: Option<String>, health: crate::health::Health) -> Router {
    let app = App { readers, health, token: token.map(Arc::from) };
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/history", get(history))
        .route("/api/chart", get(chart))
        .route("/api/price", post(set_price))
        .route("/api/payments", post(set_payments))
        .route("/api/price/reset", post(reset))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Bind `listen` and serve in the background on the current runtime. A bind failure is returned
/// (naming the address) for the caller to log: the node goes on routing and billing without it.
pub async fn serve(
    listen: SocketAddr,
    token: Option<String>,
    readers: Readers,
    health: crate::health::Health,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = router(readers, token, health).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(%listen, error = %e, "the HTTP listener stopped");
        }
    });
    tracing::info!(%listen, "serving the dashboard, /api/ and /metrics");
    Ok(())
}

#[cfg(test)]
mod tests;
