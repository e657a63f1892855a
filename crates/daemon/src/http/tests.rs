use super::*;
use crate::driver::Input;
use axum::body::Body;
use axum::http::Request as HttpRequest;
use std::sync::Mutex;
use tokio::sync::watch;
use tollway_core::market::Currency;
use tower::ServiceExt;

/// A stand-in for the driver: answers every request with its own debug text, and records it.
fn fake_driver() -> (std::sync::mpsc::Sender<Input>, Arc<Mutex<Vec<Request>>>) {
    let (tx, rx) = std::sync::mpsc::channel::<Input>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        while let Ok(Input::Api { req, reply }) = rx.recv() {
            log.lock().unwrap().push(req.clone());
            let r = match &req {
                Request::PriceSet { ask: Some(a), .. } if a == "bad" => {
                    Reply { ok: false, result: None, error: Some("ask: not a number".into()) }
                }
                _ => Reply { ok: true, result: Some(serde_json::json!(format!("{req:?}"))), error: None },
            };
            let _ = reply.send(r);
        }
    });
    (tx, seen)
}

struct Fixture {
    view: watch::Sender<Option<Arc<Status>>>,
    readers: Readers,
    seen: Arc<Mutex<Vec<Request>>>,
}

fn fixture() -> Fixture {
    let (view, rx) = watch::channel(None);
    let (to_driver, seen) = fake_driver();
    let currency = Currency { name: "xDAI".into(), decimals: 18 };
    Fixture { view, readers: Readers::new(rx, None, currency, to_driver), seen }
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
    host: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    peer: Option<&'a str>,
    body: &'a str,
}

fn get_req(path: &str) -> Call<'_> {
    Call { method: "GET", path, host: "127.0.0.1:7480", headers: vec![], peer: Some("127.0.0.1:50000"), body: "" }
}

fn post_req<'a>(path: &'a str, body: &'a str) -> Call<'a> {
    Call {
        method: "POST",
        path,
        host: "127.0.0.1:7480",
        headers: vec![("content-type", "application/json"), ("origin", "http://127.0.0.1:7480")],
        peer: Some("127.0.0.1:50000"),
        body,
    }
}

