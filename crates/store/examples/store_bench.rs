//! Measures what the daemon will ask of the store: commit latency of one sampling tick for 1 and
//! 64 neighbors with `synchronous=FULL`, and how fast history grows at 64 busy neighbors.
//!
//! `cargo run --release -p tollway-store --example store_bench [-- DIR [TICKS]]`
//!
//! DIR must be on the disk the daemon will use (default: a temporary directory under $TMPDIR);
//! TICKS is the number of measured commits per case (default 2000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tollway_core::market::{Amount, Price};
use tollway_core::NodeId;
use tollway_store::{
    Batch, ChangedBy, HistoryQuery, IssuedNote, NeighborRecord, PaymentDirection, PaymentRecord, PriceChange,
    PriceSubject, Store, StoreOptions, UsageRecord, MINUTE_MS,
};

const T0: u64 = 1_700_000_040_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

fn node(i: usize) -> NodeId {
    let mut b = [0x5au8; 32];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    NodeId(b)
}

/// One sampling tick: every neighbor's state changes, each gets usage; every tenth tick a
/// neighbor pays or is paid (a fresh 200-byte note).
fn tick(records: &mut [NeighborRecord], t: u64, now: u64) -> Batch {
    let mut b = Batch::new(now);
    for (i, r) in records.iter_mut().enumerate() {
        r.updated_ms = now;
        r.ledger.inbound.add(1_250_000, Price(2000), Price(3000));
        r.ledger.outbound.add(900_000, Price(3000), Price(2000));
        r.rx_counter.value += 1_250_000;
        r.tx_counter.value += 900_000;
        b.usage(UsageRecord {
            at_ms: now,
            node: r.node,
            bytes_in: 1_250_000,
            bytes_out: 900_000,
            earned: Amount(5),
            spent: Amount(4),
            disputed_bytes: 0,
        });
        if (t + i as u64) % 10 == 9 {
            let before = r.ledger.paid;
            r.ledger.paid = Amount(before.0 + 20);
            r.payment.issued =
                Some(IssuedNote { cumulative: r.ledger.paid, note: vec![t as u8; 200], acknowledged: false });
            b.payment(PaymentRecord {
                at_ms: now,
                node: r.node,
                direction: PaymentDirection::Sent,
                cumulative_before: before,
                cumulative_after: r.ledger.paid,
                rail: "notes".into(),
                notes: 1,
            });
        }
        b.upsert(r.clone());
    }
    b
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latency(dir: &Path, neighbors: usize, ticks: usize) {
    let path = dir.join(format!("latency-{neighbors}.db"));
    let mut store = Store::open(&path).unwrap();
    let mut records: Vec<_> = (0..neighbors).map(|i| NeighborRecord::new(node(i), T0)).collect();
    measure(&mut store, &mut records, T0, ticks, &format!("{neighbors:2} neighbors, empty store"));
}

/// Commit `ticks` sampling ticks (after 50 unmeasured ones) starting at `start` and print the
/// latency distribution.
fn measure(store: &mut Store, records: &mut [NeighborRecord], start: u64, ticks: usize, label: &str) {
    let mut times = Vec::with_capacity(ticks);
    for t in 0..(ticks + 50) as u64 {
        let batch = tick(records, t, start + t * 1000);
        let begin = Instant::now();
        store.commit(&batch).unwrap();
        if t >= 50 {
            times.push(begin.elapsed());
        }
    }
    times.sort();
    println!(
        "commit, {label}: p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  max {:.2?}  ({ticks} commits)",
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
}

fn file_size(store: &Store) -> u64 {
    store.checkpoint().unwrap();
    std::fs::metadata(store.path()).unwrap().len()
}

/// One simulated day of history at 64 busy and hostile neighbors, committed one minute per batch
/// (the rows are the same as with one commit per second: usage is summed per minute, payments
/// and price changes merge per minute).
fn day(store: &mut Store, records: &mut [NeighborRecord], day: u64) {
    for m in 0..1440 {
        let now = T0 + day * DAY_MS + m * MINUTE_MS;
        let mut b = Batch::new(now);
        for (i, r) in records.iter().enumerate() {
            b.usage(UsageRecord {
                at_ms: now,
                node: r.node,
                bytes_in: 75_000_000 + m,
                bytes_out: 54_000_000 + m,
                earned: Amount(300 + m),
                spent: Amount(200 + i as u64),
                disputed_bytes: 0,
            });
            // A busy neighbor: a payment each way at every one-second tick (a payer over its
            // threshold pays at every sample); they merge into one row per minute each way.
            for direction in [PaymentDirection::Sent, PaymentDirection::Received] {
                for s in 0..60 {
                    let c = ((day * 1440 + m) * 60 + s) * 1000;
                    b.payment(PaymentRecord {
                        at_ms: now + s * 1000,
                        node: r.node,
                        direction,
                        cumulative_before: Amount(c),
                        cumulative_after: Amount(c + 1000),
                        rail: "notes".into(),
                        notes: 1,
                    });
                }
            }
            // And a hostile one: it flips its ask every second (one row per minute too).
            for s in 0..60 {
                b.price_change(PriceChange {
                    at_ms: now + s * 1000,
                    subject: PriceSubject::TheirAsk(r.node),
                    old: Some(Price(2000 + (s + 1) % 2)),
                    new: Price(2000 + s % 2),
                    by: ChangedBy::Neighbor,
                    changes: 1,
                });
            }
        }
        for r in records.iter_mut() {
            r.updated_ms = now;
            b.upsert(r.clone());
        }
        store.commit(&b).unwrap();
    }
}

fn growth(dir: &Path) {
    let path = dir.join("growth.db");
    let mut store = Store::open(&path).unwrap();
    let mut records: Vec<_> = (0..64).map(|i| NeighborRecord::new(node(i), T0)).collect();
    let empty = file_size(&store);
    day(&mut store, &mut records, 0);
    let one = file_size(&store);
    day(&mut store, &mut records, 1);
    let two = file_size(&store);
    println!(
        "growth, 64 busy neighbors: {:.1} MiB per day (day 1: {:.1} MiB, day 2: {:.1} MiB; per day \
         11,059,200 notes and 5,529,600 price changes, stored as 92,160 usage rows, 184,320 payment \
         rows, 92,160 price change rows)",
        (two - one) as f64 / 1048576.0,
        (one - empty) as f64 / 1048576.0,
        (two - one) as f64 / 1048576.0,
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).unwrap();
    for row in rows {
        let (name, bytes) = row.unwrap();
        println!("    {name:26} {:>7.1} MiB after two days", bytes as f64 / 1048576.0);
    }
    let q = HistoryQuery::newest(100).neighbor(node(7)).between(T0 + DAY_MS / 2, T0 + DAY_MS);
    let start = Instant::now();
    let n = store.usage(&q).unwrap().len() + store.payments(&q).unwrap().len();
    println!("query of 100 + 100 rows of one neighbor in a time range: {:.2?} ({n} rows)", start.elapsed());

    // Bounded: with a one-day retention the file stops growing after the first day.
    let path = dir.join("bounded.db");
    let options = StoreOptions { retention: Some(Duration::from_millis(DAY_MS)), ..Default::default() };
    let mut store = Store::open_with(&path, options).unwrap();
    let mut sizes = Vec::new();
    for d in 0..4 {
        day(&mut store, &mut records, d);
        sizes.push(format!("{:.1}", file_size(&store) as f64 / 1048576.0));
    }
    println!("retention 1 day, size after days 1-4: {} MiB", sizes.join(", "));
    // Commit latency in steady state: a full store pruning as it goes.
    let ticks = 2000;
    measure(&mut store, &mut records, T0 + 4 * DAY_MS, ticks, "64 neighbors, store full at 1-day retention");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tmp;
    let dir: PathBuf = match args.get(1) {
        Some(d) => d.into(),
        None => {
            tmp = tempfile::tempdir().unwrap();
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    let ticks = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    println!("store in {}", dir.display());
    latency(&dir, 1, ticks);
    latency(&dir, 64, ticks);
    growth(&dir);
}
