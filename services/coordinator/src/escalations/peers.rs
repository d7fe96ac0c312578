//! Calls from the coordinator to the members' nodes: one mutual-TLS channel per member (checked
//! against the directory on every connection), each call carrying the audit log's latest
//! checkpoint so the node compares it with the history it has seen. Participants are resolved here
//! from the members' own `ListMandates`, asked in parallel with a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use doorzet_domain::ladder::Seat;
use doorzet_domain::{Oin, OrgKind};
use doorzet_mesh::{Directory, ReloadingTls};
use doorzet_proto::v1::{self, partner_node_client::PartnerNodeClient};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::Error;

/// Channels to the members' nodes.
#[derive(Debug, Clone)]
pub struct Peers {
    tls: Arc<ReloadingTls>,
    directory: Arc<Directory>,
    audit: doorzet_audit::log::AuditLog,
    /// How long a `ListMandates` may take.
    timeout: Duration,
    /// The longest any call may take (the channel's limit).
    call_timeout: Duration,
    channels: Arc<Mutex<HashMap<Oin, (String, Channel)>>>,
}

impl Peers {
    /// Channels whose calls end after `call_timeout`; `ListMandates` after `timeout`.
    pub fn new(
        tls: Arc<ReloadingTls>,
        directory: Arc<Directory>,
        audit: doorzet_audit::log::AuditLog,
        timeout: Duration,
        call_timeout: Duration,
    ) -> Self {
        Self {
            tls,
            directory,
            audit,
            timeout,
            call_timeout: call_timeout.max(timeout),
            channels: Arc::default(),
        }
    }

    /// The directory in force.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// A client for `org`'s node (a new channel when its endpoint changed).
    pub fn client(&self, org: Oin) -> Result<PartnerNodeClient<Channel>, Error> {
        let snapshot = self
            .directory
            .current()
            .ok_or_else(|| Error::Unavailable("no directory yet".into()))?;
        let member = snapshot
            .member(&org)
            .ok_or_else(|| Error::NotFound(format!("member {org}")))?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((endpoint, channel)) = channels.get(&org)
            && *endpoint == member.mesh_endpoint
        {
            return Ok(PartnerNodeClient::new(channel.clone()));
        }
        let channel = doorzet_mesh::client::member_channel(
            self.tls.clone(),
            &member.mesh_endpoint,
            org,
            self.directory.clone(),
            self.call_timeout,
        )?;
        channels.insert(org, (member.mesh_endpoint.clone(), channel.clone()));
        Ok(PartnerNodeClient::new(channel))
    }

    /// `message` as a request carrying the latest checkpoint.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let (_, note) = self.audit.checkpoint();
        request.metadata_mut().insert_bin(
            doorzet_mesh::CHECKPOINT_HEADER,
            MetadataValue::from_bytes(note.as_bytes()),
        );
        request.set_timeout(self.timeout);
        request
    }

    /// `org`'s current mandates for `role` at `tier`.
    pub async fn mandates(
        &self,
        org: Oin,
        tier: u32,
        role: &str,
        at: SystemTime,
    ) -> Result<Vec<v1::Mandate>, String> {
        let mut client = self.client(org).map_err(|e| e.to_string())?;
        let request = self.request(v1::ListMandatesRequest {
            tier: Some(tier),
            role: role.to_owned(),
            valid_at: Some(at.into()),
            ..Default::default()
        });
        match tokio::time::timeout(self.timeout, client.list_mandates(request)).await {
            Ok(Ok(answer)) => Ok(answer
                .into_inner()
                .mandates
                .into_iter()
                .filter(|m| m.is_current)
                .collect()),
            Ok(Err(status)) => Err(format!(
                "node answered {:?}: {}",
                status.code(),
                status.message()
            )),
            Err(_) => Err(format!(
                "node did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    /// The participants of a table: for each seat, the members of its kind holding a current
    /// mandate for its role at `tier` (only the registrant, when it is of that kind: the
    /// organisation where the case plays). A seat nobody fills is marked missing, with why.
    pub async fn resolve(
        &self,
        seats: &[(Seat, v1::SeatKind)],
        tier: u32,
        registrant: (Oin, OrgKind),
        now: SystemTime,
    ) -> Vec<v1::Participant> {
        let Some(snapshot) = self.directory.current() else {
            return Vec::new();
        };
        let mut asks = Vec::new();
        for (i, (seat, _)) in seats.iter().enumerate() {
            let candidates: Vec<Oin> = if seat.kind == registrant.1 {
                vec![registrant.0]
            } else {
                snapshot
                    .members
                    .values()
                    .filter(|m| m.kind == seat.kind)
                    .map(|m| m.org)
                    .collect()
            };
            for org in candidates {
                let role = seat.role.clone();
                asks.push(async move { (i, org, self.mandates(org, tier, &role, now).await) });
            }
        }
        let answers = futures_util::future::join_all(asks).await;
        let mut out = Vec::new();
        for (i, (seat, kind)) in seats.iter().enumerate() {
            let pb_seat = v1::Seat {
                org_kind: seat.kind.as_str().to_owned(),
                role: seat.role.clone(),
            };
            let mut found = false;
            let mut reasons = Vec::new();
            for (_, org, answer) in answers.iter().filter(|(j, _, _)| *j == i) {
                match answer {
                    Ok(mandates) if !mandates.is_empty() => {
                        found = true;
                        out.push(v1::Participant {
                            seat: Some(pb_seat.clone()),
                            kind: *kind as i32,
                            org: org.to_string(),
                            org_name: snapshot
                                .member(org)
                                .map(|m| m.name.clone())
                                .unwrap_or_default(),
                            mandate_id: mandates[0].mandate_id.clone(),
                            missing: false,
                            missing_reason: String::new(),
                        });
                    }
                    Ok(_) => reasons.push(format!("{org}: no current mandate")),
                    Err(why) => reasons.push(format!("{org}: {why}")),
                }
            }
            if !found {
                out.push(v1::Participant {
                    seat: Some(pb_seat),
                    kind: *kind as i32,
                    missing: true,
                    missing_reason: if reasons.is_empty() {
                        format!("no member of kind {}", seat.kind)
                    } else {
                        reasons.join("; ")
                    },
                    ..Default::default()
                });
            }
        }
        out
    }
}
