//! The audit log is tamper-evident: a changed entry, a deleted entry and a log rolled back to an
//! earlier size are each noticed by the nodes' checks and by `doorzetctl audit verify`.

use doorzet_audit::entry;
use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use doorzet_testkit::TestMesh;
use doorzet_testkit::audit::disclosure;
use doorzet_testkit::mesh::channel_as;
use sqlx::Connection;

async fn append(mesh: &TestMesh, from: u64, count: u64) {
    let appended = mesh.append_disclosures(from, count).await;
    assert_eq!(
        appended.leaf_indexes,
        (from..from + count).collect::<Vec<_>>()
    );
}

async fn coordinator_db(mesh: &TestMesh) -> sqlx::SqliteConnection {
    let url = format!(
        "sqlite:{}",
        mesh.data_dir().join("coordinator.db").display()
    );
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

#[tokio::test]
async fn a_changed_entry_is_detected() {
    let mesh = TestMesh::start(2).await;
    let state = tempfile::tempdir().unwrap();
    append(&mesh, 0, 12).await;
    append(&mesh, 12, 8).await;
    mesh.wait_audit_verified(20).await;
    let report = mesh.verify_audit_log(state.path()).await.unwrap();
    assert_eq!(report.size, 20);

    // Swap entry 7 for another valid entry, as an insider with database access could.
    let forged = entry::encode(&disclosure(mesh.nodes[0].org.org, 999)).unwrap();
    let mut db = coordinator_db(&mesh).await;
    sqlx::query("UPDATE audit_entries SET body = $1 WHERE idx = 7")
        .bind(forged)
        .execute(&mut db)
        .await
        .unwrap();

    let alarm = mesh.wait_audit_alarm().await;
    assert!(
        alarm.contains("entry 7") && alarm.contains("changed"),
        "{alarm}"
    );
    // With the checkpoint of size 20 remembered, the break is pinned on it; without, on the
    // latest signed checkpoint.
    let err = mesh
        .verify_audit_log(state.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entries 0..20 no longer hash") && err.contains("rewritten"),
        "{err}"
    );
    let fresh = tempfile::tempdir().unwrap();
    let err = mesh
        .verify_audit_log(fresh.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("an entry was changed"), "{err}");
    // The alarm also shows in health.
    let health = tonic_health::pb::health_client::HealthClient::new(channel_as(
        &mesh.nodes[1].org,
        &mesh.nodes[0].mesh_endpoint,
    ))
    .check(tonic_health::pb::HealthCheckRequest {
        service: "doorzet.audit".into(),
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(health.status, 2, "NOT_SERVING");
    // And in the node's metrics.
    let metrics = doorzet_testkit::mesh::http_get(mesh.nodes[0].admin, "/metrics").await;
    assert!(metrics.contains("doorzet_node_audit_alarm 1"), "{metrics}");
}

#[tokio::test]
async fn a_deleted_last_entry_is_detected() {
    let mesh = TestMesh::start(2).await;
    let state = tempfile::tempdir().unwrap();
    append(&mesh, 0, 10).await;
    mesh.wait_audit_verified(10).await;
    mesh.verify_audit_log(state.path()).await.unwrap();

    let mut db = coordinator_db(&mesh).await;
    sqlx::query("DELETE FROM audit_entries WHERE idx = 9")
        .execute(&mut db)
        .await
        .unwrap();

    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("entry 9 is missing"), "{alarm}");
    let err = mesh
        .verify_audit_log(state.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry 9 is missing"), "{err}");
}

#[tokio::test]
async fn a_log_rolled_back_to_an_earlier_size_is_detected() {
    let mut mesh = TestMesh::start(2).await;
    let state = tempfile::tempdir().unwrap();
    append(&mesh, 0, 10).await;
    mesh.wait_audit_verified(10).await;
    mesh.verify_audit_log(state.path()).await.unwrap();
    // A consistent backup at size 10.
    let backup = mesh.data_dir().join("backup.db");
    let mut db = coordinator_db(&mesh).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        backup.display()
    )))
    .execute(&mut db)
    .await
    .unwrap();
    drop(db);
    append(&mesh, 10, 10).await;
    mesh.wait_audit_verified(20).await;
    mesh.verify_audit_log(state.path()).await.unwrap();

    // The ZVH restores the backup and carries on as if entries 10..20 never happened.
    mesh.restart_coordinator(|data| {
        let db = data.join("coordinator.db");
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        std::fs::copy(data.join("backup.db"), &db).unwrap();
    })
    .await;

    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("rolled back"), "{alarm}");
    let err = mesh
        .verify_audit_log(state.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rolled back"), "{err}");
}

