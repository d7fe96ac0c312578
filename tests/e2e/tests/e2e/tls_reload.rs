//! Certificates are re-read when their files change or on SIGHUP: new connections get the new
//! certificate, live connections carry on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use doorzet_mesh::ReloadingTls;
use doorzet_mesh::identity::certificate_sha256;
use doorzet_proto::v1::{self, directory_client::DirectoryClient};
use doorzet_testkit::{TestMesh, TestOrg, eventually};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

/// Does a TLS handshake as `org` and returns the SHA-256 of the server's certificate.
async fn server_certificate(org: &TestOrg, endpoint: &str) -> String {
    let addr = endpoint.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(org.client_config());
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    certificate_sha256(&stream.get_ref().1.peer_certificates().unwrap()[0])
}

/// A channel whose connector counts the connections it opens.
fn counting_channel(
    org: &TestOrg,
    endpoint: &str,
    opened: Arc<AtomicUsize>,
) -> tonic::transport::Channel {
    let addr = endpoint.trim_start_matches("https://").to_owned();
    let config = org.client_config();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let (addr, config, opened) = (addr.clone(), config.clone(), opened.clone());
        async move {
            opened.fetch_add(1, Ordering::SeqCst);
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        endpoint.trim_start_matches("https://")
    ))
    .unwrap()
    .connect_with_connector_lazy(connector)
}

#[tokio::test]
async fn changed_certificate_is_served_to_new_connections_without_dropping_live_ones() {
    let mesh = TestMesh::start(1).await;
    let client_org = &mesh.nodes[0].org;
    let endpoint = mesh.coordinator.endpoint.clone();
    let before = server_certificate(client_org, &endpoint).await;

    let opened = Arc::new(AtomicUsize::new(0));
    let mut live = DirectoryClient::new(counting_channel(client_org, &endpoint, opened.clone()));
    live.list_members(v1::ListMembersRequest {}).await.unwrap();
    assert_eq!(opened.load(Ordering::SeqCst), 1);

    let expected = mesh
        .pki
        .reissue(&mesh.coordinator.org, "ZVH coordinator, renewed");
    assert_ne!(expected, before);
    eventually(
        Duration::from_secs(5),
        "new certificate on new connections",
        || async {
            let seen = server_certificate(client_org, &endpoint).await;
            (seen == expected).then_some(())
        },
    )
    .await;

    // The connection made before the reload still works and was not replaced.
    live.list_members(v1::ListMembersRequest {}).await.unwrap();
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the live connection was dropped"
    );
}

#[tokio::test]
async fn sighup_reloads_even_when_polling_would_not() {
    let pki = doorzet_testkit::Pki::new();
    let org = pki.org("00000001999000001001".parse().unwrap(), "Gemeente Hofland");
    let mut files = org.tls.clone();
    files.reload_interval = Duration::from_secs(3600);
    let tls = ReloadingTls::load(files).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tls.spawn_watcher(shutdown.clone());
    let before = tls.mesh_server();
    // Our own SIGHUP listener makes the signal harmless to this process whatever the watcher's
    // state, so we can raise it until the watcher answers, without guessing how long it needs.
    let _keep = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    // The files are unchanged (same times, same sizes): only SIGHUP can make this reload.
    eventually(Duration::from_secs(5), "reload on SIGHUP", || {
        let (tls, before) = (tls.clone(), before.clone());
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        async move { (!Arc::ptr_eq(&tls.mesh_server(), &before)).then_some(()) }
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_previous_certificate() {
    let pki = doorzet_testkit::Pki::new();
    let org = pki.org("00000001999000001001".parse().unwrap(), "Gemeente Hofland");
    let tls = ReloadingTls::load(org.tls.clone()).unwrap();
    let before = tls.mesh_server();
    std::fs::write(&org.tls.cert, "not a certificate").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains(&org.tls.cert.display().to_string()), "{err}");
    assert!(Arc::ptr_eq(&tls.mesh_server(), &before));
}
