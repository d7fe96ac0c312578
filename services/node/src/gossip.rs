//! Members compare the audit log's checkpoints on every call between them: the caller sends the
//! latest checkpoint it verified as metadata, the callee compares it with its own in the
//! background ([`AuditWatch::compare_peer`]). A coordinator that shows two members different
//! histories is caught the first time they talk.

use doorzet_mesh::Caller;
use tonic::metadata::MetadataValue;

use crate::audit_watch::{AuditWatch, PeerCheck};

/// The metadata key that carries the caller's latest verified checkpoint (its signed note).
pub const HEADER: &str = doorzet_mesh::CHECKPOINT_HEADER;

/// Adds this node's latest verified checkpoint to an outgoing call to another member.
pub fn attach<T>(audit: &AuditWatch, request: &mut tonic::Request<T>) {
    if let Some(note) = audit.latest_note() {
        request
            .metadata_mut()
            .insert_bin(HEADER, MetadataValue::from_bytes(note.as_bytes()));
    }
}

/// Compares the checkpoint a calling member sent, if any, without delaying its call.
pub fn observe<T>(audit: &AuditWatch, request: &tonic::Request<T>) {
    let Some(value) = request.metadata().get_bin(HEADER) else {
        return;
    };
    let Ok(caller) = Caller::from_request(request) else {
        return;
    };
    let Ok(bytes) = value.to_bytes() else {
        return;
    };
    let Ok(note) = String::from_utf8(bytes.to_vec()) else {
        return;
    };
    let (audit, peer) = (audit.clone(), caller.org);
    tokio::spawn(async move {
        match audit.compare_peer(peer, &note).await {
            PeerCheck::Consistent | PeerCheck::Fork(_) => {}
            PeerCheck::Unverifiable(why) => {
                tracing::warn!(%peer, reason = %why, "a member sent a checkpoint that does not verify")
            }
            PeerCheck::CannotCheck(why) => {
                tracing::debug!(%peer, reason = %why, "member's checkpoint not compared")
            }
        }
    });
}
