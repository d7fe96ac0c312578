//! `Directory`: serves the region's member list to every member, from the snapshot the file
//! watcher keeps current, and pushes each new one to the nodes that watch it.

use std::pin::Pin;
use std::sync::Arc;

use doorzet_mesh::{Caller, Snapshot, directory::Directory};
use doorzet_proto::convert;
use doorzet_proto::v1::{self, directory_server};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::Error;

/// The `Directory` service.
#[derive(Debug, Clone)]
pub struct DirectoryService {
    directory: Arc<Directory>,
    shutdown: CancellationToken,
}

/// Whether `caller` may still see the directory in `snapshot`: still a participant, and its
/// certificate not revoked.
fn still_admitted(snapshot: &Snapshot, caller: &Caller) -> bool {
    snapshot.is_participant(&caller.org)
        && caller
            .certificate_sha256
            .as_deref()
            .is_none_or(|fp| !snapshot.is_revoked(fp))
}

impl DirectoryService {
    /// Serves `directory`; watch streams end at `shutdown`, so they never hold up a drain.
    pub fn new(directory: Arc<Directory>, shutdown: CancellationToken) -> Self {
        Self {
            directory,
            shutdown,
        }
    }

    fn wire(&self) -> Result<Arc<doorzet_mesh::Snapshot>, Status> {
        self.directory
            .current()
            .ok_or_else(|| Status::unavailable("directory not loaded"))
    }
}

/// The stream of directories a watcher receives.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::ListMembersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl directory_server::Directory for DirectoryService {
    async fn watch_members(
        &self,
        request: Request<v1::WatchMembersRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = Caller::from_request(&request)?.clone();
        let mut changes = self.directory.subscribe();
        changes.mark_changed();
        let state = (
            changes,
            self.directory.clone(),
            caller,
            self.shutdown.clone(),
            false,
        );
        let stream = futures_util::stream::unfold(
            state,
            |(mut changes, directory, caller, shutdown, is_done)| async move {
                if is_done {
                    return None;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    changed = changes.changed() => changed.ok()?,
                }
                let snapshot = directory.current()?;
                let item = if still_admitted(&snapshot, &caller) {
                    Ok(snapshot.wire.clone())
                } else {
                    Err(Status::permission_denied(format!(
                        "organisation {} is no longer admitted to the directory",
                        caller.org
                    )))
                };
                let is_done = item.is_err();
                Some((item, (changes, directory, caller, shutdown, is_done)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

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