async fn call(app: Router, c: Call<'_>) -> (StatusCode, String) {
    let mut req = HttpRequest::builder().method(c.method).uri(c.path).header(header::HOST, c.host);
    for (k, v) in &c.headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::from(c.body.to_owned())).unwrap();
    if let Some(p) = c.peer {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(p.parse().unwrap()));
    }
    let resp = app.oneshot(req).await.unwrap();
    let code = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn metrics_and_status_come_from_the_published_view_and_a_token_is_enforced() {
    let f = fixture();
    let app = || router(f.readers.clone(), None, Default::default());
    let (code, body) = call(app(), get_req("/metrics")).await;
    assert_eq!((code, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "starting: no sample yet\n"));
    let mut s = Status::default();
    s.node.uptime_secs = 7;
    f.view.send_replace(Some(Arc::new(s)));
    let (code, body) = call(app(), get_req("/metrics")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("tollway_uptime_seconds 7"), "{body}");
    let (code, body) = call(app(), get_req("/api/status")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Status>(&body).unwrap().node.uptime_secs, 7);

    let with_token = || router(f.readers.clone(), Some("s3cret-0123456789".into()), Default::default());
    let auth = |a: &'static str| Call { headers: vec![("authorization", a)], ..get_req("/metrics") };
    assert_eq!(call(with_token(), get_req("/metrics")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(with_token(), auth("Bearer wrong!")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(with_token(), auth("Bearer s3cret-0123456789")).await.0, StatusCode::OK);
    // With a token, any Host will do (the token is the proof).
    let remote = Call { host: "router.example:7480", ..auth("Bearer s3cret-0123456789") };
    assert_eq!(call(with_token(), remote).await.0, StatusCode::OK);
    assert_eq!(call(with_token(), Call { path: "/nothing", ..get_req("/") }).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let f = fixture();
    for (path, kind, needle) in [
        ("/", "text/html", "<table id=\"neighbors\">"),
        ("/dashboard.js", "text/javascript", "pollStatus"),
        ("/dashboard.css", "text/css", "svg.chart"),
    ] {
        let req = HttpRequest::get(path).header(header::HOST, "127.0.0.1:7480").body(Body::empty()).unwrap();
        let resp = router(f.readers.clone(), None, Default::default()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers().clone();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
        assert!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
    }
    // No asset reaches beyond this origin.
    let js = (include_str!("assets/dashboard.js").to_owned() + include_str!("assets/index.html"))
        .replace("\"http://www.w3.org/2000/svg\"", "SVG_NAMESPACE");
    assert!(!js.contains("http://") && !js.contains("https://") && !js.contains("innerHTML"));
}

#[tokio::test]
async fn a_rebound_host_reads_nothing_without_a_token() {
    let f = fixture();
    f.view.send_replace(Some(Arc::new(Status::default())));
    for host in ["127.0.0.1:7480", "localhost:7480", "[::1]:7480", "127.0.0.1"] {
        let (code, _) =
            call(router(f.readers.clone(), None, Default::default()), Call { host, ..get_req("/api/status") }).await;
        assert_eq!(code, StatusCode::OK, "{host}");
    }
    for host in ["evil.example:7480", "10.0.0.1:7480", "localhost.evil.example"] {
        let (code, body) =
            call(router(f.readers.clone(), None, Default::default()), Call { host, ..get_req("/api/status") }).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{host}: {body}");
    }
}

#[tokio::test]
async fn changes_need_the_loopback_origin_or_the_token_and_reach_the_driver() {
    let f = fixture();
    let app = || router(f.readers.clone(), None, Default::default());
    let (code, body) = call(app(), post_req("/api/price", r#"{"ask":"0.002","bid":"ask"}"#)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, _) = call(app(), post_req("/api/payments", r#"{"paused":true}"#)).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = call(app(), post_req("/api/price/reset", "")).await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = call(app(), post_req("/api/price", r#"{"ask":"bad"}"#)).await;
    assert_eq!((code, body.as_str()), (StatusCode::BAD_REQUEST, "ask: not a number\n"));
    assert_eq!(
        *f.seen.lock().unwrap(),
        vec![
            Request::PriceSet { ask: Some("0.002".into()), max_price: None, bid: Some("ask".into()) },
            Request::Payments { paused: true },
            Request::PriceReset,
            Request::PriceSet { ask: Some("bad".into()), max_price: None, bid: None },
        ]
    );

    // Refused, and never sent to the driver:
    let body = r#"{"ask":"0.001"}"#;
    let cross_site = Call {
        headers: vec![("content-type", "application/json"), ("origin", "http://evil.example")],
        ..post_req("/api/price", body)
    };
    let no_origin = Call { headers: vec![("content-type", "application/json")], ..post_req("/api/price", body) };
    let fetch_site = Call {
        headers: vec![
            ("content-type", "application/json"),
            ("origin", "http://127.0.0.1:7480"),
            ("sec-fetch-site", "cross-site"),
        ],
        ..post_req("/api/price", body)
    };
    let not_loopback = Call { peer: Some("192.0.2.7:40000"), ..post_req("/api/price", body) };
    let form = Call {
        headers: vec![("content-type", "application/x-www-form-urlencoded"), ("origin", "http://127.0.0.1:7480")],
        ..post_req("/api/price", "ask=0.001")
    };
    let unknown_field = post_req("/api/price", r#"{"ask":"0.001","steal":true}"#);
    let huge = "x".repeat(MAX_BODY + 1);
    let too_big = post_req("/api/price", &huge);
    for (what, c, want) in [
        ("cross-site origin", cross_site, StatusCode::FORBIDDEN),
        ("no origin", no_origin, StatusCode::FORBIDDEN),
        ("sec-fetch-site cross-site", fetch_site, StatusCode::FORBIDDEN),
        ("peer not on loopback", not_loopback, StatusCode::FORBIDDEN),
        ("a form post", form, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("an unknown field", unknown_field, StatusCode::UNPROCESSABLE_ENTITY),
        ("a body over the limit", too_big, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (code, body) = call(app(), c).await;
        assert_eq!(code, want, "{what}: {body}");
    }
    assert_eq!(f.seen.lock().unwrap().len(), 4, "no refused change reached the driver");

    // With a token: the bearer header is required, and enough (no Origin needed: curl, scripts).
    let with_token = || router(f.readers.clone(), Some("s3cret-0123456789".into()), Default::default());
    let (code, _) = call(with_token(), post_req("/api/payments", r#"{"paused":false}"#)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let bearer = Call {
        headers: vec![("content-type", "application/json"), ("authorization", "Bearer s3cret-0123456789")],
        peer: Some("192.0.2.7:40000"),
        host: "router.example:7480",
        ..post_req("/api/payments", r#"{"paused":false}"#)
    };
    assert_eq!(call(with_token(), bearer).await.0, StatusCode::OK);
    assert_eq!(f.seen.lock().unwrap().last(), Some(&Request::Payments { paused: false }));
}

#[tokio::test]
async fn history_without_a_ledger_says_so() {
    let f = fixture();
    let (code, body) = call(router(f.readers.clone(), None, Default::default()), get_req("/api/history?limit=5")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("not available"), "{body}");
}
