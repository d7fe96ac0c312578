//! Members compare the audit log's checkpoints whenever they call each other: a participant asks
//! another node for facts through its own node, which carries its latest verified checkpoint; a
//! checkpoint signed by the coordinator that forks from the callee's history raises the callee's
//! audit alarm at once, the first time the two members talk.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doorzet_audit::checkpoint::{Checkpoint, NoteSigner};
use doorzet_audit::merkle;
use doorzet_domain::grant::GrantClaims;
use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, node_admin_client::NodeAdminClient,
    partner_node_client::PartnerNodeClient,
};
use doorzet_testkit::mesh::{AUDIT_ORIGIN, channel_as, with_token};
use doorzet_testkit::{TestMesh, eventually, metrics};
use tonic::metadata::MetadataValue;

const CASE_REF: &str = "case-gossipqwrtyp";

async fn list_mandates_with(mesh: &TestMesh, note: &str) -> tonic::Result<()> {
    let mut request = tonic::Request::new(v1::ListMandatesRequest::default());
    request.metadata_mut().insert_bin(
        "doorzet-checkpoint-bin",
        MetadataValue::from_bytes(note.as_bytes()),
    );
    PartnerNodeClient::new(channel_as(&mesh.nodes[1].org, &mesh.nodes[0].mesh_endpoint))
        .list_mandates(request)
        .await
        .map(drop)
}

/// Waits until node 0 counted a compared checkpoint with `result`.
async fn wait_peer_checks(mesh: &TestMesh, result: &str) {
    let series = format!("doorzet_node_peer_checkpoints_total{{result=\"{result}\"}}");
    eventually(Duration::from_secs(10), "checkpoint compared", || async {
        metrics::value(&metrics::scrape(mesh.nodes[0].admin).await, &series).filter(|v| *v >= 1.0)
    })
    .await;
}

