//! A partner node discloses a case's facts only under a participation grant signed by the
//! coordinator that names the caller and the case, and then only what a consent or legal basis
//! covers; everything else is withheld by reason, a call without a valid grant is refused as a
//! whole, and every decision lands in the node's disclosure log and (metadata only) in the
//! coordinator's audit log (exactly once, also when the coordinator was down and the node restarted
//! meanwhile). Over real mutual TLS between separate node instances, on SQLite and on
//! PostgreSQL; the tracing output of the whole run is captured and must not hold a fact's value.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_domain::grant::GrantClaims;
use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, node_admin_client::NodeAdminClient,
    partner_node_client::PartnerNodeClient,
};
use doorzet_testkit::mesh::{Storage, channel_as, with_token};
use doorzet_testkit::{TestMesh, eventually};
use sqlx::Connection;
use tonic::Code;

/// Fictional fact values; none may appear in any log line, span or audit entry.
const EVICTION: &str = "ontruiming-2027-02-01-Lindelaan";
const RISK: &str = "dreigt-met-geweld-tegen-buren";
const DIAGNOSIS: &str = "psychotische-stoornis-groep-B";
const CASE_REF: &str = "case-qxwvtrplmnbk";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_tracing() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    captured
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(mesh: &TestMesh, participant: usize, case_ref: &str) -> GrantClaims {
    let now = now_secs();
    GrantClaims {
        iss: mesh.coordinator.org.org.to_string(),
        jti: "grant-test-one".into(),
        escalation_id: "esc-test-one".into(),
        case_ref: case_ref.into(),
        tier: 2,
        participants: vec![mesh.nodes[participant].org.org.to_string()],
        purpose: "escalation_meeting".into(),
        iat: now,
        nbf: now - 5,
        exp: now + 600,
    }
}

fn query(grant: &str, case_ref: &str) -> v1::QueryFactsRequest {
    v1::QueryFactsRequest {
        grant: grant.into(),
        case_ref: case_ref.into(),
        categories: vec![],
        requested_by: "emp-4711".into(),
    }
}

fn partner(
    mesh: &TestMesh,
    from: usize,
    to: usize,
) -> PartnerNodeClient<tonic::transport::Channel> {
    PartnerNodeClient::new(channel_as(
        &mesh.nodes[from].org,
        &mesh.nodes[to].mesh_endpoint,
    ))
}

