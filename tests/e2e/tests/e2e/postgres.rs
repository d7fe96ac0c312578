//! The production storage option end to end: the same directory and audit behaviour with every
//! server's state in its own database on the real PostgreSQL server.

use std::time::Duration;

use doorzet_audit::entry;
use doorzet_mesh::identity::certificate_sha256;
use doorzet_proto::v1::{
    self, directory_client::DirectoryClient, partner_node_client::PartnerNodeClient,
};
use doorzet_testkit::audit::disclosure;
use doorzet_testkit::mesh::{Storage, channel_as};
use doorzet_testkit::{TestMesh, TestOrg, eventually};
use sqlx::Connection;
use tonic::Code;

async fn call_node(org: &TestOrg, endpoint: &str) -> Code {
    PartnerNodeClient::new(channel_as(org, endpoint))
        .list_mandates(v1::ListMandatesRequest::default())
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

async fn version(mesh: &TestMesh) -> u64 {
    DirectoryClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint))
        .list_members(v1::ListMembersRequest {})
        .await
        .expect("directory")
        .into_inner()
        .version
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_reach_the_nodes_and_versions_survive_a_restart_on_postgres() {
    let mut mesh = TestMesh::start_on(Storage::Postgres, 2, |_| {}).await;
    assert!(mesh.coordinator_storage_url().starts_with("postgres://"));
    let node0 = mesh.nodes[0].mesh_endpoint.clone();
    let peer = mesh.nodes[1].org.clone();
    assert_eq!(call_node(&peer, &node0).await, Code::Ok, "admitted");

    let fingerprint =
        certificate_sha256(&doorzet_mesh::tls::read_certs(&peer.tls.cert).unwrap()[0]);
    mesh.write_directory(|d| d.revoked.certificate_sha256.push(fingerprint));
    eventually(Duration::from_secs(5), "revocation at the node", || async {
        (call_node(&peer, &node0).await == Code::Unauthenticated).then_some(())
    })
    .await;

    let before = version(&mesh).await;
    mesh.restart_coordinator(|_| {}).await;
    let after = eventually(Duration::from_secs(10), "coordinator back", || async {
        DirectoryClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint))
            .list_members(v1::ListMembersRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().version)
    })
    .await;
    assert_eq!(
        after, before,
        "the same file keeps its version across a restart"
    );
    assert_eq!(
        call_node(&peer, &node0).await,
        Code::Unauthenticated,
        "still revoked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_on_postgres_is_verified_survives_a_restart_and_tampering_is_caught() {
    let mut mesh = TestMesh::start_on(Storage::Postgres, 2, |_| {}).await;
    mesh.append_disclosures(0, 10).await;
    mesh.wait_audit_verified(10).await;
    let state = tempfile::tempdir().unwrap();
    let report = mesh
        .verify_audit_log(state.path())
        .await
        .expect("the whole log verifies");
    assert_eq!(report.size, 10);

    mesh.restart_coordinator(|_| {}).await;
    mesh.wait_coordinator().await;
    mesh.append_disclosures(10, 5).await;
    mesh.wait_audit_verified(15).await;

    // An insider edits an entry in the PostgreSQL database.
    let mut db = sqlx::PgConnection::connect(mesh.coordinator_storage_url())
        .await
        .unwrap();
    let forged = entry::encode(&disclosure(mesh.nodes[0].org.org, 999)).unwrap();
    sqlx::query("UPDATE audit_entries SET body = $1 WHERE idx = 3")
        .bind(&forged)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("entry 3"), "{alarm}");
}
