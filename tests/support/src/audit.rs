//! Audit-log helpers for tests: fictional disclosure records, appending them as a member, and
//! waiting for a node of a [`crate::TestMesh`] to verify the log or raise its alarm.

use std::time::{Duration, SystemTime};

use doorzet_domain::Oin;
use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, directory_client::DirectoryClient,
    node_admin_client::NodeAdminClient,
};
use tonic::transport::Channel;

use crate::mesh::{channel_as, with_token};
use crate::{TestMesh, eventually};

/// A fictional disclosure record by `actor`, case `case-{i}`.
pub fn disclosure(actor: Oin, i: u64) -> v1::AuditEntry {
    let mut e =
        doorzet_audit::entry::new_entry(SystemTime::now(), actor, v1::AuditAction::FactsDisclosed);
    e.case_ref = format!("case-{i}");
    e.fact_categories = vec!["legal_title".into()];
    e.purpose = "tier3_meeting".into();
    e
}

/// Appends disclosures `from..from + count` by `actor` over `channel` (the actor's own).
pub async fn append(channel: Channel, actor: Oin, from: u64, count: u64) -> v1::AppendResponse {
    AuditLogClient::new(channel)
        .append(v1::AppendRequest::of(
            &(from..from + count)
                .map(|i| disclosure(actor, i))
                .collect::<Vec<_>>(),
        ))
        .await
        .expect("append")
        .into_inner()
}

impl TestMesh {
    /// Appends disclosures `from..from + count` as node 0.
    pub async fn append_disclosures(&self, from: u64, count: u64) -> v1::AppendResponse {
        let org = &self.nodes[0].org;
        append(
            channel_as(org, &self.coordinator.endpoint),
            org.org,
            from,
            count,
        )
        .await
    }

    /// Returns node 0's status, asked with an operator's token.
    pub async fn node_status(&self) -> v1::GetNodeStatusResponse {
        let node = &self.nodes[0];
        NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint))
            .get_node_status(with_token(
                v1::GetNodeStatusRequest {},
                &node.org.token("ops-1", "beheerder"),
            ))
            .await
            .expect("node status")
            .into_inner()
    }

    /// Waits until node 0 verified the log at `size`; panics on an alarm meanwhile.
    pub async fn wait_audit_verified(&self, size: u64) {
        eventually(Duration::from_secs(10), "node verified the log", || async {
            let status = self.node_status().await;
            assert!(
                status.audit_alarm.is_empty(),
                "unexpected alarm: {}",
                status.audit_alarm
            );
            (status.audit_checkpoint_size == size).then_some(())
        })
        .await;
    }

    /// Waits until node 0 raised the audit alarm; returns it.
    pub async fn wait_audit_alarm(&self) -> String {
        eventually(
            Duration::from_secs(10),
            "node raised the audit alarm",
            || async {
                let status = self.node_status().await;
                (!status.audit_alarm.is_empty()).then_some(status.audit_alarm)
            },
        )
        .await
    }

    /// Returns the audit log's verifier key as the directory publishes it (read as node 1).
    pub async fn audit_verifier(&self) -> doorzet_audit::checkpoint::NoteVerifier {
        let directory =
            DirectoryClient::new(channel_as(&self.nodes[1].org, &self.coordinator.endpoint))
                .list_members(v1::ListMembersRequest {})
                .await
                .expect("directory")
                .into_inner();
        let key = directory
            .coordinator
            .expect("coordinator entry")
            .audit_log_verifier_key;
        doorzet_audit::checkpoint::NoteVerifier::parse(&key).expect("verifier key")
    }

    /// Downloads and verifies the whole log as node 1, as `doorzetctl audit verify` does, keeping
    /// the checkpoints it saw in `state`.
    pub async fn verify_audit_log(
        &self,
        state: &std::path::Path,
    ) -> anyhow::Result<doorzet_ctl::audit_verify::Report> {
        let channel = channel_as(&self.nodes[1].org, &self.coordinator.endpoint);
        doorzet_ctl::audit_verify::verify(channel, &self.audit_verifier().await, state).await
    }

    /// Waits until the coordinator answers again (after a restart).
    pub async fn wait_coordinator(&self) {
        eventually(Duration::from_secs(10), "coordinator back", || async {
            AuditLogClient::new(channel_as(&self.nodes[0].org, &self.coordinator.endpoint))
                .get_checkpoint(v1::GetCheckpointRequest {})
                .await
                .ok()
        })
        .await;
    }
}

/// The size of the audit log's latest signed checkpoint (a checkpoint names it on its second line).
pub async fn checkpoint_size(audit: &AuditLogClient<Channel>) -> Result<u64, tonic::Status> {
    let note = audit
        .clone()
        .get_checkpoint(v1::GetCheckpointRequest {})
        .await?
        .into_inner()
        .checkpoint;
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| tonic::Status::internal("a checkpoint names its size on its second line"))
}
