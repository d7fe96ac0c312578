//! Pure domain types and rules of doorzet, free of I/O: functions take `now` and the facts they need
//! and return a decision.
//!
//! # Layout
//! - [`bsn`]: recognising a citizen service number where none may be.
//! - [`oin`]: the organisation identifier (OIN) that names every mesh member.
//! - [`organisation`]: the kinds of organisation in the mesh.
//! - [`error`]: the crate's error type.
//!
//! The ladder, lifecycle, mandates, consent and the working-day calendar join here in later steps.

pub mod bsn;
pub mod error;
pub mod oin;
pub mod organisation;

pub use error::ParseError;
pub use oin::Oin;
pub use organisation::OrgKind;
