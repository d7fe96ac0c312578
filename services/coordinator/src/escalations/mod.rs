//! The escalation ladder at work: registrations checked against the region's ladder, participants
//! resolved from the members' mandates, grants issued, and every transition of the lifecycle
//! (`doorzet_domain::lifecycle`) stored in one transaction with its events, audit entries and
//! notifications. Background workers deliver the notifications ([`outbox`]), fire deadlines
//! ([`scheduler`]) and drain audit entries into the log ([`audit_drain`]).
//!
//! The ZVH has no legal basis of its own: every record says it acts on behalf of the registering
//! organisation.

pub mod audit_drain;
mod committer;
pub mod outbox;
pub mod peers;
pub mod report;
pub mod scheduler;
pub mod store;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use doorzet_domain::disclosure::FactCategory;
use doorzet_domain::grant::GrantClaims;
use doorzet_domain::ladder::{RegionLadder, RegistrationRefused, Seat};
use doorzet_domain::lifecycle::{self, Event, Happened, State};
use doorzet_domain::{Oin, OrgKind};
use doorzet_mesh::grant_signer::GrantSigner;
use doorzet_mesh::{Caller, Person};
use doorzet_proto::convert::{self, ConvertError};
use doorzet_proto::v1;
use doorzet_store::Database;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, broadcast};

use crate::Error;
use crate::clock::Clock;
use crate::config::EscalationsConfig;
pub use outbox::DeliveryMetrics;
use peers::Peers;
use scheduler::DueKind;
pub use scheduler::FiringMetrics;

/// The engine's metrics.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// How late deadlines fire.
    pub firing: FiringMetrics,
    /// How notifications reach the nodes.
    pub delivery: DeliveryMetrics,
}

impl EngineMetrics {
    /// Registers them all in `metrics`.
    pub fn register(metrics: &doorzet_mesh::layers::metrics::Metrics) -> Self {
        Self {
            firing: FiringMetrics::register(metrics),
            delivery: DeliveryMetrics::register(metrics),
        }
    }
}

/// The escalation engine, shared by the gRPC service and the workers.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    committer: committer::Committer,
    ladder: RegionLadder,
    org: Oin,
    peers: Peers,
    grants: GrantSigner,
    config: EscalationsConfig,
    clock: Clock,
    audit: doorzet_audit::log::AuditLog,
    /// This coordinator instance (host and listener), holder of outbox claims.
    instance: String,
    /// Notifications committed by this instance, waiting for the delivery loop.
    fresh: Arc<outbox::Fresh>,
    outbox_wake: Notify,
    scheduler_wake: Notify,
    audit_wake: Notify,
    events: broadcast::Sender<v1::EscalationEvent>,
    metrics: EngineMetrics,
}

/// Loads and checks the ladder file, naming the file in any error.
pub fn load_ladder(path: &std::path::Path) -> Result<RegionLadder, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("ladder {}: {e}", path.display())))?;
    let ladder = RegionLadder::from_toml(&text)
        .map_err(|e| Error::Config(format!("ladder {}: {e}", path.display())))?;
    if ladder.region.example_values {
        tracing::warn!(ladder = %path.display(), "the ladder's terms are example values (example_values = true): replace them with the region's agreements");
    }
    Ok(ladder)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument(ConvertError::new(field, reason))
}

fn check_request_id(value: &str) -> Result<(), Error> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(invalid(
            "request_id",
            "must be 1 to 64 of letters, digits, `.`, `_`, `:` and `-`",
        ));
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max: usize, required: bool) -> Result<(), Error> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(field, "must not hold control characters"));
    }
    if doorzet_domain::bsn::contains_bsn_shaped(value) {
        return Err(invalid(
            field,
            "holds a number that could be a citizen service number; direct identifiers stay at the nodes",
        ));
    }
    Ok(())
}

fn hash_request(method: &str, message: &impl Message) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(message.encode_to_vec());
    hex::encode(h.finalize())
}

