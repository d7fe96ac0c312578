//! Revocation in seconds that survives a reset: a coordinator started on a wiped database still
//! moves every node to its directories, and a revocation the operator saves reaches the node within
//! 2 s through the watch stream (the node's own poll is 30 s here). Clients check the server too,
//! and a certificate reload refuses another organisation's certificate.

use std::time::{Duration, Instant};

use doorzet_mesh::ReloadingTls;
use doorzet_mesh::identity::certificate_sha256;
use doorzet_proto::v1::{self, partner_node_client::PartnerNodeClient};
use doorzet_testkit::eventually;
use doorzet_testkit::mesh::channel_as;
use doorzet_testkit::pki::TestOrg;
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess, member_entry};
use tonic::Code;

/// Calls the node's mesh listener as `org`: OK means identity let it through to `ListMandates`.
async fn mesh_call(org: &TestOrg, node: &NodeProcess) -> Code {
    PartnerNodeClient::new(channel_as(org, &node.mesh_endpoint()))
        .list_mandates(v1::ListMandatesRequest::default())
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_coordinator_reset_a_revocation_reaches_the_node_within_two_seconds() {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start();
    coordinator.wait_serving().await;
    // The node polls only every 30 s: anything faster is the push.
    let mut node = NodeProcess::new(&coordinator, "[directory]\nrefresh_interval = \"30s\"\n");
    node.start(None);
    node.wait_serving().await;
    let ggz = coordinator
        .pki
        .org("00000001999000002002".parse().unwrap(), "GGZ Test");

    // The ZVH's database is lost: the coordinator comes back on an empty one.
    coordinator.kill9();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(coordinator.dir().join(format!("coordinator.db{suffix}")));
    }
    coordinator.start();
    coordinator.wait_serving().await;

    // A member added after the reset reaches the node: the reset did not lower the versions.
    let original = std::fs::read_to_string(&coordinator.directory).unwrap();
    assert_eq!(
        mesh_call(&ggz, &node).await,
        Code::PermissionDenied,
        "not a member yet"
    );
    std::fs::write(
        &coordinator.directory,
        format!("{original}{}", member_entry(&ggz)),
    )
    .unwrap();
    eventually(Duration::from_secs(5), "GGZ admitted", || async {
        (mesh_call(&ggz, &node).await == Code::Ok).then_some(())
    })
    .await;

    // The operator revokes GGZ's certificate; the node refuses it within 2 s.
    let fingerprint = certificate_sha256(&doorzet_mesh::tls::read_certs(&ggz.tls.cert).unwrap()[0]);
    std::fs::write(
        &coordinator.directory,
        format!(
            "{original}{}\n[revoked]\ncertificate_sha256 = [\"{fingerprint}\"]\n",
            member_entry(&ggz)
        ),
    )
    .unwrap();
    let saved = Instant::now();
    eventually(
        Duration::from_secs(2),
        "revocation in force at the node",
        || async { (mesh_call(&ggz, &node).await == Code::Unauthenticated).then_some(()) },
    )
    .await;
    println!("revocation in force {:?} after the save", saved.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_refuses_a_coordinator_whose_certificate_is_revoked() {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start();
    coordinator.wait_serving().await;
    let mut node = NodeProcess::new(
        &coordinator,
        "[directory]\nrefresh_interval = \"200ms\"\nmax_age = \"2s\"\n",
    );
    node.start(None);
    node.wait_serving().await;
    let token = node.token();
    let status = || async {
        doorzet_proto::v1::node_admin_client::NodeAdminClient::new(node.local_channel())
            .get_node_status(doorzet_testkit::mesh::with_token(
                v1::GetNodeStatusRequest {},
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
    };
    assert!(!status().await.is_directory_stale);

    // The coordinator's own certificate is revoked (say, its key leaked): the node takes that
    // directory, then refuses to talk to a server presenting it, and its copy goes stale.
    let fingerprint =
        certificate_sha256(&doorzet_mesh::tls::read_certs(&coordinator.org.tls.cert).unwrap()[0]);
    let original = std::fs::read_to_string(&coordinator.directory).unwrap();
    std::fs::write(
        &coordinator.directory,
        format!("{original}\n[revoked]\ncertificate_sha256 = [\"{fingerprint}\"]\n"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "stale directory", || async {
        status().await.is_directory_stale.then_some(())
    })
    .await;
    let stderr = node.running().stderr();
    assert!(stderr.contains("is revoked in the directory"), "{stderr}");
}

#[tokio::test]
async fn a_certificate_reload_refuses_another_organisations_certificate() {
    let pki = doorzet_testkit::Pki::new();
    let mine = pki.org("00000001999000001001".parse().unwrap(), "Mine");
    let other = pki.org("00000001999000002002".parse().unwrap(), "Other");
    let err = ReloadingTls::load_for(mine.tls.clone(), other.org).unwrap_err();
    assert!(err.to_string().contains("configured as"), "{err}");

    let tls = ReloadingTls::load_for(mine.tls.clone(), mine.org).expect("own certificate");
    std::fs::copy(&other.tls.cert, &mine.tls.cert).unwrap();
    std::fs::copy(&other.tls.key, &mine.tls.key).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains("certificate is for organisation 00000001999000002002"),
        "{err}"
    );
}
