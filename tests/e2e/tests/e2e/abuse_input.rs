//! Bad input from members and operators, against the real binaries: diagnostics that stay
//! reachable while the directory is stale, a directory file that is broken, deleted or empties the
//! mesh (while running or across a restart), certificates that may not sign, audit appends a node may not make, tokens with claims that
//! are signed but unacceptable, and messages that do not decode. Each refusal first shows the same
//! call succeeding on the same server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut};
use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, directory_client::DirectoryClient,
    node_admin_client::NodeAdminClient,
};
use doorzet_testkit::mesh::{channel_as, http_get, stranger, with_token};
use doorzet_testkit::metrics::{scrape, value};
use doorzet_testkit::pki::TestClaims;
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess, Running};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

async fn coordinator_with(env: &[(&str, &str)]) -> CoordinatorProcess {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start_with_env(env);
    coordinator.wait_serving().await;
    coordinator
}

/// Replaces a file the way an editor or configuration management does (a new file renamed over
/// the old), so a reload never reads it half written.
fn replace_file(path: &std::path::Path, contents: impl AsRef<[u8]>) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

async fn admin_metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    value(&scrape(addr).await, series)
}

async fn wait_metric(
    addr: std::net::SocketAddr,
    series: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) {
    doorzet_testkit::eventually(Duration::from_secs(15), what, || async {
        admin_metric(addr, series).await.filter(|v| ok(*v))
    })
    .await;
}

