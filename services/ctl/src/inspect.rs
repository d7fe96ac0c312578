//! Small clients for looking at a running mesh as one of its members: the directory as that member
//! sees it, and who a token makes you on that member's local listener.

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
