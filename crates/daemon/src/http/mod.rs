//! The daemon's HTTP listener (axum on the I/O runtime): `GET /metrics` (Prometheus text) and
//! `GET /api/status` (the status as JSON), both read from the status the driver publishes after
//! each sample, so a reader never waits for the core and the core never waits for a reader.
//!
//! Listens on `127.0.0.1:7480` by default (`[http] listen`). A non-loopback address needs
//! `[http] token`; with a token set every request must carry `Authorization: Bearer <token>`.

pub mod metrics;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tollway_api::Status;

/// The status as of the driver's last sample (`None` until the first).
pub type View = watch::Receiver<Option<Arc<Status>>>;

#[derive(Clone)]
struct App {
    view: View,
    token: Option<Arc<str>>,
}

impl App {
    /// The current status, or the response that says why there is none to give.
    fn status(&self, headers: &HeaderMap) -> Result<Arc<Status>, Response> {
        if let Some(token) = &self.token {
            let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let ok = given.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|t| constant_time_eq(t, token));
            if !ok {
                return Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response());
            }
        }
        let s = self.view.borrow().clone();
        s.ok_or_else(|| (StatusCode::SERVICE_UNAVAILABLE, "starting: no sample yet\n").into_response())
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.status(&headers) {
        Ok(s) => (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            metrics::render(&s),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.status(&headers) {
        Ok(s) => axum::Json(s.as_ref().clone()).into_response(),
        Err(r) => r,
    }
}

/// The routes, for the server and for tests.
fn router(view: View, token: Option<String>) -> Router {
    let app = App { view, token: token.map(Arc::from) };
    Router::new().route("/metrics", get(metrics)).route("/api/status", get(status)).with_state(app)
}

/// Bind `listen` and serve in the background on the current runtime. A bind failure is returned
/// (naming the address) for the caller to log: the node goes on routing and billing without it.
pub async fn serve(listen: SocketAddr, token: Option<String>, view: View) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = router(view, token);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(%listen, error = %e, "the HTTP listener stopped");
        }
    });
    tracing::info!(%listen, "serving /metrics and /api/status");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn metrics_and_status_come_from_the_published_view_and_a_token_is_enforced() {
        let (tx, rx) = watch::channel(None);
        let (code, body) = get(router(rx.clone(), None), "/metrics", None).await;
        assert_eq!((code, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "starting: no sample yet\n"));
        let mut s = Status::default();
        s.node.uptime_secs = 7;
        tx.send_replace(Some(Arc::new(s)));
        let (code, body) = get(router(rx.clone(), None), "/metrics", None).await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("tollway_uptime_seconds 7"), "{body}");
        let (code, body) = get(router(rx.clone(), None), "/api/status", None).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(serde_json::from_str::<Status>(&body).unwrap().node.uptime_secs, 7);

        let with_token = || router(rx.clone(), Some("s3cret".into()));
        assert_eq!(get(with_token(), "/metrics", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(with_token(), "/metrics", Some("Bearer wrong!")).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get(with_token(), "/metrics", Some("Bearer s3cret")).await.0, StatusCode::OK);
        assert_eq!(get(with_token(), "/nothing", Some("Bearer s3cret")).await.0, StatusCode::NOT_FOUND);
    }
}