#[tokio::test]
async fn nodes_append_only_as_themselves() {
    let mesh = TestMesh::start(2).await;
    let mut client =
        AuditLogClient::new(channel_as(&mesh.nodes[1].org, &mesh.coordinator.endpoint));
    let err = client
        .append(v1::AppendRequest::of(&[disclosure(
            mesh.nodes[0].org.org,
            1,
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("actor_org"), "{}", err.message());
    let mut free_text = disclosure(mesh.nodes[1].org.org, 1);
    free_text.purpose = "eviction on 12 March".into();
    let err = client
        .append(v1::AppendRequest::of(&[free_text]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("purpose"), "{}", err.message());
}

#[tokio::test]
async fn entries_are_appended_as_sent_when_canonical_and_written_canonically_otherwise() {
    use prost::Message;
    let mesh = TestMesh::start(1).await;
    let actor = mesh.nodes[0].org.org;
    let mut client =
        AuditLogClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint));
    let mut stored = async |bytes: Vec<u8>| {
        let appended = client
            .append(v1::AppendRequest {
                entries: vec![bytes.into()],
            })
            .await?
            .into_inner();
        let start = appended.leaf_indexes[0];
        let got = client
            .get_entries(v1::GetEntriesRequest { start, limit: 1 })
            .await?
            .into_inner();
        Ok::<_, tonic::Status>(got.entries[0].clone())
    };
    // As prost writes it: the log holds the very bytes sent.
    let canonical = disclosure(actor, 1).encode_to_vec();
    assert_eq!(stored(canonical.clone()).await.unwrap(), canonical);
    // The same kind of entry with its version written twice decodes the same: it is taken, and
    // the log holds it as written canonically.
    let entry = disclosure(actor, 2);
    let mut twice = entry.encode_to_vec();
    twice.extend_from_slice(&[0x08, 0x01]);
    assert_eq!(stored(twice).await.unwrap(), entry.encode_to_vec());
    // Bytes that are no entry at all are refused, naming the entry.
    let err = stored(vec![0xff, 0xff]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("entries[0].bytes"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_new_signing_key_for_the_same_log_is_an_alarm() {
    let mut mesh = TestMesh::start(2).await;
    append(&mesh, 0, 3).await;
    mesh.wait_audit_verified(3).await;
    // The ZVH swaps the checkpoint key (and so could sign a different history).
    mesh.restart_coordinator(|data| {
        doorzet_ctl::pki::write_private(
            &data.join("audit.key"),
            doorzet_ctl::pki::TokenKey::generate()
                .unwrap()
                .private_pem
                .as_bytes(),
        )
        .unwrap();
    })
    .await;
    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("instead of the pinned"), "{alarm}");
}

#[tokio::test]
async fn audit_requests_out_of_range_are_refused_naming_the_field() {
    let mesh = TestMesh::start(1).await;
    append(&mesh, 0, 3).await;
    let mut client =
        AuditLogClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint));
    let err = client
        .get_inclusion_proof(v1::GetInclusionProofRequest {
            tree_size: 0,
            entry: Some(v1::get_inclusion_proof_request::Entry::LeafHash(vec![1; 5])),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("leaf_hash"), "{}", err.message());
    let err = client
        .get_inclusion_proof(v1::GetInclusionProofRequest {
            tree_size: 4,
            entry: Some(v1::get_inclusion_proof_request::Entry::LeafIndex(0)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("tree_size"), "{}", err.message());
    let err = client
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            first_size: 0,
            second_size: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("first_size"), "{}", err.message());
    let err = client
        .get_inclusion_proof(v1::GetInclusionProofRequest {
            tree_size: 0,
            entry: Some(v1::get_inclusion_proof_request::Entry::LeafHash(vec![
                7;
                32
            ])),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client.append(v1::AppendRequest::of(&[])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("entries"), "{}", err.message());
    let actor = mesh.nodes[0].org.org;
    let too_many: Vec<_> = (0..doorzet_audit::entry::MAX_APPEND as u64 + 1)
        .map(|i| disclosure(actor, i))
        .collect();
    let err = client
        .append(v1::AppendRequest::of(&too_many))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
