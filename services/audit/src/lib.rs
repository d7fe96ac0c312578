//! The mesh's tamper-evident audit log: an append-only Merkle log with RFC 9162 hashing, stored
//! through sqlx, with C2SP signed-note checkpoints that every member can verify.
//!
//! # Layout
//! - [`merkle`]: hashing, proofs and verification (pure).
//! - [`checkpoint`]: checkpoints as signed notes, signing and verification (pure).
//! - [`entry`]: the audit entry: metadata only, canonical encoding.
//! - [`canonical`]: an encoded entry read in place, accepted only in its canonical form.
//! - [`store`]: tables and queries on SQLite and PostgreSQL.
//! - [`leaf_index`]: leaf hash → leaf index, 8 bytes an entry in memory.
//! - [`log`]: the running log: group commit, checkpoints per batch, proofs in O(log n) reads.
//! - [`error`]: the crate's error type.

pub mod canonical;
pub mod checkpoint;
pub mod entry;
pub mod error;
pub mod leaf_index;
pub mod log;
pub mod merkle;
pub mod store;

pub use error::AuditError;
