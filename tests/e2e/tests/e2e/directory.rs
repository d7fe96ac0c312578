//! The member directory: every member sees the same list, and a member removed from the file or a
//! certificate listed as revoked is refused by every listener within one refresh, without a
//! restart.

use std::time::Duration;

use doorzet_mesh::identity::certificate_sha256;
use doorzet_proto::v1::{
    self, directory_client::DirectoryClient, partner_node_client::PartnerNodeClient,
};
use doorzet_testkit::mesh::{REFRESH, channel_as};
use doorzet_testkit::{TestMesh, TestOrg, eventually};
use tonic::Code;

async fn list_as(org: &TestOrg, endpoint: &str) -> Result<v1::ListMembersResponse, tonic::Status> {
    DirectoryClient::new(channel_as(org, endpoint))
        .list_members(v1::ListMembersRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Calls a node's mesh listener (`ListMandates`); `OK` means identity passed and the handler
/// answered.
async fn call_node(org: &TestOrg, endpoint: &str) -> Code {
    let result = PartnerNodeClient::new(channel_as(org, endpoint))
        .list_mandates(v1::ListMandatesRequest::default())
        .await;
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

const WITHIN_ONE_REFRESH: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_member_sees_every_member() {
    let mesh = TestMesh::start(5).await;
    let expected: Vec<_> = mesh.nodes.iter().map(|n| n.org.org.to_string()).collect();
    for node in &mesh.nodes {
        let directory = list_as(&node.org, &mesh.coordinator.endpoint)
            .await
            .unwrap();
        let mut seen: Vec<_> = directory.members.iter().map(|m| m.org_id.clone()).collect();
        seen.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(seen, want);
        assert_eq!(directory.region, "test-region");
        assert!(directory.members.iter().all(|m| !m.signing_keys.is_empty()));
    }
}

#[tokio::test]
async fn removed_member_is_refused_everywhere_without_restart() {
    let mut mesh = TestMesh::start(3).await;
    let leaving = mesh.nodes[2].org.clone();
    let node0 = mesh.nodes[0].mesh_endpoint.clone();
    assert_eq!(call_node(&leaving, &node0).await, Code::Ok);
    list_as(&leaving, &mesh.coordinator.endpoint)
        .await
        .expect("member before removal");

    let version_before = list_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint)
        .await
        .unwrap()
        .version;
    let leaving_id = leaving.org.to_string();
    mesh.write_directory(|d| d.members.retain(|m| m.org_id != leaving_id));

    let coordinator = mesh.coordinator.endpoint.clone();
    let err = eventually(
        WITHIN_ONE_REFRESH,
        "coordinator refuses removed member",
        || {
            let (leaving, coordinator) = (leaving.clone(), coordinator.clone());
            async move { list_as(&leaving, &coordinator).await.err() }
        },
    )
    .await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("not a member"), "{}", err.message());

    eventually(WITHIN_ONE_REFRESH + REFRESH, "node refuses removed member", || {
        let (leaving, node0) = (leaving.clone(), node0.clone());
        async move { (call_node(&leaving, &node0).await == Code::PermissionDenied).then_some(()) }
    })
    .await;

    // The others still pass, and see a newer version without the removed member.
    assert_eq!(call_node(&mesh.nodes[1].org, &node0).await, Code::Ok);
    let after = list_as(&mesh.nodes[0].org, &coordinator).await.unwrap();
    assert!(after.version > version_before);
    assert!(after.members.iter().all(|m| m.org_id != leaving_id));
}

#[tokio::test]
async fn revoked_certificate_is_refused_but_a_new_one_of_the_same_member_is_not() {
    let mut mesh = TestMesh::start(2).await;
    let member = mesh.nodes[1].org.clone();
    let node0 = mesh.nodes[0].mesh_endpoint.clone();
    let coordinator = mesh.coordinator.endpoint.clone();
    let der = doorzet_mesh::tls::read_certs(&member.tls.cert).unwrap()[0].clone();
    let fingerprint = certificate_sha256(&der);
    // A second, unrevoked certificate for the same organisation (as after a key rollover).
    let mut replacement = mesh.pki.org(member.org, "Replacement");
    replacement.token_key = member.token_key.clone();

    mesh.write_directory(|d| {
        d.revoked
            .certificate_sha256
            .push(fingerprint.to_uppercase())
    });

    let err = eventually(
        WITHIN_ONE_REFRESH,
        "coordinator refuses revoked certificate",
        || {
            let (member, coordinator) = (member.clone(), coordinator.clone());
            async move { list_as(&member, &coordinator).await.err() }
        },
    )
    .await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    eventually(
        WITHIN_ONE_REFRESH + REFRESH,
        "node refuses revoked certificate",
        || {
            let (member, node0) = (member.clone(), node0.clone());
            async move { (call_node(&member, &node0).await == Code::Unauthenticated).then_some(()) }
        },
    )
    .await;

    list_as(&replacement, &coordinator)
        .await
        .expect("new certificate of the same member");
    assert_eq!(call_node(&replacement, &node0).await, Code::Ok);
}

#[tokio::test]
async fn a_certificate_revoked_while_its_connection_is_open_is_refused_on_it() {
    let mut mesh = TestMesh::start(2).await;
    let member = mesh.nodes[1].org.clone();
    let node0 = mesh.nodes[0].mesh_endpoint.clone();
    // One channel, so one connection, whose peer certificate the node reads once: the revocation
    // list is still consulted on every request.
    let client = PartnerNodeClient::new(channel_as(&member, &node0));
    client
        .clone()
        .list_mandates(v1::ListMandatesRequest::default())
        .await
        .expect("before the revocation");
    let der = doorzet_mesh::tls::read_certs(&member.tls.cert).unwrap()[0].clone();
    let fingerprint = certificate_sha256(&der);
    mesh.write_directory(|d| d.revoked.certificate_sha256.push(fingerprint));
    let err = eventually(
        WITHIN_ONE_REFRESH + REFRESH,
        "node refuses the open connection",
        || {
            let mut client = client.clone();
            async move {
                client
                    .list_mandates(v1::ListMandatesRequest::default())
                    .await
                    .err()
            }
        },
    )
    .await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
}

#[tokio::test]
async fn invalid_directory_edit_keeps_the_last_good_directory() {
    let mesh = TestMesh::start(2).await;
    let coordinator = mesh.coordinator.endpoint.clone();
    let before = list_as(&mesh.nodes[0].org, &coordinator).await.unwrap();
    std::fs::write(
        &mesh.directory_path,
        "region = \"broken\"\n[[members]]\norg_id = \"12\"\n",
    )
    .unwrap();
    // Wait until the coordinator has read the broken file (a dead watcher would never say so).
    doorzet_testkit::eventually(Duration::from_secs(10), "file found invalid", || async {
        doorzet_testkit::mesh::http_get(mesh.coordinator.admin, "/metrics")
            .await
            .contains("doorzet_coordinator_directory_file_valid 0")
            .then_some(())
    })
    .await;
    let after = list_as(&mesh.nodes[0].org, &coordinator).await.unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.members.len(), 2);
}

