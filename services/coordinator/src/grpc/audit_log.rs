//! `AuditLog`: reading the Merkle log (checkpoints, proofs, entries) for every member, and
//! appending disclosure records for nodes. What a node appends is permanent, so it is held to what
//! a node may say: only its own disclosure actions, as itself, about members, at about the current
//! time, and no more entries per second than its quota.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use doorzet_audit::entry::{self, EntryView};
use doorzet_audit::log::AuditLog;
use doorzet_audit::merkle::Hash;
use doorzet_domain::Oin;
use doorzet_mesh::Caller;
use doorzet_mesh::directory::{Directory, Snapshot};
use doorzet_proto::convert::ConvertError;
use doorzet_proto::v1::{self, audit_log_server, get_inclusion_proof_request::Entry};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::config::AuditConfig;

pub use doorzet_audit::entry::MAX_APPEND;

/// The actions a node records itself; every other action is the coordinator's.
const NODE_ACTIONS: [v1::AuditAction; 2] = [
    v1::AuditAction::FactsDisclosed,
    v1::AuditAction::FactsWithheld,
];

/// Entry `i` of an `Append` is refused for `field`.
fn invalid_entry(i: usize, field: &str, reason: &str) -> Error {
    Error::InvalidArgument(ConvertError::new(
        "entries",
        format!("entries[{i}].{field}: {reason}"),
    ))
}

/// The `AuditLog` service.
#[derive(Debug, Clone)]
pub struct AuditLogService {
    log: AuditLog,
    directory: Arc<Directory>,
    max_clock_skew: Duration,
    max_append_delay: Duration,
    quota: Arc<DefaultKeyedRateLimiter<Oin>>,
}

impl AuditLogService {
    /// Serves `log`, checking appends against `directory` and the limits in `config`.
    pub fn new(log: AuditLog, directory: Arc<Directory>, config: &AuditConfig) -> Self {
        let rate = NonZeroU32::new(config.append_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.append_burst).unwrap_or(rate);
        Self {
            log,
            directory,
            max_clock_skew: config.max_clock_skew,
            max_append_delay: config.max_append_delay,
            quota: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
        }
    }

    /// The checks of what a node may say, on one entry's fields; `Err` names the entry and field.
    fn check_node_fields(
        &self,
        snapshot: &Snapshot,
        caller: Oin,
        i: usize,
        entry: &EntryView<'_>,
        now: SystemTime,
    ) -> Result<(), Error> {
        let invalid = |field: &str, reason: &str| invalid_entry(i, field, reason);
        if entry.actor_org != caller.as_str() {
            return Err(Error::PermissionDenied(format!(
                "entries[{i}].actor_org must be the caller's organisation {caller}"
            )));
        }
        let action = v1::AuditAction::try_from(entry.action).unwrap_or_default();
        if !NODE_ACTIONS.contains(&action) {
            return Err(Error::PermissionDenied(format!(
                "entries[{i}].action: a node may record only FACTS_DISCLOSED and FACTS_WITHHELD"
            )));
        }
        for (field, value) in [
            ("on_behalf_of_org", entry.on_behalf_of_org),
            ("recipient_org", entry.recipient_org),
        ] {
            if value.is_empty() {
                continue;
            }
            let is_member = value
                .parse::<Oin>()
                .is_ok_and(|org| snapshot.member(&org).is_some());
            if !is_member {
                return Err(invalid(field, "must be a member of the directory"));
            }
        }
        if let Some(time) = &entry.time {
            let at =
                SystemTime::try_from(*time).map_err(|_| invalid("time", "is not a valid time"))?;
            // Ahead only by clock skew; behind also by the time a node's records waited for the
            // coordinator (a node queues its disclosure records while the coordinator is down).
            match at.duration_since(now) {
                Ok(ahead) if ahead > self.max_clock_skew => {
                    return Err(invalid(
                        "time",
                        &format!(
                            "lies {}s ahead of the coordinator's clock, more than audit.max_clock_skew ({}s)",
                            ahead.as_secs(),
                            self.max_clock_skew.as_secs()
                        ),
                    ));
                }
                Err(behind) if behind.duration() > self.max_append_delay => {
                    return Err(invalid(
                        "time",
                        &format!(
                            "lies {}s behind the coordinator's clock, more than audit.max_append_delay ({}s)",
                            behind.duration().as_secs(),
                            self.max_append_delay.as_secs()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks one encoded entry a node wants to append: in place when it is in canonical form
    /// (as every prost client writes it), else decoded and written canonically. `Err` names the
    /// entry and field.
    fn check_node_entry(
        &self,
        snapshot: &Snapshot,
        caller: Oin,
        i: usize,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<entry::Encoded, Error> {
        let invalid = |field: &str, reason: &str| invalid_entry(i, field, reason);
        match entry::Received::parse(bytes) {
            Ok(received) => {
                self.check_node_fields(snapshot, caller, i, received.view(), now)?;
                received.check_new()
            }
            Err(_) => {
                let decoded = v1::AuditEntry::decode(bytes)
                    .map_err(|_| invalid("bytes", "is not an AuditEntry"))?;
                self.check_node_fields(snapshot, caller, i, &EntryView::of(&decoded), now)?;
                entry::encode_new(&decoded)
            }
        }
        .map_err(|e| invalid(e.field, e.reason))
    }
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
            hashes: doorzet_audit::merkle::hashes_to_wire(proof),
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
            hashes: doorzet_audit::merkle::hashes_to_wire(proof),
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
        let caller = Caller::from_request(&request)?.org;
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
        let snapshot = self
            .directory
            .current()
            .ok_or_else(|| Error::Unavailable("directory not loaded".into()))?;
        let now = SystemTime::now();
        let encoded = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| self.check_node_entry(&snapshot, caller, i, entry, now))
            .collect::<Result<Vec<_>, _>>()?;
        let n = NonZeroU32::new(entries.len() as u32).unwrap_or(NonZeroU32::MIN);
        if !matches!(self.quota.check_key_n(&caller, n), Ok(Ok(()))) {
            return Err(Error::Quota(
                "audit append quota of this organisation used up; retry with backoff".into(),
            )
            .into());
        }
        let appended = self
            .log
            .append_checked(encoded)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(v1::AppendResponse {
            leaf_indexes: appended.indexes,
            tree_size: appended.tree_size,
        }))
    }
}
