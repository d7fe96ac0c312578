//! Person and system identity by JWT: what a token must be to be accepted, on the node's local
//! listener and when forwarded over the mesh; a token verified once is verified anew when the
//! directory's keys change.

use std::time::Duration;

use doorzet_proto::v1::{
    self, directory_client::DirectoryClient, node_admin_client::NodeAdminClient,
};
use doorzet_testkit::mesh::{channel_as, key_entry, with_token};
use doorzet_testkit::pki::{TestClaims, hmac_token, unsigned_token};
use doorzet_testkit::{TestMesh, eventually};
use tonic::Code;

async fn who_am_i(
    mesh: &TestMesh,
    node: usize,
    token: Option<&str>,
) -> Result<v1::WhoAmIResponse, tonic::Status> {
    let node = &mesh.nodes[node];
    let mut client = NodeAdminClient::new(channel_as(&node.org, &node.local_endpoint));
    let request = match token {
        Some(token) => with_token(v1::WhoAmIRequest {}, token),
        None => tonic::Request::new(v1::WhoAmIRequest {}),
    };
    client
        .who_am_i(request)
        .await
        .map(tonic::Response::into_inner)
}

fn assert_refused(result: Result<v1::WhoAmIResponse, tonic::Status>, code: Code, reason: &str) {
    let err = result.expect_err("token must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(reason),
        "expected `{reason}` in `{}`",
        err.message()
    );
}

#[tokio::test]
async fn accepts_a_good_token_and_knows_the_person() {
    let mesh = TestMesh::start(1).await;
    let org = &mesh.nodes[0].org;
    let who = who_am_i(&mesh, 0, Some(&org.token("emp-0042", "procesregisseur")))
        .await
        .expect("good token");
    assert_eq!(who.org_id, org.org.to_string());
    assert_eq!(who.subject, "emp-0042");
    assert_eq!(who.role, "procesregisseur");
}

#[tokio::test]
async fn local_listener_requires_a_token() {
    let mesh = TestMesh::start(1).await;
    assert_refused(
        who_am_i(&mesh, 0, None).await,
        Code::Unauthenticated,
        "bearer token is required",
    );
}

#[tokio::test]
async fn rejects_expired_premature_and_foreign_audience_tokens() {
    let mesh = TestMesh::start(1).await;
    let org = &mesh.nodes[0].org;
    let base = TestClaims::new(org.org, "emp-1", "uitvoerder");

    let mut expired = base.clone();
    expired.exp = base.iat - 120; // beyond the 30 s clock-skew allowance
    assert_refused(
        who_am_i(&mesh, 0, Some(&org.sign(&expired))).await,
        Code::Unauthenticated,
        "expired",
    );

    let mut premature = base.clone();
    premature.nbf = base.iat + 600;
    assert_refused(
        who_am_i(&mesh, 0, Some(&org.sign(&premature))).await,
        Code::Unauthenticated,
        "not yet valid",
    );

    let mut other_audience = base.clone();
    other_audience.aud = "another-region".into();
    assert_refused(
        who_am_i(&mesh, 0, Some(&org.sign(&other_audience))).await,
        Code::Unauthenticated,
        "audience",
    );

    // Within the skew allowance is still fine.
    let mut just_expired = base.clone();
    just_expired.exp = base.iat - 5;
    who_am_i(&mesh, 0, Some(&org.sign(&just_expired)))
        .await
        .expect("within leeway");
}

#[tokio::test]
async fn rejects_unsigned_and_hmac_tokens() {
    let mesh = TestMesh::start(1).await;
    let org = &mesh.nodes[0].org;
    let claims = TestClaims::new(org.org, "emp-1", "uitvoerder");
    assert_refused(
        who_am_i(&mesh, 0, Some(&unsigned_token(&claims))).await,
        Code::Unauthenticated,
        "invalid token",
    );
    // Algorithm confusion: the organisation's public key used as an HMAC secret.
    let hs256 = hmac_token(&claims, org.jwk().x.as_bytes());
    assert_refused(
        who_am_i(&mesh, 0, Some(&hs256)).await,
        Code::Unauthenticated,
        "HS256 is not allowed",
    );
}

