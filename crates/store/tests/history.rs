//! History: per-minute usage aggregation, queries with time range, neighbor filter and limit,
//! and pruning by retention.

mod common;

use common::{node, record_all};
use std::time::Duration;
use tollway_core::market::{Amount, Price};
use tollway_core::NodeId;
use tollway_store::{
    Batch, ChangedBy, ChannelId, HistoryQuery, PaymentDirection, PaymentRecord, PriceChange, PriceSubject, Store,
    StoreOptions, UsageMinute, UsageRecord, MINUTE_MS,
};

const T0: u64 = 1_700_000_040_000; // a minute boundary
const _: () = assert!(T0 / MINUTE_MS * MINUTE_MS == T0);

fn store_with(dir: &tempfile::TempDir, options: StoreOptions, nodes: &[u8]) -> Store {
    let mut store = Store::open_with(dir.path().join("state.db"), options).unwrap();
    let mut batch = Batch::new(T0);
    for &n in nodes {
        batch.upsert(record_all(node(n), 0, ChannelId([n; 16])));
    }
    store.commit(&batch).unwrap();
    store
}

fn usage(at_ms: u64, n: NodeId, bytes_in: u64, bytes_out: u64, earned: u64, spent: u64) -> UsageRecord {
    UsageRecord { at_ms, node: n, bytes_in, bytes_out, earned: Amount(earned), spent: Amount(spent), disputed_bytes: 0 }
}

fn payment(at_ms: u64, n: NodeId, before: u64, after: u64) -> PaymentRecord {
    PaymentRecord {
        at_ms,
        node: n,
        direction: if after & 1 == 0 { PaymentDirection::Sent } else { PaymentDirection::Received },
        cumulative_before: Amount(before),
        cumulative_after: Amount(after),
        rail: "notes".into(),
        notes: 1,
    }
}

#[test]
fn usage_is_summed_per_neighbor_per_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(&dir, StoreOptions::default(), &[1, 2]);
    // One commit per second for two and a half minutes, both neighbors.
    for s in 0..150u64 {
        let mut batch = Batch::new(T0 + s * 1000);
        batch.usage(usage(T0 + s * 1000, node(1), 10, 20, 1, 2));
        batch.usage(usage(T0 + s * 1000, node(2), 1, 0, 0, 3));
        store.commit(&batch).unwrap();
    }
    // Several records for the same minute in one batch add up too.
    let mut batch = Batch::new(T0);
    batch.usage(usage(T0 + 59_999, node(2), 5, 5, 5, 5)).usage(usage(T0, node(2), 1, 1, 1, 1));
    store.commit(&batch).unwrap();

    let rows = store.usage(&HistoryQuery::newest(100)).unwrap();
    let m = |minute: u64, n: u8, bytes_in, bytes_out, earned, spent| UsageMinute {
        minute_ms: T0 + minute * MINUTE_MS,
        node: node(n),
        bytes_in,
        bytes_out,
        earned: Amount(earned),
        spent: Amount(spent),
        disputed_bytes: 0,
    };
    assert_eq!(
        rows,
        vec![
            m(2, 2, 30, 0, 0, 90),
            m(2, 1, 300, 600, 30, 60),
            m(1, 2, 60, 0, 0, 180),
            m(1, 1, 600, 1200, 60, 120),
            m(0, 2, 66, 6, 6, 186),
            m(0, 1, 600, 1200, 60, 120),
        ],
        "newest first, then by neighbor"
    );
}

#[test]
fn usage_sums_are_exact_across_2_pow_63_and_saturate_at_u64_max() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(&dir, StoreOptions::default(), &[1]);
    let half = 1u64 << 63;
    for (bi, bo, e, s) in [(half - 1, u64::MAX - 5, 1, 0), (1, 5, half, 7), (0, 1, half - 1, u64::MAX)] {
        let mut batch = Batch::new(T0);
        batch.usage(usage(T0, node(1), bi, bo, e, s));
        store.commit(&batch).unwrap();
    }
    let rows = store.usage(&HistoryQuery::newest(10)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].bytes_in, half, "crosses 2^63 exactly");
    assert_eq!(rows[0].bytes_out, u64::MAX, "reaches u64::MAX exactly");
    assert_eq!(rows[0].earned, Amount(u64::MAX));
    assert_eq!(rows[0].spent, Amount(u64::MAX), "saturates");
}