fn coordinator_signer(mesh: &TestMesh) -> NoteSigner {
    let pem = std::fs::read_to_string(mesh.data_dir().join("audit.key")).unwrap();
    NoteSigner::from_pkcs8_pem(AUDIT_ORIGIN, &pem).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_asks_through_its_own_node_which_carries_its_checkpoint() {
    let mesh = TestMesh::start(2).await;
    let (holder, asker) = (&mesh.nodes[0], &mesh.nodes[1]);
    let token = holder.org.token("cm-1", "casemanager");
    let mut admin = NodeAdminClient::new(channel_as(&holder.org, &holder.local_endpoint));
    let case = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-gossip".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    admin
        .add_fact(with_token(
            v1::AddFactRequest {
                request_id: String::new(),
                case_id: case.case_id.clone(),
                fact: Some(v1::Fact {
                    category: "legal_title".into(),
                    value: "crisismaatregel (fictief)".into(),
                    source: "zaaksysteem".into(),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .unwrap();
    let basis = admin
        .record_legal_basis(with_token(
            v1::RecordLegalBasisRequest {
                request_id: String::new(),
                legal_basis: Some(v1::LegalBasis {
                    case_id: case.case_id.clone(),
                    law: "Wvggz".into(),
                    article: "8:16".into(),
                    categories: vec!["legal_title".into()],
                    recipients: Some(v1::Recipients {
                        org_ids: vec![asker.org.org.to_string()],
                        kinds: vec![],
                    }),
                    purposes: vec!["escalation_meeting".into()],
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    // A law is not withdrawn like a consent: its end is recorded with valid_until.
    let err = admin
        .withdraw_consent(with_token(
            v1::WithdrawConsentRequest {
                consent_id: basis.legal_basis_id,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    mesh.append_disclosures(0, 3).await;
    mesh.wait_audit_verified(3).await;
    // The asker's node has verified the log too, so it has a checkpoint to carry.
    let asker_status = || async {
        NodeAdminClient::new(channel_as(&asker.org, &asker.local_endpoint))
            .get_node_status(with_token(
                v1::GetNodeStatusRequest {},
                &asker.org.token("ops-1", "beheerder"),
            ))
            .await
            .unwrap()
            .into_inner()
    };
    eventually(
        Duration::from_secs(10),
        "asker verified the log",
        || async { (asker_status().await.audit_checkpoint_size >= 3).then_some(()) },
    )
    .await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let grant = mesh.coordinator.org.grant(&GrantClaims {
        iss: mesh.coordinator.org.org.to_string(),
        jti: "grant-gossip".into(),
        escalation_id: "esc-gossip".into(),
        case_ref: CASE_REF.into(),
        tier: 2,
        participants: vec![asker.org.org.to_string()],
        purpose: "escalation_meeting".into(),
        iat: now,
        nbf: now - 5,
        exp: now + 600,
    });
    let mut own = NodeAdminClient::new(channel_as(&asker.org, &asker.local_endpoint));
    let ask = |org: String| v1::QueryPartnerFactsRequest {
        org_id: org,
        grant: grant.clone(),
        case_ref: CASE_REF.into(),
        categories: vec![],
    };
    // Before the case is linked the reference names nothing: an empty answer (remembered by the
    // holder's cache, which the link must clear).
    let before = own
        .query_partner_facts(with_token(
            ask(holder.org.org.to_string()),
            &asker.org.token("cm-7", "casemanager"),
        ))
        .await
        .expect("asked before the link")
        .into_inner();
    assert!(
        before.facts.is_empty() && before.withheld.is_empty(),
        "{before:?}"
    );
    admin
        .link_case(with_token(
            v1::LinkCaseRequest {
                case_id: case.case_id,
                case_ref: CASE_REF.into(),
                with_pseudonym: false,
            },
            &token,
        ))
        .await
        .unwrap();
    let answer = own
        .query_partner_facts(with_token(
            ask(holder.org.org.to_string()),
            &asker.org.token("cm-7", "casemanager"),
        ))
        .await
        .expect("asked through its own node")
        .into_inner();
    assert_eq!(answer.facts.len(), 1);
    assert_eq!(answer.facts[0].category, "legal_title");
    // The holder's log names the asker's employee, as the asker's node passed it on.
    let log = admin
        .list_disclosures(with_token(
            v1::ListDisclosuresRequest {
                case_ref: CASE_REF.into(),
                limit: 0,
            },
            &holder.org.token("po-1", "privacy_officer"),
        ))
        .await
        .unwrap()
        .into_inner()
        .disclosures;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].requester_person, "cm-7");
    // A refusal by the other node comes back as its status, naming the member.
    let err = own
        .query_partner_facts(with_token(
            v1::QueryPartnerFactsRequest {
                grant: String::new(),
                ..ask(holder.org.org.to_string())
            },
            &asker.org.token("cm-7", "casemanager"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains(holder.org.org.as_str()),
        "{}",
        err.message()
    );
    // The checkpoint travelled and matched: compared as consistent at the holder, no alarm.
    wait_peer_checks(&mesh, "consistent").await;
    assert!(mesh.node_status().await.audit_alarm.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_showing_members_different_histories_is_caught_when_they_talk() {
    let mesh = TestMesh::start(2).await;
    mesh.append_disclosures(0, 4).await;
    mesh.wait_audit_verified(4).await;
    let genuine = AuditLogClient::new(channel_as(&mesh.nodes[1].org, &mesh.coordinator.endpoint))
        .get_checkpoint(v1::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .checkpoint;
    list_mandates_with(&mesh, &genuine)
        .await
        .expect("a member with the same history is served");
    // The coordinator signed, for another member, a tree of size 3 that is not a prefix of the
    // history it showed node 0.
    let forked = coordinator_signer(&mesh).sign(&Checkpoint {
        origin: AUDIT_ORIGIN.into(),
        size: 3,
        root: merkle::leaf_hash(b"another history"),
    });
    list_mandates_with(&mesh, &forked)
        .await
        .expect("the call itself is served");
    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("fork"), "{alarm}");
    assert!(alarm.contains(mesh.nodes[1].org.org.as_str()), "{alarm}");
    assert!(alarm.contains("not consistent"), "{alarm}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_roots_for_one_size_across_members_raise_the_alarm_and_a_stranger_key_does_not() {
    let mesh = TestMesh::start(2).await;
    mesh.append_disclosures(0, 2).await;
    mesh.wait_audit_verified(2).await;
    // A note no coordinator key signed is the sender's problem: served, no alarm.
    let stranger = NoteSigner::new(
        AUDIT_ORIGIN,
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    )
    .unwrap()
    .sign(&Checkpoint {
        origin: AUDIT_ORIGIN.into(),
        size: 2,
        root: merkle::leaf_hash(b"x"),
    });
    list_mandates_with(&mesh, &stranger).await.unwrap();
    wait_peer_checks(&mesh, "unverifiable").await;
    assert!(mesh.node_status().await.audit_alarm.is_empty());
    let same_size = coordinator_signer(&mesh).sign(&Checkpoint {
        origin: AUDIT_ORIGIN.into(),
        size: 2,
        root: merkle::leaf_hash(b"another history"),
    });
    list_mandates_with(&mesh, &same_size).await.unwrap();
    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("another root"), "{alarm}");
}
