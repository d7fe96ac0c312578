//! Pure domain types and rules of doorzet, free of I/O: functions take `now` and the facts they need
//! and return a decision.
//!
//! # Layout
//! - [`bsn`]: recognising a citizen service number where none may be.
//! - [`vocabulary`]: closed vocabularies (one macro for all).
//! - [`disclosure`]: the disclosure rule: which facts go to whom, for what, when.
//! - [`grant`]: the participation grant's claims and when they let an organisation ask.
//! - [`mandate`]: mandates to decide, their vocabulary and when they are current.
//! - [`oin`]: the organisation identifier (OIN) that names every mesh member.
//! - [`organisation`]: the kinds of organisation in the mesh.
//! - [`error`]: the crate's error type.
//!
//! The ladder, lifecycle and the working-day calendar join here in later steps.

pub mod bsn;
pub mod disclosure;
pub mod error;
pub mod grant;
pub mod mandate;
pub mod oin;
pub mod organisation;
pub mod vocabulary;

pub use error::{Invalid, ParseError};
pub use oin::Oin;
pub use organisation::OrgKind;