#[test]
fn queries_filter_by_time_neighbor_and_limit_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(&dir, StoreOptions::default(), &[1, 2, 3]);
    for i in 0..30u64 {
        let n = node(1 + (i % 3) as u8);
        let at = T0 + i * 1000;
        let mut batch = Batch::new(at);
        batch.payment(payment(at, n, i, i + 1));
        batch.usage(usage(at + i * MINUTE_MS, n, i, 0, 0, 0));
        let subject = match i % 4 {
            0 => PriceSubject::OurAsk,
            1 => PriceSubject::OurBid(n),
            2 => PriceSubject::TheirAsk(n),
            _ => PriceSubject::TheirBid(n),
        };
        let by = [ChangedBy::Operator, ChangedBy::Config, ChangedBy::Automatic, ChangedBy::Neighbor][(i % 4) as usize];
        batch.price_change(PriceChange {
            at_ms: at,
            subject,
            old: (i > 0).then_some(Price(u64::MAX - i)),
            new: Price(i),
            by,
            changes: 1,
        });
        store.commit(&batch).unwrap();
    }

    let all = store.payments(&HistoryQuery::newest(1000)).unwrap();
    assert_eq!(all.len(), 30);
    assert_eq!(all[0], payment(T0 + 29_000, node(3), 29, 30));
    assert!(all.windows(2).all(|w| w[0].at_ms > w[1].at_ms), "newest first");

    let limited = store.payments(&HistoryQuery::newest(4)).unwrap();
    assert_eq!(limited, all[..4]);

    // [from, until): from inclusive, until exclusive.
    let ranged = store.payments(&HistoryQuery::newest(100).between(T0 + 10_000, T0 + 20_000)).unwrap();
    assert_eq!(ranged.iter().map(|p| p.cumulative_before.0).collect::<Vec<_>>(), (10..20).rev().collect::<Vec<_>>());

    let of_two = store.payments(&HistoryQuery::newest(100).neighbor(node(2))).unwrap();
    assert_eq!(
        of_two.iter().map(|p| p.cumulative_before.0).collect::<Vec<_>>(),
        vec![28, 25, 22, 19, 16, 13, 10, 7, 4, 1]
    );
    let of_two_ranged =
        store.payments(&HistoryQuery::newest(2).neighbor(node(2)).between(T0 + 5_000, T0 + 17_000)).unwrap();
    assert_eq!(of_two_ranged.iter().map(|p| p.cumulative_before.0).collect::<Vec<_>>(), vec![16, 13]);
    assert!(store.payments(&HistoryQuery::newest(100).neighbor(node(77))).unwrap().is_empty(), "unknown neighbor");

    // Usage rows are filtered by the start of their minute.
    let u = store
        .usage(&HistoryQuery::newest(100).neighbor(node(1)).between(T0 + 3 * MINUTE_MS, T0 + 9 * MINUTE_MS + 1))
        .unwrap();
    assert_eq!(u.iter().map(|r| r.bytes_in).collect::<Vec<_>>(), vec![9, 6, 3]);

    // Price changes round-trip every variant; with a neighbor filter our own ask is left out.
    let changes = store.price_changes(&HistoryQuery::newest(1000)).unwrap();
    assert_eq!(changes.len(), 30);
    assert_eq!(
        changes[29],
        PriceChange {
            at_ms: T0,
            subject: PriceSubject::OurAsk,
            old: None,
            new: Price(0),
            by: ChangedBy::Operator,
            changes: 1
        }
    );
    assert_eq!(
        changes[0],
        PriceChange {
            at_ms: T0 + 29_000,
            subject: PriceSubject::OurBid(node(3)),
            old: Some(Price(u64::MAX - 29)),
            new: Price(29),
            by: ChangedBy::Config,
            changes: 1,
        }
    );
    let of_one = store.price_changes(&HistoryQuery::newest(1000).neighbor(node(1))).unwrap();
    assert!(of_one.iter().all(|c| c.subject.node() == Some(node(1))));
    assert_eq!(of_one.len(), 10 - 3, "i = 0, 12 and 24 are our own ask");
}

