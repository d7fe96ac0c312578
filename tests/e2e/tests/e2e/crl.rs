//! Certificate revocation lists, as the Dutch government PKI publishes them: a certificate the list
//! names is refused by the node's mesh listener; the list is re-read like the certificates; a list
//! past its next update keeps working under the `allow` policy and refuses peers under `refuse`,
//! and either way shows in health and metrics.

use std::time::{Duration, SystemTime};

use doorzet_proto::v1::{self, partner_node_client::PartnerNodeClient};
use doorzet_testkit::eventually;
use doorzet_testkit::mesh::{channel_as, http_get};
use doorzet_testkit::pki::TestOrg;
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess, member_entry};
use tonic::Code;

async fn mesh_call(org: &TestOrg, node: &NodeProcess) -> Code {
    PartnerNodeClient::new(channel_as(org, &node.mesh_endpoint()))
        .list_mandates(v1::ListMandatesRequest::default())
        .await
        .map_or_else(|s| s.code(), |_| Code::Ok)
}

fn is_transport_refusal(code: Code) -> bool {
    // The handshake fails, so the call never reaches gRPC; tonic names that in several ways.
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    )
}

async fn crl_health(node: &NodeProcess) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(node.local_channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "doorzet.crl".into(),
        })
        .await
        .map_or(-1, |r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_in_the_crl_is_refused_and_a_stale_list_behaves_as_configured() {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start();
    coordinator.wait_serving().await;
    let ggz = coordinator
        .pki
        .org("00000001999000002002".parse().unwrap(), "GGZ Test");
    let original = std::fs::read_to_string(&coordinator.directory).unwrap();
    std::fs::write(
        &coordinator.directory,
        format!("{original}{}", member_entry(&ggz)),
    )
    .unwrap();

    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let crl = coordinator.pki.write_crl(&[], now - hour, now + 24 * hour);
    let crls = format!("[\"{}\"]", crl.display());
    let mut node = NodeProcess::new(&coordinator, "");
    node.start_with_env(&[("DOORZET_TLS__CRLS", &crls)], None);
    node.wait_serving().await;
    eventually(Duration::from_secs(10), "GGZ admitted", || async {
        (mesh_call(&ggz, &node).await == Code::Ok).then_some(())
    })
    .await;
    assert_eq!(crl_health(&node).await, 1, "a current list is SERVING");

    // The CA revokes GGZ's certificate; SIGHUP makes the node read the new list now.
    coordinator
        .pki
        .write_crl(&[&ggz], now - hour, now + 24 * hour);
    node.hangup();
    let refused = eventually(Duration::from_secs(10), "GGZ refused", || async {
        let code = mesh_call(&ggz, &node).await;
        is_transport_refusal(code).then_some(code)
    })
    .await;
    assert!(is_transport_refusal(refused));

    // A list past its next update that names nobody: under `allow` GGZ gets in, and it shows.
    coordinator.pki.write_crl(&[], now - 2 * hour, now - hour);
    node.hangup();
    eventually(Duration::from_secs(10), "stale list in force", || async {
        (crl_health(&node).await == 2).then_some(())
    })
    .await;
    assert_eq!(
        mesh_call(&ggz, &node).await,
        Code::Ok,
        "allow: still served"
    );
    let metrics = http_get(node.admin_addr, "/metrics").await;
    assert!(metrics.contains("doorzet_mesh_crl_stale 1"), "{metrics}");

    // The same stale list under `refuse`: the peer's status cannot be vouched for, so it is refused.
    node.stop();
    node.start_with_env(
        &[
            ("DOORZET_TLS__CRLS", &crls),
            ("DOORZET_TLS__CRL_STALE", "refuse"),
        ],
        None,
    );
    eventually(Duration::from_secs(20), "node back with refuse", || async {
        (crl_health(&node).await == 2).then_some(())
    })
    .await;
    let code = mesh_call(&ggz, &node).await;
    assert!(is_transport_refusal(code), "refuse: {code:?}");
}

#[test]
fn doorzetctl_revokes_a_development_certificate_into_a_crl() {
    let dir = tempfile::tempdir().unwrap();
    let orgs = [(
        "00000001999000001001".parse().unwrap(),
        "Gemeente Hofland".to_owned(),
    )];
    let files = doorzet_ctl::pki::init(dir.path(), &orgs).unwrap();
    let crl =
        doorzet_ctl::pki::revoke(dir.path(), &files[0].cert, Duration::from_secs(3600)).unwrap();
    let pem = std::fs::read(&crl).unwrap();
    let der = rustls_pki_types::CertificateRevocationListDer::from(
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|d: rustls_pki_types::CertificateRevocationListDer<'_>| d.to_vec())
            .unwrap(),
    );
    let serial = doorzet_ctl::pki::serial_of(&files[0].cert).unwrap();
    // The list names the certificate's serial number.
    assert!(
        der.as_ref()
            .windows(serial.len())
            .any(|w| w == serial.as_slice()),
        "serial not in the list"
    );
    // Revoking again keeps one entry per certificate.
    doorzet_ctl::pki::revoke(dir.path(), &files[0].cert, Duration::from_secs(3600)).unwrap();
    let serials = std::fs::read_to_string(dir.path().join("revoked-serials.txt")).unwrap();
    assert_eq!(serials.lines().count(), 1);
}
