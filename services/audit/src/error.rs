//! The audit crate's error type.

use crate::checkpoint::CheckpointError;
use crate::entry::EntryError;

/// What can go wrong in the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An entry is invalid.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// A request names sizes or indexes the log does not have.
    #[error("{0}")]
    Range(String),
    /// No entry has that hash.
    #[error("no entry with that leaf hash in the tree of size {0}")]
    UnknownHash(u64),
    /// The checkpoint key is unusable.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Stored data contradicts itself (the storage was changed behind the log's back).
    #[error("audit storage is inconsistent: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("audit storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// Another process writes the log now (several coordinators on one PostgreSQL database).
    #[error("another coordinator writes the audit log now; retry")]
    NotLeader,
    /// The appender task has stopped.
    #[error("the audit log is shutting down")]
    Closed,
}
