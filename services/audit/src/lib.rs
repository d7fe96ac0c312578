//! The mesh audit log: RFC 9162 Merkle tree, signed checkpoints and proofs (filled in by the
//! audit-log issue).