fn to_time(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// The lifecycle's view of a stored escalation.
fn lifecycle_of(e: &v1::Escalation) -> Result<lifecycle::Escalation, Error> {
    Ok(lifecycle::Escalation {
        state: convert::escalation_state("state", e.state)
            .map_err(|_| Error::Corrupt(format!("state of {}", e.escalation_id)))?,
        tier: e.tier,
        urgent: e.urgent,
        deadline: to_time(e.deadline),
        term_alerted: e.term_alerted,
        meeting_at: e.meeting.as_ref().and_then(|m| to_time(m.at)),
        follow_up_at: e.decision.as_ref().and_then(|d| to_time(d.follow_up_at)),
        follow_up_reminded: e.follow_up_reminded,
        sequence: e.sequence,
    })
}

fn action_of(happened: Happened) -> v1::AuditAction {
    use v1::AuditAction as A;
    match happened {
        Happened::Accepted => A::EscalationAccepted,
        Happened::Rejected => A::EscalationRejected,
        Happened::ParticipantsResolved => A::ParticipantsResolved,
        Happened::MeetingPlanned => A::MeetingPlanned,
        Happened::Decided => A::DecisionRecorded,
        Happened::Monitoring | Happened::ScaledDown => A::ScaledDown,
        Happened::Escalated => A::Escalated,
        Happened::TermPassedAlert => A::DeadlinePassed,
        Happened::FollowUpDue => A::FollowUpDue,
        Happened::Closed => A::Closed,
        Happened::Reopened => A::Reopened,
    }
}

/// What a transition records besides the state: the event type (when it is not the lifecycle's),
/// the audit action and the notifications.
#[derive(Debug, Clone)]
struct Record {
    event: v1::EscalationEventType,
    action: v1::AuditAction,
    from_tier: u32,
    /// The participants notified besides the registrant: the table as it is after this event, so
    /// a table resolved by a later event of the same change hears of the escalation from its
    /// invitation, and the table a case leaves hears that it left.
    audience: Vec<String>,
}

/// What a transition does.
#[derive(Debug, Clone)]
enum Step {
    /// A lifecycle event.
    Lifecycle(Event),
    /// An event outside the lifecycle (a commitment reported or overdue): the state stays.
    Note {
        event: v1::EscalationEventType,
        action: v1::AuditAction,
        alert: bool,
    },
}

/// An escalation being changed, with what the change records.
struct Change {
    escalation: v1::Escalation,
    expected: Option<u64>,
    records: Vec<Record>,
    actor_org: Oin,
    actor_subject: String,
    grant: Option<String>,
    request: Option<(String, String, String)>,
    alert_director: bool,
}

impl Engine {
    /// The engine on `db`, with the coordinator's own organisation `org`.
    #[allow(clippy::too_many_arguments)] // the coordinator's parts, wired once in `serve`
    pub fn new(
        db: Database,
        ladder: RegionLadder,
        org: Oin,
        peers: Peers,
        grants: GrantSigner,
        config: EscalationsConfig,
        clock: Clock,
        audit: doorzet_audit::log::AuditLog,
        instance: String,
        metrics: EngineMetrics,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let fresh = Arc::new(outbox::Fresh::default());
        Self {
            inner: Arc::new(Inner {
                committer: committer::Committer::spawn(db.clone(), fresh.clone(), instance.clone()),
                fresh,
                db,
                ladder,
                org,
                peers,
                grants,
                config,
                clock,
                audit,
                instance,
                outbox_wake: Notify::new(),
                scheduler_wake: Notify::new(),
                audit_wake: Notify::new(),
                events,
                metrics,
            }),
        }
    }

    /// The clock deadlines run on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The ladder in force.
    pub fn ladder(&self) -> &RegionLadder {
        &self.inner.ladder
    }

    /// Events as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<v1::EscalationEvent> {
        self.inner.events.subscribe()
    }

    /// Starts the delivery, deadline and audit workers.
    pub fn spawn_workers(&self, shutdown: tokio_util::sync::CancellationToken) {
        outbox::spawn(self.clone(), shutdown.clone());
        scheduler::spawn(self.clone(), shutdown.clone());
        audit_drain::spawn(self.clone(), shutdown);
    }

    fn is_process_director(&self, caller: &Caller) -> bool {
        let pd = &self.inner.ladder.region.process_director;
        caller.kind == Some(pd.kind) && caller.person.as_ref().is_some_and(|p| p.role == pd.role)
    }

    fn person(caller: &Caller) -> Result<&Person, Error> {
        caller.person.as_ref().ok_or_else(|| {
            Error::Unauthenticated(
                "a person's token is required (the node forwards its caller's token)".into(),
            )
        })
    }

    /// One escalation, for a caller that takes part in it or the process director.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<v1::Escalation, Error> {
        let esc = store::get(&self.inner.db, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("escalation {id}")))?;
        if !self.is_process_director(caller)
            && !store::is_member(&self.inner.db, id, caller.org.as_str()).await?
        {
            // The same answer as for an unknown id: a stranger learns nothing of what exists.
            return Err(Error::NotFound(format!("escalation {id}")));
        }
        Ok(esc)
    }

    /// Lists escalations the caller takes part in (the process director: all, or one
    /// organisation's).
    pub async fn list(
        &self,
        caller: &Caller,
        req: v1::ListEscalationsRequest,
    ) -> Result<v1::ListEscalationsResponse, Error> {
        let limit = match req.page_size {
            0 => 50,
            n if n > 500 => return Err(invalid("page_size", "must be at most 500")),
            n => n,
        };
        let org = if self.is_process_director(caller) {
            (!req.org.is_empty())
                .then(|| convert::oin("org", &req.org).map(|o| o.to_string()))
                .transpose()?
        } else {
            if !req.org.is_empty() && req.org != caller.org.as_str() {
                return Err(Error::PermissionDenied(
                    "only the process director lists another organisation's escalations".into(),
                ));
            }
            Some(caller.org.to_string())
        };
        let mut states = Vec::new();
        for s in &req.states {
            let state = convert::escalation_state("states", *s)?;
            states.push(v1::EscalationState::from(state).as_str_name().to_owned());
        }
        let after = if req.page_token.is_empty() {
            None
        } else {
            let (at, id) = req
                .page_token
                .split_once('.')
                .and_then(|(a, id)| Some((a.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| invalid("page_token", "is not a token from a previous page"))?;
            Some((at, id))
        };
        let filter = store::ListFilter {
            states,
            tier: req.tier,
            deadline_before: convert::time("deadline_before", req.deadline_before)?,
            org,
            limit,
            after,
        };
        let (escalations, next) = store::list(&self.inner.db, &filter).await?;
        Ok(v1::ListEscalationsResponse {
            escalations,
            next_page_token: next.map(|(a, id)| format!("{a}.{id}")).unwrap_or_default(),
        })
    }

    /// Events of an escalation after `after` (the caller must be allowed to see it).
    pub async fn events_after(
        &self,
        id: &str,
        after: u64,
    ) -> Result<Vec<v1::EscalationEvent>, Error> {
        store::events_after(&self.inner.db, id, after).await
    }

    /// An idempotent repeat: the escalation the first request answered with.
    async fn repeated(
        &self,
        org: Oin,
        request_id: &str,
        hash: &str,
    ) -> Result<Option<v1::Escalation>, Error> {
        match store::request(&self.inner.db, org.as_str(), request_id).await? {
            None => Ok(None),
            Some((h, id)) if h == hash => Ok(store::get(&self.inner.db, &id).await?),
            Some(_) => Err(Error::AlreadyExists(format!(
                "request_id {request_id} was used for another request"
            ))),
        }
    }

    /// Registers an escalation for the calling organisation.
    pub async fn submit(
        &self,
        caller: &Caller,
        req: v1::SubmitEscalationRequest,
    ) -> Result<v1::Escalation, Error> {
        let person = Self::person(caller)?;
        check_request_id(&req.request_id)?;
        let hash = hash_request("SubmitEscalation", &req);
        if let Some(first) = self.repeated(caller.org, &req.request_id, &hash).await? {
            return Ok(first);
        }
        doorzet_domain::bsn::check_case_ref(&req.case_ref)
            .map_err(|why| invalid("case_ref", why))?;
        let mut categories = Vec::new();
        for c in &req.categories {
            categories.push(convert::vocab::<FactCategory>("categories", c)?);
        }
        check_text("question", &req.question, 2000, true)?;
        let mut tried = BTreeSet::new();
        for t in &req.tables_tried {
            if t.tier == 0 || t.tier >= req.tier {
                return Err(invalid(
                    "tables_tried.tier",
                    "must be a tier below the one asked for",
                ));
            }
            if t.outcome == v1::TableOutcome::Unspecified as i32
                || v1::TableOutcome::try_from(t.outcome).is_err()
            {
                return Err(invalid("tables_tried.outcome", "must be set"));
            }
            check_text("tables_tried.table", &t.table, 200, true)?;
            tried.insert(t.tier);
        }
        let mut asked = Vec::new();
        for s in &req.asked_seats {
            let kind: OrgKind = s
                .org_kind
                .parse()
                .map_err(|_| invalid("asked_seats.org_kind", "is not an organisation kind"))?;
            check_text("asked_seats.role", &s.role, 64, true)?;
            asked.push(Seat {
                kind,
                role: s.role.clone(),
            });
        }
        let kind = caller.kind.ok_or_else(|| {
            Error::PermissionDenied("only a member of the directory may register".into())
        })?;
        let ladder = &self.inner.ladder;
        let now = self.inner.clock.now();
        if let Err(refused) = ladder.check_registration(
            req.tier,
            kind,
            std::slice::from_ref(&person.role),
            &tried,
            req.urgent,
        ) {
            self.record_refusal(caller, person, &req.case_ref, &refused, now)
                .await?;
            return Err(match refused {
                RegistrationRefused::NoSuchTier(_) => invalid("tier", refused.to_string()),
                RegistrationRefused::EarlierTierNotTried { .. } => {
                    Error::FailedPrecondition(refused.to_string())
                }
                _ => Error::PermissionDenied(refused.to_string()),
            });
        }
        let tier = ladder.tier(req.tier).expect("checked");
        let registered = lifecycle::Escalation::registered(req.tier, req.urgent);
        let accepted = lifecycle::apply(&registered, ladder, &Event::Accept, now)
            .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        let mut escalation = v1::Escalation {
            // Time-ordered: the escalation's rows (events, members, grants, and the nodes' inbox
            // rows) are keyed by it, and their B-trees then grow at the end.
            escalation_id: doorzet_store::ids::ordered("esc"),
            case_ref: req.case_ref.clone(),
            region: ladder.region.id.clone(),
            tier: req.tier,
            tier_name: tier.name.clone(),
            table: tier.table.clone(),
            urgent: req.urgent,
            registrant_org: caller.org.to_string(),
            registrant_person: person.subject.clone(),
            on_behalf_of_org: caller.org.to_string(),
            categories: categories.iter().map(|c| c.as_str().to_owned()).collect(),
            question: req.question.clone(),
            tables_tried: req.tables_tried.clone(),
            registered_at: Some(now.into()),
            ..Default::default()
        };
        set_lifecycle(&mut escalation, &accepted.escalation, ladder);
        let mut change = Change {
            escalation,
            expected: None,
            records: vec![Record {
                event: accepted.happened.into(),
                action: v1::AuditAction::EscalationAccepted,
                from_tier: req.tier,
                audience: Vec::new(),
            }],
            actor_org: caller.org,
            actor_subject: person.subject.clone(),
            grant: None,
            request: Some((caller.org.to_string(), req.request_id.clone(), hash)),
            alert_director: false,
        };
        self.resolve_participants(&mut change, &asked, now).await?;
        self.commit(change, now).await
    }

    /// Records a refused registration in the audit log (metadata only).
    async fn record_refusal(
        &self,
        caller: &Caller,
        person: &Person,
        case_ref: &str,
        refused: &RegistrationRefused,
        now: SystemTime,
    ) -> Result<(), Error> {
        tracing::info!(org = %caller.org, reason = %refused, "escalation registration refused");
        let mut entry = doorzet_audit::entry::new_entry(
            now,
            self.inner.org,
            v1::AuditAction::EscalationRegistered,
        );
        entry.actor_subject = person.subject.clone();
        entry.on_behalf_of_org = caller.org.to_string();
        entry.case_ref = case_ref.to_owned();
        entry.outcome = v1::AuditOutcome::Refused as i32;
        let bytes = doorzet_audit::entry::encode(&entry)
            .map_err(|e| Error::Corrupt(format!("refusal entry: {e}")))?;
        let write = store::Write {
            audit: vec![bytes],
            ..Default::default()
        };
        store::commit_audit_only(&self.inner.db, &write).await?;
        self.inner.audit_wake.notify_one();
        Ok(())
    }

    /// Resolves the table's participants at the escalation's tier, issues the grant, and records
    /// the `ParticipantsResolved` transition.
    async fn resolve_participants(
        &self,
        change: &mut Change,
        asked: &[Seat],
        now: SystemTime,
    ) -> Result<(), Error> {
        let ladder = &self.inner.ladder;
        let e = &mut change.escalation;
        let categories: Vec<FactCategory> =
            e.categories.iter().filter_map(|c| c.parse().ok()).collect();
        let tier = ladder
            .tier(e.tier)
            .ok_or_else(|| Error::Corrupt(format!("tier {} of {}", e.tier, e.escalation_id)))?;
        let required: BTreeSet<Seat> = tier.required.iter().cloned().collect();
        let seats: Vec<(Seat, v1::SeatKind)> = ladder
            .seats(e.tier, &categories, asked)
            .into_iter()
            .map(|s| {
                let kind = if required.contains(&s) {
                    v1::SeatKind::Required
                } else {
                    v1::SeatKind::CaseDependent
                };
                (s, kind)
            })
            .collect();
        let registrant = convert::oin("registrant_org", &e.registrant_org)?;
        let registrant_kind = self
            .inner
            .peers
            .directory()
            .current()
            .and_then(|s| s.member(&registrant).map(|m| m.kind))
            .unwrap_or(OrgKind::Other);
        e.participants = self
            .inner
            .peers
            .resolve(&seats, e.tier, (registrant, registrant_kind), now)
            .await;
        e.table_complete = !e
            .participants
            .iter()
            .any(|p| p.missing && p.kind == v1::SeatKind::Required as i32);
        let before = lifecycle_of(e)?;
        let t = lifecycle::apply(&before, ladder, &Event::ResolveParticipants, now)
            .map_err(|err| Error::FailedPrecondition(err.to_string()))?;
        set_lifecycle(e, &t.escalation, ladder);
        let mut participants: Vec<String> = participant_orgs(e);
        change.records.push(Record {
            event: t.happened.into(),
            action: action_of(t.happened),
            from_tier: t.from_tier,
            audience: participants.clone(),
        });
        if !participants.contains(&e.registrant_org) {
            participants.push(e.registrant_org.clone());
        }
        let purpose = if e.urgent {
            "urgent_intervention"
        } else {
            "escalation_meeting"
        };
        let at = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = GrantClaims {
            iss: self.inner.org.to_string(),
            jti: doorzet_store::ids::random("grant"),
            escalation_id: e.escalation_id.clone(),
            case_ref: e.case_ref.clone(),
            tier: e.tier,
            participants,
            purpose: purpose.into(),
            iat: at,
            // A little in the past for clock skew; nothing extends the expiry.
            nbf: at.saturating_sub(60),
            exp: at.saturating_sub(60) + self.inner.config.grant_validity.as_secs(),
        };
        change.grant = Some(
            self.inner
                .grants
                .sign(&claims)
                .map_err(|err| Error::Config(err.to_string()))?,
        );
        Ok(())
    }

    /// Applies a step asked for by `caller` (or by the scheduler when `actor` is `None`), with
    /// `edit` filling in what the request carries; a move to another tier resolves that tier's
    /// participants in the same transaction.
    async fn transition(
        &self,
        id: &str,
        actor: Option<(&Caller, &Person)>,
        step: Step,
        request: Option<(String, String, String)>,
        edit: impl Fn(&mut v1::Escalation),
    ) -> Result<v1::Escalation, Error> {
        self.transition_from(None, id, actor, step, request, edit)
            .await
    }

    /// As [`Engine::transition`], from `known`, the escalation as just read, on the first try.
    async fn transition_from(
        &self,
        mut known: Option<v1::Escalation>,
        id: &str,
        actor: Option<(&Caller, &Person)>,
        step: Step,
        request: Option<(String, String, String)>,
        edit: impl Fn(&mut v1::Escalation),
    ) -> Result<v1::Escalation, Error> {
        for _ in 0..3 {
            let now = self.inner.clock.now();
            let stored = match known.take() {
                Some(e) => e,
                None => store::get(&self.inner.db, id)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("escalation {id}")))?,
            };
            let before = lifecycle_of(&stored)?;
            let mut escalation = stored.clone();
            let (mut record, alert, new_tier) = match &step {
                Step::Lifecycle(event) => {
                    let t = lifecycle::apply(&before, &self.inner.ladder, event, now)
                        .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
                    set_lifecycle(&mut escalation, &t.escalation, &self.inner.ladder);
                    (
                        Record {
                            event: t.happened.into(),
                            action: action_of(t.happened),
                            from_tier: t.from_tier,
                            audience: Vec::new(),
                        },
                        t.happened == Happened::TermPassedAlert,
                        t.escalation.state == State::Accepted,
                    )
                }
                Step::Note {
                    event,
                    action,
                    alert,
                } => {
                    escalation.sequence += 1;
                    (
                        Record {
                            event: *event,
                            action: *action,
                            from_tier: stored.tier,
                            audience: Vec::new(),
                        },
                        *alert,
                        false,
                    )
                }
            };
            edit(&mut escalation);
            record.audience = participant_orgs(&escalation);
            let (actor_org, actor_subject) = match actor {
                Some((c, p)) => (c.org, p.subject.clone()),
                None => (self.inner.org, "doorzet-coordinator".to_owned()),
            };
            let mut change = Change {
                escalation,
                expected: Some(stored.sequence),
                records: vec![record],
                actor_org,
                actor_subject,
                grant: None,
                request: request.clone(),
                alert_director: alert,
            };
            if new_tier {
                // A new tier (up, down or reopened): its own table.
                change.escalation.meeting = None;
                change.escalation.decision = None;
                self.resolve_participants(&mut change, &[], now).await?;
            }
            match self.commit(change, now).await {
                Ok(e) => return Ok(e),
                Err(Error::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(
            "the escalation kept changing; try again".into(),
        ))
    }

    /// Stores a change with its events, audit entries and notifications, then wakes the workers.
    async fn commit(&self, change: Change, now: SystemTime) -> Result<v1::Escalation, Error> {
        let mut e = change.escalation;
        let first_sequence = e.sequence + 1 - change.records.len() as u64;
        e.updated_at = Some(now.into());
        let mut write = store::Write {
            expected_sequence: change.expected,
            next_due: next_due(&e)?,
            members: participant_orgs(&e),
            request: change.request,
            ..Default::default()
        };
        write.members.push(e.registrant_org.clone());
        let director_orgs: Vec<String> = if change.alert_director {
            self.director_orgs()
        } else {
            Vec::new()
        };
        for (i, record) in change.records.iter().enumerate() {
            let sequence = first_sequence + i as u64;
            let event = v1::EscalationEvent {
                escalation_id: e.escalation_id.clone(),
                sequence,
                r#type: record.event as i32,
                occurred_at: Some(now.into()),
                tier: e.tier,
                state: e.state,
                actor_org: change.actor_org.to_string(),
                from_tier: record.from_tier,
            };
            let mut entry = doorzet_audit::entry::new_entry(now, self.inner.org, record.action);
            entry.actor_subject = change.actor_subject.clone();
            entry.on_behalf_of_org = e.registrant_org.clone();
            entry.escalation_id = e.escalation_id.clone();
            entry.case_ref = e.case_ref.clone();
            write.audit.push(
                doorzet_audit::entry::encode(&entry)
                    .map_err(|err| Error::Corrupt(format!("audit entry: {err}")))?,
            );
            let invite = record.event == v1::EscalationEventType::ParticipantsResolved;
            let mut recipients: Vec<(String, v1::EscalationEventType)> = record
                .audience
                .iter()
                .filter(|o| **o != e.registrant_org)
                .cloned()
                .map(|o| {
                    let kind = if invite {
                        v1::EscalationEventType::Invited
                    } else {
                        record.event
                    };
                    (o, kind)
                })
                .collect();
            recipients.push((e.registrant_org.clone(), record.event));
            for org in &director_orgs {
                if !recipients.iter().any(|(o, _)| o == org) {
                    recipients.push((org.clone(), record.event));
                }
            }
            for (org, kind) in recipients {
                write.outbox.push((
                    org.clone(),
                    v1::NotifyRequest {
                        notification_id: format!("{}.{}.{}", e.escalation_id, sequence, org),
                        escalation_id: e.escalation_id.clone(),
                        event: kind as i32,
                        occurred_at: Some(now.into()),
                        sequence,
                        case_ref: e.case_ref.clone(),
                        tier: e.tier,
                        grant: if invite {
                            change.grant.clone().unwrap_or_default()
                        } else {
                            String::new()
                        },
                    },
                ));
            }
            write.events.push(event);
        }
        write.escalation = e.clone();
        let events = write.events.clone();
        if !self.inner.committer.commit(write, now).await? {
            return Err(Error::Conflict);
        }
        self.inner.audit_wake.notify_one();
        self.inner.outbox_wake.notify_one();
        self.inner.scheduler_wake.notify_one();
        for event in events {
            let _ = self.inner.events.send(event);
        }
        Ok(e)
    }

    /// The organisations of the process director's kind (alerted when a term passes).
    fn director_orgs(&self) -> Vec<String> {
        let kind = self.inner.ladder.region.process_director.kind;
        self.inner
            .peers
            .directory()
            .current()
            .map(|s| {
                s.members
                    .values()
                    .filter(|m| m.kind == kind)
                    .map(|m| m.org.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn acting<'a>(&self, caller: &'a Caller) -> Result<(&'a Caller, &'a Person), Error> {
        Ok((caller, Self::person(caller)?))
    }

    /// Checks the caller may act on escalation `id` as the current tier's organiser (or the
    /// process director).
    async fn organiser_or_director(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<v1::Escalation, Error> {
        let esc = self.get(caller, id).await?;
        if self.is_process_director(caller) {
            return Ok(esc);
        }
        let organiser = self
            .inner
            .ladder
            .tier(esc.tier)
            .map(|t| t.organiser.clone())
            .ok_or_else(|| Error::Corrupt(format!("tier of {id}")))?;
        let role = caller.person.as_ref().map(|p| p.role.as_str());
        if caller.kind != Some(organiser.kind) || role != Some(organiser.role.as_str()) {
            return Err(Error::PermissionDenied(format!(
                "only the tier's organiser ({} {}) or the process director may do this",
                organiser.kind, organiser.role
            )));
        }
        Ok(esc)
    }

    async fn keyed<M: Message>(
        &self,
        caller: &Caller,
        method: &str,
        request_id: &str,
        message: &M,
    ) -> Result<Result<(String, String, String), v1::Escalation>, Error> {
        check_request_id(request_id)?;
        let hash = hash_request(method, message);
        match self.repeated(caller.org, request_id, &hash).await? {
            Some(first) => Ok(Err(first)),
            None => Ok(Ok((caller.org.to_string(), request_id.to_owned(), hash))),
        }
    }

    /// Plans the meeting (the tier's organiser or the process director), within the term.
    pub async fn plan_meeting(
        &self,
        caller: &Caller,
        req: v1::PlanMeetingRequest,
    ) -> Result<v1::Escalation, Error> {
        let actor = self.acting(caller)?;
        let key = match self
            .keyed(caller, "PlanMeeting", &req.request_id, &req)
            .await?
        {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
        let at = convert::time("at", req.at)?.ok_or_else(|| invalid("at", "must be set"))?;
        check_text("location", &req.location, 200, false)?;
        self.organiser_or_director(caller, &req.escalation_id)
            .await?;
        let organiser = caller.org.to_string();
        self.transition(
            &req.escalation_id,
            Some(actor),
            Step::Lifecycle(Event::PlanMeeting { at }),
            Some(key),
            |e| {
                e.meeting = Some(v1::Meeting {
                    at: Some(at.into()),
                    location: req.location.clone(),
                    organiser_org: organiser.clone(),
                })
            },
        )
        .await
    }

    /// Records the decision with its commitments, each checked against the committed
    /// organisation's mandates.
    pub async fn record_decision(
        &self,
        caller: &Caller,
        req: v1::RecordDecisionRequest,
    ) -> Result<v1::Escalation, Error> {
        let actor = self.acting(caller)?;
        let key = match self
            .keyed(caller, "RecordDecision", &req.request_id, &req)
            .await?
        {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
        check_text("summary", &req.summary, 4000, true)?;
        check_text("lessons", &req.lessons, 4000, false)?;
        check_text("national_advice", &req.national_advice, 4000, false)?;
        if req.commitments.is_empty() || req.commitments.len() > 50 {
            return Err(invalid("commitments", "must list 1 to 50 commitments"));
        }
        let esc = self
            .organiser_or_director(caller, &req.escalation_id)
            .await?;
        let now = self.inner.clock.now();
        let mut commitments = Vec::new();
        for (i, c) in req.commitments.iter().enumerate() {
            let org = convert::oin("commitments.org", &c.org)?;
            check_text("commitments.action", &c.action, 1000, true)?;
            let due = convert::time("commitments.due", c.due)?
                .ok_or_else(|| invalid("commitments.due", "must be set"))?;
            if due <= now {
                return Err(invalid("commitments.due", "must be in the future"));
            }
            if c.mandate_id.is_empty() {
                return Err(invalid("commitments.mandate_id", "must name a mandate"));
            }
            let held = self
                .inner
                .peers
                .mandates(org, esc.tier, "", now)
                .await
                .map_err(|why| {
                    Error::Unavailable(format!(
                        "commitment {}: cannot check {org}'s mandates: {why}",
                        i + 1
                    ))
                })?;
            if !held.iter().any(|m| m.mandate_id == c.mandate_id) {
                return Err(Error::FailedPrecondition(format!(
                    "commitment {}: {org} holds no current mandate `{}` at tier {}",
                    i + 1,
                    c.mandate_id,
                    esc.tier
                )));
            }
            commitments.push(v1::Commitment {
                commitment_id: format!("cmt-{}", i + 1),
                org: c.org.clone(),
                action: c.action.clone(),
                due: c.due,
                mandate_id: c.mandate_id.clone(),
                state: v1::CommitmentState::Open as i32,
                ..Default::default()
            });
        }
        let tier = esc.tier;
        self.transition(
            &req.escalation_id,
            Some(actor),
            Step::Lifecycle(Event::Decide),
            Some(key),
            |e| {
                let follow_up_at = e.decision.as_ref().and_then(|d| d.follow_up_at);
                e.decision = Some(v1::Decision {
                    summary: req.summary.clone(),
                    commitments: commitments.clone(),
                    decided_at: Some(now.into()),
                    follow_up_at,
                    tier,
                    lessons: req.lessons.clone(),
                    national_advice: req.national_advice.clone(),
                });
            },
        )
        .await
    }

    /// Confirms the follow-up (the registrant): solved closes, not solved reopens.
    pub async fn confirm_follow_up(
        &self,
        caller: &Caller,
        req: v1::ConfirmFollowUpRequest,
    ) -> Result<v1::Escalation, Error> {
        let actor = self.acting(caller)?;
        let key = match self
            .keyed(caller, "ConfirmFollowUp", &req.request_id, &req)
            .await?
        {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
        check_text("note", &req.note, 2000, false)?;
        let esc = self.get(caller, &req.escalation_id).await?;
        if esc.registrant_org != caller.org.as_str() && !self.is_process_director(caller) {
            return Err(Error::PermissionDenied(
                "only the registrant confirms the follow-up".into(),
            ));
        }
        self.transition(
            &req.escalation_id,
            Some(actor),
            Step::Lifecycle(Event::ConfirmFollowUp { solved: req.solved }),
            Some(key),
            |_| {},
        )
        .await
    }

    /// Moves a case up by hand (the process director or the tier's organiser).
    pub async fn escalate_tier(
        &self,
        caller: &Caller,
        req: v1::EscalateTierRequest,
    ) -> Result<v1::Escalation, Error> {
        let actor = self.acting(caller)?;
        let key = match self
            .keyed(caller, "EscalateTier", &req.request_id, &req)
            .await?
        {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
        check_text("reason", &req.reason, 2000, true)?;
        self.organiser_or_director(caller, &req.escalation_id)
            .await?;
        self.transition(
            &req.escalation_id,
            Some(actor),
            Step::Lifecycle(Event::Escalate { to: req.to_tier }),
            Some(key),
            |_| {},
        )
        .await
    }

    /// Scales a case down with advice (the process director or the tier's organiser).
    pub async fn scale_down(
        &self,
        caller: &Caller,
        req: v1::ScaleDownRequest,
    ) -> Result<v1::Escalation, Error> {
        let actor = self.acting(caller)?;
        let key = match self
            .keyed(caller, "ScaleDown", &req.request_id, &req)
            .await?
        {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
        check_text("advice", &req.advice, 4000, true)?;
        self.organiser_or_director(caller, &req.escalation_id)
            .await?;
        let advice = req.advice.clone();
        self.transition(
            &req.escalation_id,
            Some(actor),
            Step::Lifecycle(Event::ScaleDown { to: req.to_tier }),
            Some(key),
            |e| e.advice = advice.clone(),
        )
        .await
    }

    /// The fixed-format report of a tier-3 decision.
    pub async fn report(&self, caller: &Caller, id: &str) -> Result<v1::GetReportResponse, Error> {
        let esc = self.get(caller, id).await?;
        let snapshot = self.inner.peers.directory().current();
        report::report(&esc, |org| {
            org.parse::<Oin>()
                .ok()
                .and_then(|o| snapshot.as_ref()?.member(&o).map(|m| m.name.clone()))
                .unwrap_or_else(|| org.to_owned())
        })
        .map_err(Error::FailedPrecondition)
    }

    /// `org`'s node says its mandates changed.
    pub fn mandates_changed(&self, org: Oin) {
        tracing::debug!(%org, "mandates changed");
        self.inner.peers.mandates_changed(org);
    }

    /// Statistics of the escalations registered in a period (any member; small counts suppressed).
    pub async fn statistics(
        &self,
        caller: &Caller,
        req: v1::GetStatisticsRequest,
    ) -> Result<v1::GetStatisticsResponse, Error> {
        if caller.kind.is_none() {
            return Err(Error::PermissionDenied(
                "statistics are for the region's members".into(),
            ));
        }
        let now = self.inner.clock.now();
        let from =
            convert::time("from", req.from)?.ok_or_else(|| invalid("from", "must be set"))?;
        let until = convert::time("until", req.until)?.unwrap_or(now);
        if until <= from {
            return Err(invalid("until", "must be after `from`"));
        }
        let escalations = store::registered_between(&self.inner.db, from, until).await?;
        Ok(report::statistics(
            &self.inner.ladder.region.id,
            &escalations,
            now,
        ))
    }

    /// Reports progress on a commitment (the committed organisation).
    pub async fn report_commitment(
        &self,
        caller: &Caller,
        req: v1::ReportCommitmentRequest,
    ) -> Result<v1::Escalation, Error> {
        let actor = self.acting(caller)?;
        let key = match self
            .keyed(caller, "ReportCommitment", &req.request_id, &req)
            .await?
        {
            Ok(key) => key,
            Err(first) => return Ok(first),
        };
        check_text("progress", &req.progress, 2000, false)?;
        let esc = self.get(caller, &req.escalation_id).await?;
        let commitment = esc
            .decision
            .as_ref()
            .and_then(|d| {
                d.commitments
                    .iter()
                    .find(|c| c.commitment_id == req.commitment_id)
            })
            .ok_or_else(|| Error::NotFound(format!("commitment {}", req.commitment_id)))?;
        if commitment.org != caller.org.as_str() {
            return Err(Error::PermissionDenied(
                "only the committed organisation reports on its commitment".into(),
            ));
        }
        if !lifecycle_of(&esc)?.state.following_up() {
            return Err(Error::FailedPrecondition(
                "the escalation has no decision being followed up".into(),
            ));
        }
        let now = self.inner.clock.now();
        self.transition(
            &req.escalation_id,
            Some(actor),
            Step::Note {
                event: v1::EscalationEventType::CommitmentReported,
                action: v1::AuditAction::CommitmentReported,
                alert: false,
            },
            Some(key),
            |e| {
                if let Some(c) = e.decision.as_mut().and_then(|d| {
                    d.commitments
                        .iter_mut()
                        .find(|c| c.commitment_id == req.commitment_id)
                }) {
                    if req.done {
                        c.state = v1::CommitmentState::Done as i32;
                    }
                    c.progress = req.progress.clone();
                    c.reported_at = Some(now.into());
                }
            },
        )
        .await
    }

    /// Fires what is due for `esc`, as the scheduler read it, at the clock's now: an overdue
    /// commitment, a passed term, or the follow-up date; counts how late it fired.
    pub(crate) async fn fire(&self, esc: v1::Escalation) -> Result<(), Error> {
        let id = esc.escalation_id.as_str();
        let now = self.inner.clock.now();
        let due = next_due(&esc)?;
        let overdue: Option<String> = overdue_commitment(&esc, now);
        let kind = if overdue.is_some() {
            DueKind::Commitment
        } else if lifecycle_of(&esc)?.state.term_runs() {
            DueKind::Term
        } else {
            DueKind::FollowUp
        };
        let step = match kind {
            DueKind::Commitment => Step::Note {
                event: v1::EscalationEventType::CommitmentOverdue,
                action: v1::AuditAction::CommitmentOverdue,
                alert: true,
            },
            DueKind::Term => Step::Lifecycle(Event::DeadlinePassed),
            DueKind::FollowUp => Step::Lifecycle(Event::FollowUpDue),
        };
        let result = self
            .transition_from(Some(esc.clone()), id, None, step, None, |e| {
                if let Some(cid) = &overdue
                    && let Some(c) = e
                        .decision
                        .as_mut()
                        .and_then(|d| d.commitments.iter_mut().find(|c| c.commitment_id == *cid))
                {
                    c.state = v1::CommitmentState::Overdue as i32;
                }
            })
            .await;
        match result {
            Ok(_) => {
                if let Some(due) = due {
                    let clock = &self.inner.clock;
                    let late = clock
                        .now()
                        .duration_since(clock.fell_due(due))
                        .unwrap_or_default();
                    self.inner.metrics.firing.observe(kind, late);
                }
                Ok(())
            }
            // Another coordinator fired it first, or it changed meanwhile.
            Err(Error::FailedPrecondition(why)) => {
                tracing::debug!(escalation = %id, reason = %why, "nothing to fire");
                store::set_due_if_unchanged(&self.inner.db, id, esc.sequence, due).await
            }
            Err(e) => Err(e),
        }
    }
}

/// The first open commitment past its due date.
fn overdue_commitment(e: &v1::Escalation, now: SystemTime) -> Option<String> {
    e.decision.as_ref()?.commitments.iter().find_map(|c| {
        (c.state == v1::CommitmentState::Open as i32 && to_time(c.due).is_some_and(|d| d <= now))
            .then(|| c.commitment_id.clone())
    })
}

/// Copies the lifecycle's fields onto the contract form.
fn set_lifecycle(e: &mut v1::Escalation, l: &lifecycle::Escalation, ladder: &RegionLadder) {
    e.state = v1::EscalationState::from(l.state) as i32;
    if let Some(tier) = ladder.tier(l.tier) {
        e.tier_name = tier.name.clone();
        e.table = tier.table.clone();
    }
    e.tier = l.tier;
    e.deadline = l.deadline.map(Into::into);
    e.term_alerted = l.term_alerted;
    e.follow_up_reminded = l.follow_up_reminded;
    e.sequence = l.sequence;
    if let Some(at) = l.follow_up_at {
        e.decision.get_or_insert_with(Default::default).follow_up_at = Some(at.into());
    }
}

fn participant_orgs(e: &v1::Escalation) -> Vec<String> {
    let mut orgs: Vec<String> = e
        .participants
        .iter()
        .filter(|p| !p.missing && !p.org.is_empty())
        .map(|p| p.org.clone())
        .collect();
    orgs.sort();
    orgs.dedup();
    orgs
}

/// When the scheduler must look at `e` next: its term, follow-up date or earliest open commitment.
fn next_due(e: &v1::Escalation) -> Result<Option<SystemTime>, Error> {
    let lifecycle = lifecycle_of(e)?.next_due();
    let commitment = e
        .decision
        .iter()
        .flat_map(|d| &d.commitments)
        .filter(|c| c.state == v1::CommitmentState::Open as i32)
        .filter_map(|c| to_time(c.due))
        .min();
    Ok(match (lifecycle, commitment) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
