//! Calls from the coordinator to the members' nodes: one mutual-TLS channel per member (checked
//! against the directory on every connection), each call carrying the audit log's latest
//! checkpoint so the node compares it with the history it has seen. Participants are resolved here
//! from the members' own `ListMandates`, asked in parallel with a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
    mandates: Arc<MandateCache>,
}

/// Members' `ListMandates` answers, reused for `ttl` unless the member says its mandates changed.
/// Callers that miss while the same question is already out wait for that answer instead of
/// asking again: a burst of deadlines moving cases to the same tier asks each member once.
#[derive(Debug, Default)]
struct MandateCache {
    ttl: Duration,
    inner: Mutex<CacheInner>,
    asking: Mutex<HashMap<MandateKey, Ask>>,
}

/// A member, tier and role asked about.
type MandateKey = (Oin, u32, String);

/// An answer on its way, shared by everyone who asked meanwhile.
type Ask = futures_util::future::Shared<
    futures_util::future::BoxFuture<'static, Result<Vec<v1::Mandate>, String>>,
>;

#[derive(Debug, Default)]
struct CacheInner {
    /// Per member, bumped by each change it announces: an answer asked for before a change is
    /// not kept after it.
    generation: HashMap<Oin, u64>,
    answers: HashMap<MandateKey, (Instant, Vec<v1::Mandate>)>,
}

/// Whether a mandate that was current when its member answered still is at `at`: not ended, not
/// expired, not past its review date. (One that became valid since is found at the next ask.)
fn still_current(m: &v1::Mandate, at: SystemTime) -> bool {
    let passed = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .is_some_and(|t| t <= at)
    };
    m.is_current && !passed(&m.valid_until) && !passed(&m.review_date) && !passed(&m.ended_at)
}

impl MandateCache {
    fn get(&self, key: &MandateKey, at: SystemTime) -> Option<Vec<v1::Mandate>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (fetched, mandates) = inner.answers.get(key)?;
        (fetched.elapsed() < self.ttl).then(|| {
            mandates
                .iter()
                .filter(|m| still_current(m, at))
                .cloned()
                .collect()
        })
    }

    fn generation(&self, org: Oin) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.generation.get(&org).copied().unwrap_or(0)
    }

    fn put(&self, key: MandateKey, generation: u64, mandates: Vec<v1::Mandate>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation.get(&key.0).copied().unwrap_or(0) == generation {
            inner.answers.insert(key, (Instant::now(), mandates));
        }
    }

    fn forget(&self, org: Oin) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.generation.entry(org).or_default() += 1;
        inner.answers.retain(|(o, _, _), _| *o != org);
        drop(inner);
        // An answer asked for before the change is not waited for after it.
        self.asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(o, _, _), _| *o != org);
    }
}

impl Peers {
    /// Channels whose calls end after `call_timeout`; `ListMandates` after `timeout`.
    pub fn new(
        tls: Arc<ReloadingTls>,
        directory: Arc<Directory>,
        audit: doorzet_audit::log::AuditLog,
        timeout: Duration,
        call_timeout: Duration,
        mandate_cache_ttl: Duration,
    ) -> Self {
        Self {
            tls,
            directory,
            audit,
            timeout,
            call_timeout: call_timeout.max(timeout),
            channels: Arc::default(),
            mandates: Arc::new(MandateCache {
                ttl: mandate_cache_ttl,
                inner: Mutex::default(),
                asking: Mutex::default(),
            }),
        }
    }

    /// `org` said its mandates changed: its cached answers are dropped.
    pub fn mandates_changed(&self, org: Oin) {
        self.mandates.forget(org);
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

    /// `org`'s current mandates for `role` at `tier`: a recent answer of its node (see
    /// [`MandateCache`]), or the node's answer now.
    pub async fn mandates(
        &self,
        org: Oin,
        tier: u32,
        role: &str,
        at: SystemTime,
    ) -> Result<Vec<v1::Mandate>, String> {
        use futures_util::FutureExt;
        let key = (org, tier, role.to_owned());
        if let Some(hit) = self.mandates.get(&key, at) {
            return Ok(hit);
        }
        let ask = {
            let mut asking = self
                .mandates
                .asking
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match asking.get(&key) {
                Some(ask) => ask.clone(),
                None => {
                    let generation = self.mandates.generation(org);
                    let (peers, asked) = (self.clone(), key.clone());
                    // Its own task: the question is answered and leaves the map (its clone of
                    // `peers` with it) even when every caller waiting for it has gone.
                    let task = tokio::spawn(async move {
                        let answer = peers.ask_mandates(org, tier, &asked.2, at).await;
                        if let Ok(mandates) = &answer {
                            peers
                                .mandates
                                .put(asked.clone(), generation, mandates.clone());
                        }
                        peers
                            .mandates
                            .asking
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&asked);
                        answer
                    });
                    let ask = async move {
                        task.await
                            .unwrap_or_else(|e| Err(format!("mandate lookup stopped: {e}")))
                    }
                    .boxed()
                    .shared();
                    asking.insert(key, ask.clone());
                    ask
                }
            }
        };
        // Asked for a moment a little earlier: judged again at `at`, as a cached answer is.
        Ok(ask
            .await?
            .into_iter()
            .filter(|m| still_current(m, at))
            .collect())
    }

    async fn ask_mandates(
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

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn org() -> Oin {
        "00000001999000002002".parse().unwrap()
    }

    fn current(id: &str, until: Option<SystemTime>) -> v1::Mandate {
        v1::Mandate {
            mandate_id: id.into(),
            is_current: true,
            valid_until: until.map(Into::into),
            ..Default::default()
        }
    }

    fn cache(ttl: Duration) -> MandateCache {
        MandateCache {
            ttl,
            ..MandateCache::default()
        }
    }

    #[test]
    fn a_cached_mandate_that_expired_since_is_not_served() {
        let now = SystemTime::now();
        let c = cache(Duration::from_secs(30));
        let key = (org(), 1, "teamleider".to_owned());
        let g = c.generation(org());
        c.put(
            key.clone(),
            g,
            vec![
                current("m-1", None),
                current("m-2", Some(now + Duration::from_secs(60))),
            ],
        );
        let ids = |v: Vec<v1::Mandate>| v.into_iter().map(|m| m.mandate_id).collect::<Vec<_>>();
        assert_eq!(ids(c.get(&key, now).unwrap()), ["m-1", "m-2"]);
        assert_eq!(
            ids(c.get(&key, now + Duration::from_secs(61)).unwrap()),
            ["m-1"]
        );
    }

    #[test]
    fn an_answer_asked_for_before_a_change_is_not_kept_after_it() {
        let c = cache(Duration::from_secs(30));
        let key = (org(), 1, "teamleider".to_owned());
        let before = c.generation(org());
        c.forget(org());
        c.put(key.clone(), before, vec![current("stale", None)]);
        assert!(c.get(&key, SystemTime::now()).is_none());
        c.put(
            key.clone(),
            c.generation(org()),
            vec![current("fresh", None)],
        );
        assert!(c.get(&key, SystemTime::now()).is_some());
        c.forget(org());
        assert!(
            c.get(&key, SystemTime::now()).is_none(),
            "a change drops it"
        );
    }

    #[test]
    fn a_zero_ttl_keeps_nothing() {
        let c = cache(Duration::ZERO);
        let key = (org(), 1, "teamleider".to_owned());
        c.put(key.clone(), 0, vec![current("m-1", None)]);
        assert!(c.get(&key, SystemTime::now()).is_none());
    }
}
