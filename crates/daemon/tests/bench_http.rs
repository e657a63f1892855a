//! Scrape latency at 64 neighbors. Not run by `cargo test`; run with
//! `cargo test --release -p tollway-daemon --test bench_http -- --ignored --nocapture`
//! and see BENCHMARKS.md.
//!
//! The daemon's real HTTP listener (axum on a 2-thread runtime, as the daemon runs it) serves a
//! status of 64 connected neighbors (and 256 routes) and a ledger holding an hour of per-minute
//! usage and payments for each; curl, on loopback, makes the requests one after another on one
//! connection, as Prometheus and the dashboard do.

use std::process::Command;
use std::sync::Arc;
use tollway_api::{NeighborStatus, RouteStatus, Status};
use tollway_core::market::{Amount, Currency};
use tollway_core::NodeId;
use tollway_store::{Batch, HistoryReader, NeighborRecord, PaymentDirection, PaymentRecord, Store, UsageRecord};

const NEIGHBORS: u8 = 64;

fn status() -> Status {
    let mut s = Status::default();
    s.node.id = "ab".repeat(32);
    s.node.market.currency = "XTW".into();
    for i in 0..NEIGHBORS {
        s.neighbors.push(NeighborStatus {
            id: hex::encode([i + 1; 32]),
            mesh_ip: format!("fd00::{i}"),
            interface: format!("tw{i:012}"),
            state: "connected".into(),
            tunnel_up: true,
            bytes_in: 123_456_789 * i as u64,
            bytes_out: 98_765_432 * i as u64,
            session_secs: Some(3600),
            ask: Some("0.002000".into()),
            bid: Some("0.002000".into()),
            their_bid: Some("0.001000".into()),
            negotiation: "agreed".into(),
            balance: "0.012345".into(),
            paid_total: "12.345678".into(),
            received_total: "23.456789".into(),
            enforcement: "none".into(),
            billed_bytes_in: 123_000_000,
            billed_bytes_out: 98_000_000,
            ..NeighborStatus::default()
        });
        for r in 0..4 {
            s.routes.push(RouteStatus {
                prefix: format!("fd{i:02x}:{r}::/64"),
                via: Some(hex::encode([i + 1; 32])),
                interface: Some(format!("tw{i:012}")),
                next_hop: Some(format!("fe80::{i}")),
                metric: 256 + r,
                refmetric: Some(r),
                installed: r == 0,
                router_id: None,
                source: "babel".into(),
            });
        }
    }
    s
}

/// A ledger with an hour of usage (a row per neighbor per minute) and a payment per neighbor per
/// minute, ending now.
fn ledger(path: &std::path::Path) {
    let mut store = Store::open(path).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let start = now - 3_600_000;
    let mut b = Batch::new(start);
    for i in 0..NEIGHBORS {
        b.upsert(NeighborRecord::new(NodeId([i + 1; 32]), 1));
    }
    store.commit(&b).unwrap();
    for m in 0..60u64 {
        let at = start + m * 60_000;
        let mut b = Batch::new(at);
        for i in 0..NEIGHBORS {
            let node = NodeId([i + 1; 32]);
            b.usage(UsageRecord {
                at_ms: at,
                node,
                bytes_in: 10_000_000,
                bytes_out: 5_000_000,
                earned: Amount(20_000),
                spent: Amount(10_000),
                disputed_bytes: 0,
            });
            b.payment(PaymentRecord {
                at_ms: at,
                node,
                direction: PaymentDirection::Received,
                cumulative_before: Amount(m * 20_000),
                cumulative_after: Amount((m + 1) * 20_000),
                rail: "notes".into(),
                notes: 1,
            });
        }
        store.commit(&b).unwrap();
    }
}

fn percentiles(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize] * 1e3;
    format!("median {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})", p(0.5), p(0.99), p(1.0), v.len())
}

#[test]
#[ignore]
fn bench_scrape_latency_at_64_neighbors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    ledger(&path);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_view_tx, view) = tokio::sync::watch::channel(Some(Arc::new(status())));
    let (to_driver, _inputs) = std::sync::mpsc::channel();
    let currency = Currency { name: "XTW".into(), decimals: 6 };
    let readers =
        tollway_daemon::readers::Readers::new(view, Some(HistoryReader::open(&path).unwrap()), currency, to_driver);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    rt.block_on(tollway_daemon::http::serve(listen, None, readers, Default::default())).unwrap();
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 3_660_000;
    for (what, path, n) in [
        ("/metrics", "/metrics".to_owned(), 1000),
        ("/api/status", "/api/status".to_owned(), 1000),
        ("/api/chart (the dashboard's first load: an hour)", format!("/api/chart?since_ms={since}"), 200),
        ("/api/chart (the dashboard's poll: two minutes)", format!("/api/chart?since_ms={}", since + 3_540_000), 1000),
        ("/api/history (an hour of the ledger)", format!("/api/history?limit=10000&since_ms={since}"), 200),
    ] {
        let url = format!("http://127.0.0.1:{port}{path}{}n=[1-{n}]", if path.contains('?') { "&" } else { "?" });
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}\\n", &url])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut times = Vec::new();
        let mut size = 0;
        for l in text.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f[0], "200", "{l}");
            times.push(f[1].parse::<f64>().unwrap());
            size = f[2].parse::<u64>().unwrap();
        }
        println!("BENCH scrape at {NEIGHBORS} neighbors: {what}: {size} bytes, {}", percentiles(times));
    }
    println!(
        "BENCH dashboard page weight: {} bytes (page, script and style; uncompressed)",
        tollway_daemon::http::dashboard::page_weight()
    );
}