#[test]
fn successive_payments_and_price_changes_within_a_minute_share_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(&dir, StoreOptions::default(), &[1, 2]);
    let sent = |at_ms, before, after| PaymentRecord {
        direction: PaymentDirection::Sent,
        ..payment(at_ms, node(1), before, after)
    };
    let received = |at_ms, before, after| PaymentRecord {
        direction: PaymentDirection::Received,
        ..payment(at_ms, node(1), before, after)
    };
    // A note sent every second for 150 s, with a note received every second in between.
    for s in 0..150u64 {
        let mut batch = Batch::new(T0 + s * 1000);
        batch.payment(sent(T0 + s * 1000, 10 * s, 10 * s + 10)).payment(received(T0 + s * 1000 + 500, s, s + 1));
        store.commit(&batch).unwrap();
    }
    let q = HistoryQuery::newest(100).neighbor(node(1));
    let rows = store.payments(&q).unwrap();
    let of = |d| {
        rows.iter()
            .filter(|p| p.direction == d)
            .map(|p| (p.at_ms - T0, p.cumulative_before.0, p.cumulative_after.0, p.notes))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(PaymentDirection::Sent),
        vec![(149_000, 1200, 1500, 30), (119_000, 600, 1200, 60), (59_000, 0, 600, 60)]
    );
    assert_eq!(
        of(PaymentDirection::Received),
        vec![(149_500, 120, 150, 30), (119_500, 60, 120, 60), (59_500, 0, 60, 60)]
    );

    // Within a minute, a note that does not continue the newest row (a gap, as after a lost
    // store), another rail, or another neighbor starts a row of its own.
    let t = T0 + 10 * MINUTE_MS;
    let mut batch = Batch::new(t);
    batch
        .payment(sent(t, 1500, 1510))
        .payment(sent(t + 1, 1600, 1610))
        .payment(PaymentRecord { rail: "other".into(), ..sent(t + 2, 1610, 1620) })
        .payment(sent(t + 3, 1620, 1630))
        .payment(payment(t + 4, node(2), 1630, 1640));
    store.commit(&batch).unwrap();
    let newest: Vec<_> = store
        .payments(&HistoryQuery::newest(100).between(t, t + MINUTE_MS))
        .unwrap()
        .into_iter()
        .map(|p| (p.at_ms - t, p.cumulative_before.0, p.cumulative_after.0, p.notes, p.rail))
        .collect();
    assert_eq!(
        newest,
        vec![
            (4, 1630, 1640, 1, "notes".to_owned()),
            (3, 1620, 1630, 1, "notes".to_owned()),
            (2, 1610, 1620, 1, "other".to_owned()),
            (1, 1600, 1610, 1, "notes".to_owned()),
            (0, 1500, 1510, 1, "notes".to_owned()),
        ]
    );

    // A neighbor flapping its ask 50 times in a minute is one row, from the first old price to
    // the last new one; the operator's own changes are each kept.
    let t = T0 + 20 * MINUTE_MS;
    let mut batch = Batch::new(t);
    for k in 0..50u64 {
        let change = |subject, by| PriceChange {
            at_ms: t + k * 1000,
            subject,
            old: Some(Price(k % 2)),
            new: Price((k + 1) % 2),
            by,
            changes: 1,
        };
        batch.price_change(change(PriceSubject::TheirAsk(node(2)), ChangedBy::Neighbor));
        if k < 3 {
            batch.price_change(change(PriceSubject::OurAsk, ChangedBy::Operator));
        }
    }
    // A change that does not continue the last one starts a new row.
    batch.price_change(PriceChange {
        at_ms: t + 55_000,
        subject: PriceSubject::TheirAsk(node(2)),
        old: Some(Price(7)),
        new: Price(8),
        by: ChangedBy::Neighbor,
        changes: 1,
    });
    store.commit(&batch).unwrap();
    let changes = store.price_changes(&HistoryQuery::newest(100).between(t, t + MINUTE_MS)).unwrap();
    let summary: Vec<_> =
        changes.iter().map(|c| (c.at_ms - t, c.subject.node(), c.old.map(|p| p.0), c.new.0, c.changes)).collect();
    assert_eq!(
        summary,
        vec![
            (55_000, Some(node(2)), Some(7), 8, 1),
            (49_000, Some(node(2)), Some(0), 0, 50),
            (2_000, None, Some(0), 1, 1),
            (1_000, None, Some(1), 0, 1),
            (0, None, Some(0), 1, 1),
        ]
    );
}