#[tokio::test]
async fn node_keeps_serving_without_the_coordinator_until_its_copy_is_too_old() {
    let max_age = Duration::from_millis(1500);
    let mesh = TestMesh::start_with(2, |config| config.directory.max_age = max_age).await;
    let node0 = mesh.nodes[0].mesh_endpoint.clone();
    let peer = mesh.nodes[1].org.clone();
    assert_eq!(call_node(&peer, &node0).await, Code::Ok);

    mesh.stop_coordinator();
    let stopped = tokio::time::Instant::now();
    // Still serving on the last good copy...
    assert_eq!(call_node(&peer, &node0).await, Code::Ok);
    // ...until the copy passes its maximum age; then the mesh listener refuses with UNAVAILABLE
    // and health says NOT_SERVING.
    eventually(
        max_age + Duration::from_secs(5),
        "stale directory refused",
        || {
            let (peer, node0) = (peer.clone(), node0.clone());
            async move { (call_node(&peer, &node0).await == Code::Unavailable).then_some(()) }
        },
    )
    .await;
    assert!(stopped.elapsed() >= max_age - REFRESH);
    eventually(Duration::from_secs(5), "health NOT_SERVING", || {
        let (peer, node0) = (peer.clone(), node0.clone());
        async move { (doorzet_testkit::mesh::health(&peer, &node0).await == Some(2)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_watch_stream_ends_when_its_member_is_removed() {
    let mut mesh = TestMesh::start(2).await;
    let peer = mesh.nodes[1].org.clone();
    let mut stream = DirectoryClient::new(channel_as(&peer, &mesh.coordinator.endpoint))
        .watch_members(v1::WatchMembersRequest {})
        .await
        .expect("a member may watch")
        .into_inner();
    let first = stream
        .message()
        .await
        .unwrap()
        .expect("the current directory at once");
    assert_eq!(first.members.len(), 2);

    let removed = peer.org.to_string();
    mesh.write_directory(|d| d.members.retain(|m| m.org_id != removed));
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without saying why"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream is ended");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("no longer admitted"), "{err:?}");
}

async fn node_directory_version(mesh: &TestMesh) -> u64 {
    mesh.node_status().await.directory_version
}

#[tokio::test]
async fn a_lower_directory_version_is_refused_and_counted_as_a_rollback() {
    let mut mesh = TestMesh::start(2).await;
    let ahead = 1u64 << 50;
    let text = std::fs::read_to_string(&mesh.directory_path).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    // The coordinator's database says this file already had a version far ahead of the clock.
    let rewrite = |sql: String| {
        move |data: &std::path::Path| {
            let url = format!("sqlite:{}", data.join("coordinator.db").display());
            let rt = tokio::runtime::Handle::current();
            std::thread::scope(|s| {
                s.spawn(|| {
                    rt.block_on(async {
                        use sqlx::Connection;
                        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut db)
                            .await
                            .unwrap();
                    })
                });
            });
        }
    };
    mesh.restart_coordinator(rewrite(format!(
        "INSERT INTO directory_versions (version, sha256, loaded_at) VALUES ({ahead}, '{sha}', 0)"
    )))
    .await;
    eventually(
        Duration::from_secs(10),
        "node on the version ahead",
        || async { (node_directory_version(&mesh).await == ahead).then_some(()) },
    )
    .await;

    // Restored from a backup without that row: the coordinator serves a lower version.
    mesh.restart_coordinator(rewrite(format!(
        "DELETE FROM directory_versions WHERE version = {ahead}"
    )))
    .await;
    eventually(Duration::from_secs(10), "rollback counted", || async {
        let metrics = doorzet_testkit::metrics::scrape(mesh.nodes[0].admin).await;
        doorzet_testkit::metrics::value(&metrics, "doorzet_node_directory_rollbacks_refused_total")
            .filter(|n| *n > 0.0)
    })
    .await;
    assert_eq!(
        node_directory_version(&mesh).await,
        ahead,
        "the newer copy stays"
    );
}
