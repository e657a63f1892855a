//! Opening: fresh databases, reopening, schema versions, and files that are not ours.

mod common;

use common::{node, record_all};
use rusqlite::Connection;
use tollway_store::{Batch, ChannelId, Store, StoreError, APPLICATION_ID, SCHEMA_VERSION};

fn pragma(path: &std::path::Path, name: &str) -> i64 {
    Connection::open(path).unwrap().query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
}

#[test]
fn a_fresh_store_is_created_at_the_latest_version_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let mut batch = Batch::new(1);
    batch.upsert(record_all(node(1), 5, ChannelId([1; 16])));
    store.commit(&batch).unwrap();
    drop(store);

    assert_eq!(pragma(&path, "user_version"), SCHEMA_VERSION as i64);
    assert_eq!(pragma(&path, "application_id"), APPLICATION_ID as i64);
    assert_eq!(
        Connection::open(&path).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)).unwrap(),
        "wal"
    );

    for _ in 0..3 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.load().unwrap().neighbors, vec![record_all(node(1), 5, ChannelId([1; 16]))]);
    }
}

#[test]
fn a_store_from_a_newer_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    Connection::open(&path).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();

    let e = Store::open(&path).unwrap_err();
    match &e {
        StoreError::TooNew { found, supported, .. } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("newer"), "{msg}");
    // Refusing changed nothing.
    assert_eq!(pragma(&path, "user_version"), SCHEMA_VERSION as i64 + 1);
}

#[test]
fn files_that_are_not_tollway_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE songs (title TEXT)").unwrap();
    let e = Store::open(&foreign).unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");

    let other_app = dir.path().join("other.db");
    Connection::open(&other_app).unwrap().pragma_update(None, "application_id", 1234).unwrap();
    let e = Store::open(&other_app).unwrap_err();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let e = Store::open(&garbage).unwrap_err();
    assert!(matches!(e, StoreError::Sqlite { .. }) && e.to_string().contains("garbage.db"), "{e}");
}

#[test]
fn an_empty_file_becomes_a_store() {
    // What a crash right after creating the file leaves behind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, b"").unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn two_connections_can_share_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut writer = Store::open(&path).unwrap();
    let reader = Store::open(&path).unwrap();
    let mut batch = Batch::new(1);
    batch.upsert(record_all(node(1), 5, ChannelId([1; 16])));
    writer.commit(&batch).unwrap();
    assert_eq!(reader.load().unwrap().neighbors.len(), 1);
}