async fn scenario(storage: Storage) {
    let captured = capture_tracing();
    let mesh = TestMesh::start_on(storage, 3, |_| {}).await;
    let holder = &mesh.nodes[0];
    let local = channel_as(&holder.org, &holder.local_endpoint);
    let mut admin = NodeAdminClient::new(local);
    let token = holder.org.token("cm-1", "casemanager");

    // The municipality records a case, three facts and the person's consent for one category.
    let case = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-2026-0001".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .expect("create case")
        .into_inner();
    for (category, value) in [
        ("eviction_date", EVICTION),
        ("risk_signal", RISK),
        ("diagnosis_group", DIAGNOSIS),
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
            .expect("add fact");
    }
    let consent = admin
        .record_consent(with_token(
            v1::RecordConsentRequest {
                request_id: String::new(),
                consent: Some(v1::Consent {
                    case_id: case.case_id.clone(),
                    given_by: v1::ConsentGiver::Person as i32,
                    categories: vec!["eviction_date".into()],
                    recipients: Some(v1::Recipients {
                        org_ids: vec![],
                        kinds: vec![v1::OrganisationKind::MentalHealthInstitution as i32],
                    }),
                    purposes: vec!["escalation_meeting".into()],
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .expect("record consent")
        .into_inner();
    admin
        .link_case(with_token(
            v1::LinkCaseRequest {
                case_id: case.case_id.clone(),
                case_ref: CASE_REF.into(),
                with_pseudonym: false,
            },
            &token,
        ))
        .await
        .expect("link case");

    // The GGZ, named in the coordinator's grant, gets exactly the consented fact.
    let grant = mesh.coordinator.org.grant(&claims(&mesh, 1, CASE_REF));
    let answer = partner(&mesh, 1, 0)
        .query_facts(query(&grant, CASE_REF))
        .await
        .expect("a participant with a grant is answered")
        .into_inner();
    assert_eq!(answer.facts.len(), 1, "{answer:?}");
    assert_eq!(answer.facts[0].category, "eviction_date");
    assert_eq!(answer.facts[0].value, EVICTION);
    let mut withheld: Vec<_> = answer
        .withheld
        .iter()
        .map(|w| (w.category.as_str(), w.reason))
        .collect();
    withheld.sort();
    let not_covered = v1::WithheldReason::CategoryNotCovered as i32;
    assert_eq!(
        withheld,
        [
            ("diagnosis_group", not_covered),
            ("risk_signal", not_covered)
        ]
    );

    // Refused as a whole, each naming why.
    let refusals = [
        (
            "the same grant from a member it does not name",
            2,
            grant.clone(),
            CASE_REF,
            "does not name",
        ),
        ("no grant", 2, String::new(), CASE_REF, "grant is required"),
        (
            "an expired grant",
            1,
            mesh.coordinator.org.grant(&GrantClaims {
                nbf: now_secs() - 120,
                exp: now_secs() - 1,
                ..claims(&mesh, 1, CASE_REF)
            }),
            CASE_REF,
            "expired",
        ),
        (
            "a grant signed by a member instead of the coordinator",
            1,
            mesh.nodes[1].org.grant(&claims(&mesh, 1, CASE_REF)),
            CASE_REF,
            "not signed by the coordinator",
        ),
        (
            "a grant for another case",
            1,
            grant.clone(),
            "case-othercasexyz",
            "another case",
        ),
    ];
    for (what, from, grant, case_ref, message) in refusals {
        let err = partner(&mesh, from, 0)
            .query_facts(query(&grant, case_ref))
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        assert!(err.message().contains(message), "{what}: {}", err.message());
    }

    // After the withdrawal the same participant with the same grant sees nothing it covered.
    admin
        .withdraw_consent(with_token(
            v1::WithdrawConsentRequest {
                consent_id: consent.consent_id.clone(),
            },
            &token,
        ))
        .await
        .expect("withdraw");
    let after = partner(&mesh, 1, 0)
        .query_facts(query(&grant, CASE_REF))
        .await
        .expect("answered, with everything withheld")
        .into_inner();
    assert!(after.facts.is_empty(), "{after:?}");
    assert!(after.withheld.iter().any(|w| w.category == "eviction_date"
        && w.reason == v1::WithheldReason::ConsentWithdrawn as i32));

    // The disclosure log holds every decision about the case, allowed or refused.
    let log = admin
        .list_disclosures(with_token(
            v1::ListDisclosuresRequest {
                case_ref: CASE_REF.into(),
                limit: 0,
            },
            &holder.org.token("po-1", "privacy_officer"),
        ))
        .await
        .expect("disclosure log")
        .into_inner()
        .disclosures;
    let outcomes: Vec<i32> = log.iter().rev().map(|d| d.outcome).collect();
    use v1::DisclosureOutcome as O;
    assert_eq!(
        outcomes,
        [
            O::PartlyWithheld as i32,
            O::Refused as i32,
            O::Refused as i32,
            O::Refused as i32,
            O::Refused as i32,
            O::Withheld as i32
        ]
    );
    assert!(log.iter().all(|d| d.requester_person == "emp-4711"));
    let err = admin
        .list_disclosures(with_token(
            v1::ListDisclosuresRequest {
                case_ref: CASE_REF.into(),
                limit: 0,
            },
            &token,
        ))
        .await
        .expect_err("a case manager may not read the disclosure log");
    assert_eq!(err.code(), Code::PermissionDenied);

    // ...and reaches the coordinator's audit log as metadata: 7 entries, one per decision (the
    // first names the disclosed and the withheld facts; the one about another case is logged too).
    let audit = AuditLogClient::new(channel_as(&holder.org, &mesh.coordinator.endpoint));
    let entries = eventually(
        Duration::from_secs(10),
        "disclosures in the audit log",
        || {
            let mut audit = audit.clone();
            async move {
                let e = audit
                    .get_entries(v1::GetEntriesRequest {
                        start: 0,
                        limit: 100,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .entries;
                (e.len() >= 7).then_some(e)
            }
        },
    )
    .await;
    let decoded: Vec<v1::AuditEntry> = entries
        .iter()
        .map(|b| doorzet_audit::entry::decode(b).expect("entry"))
        .collect();
    let disclosed: Vec<_> = decoded
        .iter()
        .filter(|e| e.action == v1::AuditAction::FactsDisclosed as i32)
        .collect();
    assert_eq!(decoded.len(), 7, "one entry per decision");
    assert_eq!(disclosed.len(), 1);
    assert_eq!(disclosed[0].fact_categories, ["eviction_date"]);
    let mut withheld = disclosed[0].withheld_fact_categories.clone();
    withheld.sort();
    assert_eq!(withheld, ["diagnosis_group", "risk_signal"]);
    assert_eq!(disclosed[0].recipient_org, mesh.nodes[1].org.org.as_str());
    assert_eq!(disclosed[0].case_ref, CASE_REF);

    // No fact value anywhere: audit entries, log lines, spans.
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("facts query decided"), "tracing was captured");
    for value in [EVICTION, RISK, DIAGNOSIS] {
        assert!(!logs.contains(value), "a fact value reached the logs");
        for bytes in &entries {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "a fact value reached the audit log"
            );
        }
    }
    mesh.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn facts_are_disclosed_exactly_as_the_grant_and_consent_allow_on_sqlite() {
    scenario(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn facts_are_disclosed_exactly_as_the_grant_and_consent_allow_on_postgres() {
    scenario(Storage::Postgres).await;
}

/// How many audit entries name `case_ref` and `recipient`.
async fn in_audit_log(
    audit: &AuditLogClient<tonic::transport::Channel>,
    case_ref: &str,
    recipient: &str,
) -> usize {
    let mut audit = audit.clone();
    let (mut start, mut count) = (0, 0);
    loop {
        let page = audit
            .get_entries(v1::GetEntriesRequest { start, limit: 100 })
            .await
            .map(|r| r.into_inner().entries)
            .unwrap_or_default();
        if page.is_empty() {
            return count;
        }
        start += page.len() as u64;
        count += page
            .iter()
            .map(|b| doorzet_audit::entry::decode(b).expect("entry"))
            .filter(|e| e.case_ref == case_ref && e.recipient_org == recipient)
            .count();
    }
}

/// Waits until at least `n` entries about `case_ref` for `recipient` are in the audit log; returns
/// how many.
async fn reaches(
    audit: &AuditLogClient<tonic::transport::Channel>,
    case_ref: &str,
    recipient: &str,
    n: usize,
) -> usize {
    eventually(
        Duration::from_secs(60),
        "disclosure records in the audit log",
        || async {
            let count = in_audit_log(audit, case_ref, recipient).await;
            (count >= n).then_some(count)
        },
    )
    .await
}

/// Participant 1's grant for `case_ref`, a client of the coordinator's audit log as that
/// participant, and its organisation id (the recipient its records name).
fn asking(
    mesh: &TestMesh,
    case_ref: &str,
) -> (String, AuditLogClient<tonic::transport::Channel>, String) {
    let grant = mesh.coordinator.org.grant(&claims(mesh, 1, case_ref));
    let audit = AuditLogClient::new(channel_as(&mesh.nodes[1].org, &mesh.coordinator.endpoint));
    (grant, audit, mesh.nodes[1].org.org.to_string())
}

async fn ask(mesh: &TestMesh, grant: &str, case_ref: &str) {
    partner(mesh, 1, 0)
        .query_facts(query(grant, case_ref))
        .await
        .expect("the node answers without the coordinator");
}

/// Asks `times` times, one after the other, so each answer's record follows the one before.
async fn ask_times(mesh: &TestMesh, grant: &str, case_ref: &str, times: usize) {
    for _ in 0..times {
        ask(mesh, grant, case_ref).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn disclosures_made_while_the_coordinator_is_down_reach_its_audit_log_once() {
    let mut mesh = TestMesh::start(2).await;
    // Nothing is linked to this reference: each answer is one audit entry.
    let case_ref = "case-downtimeqwrtz";
    let (grant, audit, recipient) = asking(&mesh, case_ref);
    let reaches = |n: usize| reaches(&audit, case_ref, &recipient, n);

    ask(&mesh, &grant, case_ref).await;
    assert_eq!(reaches(1).await, 1);

    // The coordinator is down: the node answers and keeps the records.
    mesh.stop_coordinator();
    ask_times(&mesh, &grant, case_ref, 3).await;
    // The node restarts before it could append them: they are only in its database now.
    mesh.stop_node(0).await;
    mesh.start_node(0).await;
    ask_times(&mesh, &grant, case_ref, 2).await;

    mesh.restart_coordinator(|_| {}).await;
    assert_eq!(reaches(6).await, 6);
    // One more after the recovery: once it is in, anything sent twice before it would be too.
    ask(&mesh, &grant, case_ref).await;
    assert_eq!(reaches(7).await, 7);
    mesh.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn records_sent_again_after_a_crash_are_in_the_audit_log_once() {
    let mut mesh = TestMesh::start(2).await;
    let case_ref = "case-crashresendq";
    let (grant, audit, recipient) = asking(&mesh, case_ref);
    let reaches = |n: usize| reaches(&audit, case_ref, &recipient, n);
    ask_times(&mesh, &grant, case_ref, 3).await;
    assert_eq!(reaches(3).await, 3);

    // The node stops as if it crashed after the coordinator took its records but before it noted
    // so: its mark of what is appended is back at the start, and it sends all three again.
    mesh.stop_node(0).await;
    let mut db = sqlx::SqliteConnection::connect(mesh.node_storage_url(0))
        .await
        .expect("the node's database");
    sqlx::query("UPDATE disclosure_audit_progress SET appended_through = 0")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    mesh.start_node(0).await;
    // One record after the restart goes in behind the three sent again: once it is in, they were
    // settled, and each is in once.
    ask(&mesh, &grant, case_ref).await;
    assert_eq!(reaches(4).await, 4);
    assert_eq!(in_audit_log(&audit, case_ref, &recipient).await, 4);
    mesh.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_that_takes_smaller_messages_still_gets_every_record() {
    let mut mesh = TestMesh::start(2).await;
    // 4 KiB holds about a dozen of these entries; a node's calls carry up to 256 KiB.
    mesh.restart_coordinator_with(|_, config| config.limits.max_message_bytes = 4096)
        .await;
    let case_ref = "case-smallcallsqw";
    let (grant, audit, recipient) = asking(&mesh, case_ref);
    let reaches = |n: usize| reaches(&audit, case_ref, &recipient, n);

    // One record is a call well within the limit.
    ask(&mesh, &grant, case_ref).await;
    assert_eq!(reaches(1).await, 1);

    // Records made while the coordinator is down go in together when it is back: one call of
    // about 15 KB, refused as larger than the limit, then smaller calls.
    mesh.stop_coordinator();
    ask_times(&mesh, &grant, case_ref, 60).await;
    mesh.restart_coordinator(|_| {}).await;
    assert_eq!(reaches(61).await, 61);
    mesh.shutdown();
}

/// The node's count of records the audit log refused, from its metrics.
async fn refused_by_audit_log(mesh: &TestMesh) -> f64 {
    let metrics = doorzet_testkit::metrics::scrape(mesh.nodes[0].admin).await;
    doorzet_testkit::metrics::value(
        &metrics,
        "doorzet_node_disclosure_records_refused_by_audit_log_total",
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_the_audit_log_refuses_stays_in_the_nodes_log_and_its_neighbours_go_in_once() {
    let mut mesh = TestMesh::start(2).await;
    const LIMIT: Duration = Duration::from_secs(1);
    mesh.restart_coordinator_with(|_, config| config.audit.max_append_delay = LIMIT)
        .await;
    let (kept, late) = ("case-keptqwrtzp", "case-lateqwrtzp");
    let kept_grant = mesh.coordinator.org.grant(&claims(&mesh, 1, kept));
    let late_grant = mesh.coordinator.org.grant(&claims(&mesh, 1, late));
    let recipient = mesh.nodes[1].org.org.to_string();
    let audit = AuditLogClient::new(channel_as(&mesh.nodes[1].org, &mesh.coordinator.endpoint));
    let reaches = |case_ref: &'static str, n: usize| reaches(&audit, case_ref, &recipient, n);

    // A record made while the coordinator is up goes in.
    ask(&mesh, &kept_grant, kept).await;
    assert_eq!(reaches(kept, 1).await, 1);
    assert_eq!(refused_by_audit_log(&mesh).await, 0.0);

    // One made while it is down, and older than the audit log takes when it is back.
    mesh.stop_coordinator();
    let made = SystemTime::now();
    ask(&mesh, &late_grant, late).await;
    // The condition is the record's age, not an event: wait until it is past the limit.
    while made.elapsed().unwrap_or_default() <= LIMIT + Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mesh.restart_coordinator(|_| {}).await;
    // A fresh record right behind it: appended after the late one is settled (records go in
    // order), so once it is in, the late one was refused or appended.
    ask(&mesh, &kept_grant, kept).await;
    assert_eq!(reaches(kept, 2).await, 2);
    assert_eq!(in_audit_log(&audit, late, &recipient).await, 0);
    assert_eq!(refused_by_audit_log(&mesh).await, 1.0);
    // The node's own log still holds the refused record.
    let log = NodeAdminClient::new(channel_as(
        &mesh.nodes[0].org,
        &mesh.nodes[0].local_endpoint,
    ))
    .list_disclosures(with_token(
        v1::ListDisclosuresRequest {
            case_ref: late.into(),
            limit: 0,
        },
        &mesh.nodes[0].org.token("po-1", "privacy_officer"),
    ))
    .await
    .expect("disclosure log")
    .into_inner()
    .disclosures;
    assert_eq!(log.len(), 1);

    // Nothing is sent again: one more goes in once, and the refused one stays out.
    ask(&mesh, &kept_grant, kept).await;
    assert_eq!(reaches(kept, 3).await, 3);
    assert_eq!(in_audit_log(&audit, late, &recipient).await, 0);
    assert_eq!(refused_by_audit_log(&mesh).await, 1.0);
    mesh.shutdown();
}
