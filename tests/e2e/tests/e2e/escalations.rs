//! The escalation ladder end to end, over real mutual TLS between an in-process coordinator and
//! nodes (`deploy/regions/local-mesh.toml`): the eviction case registered at a node, participants
//! found from the members' own mandates, invitations with grants in their inboxes, a participant
//! reading the facts the consent covers, the meeting, a decision whose commitments are checked
//! against mandates, follow-up and close; a term that passes moves the case up by itself (the
//! coordinator's clock is moved, nothing sleeps); a restarted coordinator fires a pending deadline;
//! a registrant the ladder does not allow is refused after the same call succeeds for one it does;
//! a node that hangs holds up only its own notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use doorzet_proto::v1::{
    self, coordinator_client::CoordinatorClient, node_admin_client::NodeAdminClient,
};
use doorzet_testkit::mesh::{Storage, TestNode, channel_as, with_token};
use doorzet_testkit::{TestMesh, eventually, metrics};
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::Channel;

const DAY: Duration = Duration::from_secs(24 * 3600);
// Members of the local mesh, in MEMBERS order.
const MUNICIPALITY: usize = 0;
const GGZ: usize = 1;
const CARE_OFFICE: usize = 2;
const HOUSING: usize = 3;
const ZVH: usize = 4;

fn admin(node: &TestNode) -> NodeAdminClient<Channel> {
    NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint))
}

fn coordinator(mesh: &TestMesh, node: &TestNode) -> CoordinatorClient<Channel> {
    CoordinatorClient::new(channel_as(&node.org, &mesh.coordinator.endpoint))
}

/// Gives `node` a current mandate for `role` at `tiers`; returns its id.
async fn mandate(node: &TestNode, role: &str, tiers: &[u32]) -> String {
    let now = SystemTime::now();
    admin(node)
        .create_mandate(with_token(
            v1::CreateMandateRequest {
                mandate: Some(v1::Mandate {
                    role: role.into(),
                    tiers: tiers.to_vec(),
                    domains: vec!["housing".into(), "wmo_support".into()],
                    decision_types: vec!["suspend_eviction".into(), "provide_housing".into()],
                    legal_basis: "Mandaatbesluit 2026 art. 4 (fictief)".into(),
                    valid_from: Some((now - 30 * DAY).into()),
                    review_date: Some((now + 300 * DAY).into()),
                    ..Default::default()
                }),
            },
            &node.org.token("ops-1", "beheerder"),
        ))
        .await
        .expect("mandate")
        .into_inner()
        .mandate_id
}

/// The mandates the local ladder's seats need.
async fn mandates(mesh: &TestMesh) -> Vec<String> {
    let n = &mesh.nodes;
    vec![
        mandate(&n[GGZ], "teamleider", &[1]).await,
        mandate(&n[CARE_OFFICE], "zorginkoper", &[2]).await,
        mandate(&n[MUNICIPALITY], "wethouder", &[3, 4]).await,
        mandate(&n[GGZ], "bestuurder", &[3]).await,
        mandate(&n[CARE_OFFICE], "gemandateerde", &[3]).await,
        mandate(&n[HOUSING], "directeur", &[3]).await,
        mandate(&n[HOUSING], "woonconsulent", &[1]).await,
        mandate(&n[ZVH], "manager", &[3]).await,
    ]
}

