//! A partner node's own data on its local listener and the mesh: mandates validated, flagged and
//! served to others only while current; notifications stored once and only from the coordinator;
//! case data refusing bad input with the field named, and callers whose role does not allow it.
//! Each refusal follows the same call succeeding on the same node.

use std::time::{Duration, SystemTime};

use doorzet_proto::v1::{
    self, node_admin_client::NodeAdminClient, partner_node_client::PartnerNodeClient,
};
use doorzet_testkit::TestMesh;
use doorzet_testkit::mesh::{channel_as, with_token};
use tonic::Code;
use tonic::transport::Channel;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn admin(mesh: &TestMesh) -> NodeAdminClient<Channel> {
    let node = &mesh.nodes[0];
    NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint))
}

fn mandate(role: &str, review: SystemTime, until: Option<SystemTime>) -> v1::Mandate {
    v1::Mandate {
        role: role.into(),
        tiers: vec![3, 4],
        domains: vec!["housing".into()],
        decision_types: vec!["suspend_eviction".into()],
        legal_basis: "Mandaatbesluit 2026 art. 4 (fictief)".into(),
        valid_from: Some((SystemTime::now() - 30 * DAY).into()),
        valid_until: until.map(Into::into),
        review_date: Some(review.into()),
        ..Default::default()
    }
}

