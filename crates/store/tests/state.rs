//! Neighbor state: round trips of every field, upsert semantics, all-or-nothing batches, input
//! validation and file permissions.

mod common;

use common::{node, record_all};
use std::os::unix::fs::PermissionsExt;
use tollway_core::market::Price;
use tollway_core::market::{Accrual, Amount, CounterBaseline, LinkLedger, Statement};
use tollway_store::{
    Batch, ChangedBy, ChannelId, HistoryQuery, IssuedNote, NeighborRecord, PaymentDirection, PaymentRecord,
    PaymentState, PriceChange, PriceSubject, ReceivedNote, Store, StoreError, UsageRecord, MAX_NOTE_BYTES,
};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("state.db")).unwrap()
}

fn commit(store: &mut Store, records: Vec<NeighborRecord>) {
    store.commit(&Batch { now_ms: 10_000, neighbors: records, ..Default::default() }).unwrap();
}

/// Distinct values in every field, so that a swapped column shows up.
fn distinct_record() -> NeighborRecord {
    let acc = |u: u64, m: u32| Accrual::new(u, m).unwrap();
    NeighborRecord {
        node: node(7),
        first_seen_ms: 1_700_000_000_001,
        updated_ms: 1_700_000_000_002,
        ledger: LinkLedger {
            inbound: Statement { seq: 3, bytes: 4, receiver_owes: acc(5, 6), sender_owes: acc(7, 8) },
            outbound: Statement { seq: 9, bytes: 10, receiver_owes: acc(11, 12), sender_owes: acc(13, 14) },
            paid: Amount(15),
            received: Amount(16),
        },
        rx_counter: CounterBaseline { instance: 17, value: 18 },
        tx_counter: CounterBaseline { instance: 19, value: 20 },
        payment: PaymentState {
            channel: ChannelId([21; 16]),
            issued: Some(IssuedNote { cumulative: Amount(22), note: b"issued".to_vec(), acknowledged: true }),
            received: Some(ReceivedNote {
                payer_channel: ChannelId([23; 16]),
                cumulative: Amount(24),
                note: b"received".to_vec(),
            }),
        },
        sent_bytes: 25,
        tx_peak: 26,
        claimed: Statement { seq: 27, bytes: 28, receiver_owes: acc(29, 30), sender_owes: acc(31, 32) },
    }
}

#[test]
fn every_field_round_trips_including_the_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    assert!(store.load().unwrap().neighbors.is_empty());

    let mut max = record_all(node(1), u64::MAX, ChannelId([0xff; 16]));
    max.ledger.inbound.receiver_owes.micros = 999_999;
    max.first_seen_ms = i64::MAX as u64;
    max.updated_ms = i64::MAX as u64;
    max.payment.issued.as_mut().unwrap().note = Vec::new(); // empty note
    max.payment.received.as_mut().unwrap().note = vec![0xee; MAX_NOTE_BYTES]; // largest note
    let zero = NeighborRecord {
        first_seen_ms: 0,
        updated_ms: 0,
        payment: PaymentState { channel: ChannelId([0; 16]), issued: None, received: None },
        ..record_all(node(2), 0, ChannelId([0; 16]))
    };
    let mid = record_all(node(3), i64::MAX as u64 + 1, ChannelId([3; 16])); // first value SQLite sees as negative
    let below = record_all(node(4), i64::MAX as u64, ChannelId([4; 16]));
    let records = vec![distinct_record(), max, zero, mid, below];
    commit(&mut store, records.clone());
    drop(store);

    let store = open(&dir);
    let snap = store.load().unwrap();
    let mut want = records;
    want.sort_by_key(|r| r.node);
    assert_eq!(snap.neighbors, want);
    for r in &want {
        assert_eq!(snap.get(&r.node), Some(r));
    }
    assert_eq!(snap.get(&node(99)), None);
}

#[test]
fn upsert_replaces_everything_but_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let first = distinct_record();
    commit(&mut store, vec![first.clone()]);

    let mut second = first.clone();
    second.first_seen_ms = 5; // ignored: first seen is kept from the insert
    second.updated_ms += 1000;
    second.ledger.inbound.add(1_000_000, Price(3), Price(4));
    second.ledger.paid = Amount(100);
    second.rx_counter = CounterBaseline { instance: 1, value: 2 };
    second.payment.issued = None;
    second.payment.received.as_mut().unwrap().cumulative = Amount(999);
    commit(&mut store, vec![second.clone()]);

    let got = store.load().unwrap();
    assert_eq!(got.neighbors.len(), 1);
    assert_eq!(got.neighbors[0], NeighborRecord { first_seen_ms: first.first_seen_ms, ..second.clone() });

    // Two upserts of the same node in one batch: the later wins.
    let mut third = second.clone();
    third.ledger.received = Amount(1);
    let mut fourth = second.clone();
    fourth.ledger.received = Amount(2);
    commit(&mut store, vec![third, fourth]);
    assert_eq!(store.load().unwrap().neighbors[0].ledger.received, Amount(2));
}

#[test]
fn new_records_get_distinct_random_channels_and_empty_state() {
    let a = NeighborRecord::new(node(1), 42);
    let b = NeighborRecord::new(node(2), 42);
    assert_ne!(a.payment.channel, b.payment.channel);
    assert_eq!((a.first_seen_ms, a.updated_ms), (42, 42));
    assert_eq!(a.ledger, LinkLedger::default());
    assert_eq!(a.payment.channel.to_string().len(), 32);
}

