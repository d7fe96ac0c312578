//! `NodeAdmin` on the local listener: the organisation's own systems and staff, each with a token
//! the organisation issued.

use std::sync::Arc;
use std::time::SystemTime;

use doorzet_domain::Oin;
use doorzet_mesh::Caller;
use doorzet_mesh::directory::Directory;
use doorzet_proto::v1::{self, node_admin_server};
use tonic::{Request, Response, Status};

use crate::Error;

/// The `NodeAdmin` service.
#[derive(Debug, Clone)]
pub struct NodeAdminService {
    org: Oin,
    directory: Arc<Directory>,
    audit: crate::audit_watch::AuditWatch,
    clear_roles: Arc<Vec<String>>,
}

impl NodeAdminService {
    /// Makes the service for organisation `org`.
    pub fn new(
        org: Oin,
        directory: Arc<Directory>,
        audit: crate::audit_watch::AuditWatch,
        clear_roles: Vec<String>,
    ) -> Self {
        Self {
            org,
            directory,
            audit,
            clear_roles: Arc::new(clear_roles),
        }
    }
}

#[tonic::async_trait]
impl node_admin_server::NodeAdmin for NodeAdminService {
    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let caller = Caller::from_request(&request)?;
        let person = caller.person().map_err(Error::from)?;
        Ok(Response::new(v1::WhoAmIResponse {
            org_id: caller.org.to_string(),
            subject: person.subject.clone(),
            role: person.role.clone(),
            expires_at: Some(person.expires_at.into()),
        }))
    }

    async fn get_node_status(
        &self,
        request: Request<v1::GetNodeStatusRequest>,
    ) -> Result<Response<v1::GetNodeStatusResponse>, Status> {
        Caller::from_request(&request)?
            .person()
            .map_err(Error::from)?;
        let now = SystemTime::now();
        let current = self.directory.current();
        let kind = current
            .as_ref()
            .and_then(|d| d.member(&self.org))
            .map_or(v1::OrganisationKind::Unspecified, |m| m.kind.into());
        Ok(Response::new(v1::GetNodeStatusResponse {
            org_id: self.org.to_string(),
            kind: kind as i32,
            directory_members: current.as_ref().map_or(0, |d| d.members.len() as u32),
            directory_version: current.as_ref().map_or(0, |d| d.version()),
            directory_fetched_at: current.as_ref().map(|d| d.obtained_at.into()),
            is_directory_stale: self.directory.usable(now).is_err(),
            audit_checkpoint_size: self.audit.verified_size(),
            audit_alarm: self.audit.alarm().unwrap_or_default(),
            audit_check_error: self.audit.check_error().unwrap_or_default(),
            audit_verified_at: self.audit.verified_at().map(Into::into),
            audit_verifier_key: self.audit.pinned_key(),
        }))
    }

    async fn clear_audit_alarm(
        &self,
        request: Request<v1::ClearAuditAlarmRequest>,
    ) -> Result<Response<v1::ClearAuditAlarmResponse>, Status> {
        let person = Caller::from_request(&request)?
            .person()
            .map_err(Error::from)?
            .clone();
        if !self.clear_roles.contains(&person.role) {
            return Err(Error::PermissionDenied(format!(
                "role `{}` may not clear the audit alarm; audit.clear_roles lists who may",
                person.role
            ))
            .into());
        }
        let req = request.into_inner();
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(
                Error::InvalidArgument(doorzet_proto::convert::ConvertError::new(
                    "reason",
                    "must hold 1 to 500 characters: the outcome of the investigation",
                ))
                .into(),
            );
        }
        let clearing = crate::audit_watch::Clearing {
            subject: person.subject,
            role: person.role,
            reason: reason.to_owned(),
            forget_checkpoints: req.forget_checkpoints,
        };
        let cleared_alarm = self.audit.clear(&clearing).await?;
        Ok(Response::new(v1::ClearAuditAlarmResponse { cleared_alarm }))
    }
}