fn expect_invalid(result: tonic::Result<impl std::fmt::Debug>, field: &str) {
    let err = result.expect_err(field);
    assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
    assert!(err.message().contains(field), "{field}: {}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn mandates_are_validated_flagged_and_only_current_ones_served() {
    let mesh = TestMesh::start(2).await;
    let mut admin = admin(&mesh);
    let token = mesh.nodes[0].org.token("ops-1", "beheerder");
    let now = SystemTime::now();
    let create = |m: v1::Mandate| with_token(v1::CreateMandateRequest { mandate: Some(m) }, &token);
    let current = admin
        .create_mandate(create(mandate("wethouder", now + 100 * DAY, None)))
        .await
        .expect("a valid mandate")
        .into_inner();
    assert!(current.is_current && !current.is_review_overdue);
    let overdue = admin
        .create_mandate(create(mandate("bestuurder", now - DAY, None)))
        .await
        .unwrap()
        .into_inner();
    assert!(!overdue.is_current && overdue.is_review_overdue);
    let expired = admin
        .create_mandate(create(mandate(
            "manager_zorg",
            now + 100 * DAY,
            Some(now - DAY),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(!expired.is_current);

    expect_invalid(
        admin
            .create_mandate(create(v1::Mandate {
                tiers: vec![7],
                ..mandate("wethouder", now + DAY, None)
            }))
            .await,
        "tiers",
    );
    expect_invalid(
        admin
            .create_mandate(create(mandate("wethouder", now + 800 * DAY, None)))
            .await,
        "review_date",
    );
    expect_invalid(
        admin
            .create_mandate(create(v1::Mandate {
                domains: vec!["gardening".into()],
                ..mandate("wethouder", now + DAY, None)
            }))
            .await,
        "domains",
    );
    let err = admin
        .create_mandate(with_token(
            v1::CreateMandateRequest {
                mandate: Some(mandate("wethouder", now + DAY, None)),
            },
            &mesh.nodes[0].org.token("cm-1", "casemanager"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Another member sees only the current one, through every filter.
    let other =
        PartnerNodeClient::new(channel_as(&mesh.nodes[1].org, &mesh.nodes[0].mesh_endpoint));
    let list = |f: v1::ListMandatesRequest| {
        let mut other = other.clone();
        async move { other.list_mandates(f).await.unwrap().into_inner().mandates }
    };
    let all = list(v1::ListMandatesRequest::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].mandate_id, current.mandate_id);
    assert_eq!(all[0].org_id, mesh.nodes[0].org.org.as_str());
    assert_eq!(
        list(v1::ListMandatesRequest {
            tier: Some(3),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(
        list(v1::ListMandatesRequest {
            tier: Some(2),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(v1::ListMandatesRequest {
            domain: "housing".into(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(
        list(v1::ListMandatesRequest {
            decision_type: "open_bed".into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        list(v1::ListMandatesRequest {
            valid_at: Some((now - 60 * DAY).into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    let err = other
        .clone()
        .list_mandates(v1::ListMandatesRequest {
            domain: "gardening".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("domain"));

    // The organisation itself sees all three, flagged.
    let own = admin
        .list_own_mandates(with_token(
            v1::ListOwnMandatesRequest {
                filter: None,
                include_not_current: true,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .mandates;
    assert_eq!(own.len(), 3);
    assert_eq!(own.iter().filter(|m| m.is_review_overdue).count(), 1);

    // Ended: no longer served.
    let ended = admin
        .end_mandate(with_token(
            v1::EndMandateRequest {
                mandate_id: current.mandate_id.clone(),
                ended_at: None,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!ended.is_current && ended.ended_at.is_some());
    assert!(list(v1::ListMandatesRequest::default()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_are_stored_once_and_only_from_the_coordinator() {
    let mesh = TestMesh::start(2).await;
    let mut from_coordinator = PartnerNodeClient::new(channel_as(
        &mesh.coordinator.org,
        &mesh.nodes[0].mesh_endpoint,
    ));
    let notification = v1::NotifyRequest {
        notification_id: "ntf-one".into(),
        escalation_id: "esc-one".into(),
        event: v1::EscalationEventType::Invited as i32,
        occurred_at: Some(SystemTime::now().into()),
        sequence: 1,
        case_ref: "case-notifyqwrt".into(),
        tier: 2,
        grant: String::new(),
    };
    let first = from_coordinator
        .notify(notification.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(first.is_new);
    let again = from_coordinator
        .notify(notification.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        !again.is_new,
        "a repeated id is acknowledged, not stored twice"
    );
    expect_invalid(
        from_coordinator
            .notify(v1::NotifyRequest {
                notification_id: "ntf-two".into(),
                event: 0,
                ..notification.clone()
            })
            .await,
        "event",
    );
    let err = PartnerNodeClient::new(channel_as(&mesh.nodes[1].org, &mesh.nodes[0].mesh_endpoint))
        .notify(v1::NotifyRequest {
            notification_id: "ntf-three".into(),
            ..notification.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let inbox = admin(&mesh)
        .list_inbox(with_token(
            v1::ListInboxRequest {
                after: 0,
                limit: 0,
                ..Default::default()
            },
            &mesh.nodes[0].org.token("cm-1", "casemanager"),
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0].notification.as_ref().unwrap().notification_id,
        "ntf-one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn case_data_refuses_bad_input_naming_the_field_and_roles_that_may_not() {
    let mesh = TestMesh::start(1).await;
    let mut admin = admin(&mesh);
    let token = mesh.nodes[0].org.token("cm-1", "casemanager");
    let case = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-0001".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let err = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-0001".into(),
                bsn: String::new(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = admin
        .create_case(with_token(
            v1::CreateCaseRequest {
                local_id: "zaak-0002".into(),
                bsn: "123456782".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "no BSN without encryption at rest"
    );
    let err = admin
        .get_case(with_token(
            v1::GetCaseRequest {
                case_id: "case-nonexistent".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let fact = |category: &str| {
        with_token(
            v1::AddFactRequest {
                request_id: String::new(),
                case_id: case.case_id.clone(),
                fact: Some(v1::Fact {
                    category: category.into(),
                    value: "fictief".into(),
                    source: "zaaksysteem".into(),
                    ..Default::default()
                }),
            },
            &token,
        )
    };
    admin
        .add_fact(fact("financing"))
        .await
        .expect("a known category");
    expect_invalid(admin.add_fact(fact("diagnosis")).await, "fact.category");

    let consent = |categories: Vec<String>, until: Option<SystemTime>| {
        with_token(
            v1::RecordConsentRequest {
                request_id: String::new(),
                consent: Some(v1::Consent {
                    case_id: case.case_id.clone(),
                    given_by: v1::ConsentGiver::Person as i32,
                    categories,
                    recipients: Some(v1::Recipients {
                        org_ids: vec![],
                        kinds: vec![v1::OrganisationKind::CareOffice as i32],
                    }),
                    purposes: vec!["follow_up".into()],
                    valid_until: until.map(Into::into),
                    ..Default::default()
                }),
            },
            &token,
        )
    };
    admin
        .record_consent(consent(vec!["financing".into()], None))
        .await
        .expect("a valid consent");
    expect_invalid(
        admin.record_consent(consent(vec![], None)).await,
        "categories",
    );
    expect_invalid(
        admin
            .record_consent(consent(
                vec!["financing".into()],
                Some(SystemTime::now() - DAY),
            ))
            .await,
        "valid_until",
    );
    let link = |case_ref: &str| {
        with_token(
            v1::LinkCaseRequest {
                case_id: case.case_id.clone(),
                case_ref: case_ref.into(),
                with_pseudonym: false,
            },
            &token,
        )
    };
    admin
        .link_case(link("case-linkqwertyu"))
        .await
        .expect("a good reference");
    expect_invalid(admin.link_case(link("case-123456782")).await, "case_ref");

    let err = admin
        .list_cases(with_token(
            v1::ListCasesRequest::default(),
            &mesh.nodes[0].org.token("rc-1", "receptionist"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        admin
            .list_cases(with_token(v1::ListCasesRequest::default(), &token))
            .await
            .unwrap()
            .into_inner()
            .cases
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bsn_is_sealed_in_the_node_and_two_partners_derive_the_same_pseudonym() {
    let keys = tempfile::tempdir().unwrap();
    let (bsn_key, region_key) = (keys.path().join("bsn.key"), keys.path().join("region.key"));
    std::fs::write(&bsn_key, "11".repeat(32)).unwrap();
    std::fs::write(&region_key, "22".repeat(32)).unwrap();
    let (b, r) = (bsn_key.clone(), region_key.clone());
    let mesh = TestMesh::start_with(2, move |config| {
        config.cases.bsn_key_file = Some(b.clone());
        config.cases.pseudonym_key_file = Some(r.clone());
    })
    .await;
    let mut pseudonyms = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let token = node.org.token("cm-1", "casemanager");
        let mut admin = NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint));
        expect_invalid(
            admin
                .create_case(with_token(
                    v1::CreateCaseRequest {
                        local_id: "zaak-bad".into(),
                        bsn: "123456789".into(),
                    },
                    &token,
                ))
                .await,
            "bsn",
        );
        let case = admin
            .create_case(with_token(
                v1::CreateCaseRequest {
                    local_id: format!("zaak-{i}"),
                    bsn: "123456782".into(),
                },
                &token,
            ))
            .await
            .expect("a BSN is stored when the node can seal it")
            .into_inner();
        assert!(case.has_bsn);
        let link = admin
            .link_case(with_token(
                v1::LinkCaseRequest {
                    case_id: case.case_id.clone(),
                    case_ref: format!("case-pseudo-{i}abcde"),
                    with_pseudonym: true,
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(link.subject_pseudonym.len(), 64);
        assert!(!link.subject_pseudonym.contains("123456782"));
        let detail = admin
            .get_case(with_token(
                v1::GetCaseRequest {
                    case_id: case.case_id,
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(
            !format!("{detail:?}").contains("123456782"),
            "the BSN is never returned"
        );
        pseudonyms.push(link.subject_pseudonym);
    }
    assert_eq!(
        pseudonyms[0], pseudonyms[1],
        "the same person, the same pseudonym at both partners"
    );
    // Not in the clear in the node's database file.
    let db = std::fs::read(mesh.data_dir().join("municipality.db")).unwrap_or_default();
    assert!(!db.is_empty());
    assert!(!db.windows(9).any(|w| w == b"123456782"));
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_batches_are_stored_once_in_order_and_only_from_the_coordinator() {
    let mesh = TestMesh::start(2).await;
    let mut from_coordinator = PartnerNodeClient::new(channel_as(
        &mesh.coordinator.org,
        &mesh.nodes[0].mesh_endpoint,
    ));
    let note = |i: u64| v1::NotifyRequest {
        notification_id: format!("ntf-batch-{i}"),
        escalation_id: "esc-batch".into(),
        event: v1::EscalationEventType::Accepted as i32,
        occurred_at: Some(SystemTime::now().into()),
        sequence: i,
        case_ref: "case-batchqwrt".into(),
        tier: 1,
        grant: String::new(),
    };
    let batch = v1::NotifyBatchRequest {
        notifications: vec![note(1), note(2)],
    };
    let first = from_coordinator
        .notify_batch(batch.clone())
        .await
        .expect("a batch from the coordinator")
        .into_inner();
    assert_eq!(first.is_new, [true, true]);
    let again = from_coordinator
        .notify_batch(v1::NotifyBatchRequest {
            notifications: vec![note(2), note(3)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.is_new,
        [false, true],
        "a repeated id is acknowledged, not stored twice"
    );
    let items = admin(&mesh)
        .list_inbox(with_token(
            v1::ListInboxRequest {
                after: 0,
                limit: 10,
                ..Default::default()
            },
            &mesh.nodes[0].org.token("cm-1", "casemanager"),
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    let sequences: Vec<u64> = items
        .iter()
        .filter_map(|i| i.notification.as_ref())
        .map(|n| n.sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    // A person reads the most recent first, a page at a time.
    let newest = |before: u64| {
        let mut admin = admin(&mesh);
        let token = mesh.nodes[0].org.token("cm-1", "casemanager");
        async move {
            admin
                .list_inbox(with_token(
                    v1::ListInboxRequest {
                        limit: 2,
                        newest_first: true,
                        before,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .items
        }
    };
    let first_page = newest(0).await;
    let sequence = |i: &v1::InboxItem| i.notification.as_ref().map(|n| n.sequence);
    assert_eq!(
        first_page.iter().map(sequence).collect::<Vec<_>>(),
        [Some(3), Some(2)]
    );
    let second_page = newest(first_page[1].position).await;
    assert_eq!(
        second_page.iter().map(sequence).collect::<Vec<_>>(),
        [Some(1)]
    );

    let bad = from_coordinator
        .notify_batch(v1::NotifyBatchRequest {
            notifications: vec![
                note(4),
                v1::NotifyRequest {
                    event: 0,
                    ..note(5)
                },
            ],
        })
        .await
        .expect_err("a batch with a bad notification");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("notification 2"),
        "{}",
        bad.message()
    );
    let err = PartnerNodeClient::new(channel_as(&mesh.nodes[1].org, &mesh.nodes[0].mesh_endpoint))
        .notify_batch(batch)
        .await
        .expect_err("a batch from a member");
    assert_eq!(err.code(), Code::PermissionDenied);
}