#[tokio::test]
async fn rejects_a_token_signed_by_an_unknown_key() {
    let mesh = TestMesh::start(1).await;
    let org = &mesh.nodes[0].org;
    // Same organisation id and kid, different private key: the signature fails.
    let mut impostor = mesh.pki.org(org.org, "Impostor");
    impostor.token_key.jwk.kid = org.jwk().kid.clone();
    assert_refused(
        who_am_i(&mesh, 0, Some(&impostor.token("emp-1", "uitvoerder"))).await,
        Code::Unauthenticated,
        "signature",
    );
    // A kid the directory does not list.
    let stranger_key = mesh.pki.org(org.org, "Impostor");
    assert_refused(
        who_am_i(&mesh, 0, Some(&stranger_key.token("emp-1", "uitvoerder"))).await,
        Code::Unauthenticated,
        "signing key unknown",
    );
}

#[tokio::test]
async fn rejects_token_of_another_organisation_on_the_local_listener() {
    let mesh = TestMesh::start(2).await;
    let other = &mesh.nodes[1].org;
    assert_refused(
        who_am_i(&mesh, 0, Some(&other.token("emp-1", "uitvoerder"))).await,
        Code::PermissionDenied,
        "was presented over the connection of",
    );
}

#[tokio::test]
async fn rejects_token_whose_issuer_is_not_the_tls_peer() {
    let mesh = TestMesh::start(2).await;
    let (a, b) = (&mesh.nodes[0].org, &mesh.nodes[1].org);
    let list = |org, token: String| {
        let mut client = DirectoryClient::new(channel_as(org, &mesh.coordinator.endpoint));
        async move {
            client
                .list_members(with_token(v1::ListMembersRequest {}, &token))
                .await
        }
    };
    // A's token forwarded over A's own connection: fine.
    list(a, a.token("emp-1", "procesregisseur"))
        .await
        .expect("own token");
    // A's token presented over B's connection: refused, naming both.
    let err = list(b, a.token("emp-1", "procesregisseur"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains(a.org.as_str()) && err.message().contains(b.org.as_str()),
        "{}",
        err.message()
    );
    // A bad token is UNAUTHENTICATED on the mesh as well.
    let mut expired = TestClaims::new(a.org, "emp-1", "uitvoerder");
    expired.exp = expired.iat - 3600;
    let err = list(a, a.sign(&expired)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_token_accepted_before_is_refused_once_its_key_leaves_the_directory() {
    let mut mesh = TestMesh::start(1).await;
    let org = mesh.nodes[0].org.clone();
    let token = org.token("emp-7", "uitvoerder");
    // Accepted, and again: the second time its signature is not checked anew.
    for _ in 0..2 {
        who_am_i(&mesh, 0, Some(&token)).await.expect("good token");
    }
    // The organisation rotates its signing key: the old one leaves the directory.
    let rotated = mesh.pki.org(org.org, "Rotated");
    let (id, key) = (org.org.to_string(), key_entry(&rotated));
    mesh.write_directory(|d| {
        let member = d
            .members
            .iter_mut()
            .find(|m| m.org_id == id)
            .expect("member");
        member.signing_keys = vec![key];
    });
    let refused = eventually(
        Duration::from_secs(20),
        "the node refuses the old key's token",
        || {
            let (mesh, token) = (&mesh, &token);
            async move { who_am_i(mesh, 0, Some(token)).await.err() }
        },
    )
    .await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("signing key unknown"),
        "{}",
        refused.message()
    );
    who_am_i(&mesh, 0, Some(&rotated.token("emp-7", "uitvoerder")))
        .await
        .expect("a token of the new key");
}
