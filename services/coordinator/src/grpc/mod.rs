//! The coordinator's gRPC services.
//!
//! # Layout
//! - [`directory`]: `Directory` — the member list, to every member.
//! - [`coordinator`]: `Coordinator` — the escalation ladder (filled in by the ladder issue).
//! - [`audit_log`]: `AuditLog` — the Merkle log (filled in by the audit-log issue).

pub mod audit_log;
pub mod coordinator;
pub mod directory;