/// The municipality's case of the eviction (DOMAIN.md, case 1), with a consent for the table.
async fn eviction_case(mesh: &TestMesh) -> String {
    let node = &mesh.nodes[MUNICIPALITY];
    let token = node.org.token("cm-7", "casemanager");
    let mut admin = admin(node);
    let case = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-2026-0147".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .expect("case")
        .into_inner();
    for (category, value) in [
        ("eviction_date", "2027-01-15"),
        (
            "living_situation",
            "huurwoning, ontruimingsvonnis (fictief)",
        ),
        ("diagnosis_group", "psychotische stoornis (fictief)"),
    ] {
        admin
            .add_fact(with_token(
                v1::AddFactRequest {
                    request_id: String::new(),
                    case_id: case.case_id.clone(),
                    fact: Some(v1::Fact {
                        category: category.into(),
                        value: value.into(),
                        source: "zaaksysteem".into(),
                        ..Default::default()
                    }),
                },
                &token,
            ))
            .await
            .expect("fact");
    }
    admin
        .record_consent(with_token(
            v1::RecordConsentRequest {
                request_id: String::new(),
                consent: Some(v1::Consent {
                    case_id: case.case_id.clone(),
                    given_by: v1::ConsentGiver::Person as i32,
                    categories: vec!["eviction_date".into(), "living_situation".into()],
                    recipients: Some(v1::Recipients {
                        org_ids: vec![],
                        kinds: vec![
                            v1::OrganisationKind::MentalHealthInstitution as i32,
                            v1::OrganisationKind::HousingCorporation as i32,
                        ],
                    }),
                    purposes: vec!["escalation_meeting".into(), "urgent_intervention".into()],
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .expect("consent");
    case.case_id
}

fn escalate_request(
    case_id: &str,
    request_id: &str,
    tier: u32,
    urgent: bool,
) -> v1::EscalateRequest {
    v1::EscalateRequest {
        request_id: request_id.into(),
        case_id: case_id.into(),
        tier,
        urgent,
        categories: vec!["eviction_date".into(), "living_situation".into()],
        tables_tried: vec![v1::TableTried {
            tier: 1,
            table: "Triage- en transfertafel".into(),
            at: Some((SystemTime::now() - 3 * DAY).into()),
            outcome: v1::TableOutcome::NoMandate as i32,
        }],
        question: "Ontruiming opschorten tot er passende woonruimte met begeleiding is".into(),
        asked_seats: vec![],
    }
}

async fn inbox(node: &TestNode) -> Vec<v1::NotifyRequest> {
    admin(node)
        .list_inbox(with_token(
            v1::ListInboxRequest {
                after: 0,
                limit: 1000,
                ..Default::default()
            },
            &node.org.token("cm-1", "casemanager"),
        ))
        .await
        .expect("inbox")
        .into_inner()
        .items
        .into_iter()
        .filter_map(|i| i.notification)
        .collect()
}

/// The `(sequence, event)` of `escalation`'s notifications in `node`'s inbox, in arrival order.
async fn events_of(node: &TestNode, escalation: &str) -> Vec<(u64, i32)> {
    inbox(node)
        .await
        .into_iter()
        .filter(|n| n.escalation_id == escalation)
        .map(|n| (n.sequence, n.event))
        .collect()
}

/// Waits until `node`'s inbox holds an event of `kind` at `sequence` for `escalation`.
async fn notified(
    node: &TestNode,
    escalation: &str,
    kind: v1::EscalationEventType,
    sequence: u64,
) -> v1::NotifyRequest {
    eventually(
        Duration::from_secs(20),
        "notification in the inbox",
        || async {
            inbox(node).await.into_iter().find(|n| {
                n.escalation_id == escalation && n.event == kind as i32 && n.sequence == sequence
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_eviction_case_climbs_to_tier_3_is_decided_followed_up_and_closed() {
    eviction_case_to_closed(TestMesh::start(5).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_eviction_case_on_postgresql() {
    eviction_case_to_closed(TestMesh::start_on(Storage::Postgres, 5, |_| {}).await).await;
}

async fn eviction_case_to_closed(mesh: TestMesh) {
    let ids = mandates(&mesh).await;
    let housing_directeur = ids[5].clone();
    let case_id = eviction_case(&mesh).await;
    let municipality = &mesh.nodes[MUNICIPALITY];
    let cm = municipality.org.token("cm-7", "casemanager");

    // Urgent, straight to tier 3 after tier 1 (the ladder lets tier 3 follow tier 1).
    let request = escalate_request(&case_id, "req-1", 3, true);
    let esc = admin(municipality)
        .escalate(with_token(request.clone(), &cm))
        .await
        .expect("escalate")
        .into_inner()
        .escalation
        .expect("escalation");
    assert_eq!(esc.state, v1::EscalationState::ParticipantsResolved as i32);
    assert_eq!((esc.tier, esc.sequence), (3, 2));
    assert!(esc.table_complete, "{:?}", esc.participants);
    assert_eq!(esc.on_behalf_of_org, municipality.org.org.as_str());
    let deadline = SystemTime::try_from(esc.deadline.expect("deadline")).unwrap();
    let hours = deadline
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs_f64()
        / 3600.0;
    assert!(
        (23.0..=24.0).contains(&hours),
        "urgent tier 3 term: {hours} h"
    );
    let orgs: Vec<&str> = esc.participants.iter().map(|p| p.org.as_str()).collect();
    for i in [MUNICIPALITY, GGZ, CARE_OFFICE, HOUSING] {
        assert!(
            orgs.contains(&mesh.nodes[i].org.org.as_str()),
            "participant {i}: {orgs:?}"
        );
    }
    // A retry with the same key answers with the same escalation.
    let again = admin(municipality)
        .escalate(with_token(request.clone(), &cm))
        .await
        .expect("retry")
        .into_inner()
        .escalation
        .unwrap();
    assert_eq!(again.escalation_id, esc.escalation_id);

    // Every participant is invited with a grant; the registrant hears of every transition.
    let invite = notified(
        &mesh.nodes[HOUSING],
        &esc.escalation_id,
        v1::EscalationEventType::Invited,
        2,
    )
    .await;
    assert!(!invite.grant.is_empty());
    notified(
        municipality,
        &esc.escalation_id,
        v1::EscalationEventType::Accepted,
        1,
    )
    .await;

    // The housing corporation reads what the consent covers, with the coordinator's grant.
    let housing = &mesh.nodes[HOUSING];
    let facts = admin(housing)
        .query_partner_facts(with_token(
            v1::QueryPartnerFactsRequest {
                org_id: municipality.org.org.to_string(),
                grant: invite.grant.clone(),
                case_ref: esc.case_ref.clone(),
                categories: vec![],
            },
            &housing.org.token("wc-2", "casemanager"),
        ))
        .await
        .expect("facts with the grant")
        .into_inner();
    let mut seen: Vec<&str> = facts.facts.iter().map(|f| f.category.as_str()).collect();
    seen.sort();
    assert_eq!(seen, ["eviction_date", "living_situation"]);
    assert_eq!(facts.withheld.len(), 1);

    // The municipality's process director plans the meeting; the decision's commitments are
    // checked against the mandates their organisations hold.
    let pd = municipality.org.token("pr-1", "procesregisseur");
    let mut coordinator = coordinator(&mesh, municipality);
    let meeting_at = SystemTime::now() + Duration::from_secs(3 * 3600);
    let planned = coordinator
        .plan_meeting(with_token(
            v1::PlanMeetingRequest {
                request_id: "plan-1".into(),
                escalation_id: esc.escalation_id.clone(),
                at: Some(meeting_at.into()),
                location: "Stadhuis, kamer 2".into(),
            },
            &pd,
        ))
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(planned.state, v1::EscalationState::MeetingPlanned as i32);
    let decision = |mandate_id: &str, request_id: &str| v1::RecordDecisionRequest {
        request_id: request_id.into(),
        escalation_id: esc.escalation_id.clone(),
        summary: "Ontruiming opgeschort; begeleid wonen binnen 6 weken".into(),
        commitments: vec![v1::CommitmentInput {
            org: housing.org.org.to_string(),
            action: "Ontruiming opschorten tot 1 maart".into(),
            due: Some((SystemTime::now() + 10 * DAY).into()),
            mandate_id: mandate_id.into(),
        }],
        lessons: "Eerder opschalen bij ontruiming".into(),
        national_advice: String::new(),
    };
    let refused = coordinator
        .record_decision(with_token(decision("mandate-not-held", "dec-0"), &pd))
        .await
        .expect_err("a commitment under a mandate not held");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("mandate-not-held"));
    let decided = coordinator
        .record_decision(with_token(decision(&housing_directeur, "dec-1"), &pd))
        .await
        .expect("decision")
        .into_inner();
    assert_eq!(decided.state, v1::EscalationState::Decided as i32);
    let commitment = decided.decision.as_ref().unwrap().commitments[0].clone();

    // The housing corporation reports its commitment done; the registrant confirms the solution.
    CoordinatorClient::new(channel_as(&housing.org, &mesh.coordinator.endpoint))
        .report_commitment(with_token(
            v1::ReportCommitmentRequest {
                request_id: "rep-1".into(),
                escalation_id: esc.escalation_id.clone(),
                commitment_id: commitment.commitment_id.clone(),
                done: true,
                progress: "Opgeschort".into(),
            },
            &housing.org.token("dir-1", "directeur"),
        ))
        .await
        .expect("report");
    let closed = coordinator
        .confirm_follow_up(with_token(
            v1::ConfirmFollowUpRequest {
                request_id: "fu-1".into(),
                escalation_id: esc.escalation_id.clone(),
                solved: true,
                note: String::new(),
            },
            &cm,
        ))
        .await
        .expect("follow-up")
        .into_inner();
    assert_eq!(closed.state, v1::EscalationState::Closed as i32);
    notified(
        municipality,
        &esc.escalation_id,
        v1::EscalationEventType::Closed,
        closed.sequence,
    )
    .await;

    // The fixed-format tier-3 report, and statistics that do not single out one case.
    let report = coordinator
        .get_report(with_token(
            v1::GetReportRequest {
                escalation_id: esc.escalation_id.clone(),
            },
            &pd,
        ))
        .await
        .expect("report")
        .into_inner();
    assert!(
        report.markdown.contains("Eerder opschalen bij ontruiming"),
        "{}",
        report.markdown
    );
    assert!(report.case_description.contains(&esc.case_ref));
    assert!(
        !report.markdown.contains("zaak-2026-0147"),
        "no local identifiers"
    );
    let stats = coordinator
        .get_statistics(with_token(
            v1::GetStatisticsRequest {
                from: Some((SystemTime::now() - DAY).into()),
                until: None,
            },
            &pd,
        ))
        .await
        .expect("statistics")
        .into_inner();
    let tier3 = stats.tiers.iter().find(|t| t.tier == 3).expect("tier 3");
    assert_eq!(
        (tier3.cases, tier3.solved),
        (-1, -1),
        "one case is below the suppression limit"
    );

    // A member that takes no part sees nothing of it: NOT_FOUND, as for an unknown id.
    let zvh = &mesh.nodes[ZVH];
    let err = CoordinatorClient::new(channel_as(&zvh.org, &mesh.coordinator.endpoint))
        .get_escalation(with_token(
            v1::GetEscalationRequest {
                escalation_id: esc.escalation_id.clone(),
            },
            &zvh.org.token("x", "casemanager"),
        ))
        .await
        .expect_err("a member that takes no part");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // The whole history, in order, from the first event.
    let events = coordinator
        .watch_escalation(with_token(
            v1::WatchEscalationRequest {
                escalation_id: esc.escalation_id.clone(),
                after_sequence: 0,
            },
            &pd,
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut events = events;
    let mut sequences = Vec::new();
    while let Some(e) = events.message().await.expect("event") {
        sequences.push(e.sequence);
        if e.sequence == closed.sequence {
            break;
        }
    }
    assert_eq!(sequences, (1..=closed.sequence).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registrant_the_ladder_does_not_allow_is_refused() {
    let mesh = TestMesh::start_with(5, |c| c.access.case_roles.push("wethouder".into())).await;
    mandates(&mesh).await;
    let housing = &mesh.nodes[HOUSING];
    let case = admin(housing)
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "huur-88".into(),
                bsn: String::new(),
            },
            &housing.org.token("wc-2", "casemanager"),
        ))
        .await
        .unwrap()
        .into_inner();
    let token = housing.org.token("wc-2", "casemanager");
    // The housing corporation may register at tier 1 …
    let ok = admin(housing)
        .escalate(with_token(
            v1::EscalateRequest {
                tables_tried: vec![],
                ..escalate_request(&case.case_id, "h-1", 1, false)
            },
            &token,
        ))
        .await
        .expect("tier 1 registration")
        .into_inner();
    assert_eq!(ok.escalation.unwrap().tier, 1);
    // … not at tier 2.
    let err = admin(housing)
        .escalate(with_token(
            escalate_request(&case.case_id, "h-2", 2, false),
            &token,
        ))
        .await
        .expect_err("tier 2 registration");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("housing_corporation"),
        "{}",
        err.message()
    );
    // And a municipality may not skip to tier 4 without tier 3 outside the urgent procedure.
    let municipality = &mesh.nodes[MUNICIPALITY];
    let case_id = eviction_case(&mesh).await;
    let err = admin(municipality)
        .escalate(with_token(
            escalate_request(&case_id, "m-4", 4, false),
            &municipality.org.token("weth-1", "wethouder"),
        ))
        .await
        .expect_err("tier 4 without tier 3");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_passed_term_moves_the_case_up_by_itself_even_across_a_crash() {
    let mut mesh = TestMesh::start(5).await;
    mandates(&mesh).await;
    let case_id = eviction_case(&mesh).await;
    let municipality = &mesh.nodes[MUNICIPALITY];
    let cm = municipality.org.token("cm-7", "casemanager");
    let esc = admin(municipality)
        .escalate(with_token(
            v1::EscalateRequest {
                tables_tried: vec![],
                ..escalate_request(&case_id, "t1", 1, false)
            },
            &cm,
        ))
        .await
        .expect("tier 1")
        .into_inner()
        .escalation
        .unwrap();
    assert_eq!(esc.tier, 1);
    let id = esc.escalation_id.clone();
    let get = |mesh: &TestMesh| {
        let mut c = coordinator(mesh, &mesh.nodes[MUNICIPALITY]);
        let (id, cm) = (id.clone(), cm.clone());
        async move {
            c.get_escalation(with_token(
                v1::GetEscalationRequest { escalation_id: id },
                &cm,
            ))
            .await
            .ok()
            .map(|r| r.into_inner())
        }
    };
    // Not due yet: nothing moves.
    assert_eq!(get(&mesh).await.unwrap().tier, 1);

    // The coordinator is killed with the deadline pending (no drain) and starts again; after the
    // restart the term passes.
    mesh.crash_and_restart_coordinator().await;
    eventually(Duration::from_secs(20), "coordinator back", || get(&mesh)).await;
    mesh.clock.advance(15 * DAY);
    let moved = eventually(Duration::from_secs(20), "escalated to tier 2", || async {
        get(&mesh).await.filter(|e| e.tier == 2)
    })
    .await;
    assert_eq!(
        moved.state,
        v1::EscalationState::ParticipantsResolved as i32
    );
    assert!(SystemTime::try_from(moved.deadline.unwrap()).unwrap() > mesh.clock.now());
    // The coordinator counts how late it fired: from the clock's move past the term (the term
    // itself lies days before the clock's new now), so seconds at most.
    let metrics = coordinator_metrics(&mesh).await;
    let value = |name: &str| -> f64 {
        metrics::value(&metrics, name)
            .unwrap_or_else(|| panic!("{name} in the coordinator's metrics"))
    };
    assert_eq!(
        value("doorzet_coordinator_deadline_lag_seconds_count{due=\"term\"}"),
        1.0
    );
    let late = value("doorzet_coordinator_deadline_lag_seconds_sum{due=\"term\"}");
    assert!((0.0..10.0).contains(&late), "fired {late} s late");
    // The registrant hears of it, once.
    let municipality = &mesh.nodes[MUNICIPALITY];
    let n = notified(municipality, &id, v1::EscalationEventType::Escalated, 3).await;
    assert_eq!(n.tier, 2);
    let count = inbox(municipality)
        .await
        .iter()
        .filter(|x| x.escalation_id == id && x.sequence == 3)
        .count();
    assert_eq!(count, 1);

    // The table the case left hears that it moved up; the new table hears of the case from its
    // invitation. A participant hears nothing from before it joined: the registration's
    // `Accepted` (1) went to the registrant only. Delivery is in order per node, so once the
    // later event is in an inbox, an earlier one that was sent would be there too.
    use v1::EscalationEventType as T;
    notified(&mesh.nodes[GGZ], &id, T::Escalated, 3).await;
    assert_eq!(
        events_of(&mesh.nodes[GGZ], &id).await,
        [(2, T::Invited as i32), (3, T::Escalated as i32)],
        "the tier-1 table"
    );
    notified(&mesh.nodes[CARE_OFFICE], &id, T::Invited, 4).await;
    assert_eq!(
        events_of(&mesh.nodes[CARE_OFFICE], &id).await,
        [(4, T::Invited as i32)],
        "the tier-2 table"
    );
}

/// A decision on `escalation` with one commitment of the housing corporation under `mandate_id`,
/// due in `due_in`.
fn housing_decision(
    mesh: &TestMesh,
    escalation: &str,
    mandate_id: &str,
    due_in: Duration,
) -> v1::RecordDecisionRequest {
    v1::RecordDecisionRequest {
        request_id: "dec".into(),
        escalation_id: escalation.into(),
        summary: "Opgeschort".into(),
        commitments: vec![v1::CommitmentInput {
            org: mesh.nodes[HOUSING].org.org.to_string(),
            action: "Ontruiming opschorten".into(),
            due: Some((SystemTime::now() + due_in).into()),
            mandate_id: mandate_id.into(),
        }],
        lessons: String::new(),
        national_advice: String::new(),
    }
}

/// Registers the eviction case urgently at tier 3 and plans its meeting; returns the escalation and
/// the municipality process director's token.
async fn planned(mesh: &TestMesh) -> (v1::Escalation, String) {
    let case_id = eviction_case(mesh).await;
    let municipality = &mesh.nodes[MUNICIPALITY];
    let esc = admin(municipality)
        .escalate(with_token(
            escalate_request(&case_id, "p-1", 3, true),
            &municipality.org.token("cm-7", "casemanager"),
        ))
        .await
        .expect("escalate")
        .into_inner()
        .escalation
        .unwrap();
    let pd = municipality.org.token("pr-1", "procesregisseur");
    let esc = coordinator(mesh, municipality)
        .plan_meeting(with_token(
            v1::PlanMeetingRequest {
                request_id: "plan".into(),
                escalation_id: esc.escalation_id.clone(),
                at: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
                location: String::new(),
            },
            &pd,
        ))
        .await
        .expect("plan")
        .into_inner();
    (esc, pd)
}

/// The coordinator's metrics, as Prometheus scrapes them.
async fn coordinator_metrics(mesh: &TestMesh) -> String {
    metrics::scrape(mesh.coordinator.admin).await
}

/// The eviction case with its meeting planned and known at the registrant's node, which then stops:
/// the escalation id, the process director's token and the mandates.
async fn planned_then_registrant_node_stops(mesh: &mut TestMesh) -> (String, String, Vec<String>) {
    let ids = mandates(mesh).await;
    let (esc, pd) = planned(mesh).await;
    let id = esc.escalation_id;
    notified(
        &mesh.nodes[MUNICIPALITY],
        &id,
        v1::EscalationEventType::MeetingPlanned,
        3,
    )
    .await;
    mesh.stop_node(MUNICIPALITY).await;
    (id, pd, ids)
}

/// The table's decision (sequence 4), recorded while the registrant's node is away.
async fn decide_while_registrant_is_away(
    mesh: &TestMesh,
    id: &str,
    pd: &str,
    ids: &[String],
) -> v1::Escalation {
    let decided = coordinator(mesh, &mesh.nodes[MUNICIPALITY])
        .record_decision(with_token(
            housing_decision(mesh, id, &ids[5], 10 * DAY),
            pd,
        ))
        .await
        .expect("decision while the registrant's node is away")
        .into_inner();
    assert_eq!(decided.sequence, 4);
    decided
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_was_down_receives_every_notification_when_back() {
    let mut mesh = TestMesh::start(5).await;
    // The registrant's node goes down; the table decides meanwhile.
    let (id, pd, ids) = planned_then_registrant_node_stops(&mut mesh).await;
    decide_while_registrant_is_away(&mesh, &id, &pd, &ids).await;
    // The other participants have it (delivery works), the registrant's node cannot.
    notified(&mesh.nodes[GGZ], &id, v1::EscalationEventType::Decided, 4).await;

    mesh.start_node(MUNICIPALITY).await;
    notified(
        &mesh.nodes[MUNICIPALITY],
        &id,
        v1::EscalationEventType::Decided,
        4,
    )
    .await;
    let mut sequences: Vec<u64> = inbox(&mesh.nodes[MUNICIPALITY])
        .await
        .iter()
        .filter(|n| n.escalation_id == id)
        .map(|n| n.sequence)
        .collect();
    sequences.sort();
    assert_eq!(sequences, [1, 2, 3, 4], "every event once, none lost");
}

/// A node that hangs: its mesh address accepts connections and never answers (a stuck process, a
/// firewall that drops). Counts the connections it took.
struct Hang {
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Hang {
    async fn at(endpoint: &str) -> Self {
        let addr = endpoint.trim_start_matches("https://");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the node's address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.spawn(async move {
                    // Reads what the caller sends and answers nothing.
                    let mut buf = [0u8; 4096];
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        Self { accepted, task }
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_node_holds_up_only_its_own_notifications() {
    let mut mesh = TestMesh::start(5).await;
    // The registrant's node hangs. The decision goes to every participant; the call to the
    // registrant's node waits for an answer that does not come.
    let (id, pd, ids) = planned_then_registrant_node_stops(&mut mesh).await;
    let hang = Hang::at(&mesh.nodes[MUNICIPALITY].mesh_endpoint).await;
    let decided = decide_while_registrant_is_away(&mesh, &id, &pd, &ids).await;
    notified(&mesh.nodes[GGZ], &id, v1::EscalationEventType::Decided, 4).await;
    eventually(
        Duration::from_secs(10),
        "a connection to the hanging node",
        || async { (hang.accepted.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;

    // Progress reports follow. The first one's delivery to the hanging node waits for the
    // connection; while it waits, the next transition still reaches the other participants.
    let housing = &mesh.nodes[HOUSING];
    let commitment = decided.decision.unwrap().commitments[0]
        .commitment_id
        .clone();
    let reported = std::time::Instant::now();
    for (sequence, progress) in [(5, "Gesprek gepland"), (6, "Gesprek gevoerd")] {
        coordinator(&mesh, housing)
            .report_commitment(with_token(
                v1::ReportCommitmentRequest {
                    request_id: format!("rep-{sequence}"),
                    escalation_id: id.clone(),
                    commitment_id: commitment.clone(),
                    done: false,
                    progress: progress.into(),
                },
                &housing.org.token("dir-1", "directeur"),
            ))
            .await
            .expect("report while the registrant's node hangs");
        notified(
            &mesh.nodes[GGZ],
            &id,
            v1::EscalationEventType::CommitmentReported,
            sequence,
        )
        .await;
    }
    let waited = reported.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "the other participants waited {waited:?}: for the call to the hanging node to time out (5 s)?"
    );

    // Back to normal: the registrant's node gets all of them, in order, once.
    drop(hang);
    mesh.start_node(MUNICIPALITY).await;
    notified(
        &mesh.nodes[MUNICIPALITY],
        &id,
        v1::EscalationEventType::CommitmentReported,
        6,
    )
    .await;
    let sequences: Vec<u64> = events_of(&mesh.nodes[MUNICIPALITY], &id)
        .await
        .into_iter()
        .map(|(sequence, _)| sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6], "every event once, in order");

    // The operator sees which node failed, and that nothing is left waiting.
    let node = |i: usize| mesh.nodes[i].org.org.to_string();
    let metrics = eventually(Duration::from_secs(10), "the lanes empty", || async {
        let metrics = coordinator_metrics(&mesh).await;
        (metrics::value(&metrics, "doorzet_coordinator_notifications_in_lanes") == Some(0.0))
            .then_some(metrics)
    })
    .await;
    let failures = |i| {
        let name = format!(
            "doorzet_coordinator_notification_failures_total{{node=\"{}\"}}",
            node(i)
        );
        metrics::value(&metrics, &name).unwrap_or(0.0)
    };
    assert!(failures(MUNICIPALITY) >= 1.0, "{metrics}");
    assert_eq!(failures(GGZ), 0.0);
    let delivered = format!(
        "doorzet_coordinator_notifications_delivered_total{{node=\"{}\"}}",
        node(MUNICIPALITY)
    );
    assert!(
        metrics::value(&metrics, &delivered).is_some_and(|n| n >= 6.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overdue_commitment_alerts_the_process_director() {
    let mesh = TestMesh::start(5).await;
    let ids = mandates(&mesh).await;
    let (esc, pd) = planned(&mesh).await;
    let id = esc.escalation_id.clone();
    let mut coordinator = coordinator(&mesh, &mesh.nodes[MUNICIPALITY]);
    coordinator
        .record_decision(with_token(
            housing_decision(&mesh, &id, &ids[5], 2 * DAY),
            &pd,
        ))
        .await
        .expect("decision");
    let get = || {
        let mut c = coordinator.clone();
        let (id, pd) = (id.clone(), pd.clone());
        async move {
            c.get_escalation(with_token(
                v1::GetEscalationRequest { escalation_id: id },
                &pd,
            ))
            .await
            .expect("get")
            .into_inner()
        }
    };
    let open = get().await.decision.unwrap().commitments[0].state;
    assert_eq!(open, v1::CommitmentState::Open as i32);

    mesh.clock.advance(3 * DAY);
    let alert = notified(
        &mesh.nodes[ZVH],
        &id,
        v1::EscalationEventType::CommitmentOverdue,
        5,
    )
    .await;
    assert_eq!(alert.tier, 3);
    let overdue = get().await.decision.unwrap().commitments[0].state;
    assert_eq!(overdue, v1::CommitmentState::Overdue as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_on_one_postgresql_deliver_each_notification_once() {
    let mesh = TestMesh::start_on(Storage::Postgres, 5, |_| {}).await;
    let ids = mandates(&mesh).await;
    let (second, second_stop) = mesh.start_second_coordinator().await;
    let municipality = &mesh.nodes[MUNICIPALITY];
    // Registered through the node (the first coordinator) …
    let (esc, pd) = planned(&mesh).await;
    let id = esc.escalation_id.clone();
    // … decided through the second: both deliver from the one outbox.
    let decided = CoordinatorClient::new(channel_as(&municipality.org, &second))
        .record_decision(with_token(
            housing_decision(&mesh, &id, &ids[5], 10 * DAY),
            &pd,
        ))
        .await
        .expect("a decision through the second coordinator")
        .into_inner();
    assert_eq!(decided.sequence, 4);
    for node in [MUNICIPALITY, GGZ, CARE_OFFICE, HOUSING] {
        notified(&mesh.nodes[node], &id, v1::EscalationEventType::Decided, 4).await;
    }
    // The first coordinator stops; the second takes over the audit log and goes on.
    mesh.stop_coordinator();
    let closed = eventually(
        Duration::from_secs(20),
        "the second coordinator closes the case",
        || {
            let (second, cm, id) = (
                second.clone(),
                municipality.org.token("cm-7", "casemanager"),
                id.clone(),
            );
            async move {
                CoordinatorClient::new(channel_as(&municipality.org, &second))
                    .confirm_follow_up(with_token(
                        v1::ConfirmFollowUpRequest {
                            request_id: "fu".into(),
                            escalation_id: id,
                            solved: true,
                            note: String::new(),
                        },
                        &cm,
                    ))
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            }
        },
    )
    .await;
    assert_eq!(closed.state, v1::EscalationState::Closed as i32);
    notified(
        municipality,
        &id,
        v1::EscalationEventType::Closed,
        closed.sequence,
    )
    .await;
    // Every notification arrived, none was delivered twice.
    for node in &mesh.nodes {
        let metrics = metrics::scrape(node.admin).await;
        assert_eq!(
            metrics::value(&metrics, "doorzet_node_notifications_repeated_total"),
            Some(0.0),
            "{}",
            node.org.org
        );
    }
    // The closing entry is in the log only if the second took over writing it.
    let want = closed.sequence;
    eventually(
        Duration::from_secs(20),
        "the second writes the audit log",
        || {
            let second = second.clone();
            let org = &mesh.nodes[GGZ].org;
            async move {
                let note = v1::audit_log_client::AuditLogClient::new(channel_as(org, &second))
                    .get_checkpoint(v1::GetCheckpointRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .checkpoint;
                let size: u64 = note.lines().nth(1)?.parse().ok()?;
                (size >= want).then_some(())
            }
        },
    )
    .await;
    second_stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_process_director_scales_down_and_a_failed_follow_up_reopens_the_case() {
    let mesh = TestMesh::start(5).await;
    let ids = mandates(&mesh).await;
    let (esc, _) = planned(&mesh).await;
    let id = esc.escalation_id.clone();
    let zvh = &mesh.nodes[ZVH];
    let director = zvh.org.token("pr-zvh", "procesregisseur");
    let mut as_director = coordinator(&mesh, zvh);
    let step = |e: v1::Escalation| (e.tier, e.state, e.sequence);

    // Down to tier 2 with advice: a new table there (the care office), a new term.
    let down = as_director
        .scale_down(with_token(
            v1::ScaleDownRequest {
                request_id: "down".into(),
                escalation_id: id.clone(),
                to_tier: Some(2),
                advice: "Eerst bovenregionaal zoeken".into(),
            },
            &director,
        ))
        .await
        .expect("scale down")
        .into_inner();
    assert_eq!(
        step(down.clone()),
        (2, v1::EscalationState::ParticipantsResolved as i32, 5)
    );
    assert_eq!(down.advice, "Eerst bovenregionaal zoeken");
    assert!(
        down.participants
            .iter()
            .any(|p| p.org == mesh.nodes[CARE_OFFICE].org.org.as_str())
    );
    // Two steps down at once is refused.
    let err = as_director
        .scale_down(with_token(
            v1::ScaleDownRequest {
                request_id: "down-2".into(),
                escalation_id: id.clone(),
                to_tier: Some(0),
                advice: "x".into(),
            },
            &director,
        ))
        .await
        .expect_err("tier 0");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Back up, decided, down to the regular table for monitoring.
    let up = as_director
        .escalate_tier(with_token(
            v1::EscalateTierRequest {
                request_id: "up".into(),
                escalation_id: id.clone(),
                to_tier: 3,
                reason: "Bovenregionaal geen plek".into(),
            },
            &director,
        ))
        .await
        .expect("escalate")
        .into_inner();
    assert_eq!(up.tier, 3);
    as_director
        .plan_meeting(with_token(
            v1::PlanMeetingRequest {
                request_id: "plan-2".into(),
                escalation_id: id.clone(),
                at: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
                location: String::new(),
            },
            &director,
        ))
        .await
        .expect("plan");
    as_director
        .record_decision(with_token(
            housing_decision(&mesh, &id, &ids[5], 10 * DAY),
            &director,
        ))
        .await
        .expect("decision");
    let monitoring = as_director
        .scale_down(with_token(
            v1::ScaleDownRequest {
                request_id: "regular".into(),
                escalation_id: id.clone(),
                to_tier: None,
                advice: "Terug naar het wijkteam met het besluit".into(),
            },
            &director,
        ))
        .await
        .expect("to the regular table")
        .into_inner();
    assert_eq!(monitoring.state, v1::EscalationState::Monitoring as i32);

    // The registrant finds the solution did not happen: the case reopens at the ladder's tier.
    let municipality = &mesh.nodes[MUNICIPALITY];
    let reopened = coordinator(&mesh, municipality)
        .confirm_follow_up(with_token(
            v1::ConfirmFollowUpRequest {
                request_id: "fu".into(),
                escalation_id: id.clone(),
                solved: false,
                note: "Toch ontruimd".into(),
            },
            &municipality.org.token("cm-7", "casemanager"),
        ))
        .await
        .expect("follow-up")
        .into_inner();
    assert_eq!(reopened.tier, 3);
    assert_eq!(
        reopened.state,
        v1::EscalationState::ParticipantsResolved as i32
    );
    assert!(reopened.deadline.is_some() && reopened.decision.is_none());
    notified(
        municipality,
        &id,
        v1::EscalationEventType::Reopened,
        reopened.sequence - 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_follow_up_date_reminds_the_registrant() {
    let mesh = TestMesh::start(5).await;
    let ids = mandates(&mesh).await;
    let (esc, pd) = planned(&mesh).await;
    let id = esc.escalation_id.clone();
    let decided = coordinator(&mesh, &mesh.nodes[MUNICIPALITY])
        .record_decision(with_token(
            housing_decision(&mesh, &id, &ids[5], 60 * DAY),
            &pd,
        ))
        .await
        .expect("decision")
        .into_inner();
    let follow_up = SystemTime::try_from(decided.decision.unwrap().follow_up_at.unwrap()).unwrap();
    let weeks = follow_up
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs()
        / (7 * 86400);
    assert!(
        (3..=6).contains(&weeks),
        "20 working days are about four weeks: {weeks}"
    );
    // Past the follow-up date (the commitment is due later): the registrant is asked to confirm.
    mesh.clock
        .advance(follow_up.duration_since(SystemTime::now()).unwrap() + DAY);
    let reminder = notified(
        &mesh.nodes[MUNICIPALITY],
        &id,
        v1::EscalationEventType::FollowUpDue,
        5,
    )
    .await;
    assert_eq!(reminder.tier, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_right_organisation_and_person_may_act_on_an_escalation() {
    let mesh = TestMesh::start(5).await;
    let ids = mandates(&mesh).await;
    // The municipality's process director (the tier's organiser) planned the meeting.
    let (esc, pd) = planned(&mesh).await;
    let id = esc.escalation_id.clone();
    let municipality = &mesh.nodes[MUNICIPALITY];
    let plan = |request_id: &str, hours: u64| v1::PlanMeetingRequest {
        request_id: request_id.into(),
        escalation_id: id.clone(),
        at: Some((SystemTime::now() + Duration::from_secs(hours * 3600)).into()),
        location: String::new(),
    };
    let code = |r: tonic::Result<tonic::Response<v1::Escalation>>| r.expect_err("refused").code();

    // A participant that is not the organiser may not plan it; nor may a call without a person.
    let ggz = &mesh.nodes[GGZ];
    let mut as_ggz = coordinator(&mesh, ggz);
    let refused = as_ggz
        .plan_meeting(with_token(
            plan("plan-ggz", 2),
            &ggz.org.token("pr-g", "procesregisseur"),
        ))
        .await;
    assert_eq!(code(refused), Code::PermissionDenied);
    let no_person = coordinator(&mesh, municipality)
        .plan_meeting(tonic::Request::new(plan("plan-anon", 2)))
        .await;
    assert_eq!(code(no_person), Code::Unauthenticated);
    // The key of an earlier request, sent with another request, is refused.
    let mut as_municipality = coordinator(&mesh, municipality);
    let reused = as_municipality
        .plan_meeting(with_token(plan("plan", 5), &pd))
        .await;
    assert_eq!(code(reused), Code::AlreadyExists);

    // The housing corporation reports its own commitment; another organisation may not.
    as_municipality
        .record_decision(with_token(
            housing_decision(&mesh, &id, &ids[5], 10 * DAY),
            &pd,
        ))
        .await
        .expect("decision");
    let report = |request_id: &str| v1::ReportCommitmentRequest {
        request_id: request_id.into(),
        escalation_id: id.clone(),
        commitment_id: "cmt-1".into(),
        done: true,
        progress: String::new(),
    };
    let housing = &mesh.nodes[HOUSING];
    CoordinatorClient::new(channel_as(&housing.org, &mesh.coordinator.endpoint))
        .report_commitment(with_token(
            report("rep"),
            &housing.org.token("d", "directeur"),
        ))
        .await
        .expect("the committed organisation reports");
    let other = as_ggz
        .report_commitment(with_token(
            report("rep-ggz"),
            &ggz.org.token("b", "bestuurder"),
        ))
        .await;
    assert_eq!(code(other), Code::PermissionDenied);

    // The registrant confirms the follow-up; a participant may not.
    as_municipality
        .confirm_follow_up(with_token(
            v1::ConfirmFollowUpRequest {
                request_id: "fu".into(),
                escalation_id: id.clone(),
                solved: true,
                note: String::new(),
            },
            &municipality.org.token("cm-7", "casemanager"),
        ))
        .await
        .expect("the registrant confirms");
    let by_participant =
        CoordinatorClient::new(channel_as(&housing.org, &mesh.coordinator.endpoint))
            .confirm_follow_up(with_token(
                v1::ConfirmFollowUpRequest {
                    request_id: "fu-h".into(),
                    escalation_id: id.clone(),
                    solved: false,
                    note: String::new(),
                },
                &housing.org.token("d", "directeur"),
            ))
            .await;
    assert_eq!(code(by_participant), Code::PermissionDenied);
}

/// The GGZ's seat at the tier-1 table of a fresh registration: the mandate it fills it with, or
/// `None` when it is missing.
async fn ggz_seat(mesh: &TestMesh, case_id: &str, key: &str) -> Option<String> {
    let municipality = &mesh.nodes[MUNICIPALITY];
    let mut request = escalate_request(case_id, key, 1, true);
    request.tables_tried.clear();
    let e = admin(municipality)
        .escalate(with_token(
            request,
            &municipality.org.token("cm-7", "casemanager"),
        ))
        .await
        .expect("registered")
        .into_inner()
        .escalation
        .expect("escalation");
    let seat = e
        .participants
        .iter()
        .find(|p| p.seat.as_ref().is_some_and(|s| s.role == "teamleider"))
        .expect("the ladder's GGZ seat at tier 1");
    (!seat.missing).then(|| seat.mandate_id.clone())
}

/// The coordinator reuses members' `ListMandates` answers (30 s here), and a node's mandate change
/// reaches it before the change's call returns: an ended mandate is not used for the next table,
/// a new one is.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_mandate_is_seen_by_the_next_registration_despite_the_cache() {
    let mesh = TestMesh::start(5).await;
    let ggz = &mesh.nodes[GGZ];
    let first = mandate(ggz, "teamleider", &[1]).await;
    let case_id = eviction_case(&mesh).await;
    assert_eq!(
        ggz_seat(&mesh, &case_id, "cache-1").await,
        Some(first.clone())
    );
    // Cached now: a second table within the TTL is filled the same way.
    assert_eq!(
        ggz_seat(&mesh, &case_id, "cache-2").await,
        Some(first.clone())
    );

    admin(ggz)
        .end_mandate(with_token(
            v1::EndMandateRequest {
                mandate_id: first.clone(),
                ended_at: None,
            },
            &ggz.org.token("ops-1", "beheerder"),
        ))
        .await
        .expect("ended");
    assert_eq!(
        ggz_seat(&mesh, &case_id, "cache-3").await,
        None,
        "an ended mandate still filled the seat"
    );

    let second = mandate(ggz, "teamleider", &[1]).await;
    assert_eq!(ggz_seat(&mesh, &case_id, "cache-4").await, Some(second));
}

/// `ListMandates` requests the node `node` has answered.
async fn mandate_asks(node: &TestNode) -> u64 {
    let metrics = metrics::scrape(node.admin).await;
    metrics::samples(&metrics, "doorzet_mesh_requests_total")
        .filter(|(labels, _)| labels.contains("method=\"ListMandates\""))
        .map(|(_, n)| n as u64)
        .sum()
}

#[tokio::test]
async fn deadlines_falling_due_together_ask_each_member_for_its_mandates_once() {
    let mesh = TestMesh::start(5).await;
    mandates(&mesh).await;
    let case_id = eviction_case(&mesh).await;
    let municipality = &mesh.nodes[MUNICIPALITY];
    let cm = municipality.org.token("cm-7", "casemanager");
    const CASES: usize = 12;
    for i in 0..CASES {
        admin(municipality)
            .escalate(with_token(
                v1::EscalateRequest {
                    tables_tried: vec![],
                    ..escalate_request(&case_id, &format!("together-{i}"), 1, false)
                },
                &cm,
            ))
            .await
            .expect("tier 1");
    }
    let care_office = &mesh.nodes[CARE_OFFICE];
    let before = mandate_asks(care_office).await;
    // Every term passes in the same instant: the cases move to tier 2 together, and each needs
    // the care office's tier-2 mandates, which nobody has asked for yet.
    mesh.clock.advance(15 * DAY);
    let mut client = coordinator(&mesh, municipality);
    eventually(Duration::from_secs(20), "all at tier 2", || {
        let (mut client, cm) = (client.clone(), cm.clone());
        async move {
            let list = client
                .list_escalations(with_token(
                    v1::ListEscalationsRequest {
                        tier: Some(2),
                        states: vec![v1::EscalationState::ParticipantsResolved as i32],
                        page_size: 100,
                        ..Default::default()
                    },
                    &cm,
                ))
                .await
                .ok()?
                .into_inner();
            (list.escalations.len() == CASES).then_some(list)
        }
    })
    .await;
    let asked = mandate_asks(care_office).await - before;
    assert_eq!(asked, 1, "one question for {CASES} firings at once");
    // Each case has the care office at its tier-2 table all the same.
    let one = client
        .list_escalations(with_token(
            v1::ListEscalationsRequest {
                tier: Some(2),
                page_size: 1,
                ..Default::default()
            },
            &cm,
        ))
        .await
        .expect("list")
        .into_inner()
        .escalations
        .remove(0);
    assert!(
        one.participants
            .iter()
            .any(|p| p.org == care_office.org.org.to_string() && !p.missing),
        "{:?}",
        one.participants
    );
}
