//! Small clients for looking at a running mesh as one of its members: the directory as that member
//! sees it, who a token makes you on that member's local listener, and clearing a node's audit
//! alarm there.

use std::time::{Duration, SystemTime};

use anyhow::Context;
use doorzet_proto::v1;
use doorzet_proto::v1::directory_client::DirectoryClient;
use doorzet_proto::v1::node_admin_client::NodeAdminClient;

use crate::local_mesh::{AUDIENCE, MeshFile, MeshMember};
use crate::token::{TokenRequest, mint};

/// Lists the coordinator's directory over `member`'s mutual-TLS identity.
pub async fn list_members(
    mesh: &MeshFile,
    member: &MeshMember,
) -> anyhow::Result<v1::ListMembersResponse> {
    let channel = doorzet_mesh::client::channel(
        member.tls()?,
        &mesh.coordinator.mesh_endpoint,
        Some(mesh.coordinator.oin()?),
        Duration::from_secs(5),
    )?;
    let mut client = DirectoryClient::new(channel);
    Ok(client
        .list_members(v1::ListMembersRequest {})
        .await?
        .into_inner())
}

/// Mints a development token for `member` (its signing key from the local mesh's PKI).
pub fn token_for(
    member: &MeshMember,
    subject: &str,
    role: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    let pem = std::fs::read(&member.files.signing_key)
        .with_context(|| format!("reading {}", member.files.signing_key.display()))?;
    let kid = member.files.read_jwk()?.kid;
    Ok(mint(
        &pem,
        &kid,
        &TokenRequest {
            org: member.oin()?,
            subject: subject.to_owned(),
            role: role.to_owned(),
            audience: AUDIENCE.to_owned(),
            issued_at: SystemTime::now(),
            ttl,
        },
    )?)
}

/// Records a disclosure in the audit log as `member` (as its node will when it serves facts), and
/// returns where it landed: leaf index and the size of the checkpoint covering it.
pub async fn record_disclosure(
    mesh: &MeshFile,
    member: &MeshMember,
    recipient: &MeshMember,
    case_ref: &str,
    category: &str,
    purpose: &str,
) -> anyhow::Result<(u64, u64)> {
    let mut entry = doorzet_audit::entry::new_entry(
        SystemTime::now(),
        member.oin()?,
        v1::AuditAction::FactsDisclosed,
    );
    entry.actor_subject = "doorzetctl".into();
    entry.recipient_org = recipient.org_id.clone();
    entry.case_ref = case_ref.into();
    entry.fact_categories = vec![category.into()];
    entry.purpose = purpose.into();
    doorzet_audit::entry::validate(&entry)?;
    let channel = doorzet_mesh::client::channel(
        member.tls()?,
        &mesh.coordinator.mesh_endpoint,
        Some(mesh.coordinator.oin()?),
        Duration::from_secs(10),
    )?;
    let appended = v1::audit_log_client::AuditLogClient::new(channel)
        .append(v1::AppendRequest::of(&[entry]))
        .await?
        .into_inner();
    let index = appended
        .leaf_indexes
        .first()
        .copied()
        .context("no index returned")?;
    Ok((index, appended.tree_size))
}

/// Calls `NodeAdmin.WhoAmI` on `member`'s local listener with `token`.
pub async fn who_am_i(member: &MeshMember, token: &str) -> anyhow::Result<v1::WhoAmIResponse> {
    let endpoint = member
        .local_endpoint
        .as_deref()
        .context("the coordinator has no local listener")?;
    let channel = doorzet_mesh::client::channel(
        member.tls()?,
        endpoint,
        Some(member.oin()?),
        Duration::from_secs(5),
    )?;
    let mut client = NodeAdminClient::new(channel);
    let mut request = tonic::Request::new(v1::WhoAmIRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(client.who_am_i(request).await?.into_inner())
}

/// A client TLS configuration for a node's local listener: trusts the anchors in `ca`, presents no
/// certificate (callers identify with a token).
pub fn server_only_tls(ca: &std::path::Path) -> anyhow::Result<doorzet_mesh::client::ClientTls> {
    let config = doorzet_mesh::tls::server_only_client_config(ca)?;
    Ok(doorzet_mesh::client::ClientTls::Fixed(std::sync::Arc::new(
        config,
    )))
}

/// Calls `NodeAdmin.ClearAuditAlarm` on the local listener at `endpoint`; returns the alarm that
/// was cleared.
pub async fn clear_audit_alarm(
    endpoint: &str,
    tls: doorzet_mesh::client::ClientTls,
    token: &str,
    reason: &str,
    forget_checkpoints: bool,
) -> anyhow::Result<String> {
    let channel = doorzet_mesh::client::channel(tls, endpoint, None, Duration::from_secs(10))?;
    let mut request = tonic::Request::new(v1::ClearAuditAlarmRequest {
        reason: reason.to_owned(),
        forget_checkpoints,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let response = NodeAdminClient::new(channel)
        .clear_audit_alarm(request)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    Ok(response.into_inner().cleared_alarm)
}
