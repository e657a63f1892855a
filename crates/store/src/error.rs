//! The one error type of the store. Every variant names the database file; the I/O and SQLite
//! variants also name the operation that failed.

use std::path::PathBuf;
use tollway_core::NodeId;

/// Why a store operation failed.
#[allow(missing_docs)] // fields: the operation, the database file, the cause
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation on the database file or its directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite reported an error (I/O error, disk full, database locked past the busy timeout,
    /// a damaged file, or a constraint the schema enforces).
    #[error("{op} {path}: {source}")]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer tollway with a schema this build does not know.
    #[error(
        "{path} has schema version {found}, newer than version {supported} that this tollway understands; \
         run a tollway at least as new as the one that wrote it, or restore a backup"
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    /// The file is an SQLite database, but not a tollway store.
    #[error("{path} is an SQLite database but not a tollway store ({why})")]
    NotOurs { path: PathBuf, why: String },
    /// A stored row does not decode into the store's types (edited by hand, or a bug).
    #[error("{path}: stored data is not valid: {what}")]
    Corrupt { path: PathBuf, what: String },
    /// A value handed to the store cannot be stored (note too large, timestamp out of range, …).
    /// Nothing was written.
    #[error("{op} {path}: {why}")]
    Invalid { op: &'static str, path: PathBuf, why: String },
    /// A batch tried to change a neighbor's payment channel id, which is created once and never
    /// changes (notes are cumulative per channel). Nothing in the batch was written.
    #[error("{path}: the payment channel id of neighbor {node} cannot change once stored")]
    ChannelChanged { path: PathBuf, node: NodeId },
}

impl StoreError {
    pub(crate) fn sqlite<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
        move |source| StoreError::Sqlite { op, path: path.to_owned(), source }
    }

    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io { op, path: path.to_owned(), source }
    }
}