#[test]
fn a_record_standing_for_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(&dir, StoreOptions::default(), &[1]);
    let mut batch = Batch::new(T0);
    batch.payment(PaymentRecord { notes: 0, ..payment(T0, node(1), 0, 1) });
    let e = store.commit(&batch).unwrap_err();
    assert!(e.to_string().contains("0 notes"), "{e}");
    let mut batch = Batch::new(T0);
    batch.price_change(PriceChange {
        at_ms: T0,
        subject: PriceSubject::OurAsk,
        old: None,
        new: Price(1),
        by: ChangedBy::Operator,
        changes: 0,
    });
    let e = store.commit(&batch).unwrap_err();
    assert!(e.to_string().contains("0 changes"), "{e}");
}

#[test]
fn old_history_is_pruned_a_little_at_each_commit() {
    let dir = tempfile::tempdir().unwrap();
    let options =
        StoreOptions { retention: Some(Duration::from_secs(3600)), prune_per_commit: 25, ..Default::default() };
    let mut store = store_with(&dir, options, &[1, 2]);
    // 100 minutes of history, committed with old clocks (nothing expires yet).
    for minute in 0..100u64 {
        let at = T0 + minute * MINUTE_MS;
        let mut batch = Batch::new(at);
        for n in [node(1), node(2)] {
            batch.usage(usage(at, n, 1, 1, 1, 1)).payment(payment(at, n, minute, minute + 1));
        }
        batch.price_change(PriceChange {
            at_ms: at,
            subject: PriceSubject::OurAsk,
            old: None,
            new: Price(1),
            by: ChangedBy::Automatic,
            changes: 1,
        });
        store.commit(&batch).unwrap();
    }
    let count = |store: &Store| {
        let q = HistoryQuery::newest(u32::MAX);
        (store.usage(&q).unwrap().len(), store.payments(&q).unwrap().len(), store.price_changes(&q).unwrap().len())
    };
    // Committed at minute 99 with a 60-minute retention: minutes below 39 expired as they went.
    assert_eq!(count(&store), (122, 122, 61));

    // Now at minute 160 everything before minute 100 is expired: 122 usage rows, at 25 per commit.
    let now = T0 + 160 * MINUTE_MS;
    let mut seen = Vec::new();
    for _ in 0..6 {
        store.commit(&Batch::new(now)).unwrap();
        seen.push(count(&store));
    }
    assert_eq!(seen[0], (97, 97, 36), "25 per table per commit");
    assert_eq!(seen[1], (72, 72, 11));
    assert_eq!(seen[5], (0, 0, 0));

    // No retention keeps everything.
    let dir2 = tempfile::tempdir().unwrap();
    let mut keep = store_with(&dir2, StoreOptions { retention: None, ..Default::default() }, &[1]);
    let mut batch = Batch::new(T0);
    batch.usage(usage(T0, node(1), 1, 1, 1, 1));
    keep.commit(&batch).unwrap();
    keep.commit(&Batch::new(u64::MAX / 4)).unwrap();
    assert_eq!(keep.usage(&HistoryQuery::default()).unwrap().len(), 1);
    // Neighbor state is never pruned.
    assert_eq!(store.load().unwrap().neighbors.len(), 2);
}
