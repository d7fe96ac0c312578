//! `AuditLog`: the Merkle log's read side. Every RPC answers `UNIMPLEMENTED` until the audit-log
//! issue fills this service in.

use doorzet_proto::v1::audit_log_server;

/// The `AuditLog` service.
#[derive(Debug, Clone, Default)]
pub struct AuditLogService;

impl audit_log_server::AuditLog for AuditLogService {}
