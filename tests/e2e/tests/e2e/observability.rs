//! What operators see: Prometheus metrics on the admin listener with labels that carry no
//! identifiers, and a process that starts with trace export configured but no collector running,
//! then drains and exits cleanly on SIGTERM.

use std::process::Command;

use doorzet_ctl::local_mesh::find_binary;
use doorzet_proto::v1::{self, directory_client::DirectoryClient};
use doorzet_testkit::TestMesh;
use doorzet_testkit::mesh::{channel_as, http_get, with_token};

#[tokio::test]
async fn metrics_count_requests_by_method_status_and_peer_kind_without_identifiers() {
    let mesh = TestMesh::start(2).await;
    let member = &mesh.nodes[0].org;
    let mut client = DirectoryClient::new(channel_as(member, &mesh.coordinator.endpoint));
    client
        .list_members(v1::ListMembersRequest {})
        .await
        .unwrap();
    let token = member.token("emp-0042", "procesregisseur");
    let _ = client
        .get_member(with_token(
            v1::GetMemberRequest {
                org_id: "bad".into(),
            },
            &token,
        ))
        .await;

    let body = http_get(mesh.coordinator.admin, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(r#"doorzet_mesh_requests_total{service="doorzet.v1.Directory",method="ListMembers",code="0",peer_kind="municipality"} "#),
        "{body}"
    );
    assert!(
        body.contains(r#"method="GetMember",code="3",peer_kind="municipality""#),
        "{body}"
    );
    assert!(body.contains("doorzet_mesh_request_duration_seconds_bucket"));
    assert!(body.contains("doorzet_mesh_directory_members 2"));
    // No organisation ids, subjects or tokens in any label.
    assert!(!body.contains(member.org.as_str()));
    assert!(!body.contains("emp-0042"));

    let ready = http_get(mesh.nodes[0].admin, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_runs_with_otlp_configured_but_no_collector_and_drains_on_sigterm() {
    let dead_collector = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut coordinator = doorzet_testkit::process::CoordinatorProcess::new(&format!(
        "[telemetry]\notlp_endpoint = \"http://{dead_collector}\"\n"
    ));
    coordinator.start();
    coordinator.wait_serving().await;
    let (status, stderr) = coordinator.terminate().await;
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(stderr.contains("SIGTERM: draining"), "{stderr}");
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "org = \"123\"\n").unwrap();
    let output = Command::new(find_binary("doorzet-node", None).unwrap())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("org"), "{stderr}");
}

#[tokio::test]
async fn every_listener_serves_health_and_reflection() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mesh = TestMesh::start(1).await;
    let node = &mesh.nodes[0];
    let listeners = [
        (&mesh.coordinator.endpoint, "doorzet.v1.AuditLog"),
        (&node.mesh_endpoint, "doorzet.v1.PartnerNode"),
        (&node.local_endpoint, "doorzet.v1.NodeAdmin"),
    ];
    for (endpoint, service) in listeners {
        doorzet_testkit::eventually(std::time::Duration::from_secs(5), "SERVING", || async {
            (doorzet_testkit::mesh::health(&node.org, endpoint).await == Some(1)).then_some(())
        })
        .await;
        let mut client = ServerReflectionClient::new(channel_as(&node.org, endpoint));
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        // The local listener wants a token for everything but health; the mesh accepts one too.
        let token = node.org.token("ops-1", "beheerder");
        let mut responses = client
            .server_reflection_info(with_token(tokio_stream::iter([request]), &token))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&service), "{endpoint}: {names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    }
}

#[tokio::test]
async fn reflection_v1alpha_serves_older_clients() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mesh = TestMesh::start(1).await;
    let node = &mesh.nodes[0];
    let mut client = ServerReflectionClient::new(channel_as(&node.org, &mesh.coordinator.endpoint));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha is served")
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"doorzet.v1.Directory"), "{names:?}");
}
