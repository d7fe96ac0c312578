//! Organisation identity over mutual TLS: who may connect to a mesh listener, and as whom.

use doorzet_mesh::client::ClientTls;
use doorzet_proto::v1::{self, directory_client::DirectoryClient};
use doorzet_testkit::TestMesh;
use doorzet_testkit::mesh::{channel_as, channel_with, stranger};
use tonic::Code;

async fn list_members(
    channel: tonic::transport::Channel,
) -> Result<v1::ListMembersResponse, tonic::Status> {
    DirectoryClient::new(channel)
        .list_members(v1::ListMembersRequest {})
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn recognises_a_member_by_the_oin_in_its_certificate() {
    let mesh = TestMesh::start(2).await;
    let directory = list_members(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint))
        .await
        .expect("a member may read the directory");
    assert_eq!(directory.members.len(), 2);

    // A valid certificate of an organisation that is not a member is read, and refused by name.
    let outsider = mesh.pki.org(stranger(), "Stichting Onbekend");
    let err = list_members(channel_as(&outsider, &mesh.coordinator.endpoint))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains(stranger().as_str()),
        "{}",
        err.message()
    );
}

/// The positive control of a refusal: the same call on the same server, as a member, is served.
async fn served(mesh: &TestMesh, endpoint: &str) {
    let result = list_members(channel_as(&mesh.nodes[0].org, endpoint)).await;
    match result {
        Ok(_) => {}
        // A node's mesh listener has no Directory service: reaching gRPC is what counts.
        Err(e) => assert_eq!(e.code(), Code::Unimplemented, "{e:?}"),
    }
}

fn assert_transport_refusal(err: &tonic::Status) {
    // The handshake fails, so the call never reaches gRPC: tonic reports it as UNAVAILABLE or
    // UNKNOWN. Either way nothing was served.
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "expected a transport refusal, got {err:?}"
    );
}

#[tokio::test]
async fn refuses_a_client_without_a_certificate() {
    let mesh = TestMesh::start(1).await;
    served(&mesh, &mesh.coordinator.endpoint).await;
    served(&mesh, &mesh.nodes[0].mesh_endpoint).await;
    let channel = channel_with(
        ClientTls::Fixed(mesh.pki.anonymous_client_config()),
        &mesh.coordinator.endpoint,
    );
    let err = list_members(channel).await.unwrap_err();
    assert_transport_refusal(&err);
    // The node's mesh listener refuses too.
    let channel = channel_with(
        ClientTls::Fixed(mesh.pki.anonymous_client_config()),
        &mesh.nodes[0].mesh_endpoint,
    );
    assert_transport_refusal(&list_members(channel).await.unwrap_err());
}

#[tokio::test]
async fn refuses_a_certificate_from_another_ca() {
    let mesh = TestMesh::start(1).await;
    served(&mesh, &mesh.coordinator.endpoint).await;
    let foreign = mesh.pki.foreign_org(mesh.nodes[0].org.org);
    let err = list_members(channel_as(&foreign, &mesh.coordinator.endpoint))
        .await
        .unwrap_err();
    assert_transport_refusal(&err);
}

#[tokio::test]
async fn refuses_an_expired_certificate() {
    let mesh = TestMesh::start(1).await;
    served(&mesh, &mesh.coordinator.endpoint).await;
    let expired = mesh.pki.expired_org(mesh.nodes[0].org.org);
    let err = list_members(channel_as(&expired, &mesh.coordinator.endpoint))
        .await
        .unwrap_err();
    assert_transport_refusal(&err);
}

#[tokio::test]
async fn refuses_a_certificate_without_an_organisation_id() {
    let mesh = TestMesh::start(1).await;
    let anonymous = mesh.pki.org_without_oin(mesh.nodes[0].org.org);
    let err = list_members(channel_as(&anonymous, &mesh.coordinator.endpoint))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("serialNumber"), "{}", err.message());
}

#[tokio::test]
async fn client_refuses_a_server_whose_certificate_names_another_organisation() {
    let mesh = TestMesh::start(2).await;
    // Expecting node 1 at node 1's address reaches gRPC.
    let right = doorzet_mesh::client::channel(
        ClientTls::Fixed(mesh.nodes[0].org.client_config()),
        &mesh.nodes[1].mesh_endpoint,
        Some(mesh.nodes[1].org.org),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        list_members(right).await.unwrap_err().code(),
        Code::Unimplemented
    );
    // Expect the coordinator, but dial node 1.
    let channel = doorzet_mesh::client::channel(
        ClientTls::Fixed(mesh.nodes[0].org.client_config()),
        &mesh.nodes[1].mesh_endpoint,
        Some(mesh.coordinator.org.org),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let err = list_members(channel).await.unwrap_err();
    assert_transport_refusal(&err);
}
