//! The coordinator's gRPC services.
//!
//! # Layout
//! - [`directory`]: `Directory` — the member list, to every member.
//! - [`coordinator`]: `Coordinator` — the escalation ladder.
//! - [`audit_log`]: `AuditLog` — the Merkle log.

pub mod audit_log;
pub mod coordinator;
pub mod directory;
