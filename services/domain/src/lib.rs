//! Pure domain types and rules of doorzet, free of I/O: functions take `now` and the facts they need
//! and return a decision.
//!
//! # Layout
//! - [`bsn`]: recognising a citizen service number where none may be.
//! - [`calendar`]: working days, working hours and the deadlines of a ladder's terms.
//! - [`vocabulary`]: closed vocabularies (one macro for all).
//! - [`disclosure`]: the disclosure rule: which facts go to whom, for what, when.
//! - [`grant`]: the participation grant's claims and when they let an organisation ask.
//! - [`ladder`]: a region's escalation ladder as data, and who may register where.
//! - [`lifecycle`]: the escalation's states and the transitions between them.
//! - [`mandate`]: mandates to decide, their vocabulary and when they are current.
//! - [`oin`]: the organisation identifier (OIN) that names every mesh member.
//! - [`organisation`]: the kinds of organisation in the mesh.
//! - [`error`]: the crate's error type.

pub mod bsn;
pub mod calendar;
pub mod disclosure;
pub mod error;
pub mod grant;
pub mod ladder;
pub mod lifecycle;
pub mod mandate;
pub mod oin;
pub mod organisation;
pub mod vocabulary;

pub use error::{Invalid, ParseError};
pub use oin::Oin;
pub use organisation::OrgKind;

#[doc(hidden)]
pub use serde as __serde;
