//! `Directory`: serves the region's member list to every member, from the snapshot the file
//! watcher keeps current.

use std::sync::Arc;

use doorzet_mesh::{Caller, directory::Directory};
use doorzet_proto::convert;
use doorzet_proto::v1::{self, directory_server};
use tonic::{Request, Response, Status};

use crate::Error;

/// The `Directory` service.
#[derive(Debug, Clone)]
pub struct DirectoryService {
    directory: Arc<Directory>,
}

impl DirectoryService {
    /// Serves `directory`.
    pub fn new(directory: Arc<Directory>) -> Self {
        Self { directory }
    }

    fn wire(&self) -> Result<Arc<doorzet_mesh::Snapshot>, Status> {
        self.directory
            .current()
            .ok_or_else(|| Status::unavailable("directory not loaded"))
    }
}

#[tonic::async_trait]
impl directory_server::Directory for DirectoryService {
    async fn list_members(
        &self,
        request: Request<v1::ListMembersRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        Caller::from_request(&request)?;
        Ok(Response::new(self.wire()?.wire.clone()))
    }

    async fn get_member(
        &self,
        request: Request<v1::GetMemberRequest>,
    ) -> Result<Response<v1::GetMemberResponse>, Status> {
        Caller::from_request(&request)?;
        let org = convert::oin("org_id", &request.get_ref().org_id).map_err(Error::from)?;
        let snapshot = self.wire()?;
        let member = snapshot
            .wire
            .members
            .iter()
            .find(|m| m.org_id == org.as_str())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("member {org}")))?;
        Ok(Response::new(v1::GetMemberResponse {
            member: Some(member),
        }))
    }
}