fn history_for(n: tollway_core::NodeId, batch: &mut Batch) {
    batch.usage(UsageRecord {
        at_ms: 60_000,
        node: n,
        bytes_in: 1,
        bytes_out: 2,
        earned: Amount(3),
        spent: Amount(4),
        disputed_bytes: 5,
    });
    batch.payment(PaymentRecord {
        at_ms: 60_000,
        node: n,
        direction: PaymentDirection::Sent,
        cumulative_before: Amount(0),
        cumulative_after: Amount(5),
        rail: "notes".into(),
        notes: 1,
    });
    batch.price_change(PriceChange {
        at_ms: 60_000,
        subject: PriceSubject::OurAsk,
        old: None,
        new: Price(7),
        by: ChangedBy::Operator,
        changes: 1,
    });
}

/// What is stored: the neighbors and how many history rows.
fn contents(store: &Store) -> (Vec<NeighborRecord>, usize, usize, usize) {
    let q = HistoryQuery::newest(1000);
    (
        store.load().unwrap().neighbors,
        store.usage(&q).unwrap().len(),
        store.payments(&q).unwrap().len(),
        store.price_changes(&q).unwrap().len(),
    )
}

#[test]
fn a_batch_that_fails_midway_leaves_nothing_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let base = record_all(node(1), 10, ChannelId([1; 16]));
    let mut batch = Batch::new(60_000);
    batch.upsert(base.clone());
    history_for(node(1), &mut batch);
    store.commit(&batch).unwrap();
    let before = contents(&store);
    assert_eq!((before.1, before.2, before.3), (1, 1, 1));

    // The third upsert reuses the first neighbor's channel id: a UNIQUE violation in SQLite,
    // after two upserts already ran inside the transaction.
    let mut changed = base.clone();
    changed.ledger.paid = Amount(11);
    let mut batch = Batch::new(60_000);
    batch.upsert(changed).upsert(record_all(node(2), 20, ChannelId([2; 16])));
    batch.upsert(record_all(node(3), 30, ChannelId([1; 16])));
    history_for(node(1), &mut batch);
    let e = store.commit(&batch).unwrap_err();
    assert!(matches!(e, StoreError::Sqlite { .. }) && e.to_string().contains("UNIQUE"), "{e}");
    assert!(e.to_string().contains("state.db"), "error names the database: {e}");
    assert_eq!(contents(&store), before);

    // History naming a neighbor that is not stored fails after the upserts ran.
    let mut batch = Batch::new(60_000);
    batch.upsert(record_all(node(2), 20, ChannelId([2; 16])));
    history_for(node(1), &mut batch);
    batch.payment(PaymentRecord {
        at_ms: 1,
        node: node(50),
        direction: PaymentDirection::Received,
        cumulative_before: Amount(0),
        cumulative_after: Amount(1),
        rail: "notes".into(),
        notes: 1,
    });
    let e = store.commit(&batch).unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }) && e.to_string().contains(&node(50).to_string()), "{e}");
    assert_eq!(contents(&store), before);

    // The failed batches left no trace: the store still commits, and node 2 gets a fresh row.
    let mut batch = Batch::new(60_000);
    batch.upsert(record_all(node(2), 20, ChannelId([2; 16])));
    history_for(node(2), &mut batch);
    store.commit(&batch).unwrap();
    assert_eq!(store.load().unwrap().neighbors.len(), 2);
}

#[test]
fn a_payment_channel_never_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    commit(&mut store, vec![record_all(node(1), 10, ChannelId([1; 16]))]);
    let before = contents(&store);
    let mut batch = Batch::new(60_000);
    batch.upsert(record_all(node(2), 20, ChannelId([2; 16])));
    batch.upsert(record_all(node(1), 11, ChannelId([3; 16])));
    let e = store.commit(&batch).unwrap_err();
    assert!(matches!(e, StoreError::ChannelChanged { node: n, .. } if n == node(1)), "{e}");
    assert_eq!(contents(&store), before);
}

#[test]
fn values_that_cannot_be_stored_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(&dir);
    let good = record_all(node(1), 10, ChannelId([1; 16]));
    type Mutation = Box<dyn Fn(&mut Batch)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("1025 bytes", Box::new(|b| b.neighbors[0].payment.issued.as_mut().unwrap().note = vec![0; 1025])),
        ("1025 bytes", Box::new(|b| b.neighbors[0].payment.received.as_mut().unwrap().note = vec![0; 1025])),
        ("micros", Box::new(|b| b.neighbors[0].ledger.outbound.sender_owes.micros = 1_000_000)),
        ("out of range", Box::new(|b| b.neighbors[0].updated_ms = u64::MAX)),
        ("out of range", Box::new(|b| b.now_ms = i64::MAX as u64 + 1)),
        ("rail name", Box::new(|b| b.payments[0].rail = String::new())),
        ("rail name", Box::new(|b| b.payments[0].rail = "x".repeat(65))),
        ("out of range", Box::new(|b| b.usage[0].at_ms = u64::MAX)),
        ("out of range", Box::new(|b| b.price_changes[0].at_ms = u64::MAX)),
    ];
    for (why, mutate) in cases {
        let mut batch = Batch::new(60_000);
        batch.upsert(good.clone());
        history_for(node(1), &mut batch);
        mutate(&mut batch);
        let e = store.commit(&batch).unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }) && e.to_string().contains(why), "{why}: {e}");
    }
    assert_eq!(contents(&store), (vec![], 0, 0, 0));
}

#[test]
fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a/b");
    let path = data.join("state.db");
    let mut store = Store::open(&path).unwrap();
    commit(&mut store, vec![record_all(node(1), 1, ChannelId([1; 16]))]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&data.join("state.db-wal")), 0o600);
    assert_eq!(mode(&data.join("state.db-shm")), 0o600);
    drop(store);

    // A store that became readable by others is tightened on open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}