async fn who_am_i(node: &NodeProcess, token: &str) -> Result<v1::WhoAmIResponse, tonic::Status> {
    NodeAdminClient::new(node.local_channel())
        .who_am_i(with_token(v1::WhoAmIRequest {}, token))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn node_status_and_health_answer_while_the_directory_is_stale() {
    let mut coordinator = coordinator_with(&[]).await;
    let mut node = NodeProcess::new(
        &coordinator,
        "[directory]\nrefresh_interval = \"200ms\"\nmax_age = \"1s\"\n",
    );
    node.start(None);
    node.wait_serving().await;
    let token = node.token();
    who_am_i(&node, &token).await.expect("served while fresh");

    coordinator.kill9();
    let refused =
        doorzet_testkit::eventually(Duration::from_secs(15), "stale directory", || async {
            who_am_i(&node, &token).await.err()
        })
        .await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("directory unavailable"),
        "{refused:?}"
    );

    let status = NodeAdminClient::new(node.local_channel())
        .get_node_status(with_token(v1::GetNodeStatusRequest {}, &token))
        .await
        .expect("GetNodeStatus answers while the directory is stale")
        .into_inner();
    assert!(status.is_directory_stale);
    assert_eq!(status.directory_members, 1);

    // Health answers, and turns NOT_SERVING within one report tick.
    doorzet_testkit::eventually(Duration::from_secs(5), "health NOT_SERVING", || async {
        let health = tonic_health::pb::health_client::HealthClient::new(node.local_channel())
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health answers")
            .into_inner();
        (health.status == 2).then_some(())
    })
    .await;
    let healthz = http_get(node.admin_addr, "/healthz").await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let readyz = http_get(node.admin_addr, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");

    // A token of another organisation still gets nothing, stale or not.
    let other = coordinator.pki.org(stranger(), "Stranger");
    let err = NodeAdminClient::new(node.local_channel())
        .get_node_status(with_token(
            v1::GetNodeStatusRequest {},
            &other.token("x-1", "beheerder"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_directory_file_at_start_exits_with_the_configuration_code() {
    let coordinator = CoordinatorProcess::new("");
    let good = Running::spawn("doorzet-coordinator", &coordinator.config, &[], None);
    coordinator.wait_serving().await;
    let (status, _) = good.terminate().await;
    assert!(status.success(), "the same files start cleanly");

    replace_file(&coordinator.directory, "region = \"test\"\nmembers = 3\n");
    let mut broken = Running::spawn("doorzet-coordinator", &coordinator.config, &[], None);
    let status = broken.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(64), "{}", broken.stderr());
    assert!(
        broken
            .stderr()
            .contains(&coordinator.directory.display().to_string()),
        "{}",
        broken.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_on_a_file_that_empties_the_mesh_is_refused_until_confirmed() {
    let mut coordinator = coordinator_with(&[]).await;
    let original = std::fs::read_to_string(&coordinator.directory).unwrap();
    coordinator.terminate().await;
    // The same file starts again (positive control)...
    coordinator.start();
    coordinator.wait_serving().await;
    coordinator.terminate().await;
    // ...but one that lost every member while the coordinator was down does not.
    let (head, _) = original.split_once("[[members]]").unwrap();
    replace_file(&coordinator.directory, head);
    coordinator.start();
    let status = coordinator
        .running()
        .wait_exit(Duration::from_secs(20))
        .await;
    assert_eq!(status.code(), Some(64), "a configuration error");
    let stderr = coordinator.running().stderr();
    assert!(stderr.contains("removes 1 of 1 members"), "{stderr}");
    assert!(stderr.contains("confirm_removals = 1"), "{stderr}");
    let confirmed = head.replacen(
        "region = \"test\"\n",
        "region = \"test\"\nconfirm_removals = 1\n",
        1,
    );
    replace_file(&coordinator.directory, confirmed);
    coordinator.start();
    // With no member left to ask its mesh health, the admin listener says it runs.
    let admin = coordinator.admin_addr;
    doorzet_testkit::eventually(
        Duration::from_secs(20),
        "admin listener up",
        || async move { tokio::net::TcpStream::connect(admin).await.ok().map(drop) },
    )
    .await;
    wait_metric(
        coordinator.admin_addr,
        "doorzet_coordinator_directory_file_valid ",
        "confirmed file in force",
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_deleted_or_emptying_directory_edit_is_held_back_and_shows_in_metrics() {
    let mut coordinator = coordinator_with(&[("DOORZET_DIRECTORY__RELOAD_INTERVAL", "50ms")]).await;
    let admin = coordinator.admin_addr;
    let valid = r#"doorzet_coordinator_directory_file_valid "#;
    wait_metric(admin, valid, "file valid", |v| v == 1.0).await;
    assert!(
        admin_metric(
            admin,
            "doorzet_coordinator_directory_file_applied_timestamp_seconds "
        )
        .await
        .is_some_and(|t| t > 1.7e9)
    );
    let mut member = DirectoryClient::new(coordinator.member_channel());
    member
        .list_members(v1::ListMembersRequest {})
        .await
        .expect("member served");
    let original = std::fs::read_to_string(&coordinator.directory).unwrap();

    // A broken edit: the old directory stays, the metric says the file is not in force.
    replace_file(&coordinator.directory, "region = [\n");
    wait_metric(admin, valid, "file invalid", |v| v == 0.0).await;
    member
        .list_members(v1::ListMembersRequest {})
        .await
        .expect("the last good directory stays in force");

    // An edit that removes every member is held back...
    let (head, _) = original.split_once("[[members]]").unwrap();
    replace_file(&coordinator.directory, head);
    replace_file(&coordinator.directory, original.clone());
    wait_metric(admin, valid, "file valid again", |v| v == 1.0).await;
    replace_file(&coordinator.directory, head);
    wait_metric(admin, valid, "emptying edit held", |v| v == 0.0).await;
    member
        .list_members(v1::ListMembersRequest {})
        .await
        .expect("an emptying edit is not applied unconfirmed");
    let running = coordinator.running();
    doorzet_testkit::eventually(
        Duration::from_secs(15),
        "the log names confirm_removals",
        || async {
            running
                .stderr()
                .contains("confirm_removals = 1")
                .then_some(())
        },
    )
    .await;
    // ...until the file confirms it.
    let confirmed = head.replacen(
        "region = \"test\"\n",
        "region = \"test\"\nconfirm_removals = 1\n",
        1,
    );
    replace_file(&coordinator.directory, confirmed);
    wait_metric(admin, valid, "confirmed edit applied", |v| v == 1.0).await;
    let err = member
        .list_members(v1::ListMembersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A deleted file: counted every check, logged once.
    std::fs::remove_file(&coordinator.directory).unwrap();
    wait_metric(
        admin,
        "doorzet_coordinator_directory_file_unreadable_total ",
        "20 failed checks",
        |n| n >= 20.0,
    )
    .await;
    let stderr = coordinator.running().stderr();
    assert_eq!(
        stderr.matches("directory file unreadable").count(),
        1,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_whose_key_usage_does_not_allow_signing_is_refused() {
    let coordinator = coordinator_with(&[]).await;
    DirectoryClient::new(coordinator.member_channel())
        .list_members(v1::ListMembersRequest {})
        .await
        .expect("the member's proper certificate is accepted");
    let bad = coordinator
        .pki
        .encipherment_only_org(coordinator.member.org);
    let err = DirectoryClient::new(channel_as(&bad, &coordinator.endpoint()))
        .list_members(v1::ListMembersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("digitalSignature"), "{err:?}");
}

fn disclosure(coordinator: &CoordinatorProcess) -> v1::AuditEntry {
    let mut entry = doorzet_audit::entry::new_entry(
        SystemTime::now(),
        coordinator.member.org,
        v1::AuditAction::FactsDisclosed,
    );
    entry.actor_subject = "emp-0042".into();
    entry.recipient_org = coordinator.member.org.to_string();
    entry.case_ref = "case-7f3a".into();
    entry.fact_categories = vec!["legal_title".into()];
    entry.purpose = "tier3_meeting".into();
    entry
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_may_append_only_its_own_disclosures_about_members_now_within_its_quota() {
    let coordinator = coordinator_with(&[
        ("DOORZET_AUDIT__APPEND_RATE", "1"),
        ("DOORZET_AUDIT__APPEND_BURST", "600"),
    ])
    .await;
    let mut client = AuditLogClient::new(coordinator.member_channel());
    let append = |entry: v1::AuditEntry| {
        let mut client = client.clone();
        async move { client.append(v1::AppendRequest::of(&[entry])).await }
    };
    append(disclosure(&coordinator))
        .await
        .expect("a proper disclosure record is appended");
    let mut partly_withheld = disclosure(&coordinator);
    partly_withheld.withheld_fact_ids = vec!["f-0007".into()];
    partly_withheld.withheld_fact_categories = vec!["diagnosis_group".into()];
    append(partly_withheld)
        .await
        .expect("a record of disclosed and withheld facts is appended");

    let other_member = stranger().to_string();
    let secs = |s: i64| {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    type Bend = Box<dyn Fn(&mut v1::AuditEntry)>;
    let cases: Vec<(&str, Bend, Code, &str)> = vec![
        (
            "coordinator action",
            Box::new(|e| e.action = v1::AuditAction::EscalationAccepted as i32),
            Code::PermissionDenied,
            "FACTS_DISCLOSED",
        ),
        (
            "another actor",
            Box::new(|e| e.actor_org = "00000001999000000001".into()),
            Code::PermissionDenied,
            "actor_org",
        ),
        (
            "on behalf of a stranger",
            Box::new({
                let o = other_member.clone();
                move |e| e.on_behalf_of_org = o.clone()
            }),
            Code::InvalidArgument,
            "on_behalf_of_org",
        ),
        (
            "recipient no member",
            Box::new({
                let o = other_member.clone();
                move |e| e.recipient_org = o.clone()
            }),
            Code::InvalidArgument,
            "recipient_org",
        ),
        (
            "time in 1970",
            Box::new(move |e| e.time = secs(0)),
            Code::InvalidArgument,
            "time",
        ),
        (
            "time in 9999",
            Box::new(move |e| e.time = secs(253_402_300_000)),
            Code::InvalidArgument,
            "time",
        ),
        (
            "eight days behind",
            Box::new(move |e| e.time = secs(now - 8 * 24 * 3600)),
            Code::InvalidArgument,
            "max_append_delay",
        ),
        (
            "an hour ahead",
            Box::new(move |e| e.time = secs(now + 3600)),
            Code::InvalidArgument,
            "max_clock_skew",
        ),
        (
            "nanos of 2e9",
            Box::new(move |e| {
                e.time = Some(prost_types::Timestamp {
                    seconds: now,
                    nanos: 2_000_000_000,
                })
            }),
            Code::InvalidArgument,
            "time",
        ),
        (
            "BSN-shaped case ref",
            Box::new(|e| e.case_ref = "123456782".into()),
            Code::InvalidArgument,
            "case_ref",
        ),
        (
            "BSN-shaped fact id",
            Box::new(|e| e.fact_ids = vec!["f-123456782".into()]),
            Code::InvalidArgument,
            "fact_ids",
        ),
        (
            "BSN-shaped withheld fact id",
            Box::new(|e| e.withheld_fact_ids = vec!["f-123456782".into()]),
            Code::InvalidArgument,
            "withheld_fact_ids",
        ),
        (
            "free text as a withheld category",
            Box::new(|e| e.withheld_fact_categories = vec!["psychotic disorder".into()]),
            Code::InvalidArgument,
            "withheld_fact_categories",
        ),
    ];
    for (what, bend, code, field) in cases {
        let mut entry = disclosure(&coordinator);
        bend(&mut entry);
        let err = append(entry).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {}", err.message());
    }

    // The quota: a burst of 600 entries, then RESOURCE_EXHAUSTED.
    let batch =
        |n| v1::AppendRequest::of(&(0..n).map(|_| disclosure(&coordinator)).collect::<Vec<_>>());
    client.append(batch(500)).await.expect("within the burst");
    let err = client.append(batch(500)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("quota"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_signed_by_the_organisation_are_refused_for_their_claims() {
    let coordinator = coordinator_with(&[]).await;
    let mut node = NodeProcess::new(&coordinator, "");
    node.start(None);
    node.wait_serving().await;
    let org = &node.org;
    let good = TestClaims::new(org.org, "emp-0042", "procesregisseur");
    who_am_i(&node, &org.sign(&good))
        .await
        .expect("good claims accepted");

    let now = good.iat;
    let year = 365 * 24 * 3600;
    let cases = [
        (
            "exp 100 years out",
            TestClaims {
                exp: now + 100 * year,
                ..good.clone()
            },
            "lifetime",
        ),
        (
            "iat a year ahead",
            TestClaims {
                iat: now + year,
                nbf: now,
                exp: now + year + 600,
                ..good.clone()
            },
            "iat",
        ),
        (
            "empty sub",
            TestClaims {
                sub: String::new(),
                ..good.clone()
            },
            "sub",
        ),
        (
            "BSN as sub",
            TestClaims {
                sub: "123456782".into(),
                ..good.clone()
            },
            "sub",
        ),
        (
            "empty role",
            TestClaims {
                role: String::new(),
                ..good.clone()
            },
            "role",
        ),
    ];
    for (what, claims, reason) in cases {
        let err = who_am_i(&node, &org.sign(&claims)).await.expect_err(what);
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
        assert!(err.message().contains(reason), "{what}: {}", err.message());
    }
    let mut no_role = serde_json::to_value(&good).unwrap();
    no_role.as_object_mut().unwrap().remove("role");
    let err = who_am_i(&node, &org.sign_json(&no_role)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("role is required"),
        "{}",
        err.message()
    );
}

/// Sends and receives raw message bytes, to put bytes on the wire that are no valid message.
#[derive(Debug, Default, Clone)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = buf.chunk().to_vec();
        buf.advance(bytes.len());
        Ok(Some(bytes))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_does_not_decode_is_invalid_argument() {
    let coordinator = coordinator_with(&[]).await;
    let mut grpc = tonic::client::Grpc::new(coordinator.member_channel());
    let path = http::uri::PathAndQuery::from_static("/doorzet.v1.Directory/GetMember");
    let good = prost::Message::encode_to_vec(&v1::GetMemberRequest {
        org_id: coordinator.member.org.to_string(),
    });
    grpc.ready().await.unwrap();
    grpc.unary(tonic::Request::new(good), path.clone(), RawCodec)
        .await
        .expect("well-formed bytes are served");
    // Field 1 claims 64 bytes and three follow.
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(tonic::Request::new(vec![0x0a, 0x40, 0x01]), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("GetMemberRequest"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_certificate_file_at_start_exits_with_the_configuration_code() {
    let coordinator = coordinator_with(&[]).await;
    let node = NodeProcess::new(&coordinator, "");
    let good = Running::spawn("doorzet-node", &node.config, &[], None);
    node.wait_serving().await;
    let (status, _) = good.terminate().await;
    assert!(status.success());

    let missing = node.config.with_file_name("missing.pem");
    let mut broken = Running::spawn(
        "doorzet-node",
        &node.config,
        &[("DOORZET_TLS__CERT", missing.to_str().unwrap())],
        None,
    );
    let status = broken.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(64), "{}", broken.stderr());
    assert!(
        broken.stderr().contains("missing.pem"),
        "{}",
        broken.stderr()
    );
}
