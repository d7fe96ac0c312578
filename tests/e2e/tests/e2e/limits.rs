//! Limits that protect every server: oversized messages are refused with a clear status and the
//! server keeps serving.

use doorzet_mesh::layers::shape::message_limit;
use doorzet_proto::v1::{self, directory_client::DirectoryClient};
use doorzet_testkit::TestMesh;
use doorzet_testkit::mesh::channel_as;
use tonic::Code;

#[tokio::test]
async fn oversized_request_is_refused_and_the_server_carries_on() {
    let mesh = TestMesh::start(1).await;
    let mut client =
        DirectoryClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint));
    let huge = "0".repeat(2 * 1024 * 1024); // the default limit is 1 MiB
    let err = client
        .get_member(v1::GetMemberRequest { org_id: huge })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("larger than the limit of 1048576 bytes"),
        "{}",
        err.message()
    );
    // The limit reaches the caller as metadata too, for clients that send smaller messages.
    assert_eq!(message_limit(&err), Some(1024 * 1024));
    client
        .list_members(v1::ListMembersRequest {})
        .await
        .expect("still serving");
}

#[tokio::test]
async fn bad_argument_names_the_field() {
    let mesh = TestMesh::start(1).await;
    let mut client =
        DirectoryClient::new(channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint));
    let err = client
        .get_member(v1::GetMemberRequest {
            org_id: "gemeente".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid org_id"),
        "{}",
        err.message()
    );
    let err = client
        .get_member(v1::GetMemberRequest {
            org_id: "00000001999000009999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
