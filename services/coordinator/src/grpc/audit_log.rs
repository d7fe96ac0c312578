//! `AuditLog`: reading the Merkle log (checkpoints, proofs, entries) for every member, and
//! appending disclosure records for nodes, each only as itself.

use doorzet_audit::log::AuditLog;
use doorzet_audit::merkle::Hash;
use doorzet_mesh::Caller;
use doorzet_proto::v1::{self, audit_log_server, get_inclusion_proof_request::Entry};
use tonic::{Request, Response, Status};

use crate::Error;

/// Most entries one `Append` call may carry.
pub const MAX_APPEND: usize = 100;

/// The `AuditLog` service.
#[derive(Debug, Clone)]
pub struct AuditLogService {
    log: AuditLog,
}

impl AuditLogService {
    /// Serves `log`.
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }
}

fn to_bytes(proof: Vec<Hash>) -> Vec<Vec<u8>> {
    proof.into_iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl audit_log_server::AuditLog for AuditLogService {
    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        Caller::from_request(&request)?;
        Ok(Response::new(v1::GetCheckpointResponse {
            checkpoint: self.log.checkpoint().1,
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<v1::GetInclusionProofRequest>,
    ) -> Result<Response<v1::GetInclusionProofResponse>, Status> {
        Caller::from_request(&request)?;
        let req = request.into_inner();
        let (leaf_index, tree_size, proof) = match req.entry {
            Some(Entry::LeafIndex(index)) => {
                let (size, proof) = self
                    .log
                    .inclusion_proof(index, req.tree_size)
                    .await
                    .map_err(Error::from)?;
                (index, size, proof)
            }
            Some(Entry::LeafHash(hash)) => {
                let hash: Hash = hash.try_into().map_err(|_| {
                    Error::InvalidArgument(doorzet_proto::convert::ConvertError::new(
                        "leaf_hash",
                        "must be 32 bytes",
                    ))
                })?;
                self.log
                    .inclusion_proof_by_hash(&hash, req.tree_size)
                    .await
                    .map_err(Error::from)?
            }
            None => {
                return Err(
                    Error::InvalidArgument(doorzet_proto::convert::ConvertError::new(
                        "entry",
                        "set leaf_index or leaf_hash",
                    ))
                    .into(),
                );
            }
        };
        Ok(Response::new(v1::GetInclusionProofResponse {
            leaf_index,
            hashes: to_bytes(proof),
            tree_size,
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<v1::GetConsistencyProofRequest>,
    ) -> Result<Response<v1::GetConsistencyProofResponse>, Status> {
        Caller::from_request(&request)?;
        let req = request.into_inner();
        let proof = self
            .log
            .consistency_proof(req.first_size, req.second_size)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::GetConsistencyProofResponse {
            hashes: to_bytes(proof),
        }))
    }

    async fn get_entries(
        &self,
        request: Request<v1::GetEntriesRequest>,
    ) -> Result<Response<v1::GetEntriesResponse>, Status> {
        Caller::from_request(&request)?;
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            100
        } else {
            u64::from(req.limit)
        };
        let entries = self
            .log
            .entries(req.start, limit)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::GetEntriesResponse { entries }))
    }

    async fn append(
        &self,
        request: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        let caller = Caller::from_request(&request)?.clone();
        let entries = request.into_inner().entries;
        if entries.is_empty() || entries.len() > MAX_APPEND {
            return Err(
                Error::InvalidArgument(doorzet_proto::convert::ConvertError::new(
                    "entries",
                    format!("must hold 1 to {MAX_APPEND} entries"),
                ))
                .into(),
            );
        }
        if entries.iter().any(|e| e.actor_org != caller.org.as_str()) {
            return Err(Error::PermissionDenied(format!(
                "entries.actor_org must be the caller's organisation {}",
                caller.org
            ))
            .into());
        }
        let appended = self.log.append(&entries).await.map_err(Error::from)?;
        Ok(Response::new(v1::AppendResponse {
            leaf_indexes: appended.indexes,
            tree_size: appended.tree_size,
        }))
    }
}
