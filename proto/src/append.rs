//! `AuditLog.Append`'s request, written by hand. On the wire it is the contract's
//! `AppendRequest { repeated AuditEntry entries = 1; }`, byte for byte; here each entry stays the
//! bytes of its encoding, because the audit log hashes exactly those bytes. The coordinator reads
//! them in place (`doorzet_audit::canonical`), without decoding every identifier into a string of
//! its own and encoding the entry again.

use bytes::Bytes;
use prost::Message;

use crate::v1;

/// Entries to append, each the canonical encoding of a `doorzet.v1.AuditEntry`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct AppendRequest {
    /// The encoded entries, in order.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub entries: Vec<Bytes>,
}

impl AppendRequest {
    /// The request carrying `entries`, each encoded as prost writes it.
    pub fn of(entries: &[v1::AuditEntry]) -> Self {
        Self {
            entries: entries
                .iter()
                .map(|e| Bytes::from(e.encode_to_vec()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's message as prost generates it from `audit_log.proto`.
    #[derive(Clone, PartialEq, Message)]
    struct Typed {
        #[prost(message, repeated, tag = "1")]
        entries: Vec<v1::AuditEntry>,
    }

    fn entries() -> Vec<v1::AuditEntry> {
        (0..3)
            .map(|i| v1::AuditEntry {
                version: 1,
                actor_org: format!("0000000100000000000{i}"),
                fact_ids: vec![format!("fact-{i}"), String::new()],
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn is_the_contracts_message_on_the_wire() {
        let typed = Typed { entries: entries() };
        let raw = AppendRequest::of(&entries());
        assert_eq!(raw.encode_to_vec(), typed.encode_to_vec());
        assert_eq!(
            AppendRequest::decode(typed.encode_to_vec().as_slice()).unwrap(),
            raw
        );
        assert_eq!(
            Typed::decode(raw.encode_to_vec().as_slice()).unwrap(),
            typed
        );
    }
}
