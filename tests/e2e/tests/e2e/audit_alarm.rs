//! The audit alarm means evidence of tampering, nothing less: a coordinator whose database fails
//! for a while, or that restarts with a renewed certificate, makes the log "cannot check" (shown,
//! retried, not sticky); a rewritten log that grew past what a node verified is caught by the
//! consistency proof; an operator clears an alarm with an admin role and the clearing is recorded;
//! a key rotation is accepted when the node's operator configured it or the pinned key co-signs it.

use std::time::Duration;

use doorzet_audit::entry;
use doorzet_proto::v1::{self, node_admin_client::NodeAdminClient};
use doorzet_testkit::audit::{append, disclosure};
use doorzet_testkit::mesh::{AUDIT_ORIGIN, channel_as, with_token};
use doorzet_testkit::process::{CoordinatorProcess, NodeProcess};
use doorzet_testkit::{TestMesh, eventually};
use sqlx::Connection;
use tonic::transport::Channel;

async fn status(channel: Channel, token: &str) -> v1::GetNodeStatusResponse {
    NodeAdminClient::new(channel)
        .get_node_status(with_token(v1::GetNodeStatusRequest {}, token))
        .await
        .expect("node status")
        .into_inner()
}

async fn sqlite(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("open database")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_coordinator_database_or_a_renewed_certificate_is_no_alarm_and_recovers() {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start();
    coordinator.wait_serving().await;
    let mut node = NodeProcess::new(
        &coordinator,
        "[audit]\ncheck_interval = \"300ms\"\n[directory]\nrefresh_interval = \"300ms\"\n",
    );
    node.start(None);
    node.wait_serving().await;
    let token = node.token();
    let member = coordinator.member.org;
    append(coordinator.member_channel(), member, 0, 5).await;
    let verified = |size: u64| {
        let (channel, token) = (node.local_channel(), token.clone());
        async move {
            let s = status(channel, &token).await;
            assert!(s.audit_alarm.is_empty(), "alarm: {}", s.audit_alarm);
            (s.audit_checkpoint_size == size && s.audit_check_error.is_empty()).then_some(s)
        }
    };
    eventually(Duration::from_secs(15), "verified 5", || verified(5)).await;

    // The coordinator's database fails: every entry read is an INTERNAL error.
    let db_path = coordinator.dir().join("coordinator.db");
    let mut db = sqlite(&db_path).await;
    sqlx::query("ALTER TABLE audit_entries RENAME TO audit_entries_away")
        .execute(&mut db)
        .await
        .unwrap();
    let failing = eventually(Duration::from_secs(15), "cannot check", || {
        let (channel, token) = (node.local_channel(), token.clone());
        async move {
            let s = status(channel, &token).await;
            (!s.audit_check_error.is_empty()).then_some(s)
        }
    })
    .await;
    assert!(failing.audit_alarm.is_empty(), "{}", failing.audit_alarm);
    assert!(
        failing.audit_check_error.contains("Internal"),
        "{}",
        failing.audit_check_error
    );
    let metrics = doorzet_testkit::mesh::http_get(node.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("doorzet_node_audit_check_failing 1"),
        "{metrics}"
    );
    assert!(metrics.contains("doorzet_node_audit_alarm 0"), "{metrics}");

    // The database comes back: verified again, no alarm.
    sqlx::query("ALTER TABLE audit_entries_away RENAME TO audit_entries")
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    append(coordinator.member_channel(), member, 5, 2).await;
    eventually(Duration::from_secs(20), "verified 7", || verified(7)).await;

    // A certificate rollover: the coordinator restarts with a renewed certificate.
    coordinator.kill9();
    coordinator.pki.reissue(&coordinator.org, "ZVH renewed");
    coordinator.start();
    coordinator.wait_serving().await;
    append(coordinator.member_channel(), member, 7, 1).await;
    let recovered = eventually(Duration::from_secs(20), "verified 8", || verified(8)).await;
    assert!(recovered.audit_verified_at.is_some());
}

fn member_channel(mesh: &TestMesh) -> Channel {
    channel_as(&mesh.nodes[0].org, &mesh.coordinator.endpoint)
}

#[tokio::test]
async fn a_rewritten_log_that_grew_past_the_verified_size_fails_the_consistency_proof() {
    let mut mesh = TestMesh::start(1).await;
    let actor = mesh.nodes[0].org.org;
    append(member_channel(&mesh), actor, 0, 6).await;
    mesh.wait_audit_verified(6).await;
    // The ZVH wipes the log and writes a different history, longer than what the node saw, with
    // the same key: every new checkpoint verifies, only the consistency proof can tell.
    mesh.restart_coordinator(|data| {
        let path = data.join("coordinator.db");
        let rt = tokio::runtime::Handle::current();
        std::thread::scope(|s| {
            s.spawn(|| {
                rt.block_on(async {
                    let mut db = sqlite(&path).await;
                    for table in [
                        "audit_entries",
                        "audit_subtrees",
                        "audit_tiles",
                        "audit_checkpoints",
                    ] {
                        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                            .execute(&mut db)
                            .await
                            .unwrap();
                    }
                })
            });
        });
    })
    .await;
    mesh.wait_coordinator().await;
    append(member_channel(&mesh), actor, 100, 9).await;
    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("not consistent with size 6"), "{alarm}");
}

#[tokio::test]
async fn an_alarm_is_cleared_by_an_admin_role_and_the_clearing_is_recorded() {
    let mesh = TestMesh::start(1).await;
    let node = &mesh.nodes[0];
    let actor = node.org.org;
    append(member_channel(&mesh), actor, 0, 4).await;
    mesh.wait_audit_verified(4).await;

    let db_path = mesh.data_dir().join("coordinator.db");
    let mut db = sqlite(&db_path).await;
    let (original,): (Vec<u8>,) = sqlx::query_as("SELECT body FROM audit_entries WHERE idx = 2")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let forged = entry::encode(&disclosure(actor, 999)).unwrap();
    sqlx::query("UPDATE audit_entries SET body = $1 WHERE idx = 2")
        .bind(&forged)
        .execute(&mut db)
        .await
        .unwrap();
    let alarm = mesh.wait_audit_alarm().await;
    assert!(alarm.contains("entry 2"), "{alarm}");

    let tls = doorzet_ctl::inspect::server_only_tls(&mesh.pki.ca_path()).unwrap();
    let clear = |role: &'static str| {
        let tls = tls.clone();
        let token = node.org.token("ops-1", role);
        async move {
            doorzet_ctl::inspect::clear_audit_alarm(
                &node.local_endpoint,
                tls,
                &token,
                "entry 2 was edited by a test; restored from the coordinator's backup",
                false,
            )
            .await
        }
    };
    let refused = clear("procesregisseur").await.unwrap_err().to_string();
    assert!(refused.contains("PermissionDenied"), "{refused}");
    // An admin without a reason is refused too: the clearing must say what was found.
    for reason in ["  ", &"x".repeat(501)] {
        let err = doorzet_ctl::inspect::clear_audit_alarm(
            &node.local_endpoint,
            tls.clone(),
            &node.org.token("ops-1", "beheerder"),
            reason,
            false,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("InvalidArgument") && err.contains("reason"),
            "{err}"
        );
    }
    assert!(!mesh.node_status().await.audit_alarm.is_empty());

    // The investigation restores the entry; the operator clears the alarm.
    sqlx::query("UPDATE audit_entries SET body = $1 WHERE idx = 2")
        .bind(&original)
        .execute(&mut db)
        .await
        .unwrap();
    let cleared = clear("beheerder").await.unwrap();
    assert_eq!(cleared, alarm);
    append(member_channel(&mesh), actor, 4, 2).await;
    mesh.wait_audit_verified(6).await;

    let node_db = mesh.data_dir().join("municipality.db");
    let mut node_db = sqlite(&node_db).await;
    let (subject, role, recorded_alarm, reason): (String, String, String, String) =
        sqlx::query_as("SELECT subject, role, alarm, reason FROM audit_alarm_clearings")
            .fetch_one(&mut node_db)
            .await
            .unwrap();
    assert_eq!((subject.as_str(), role.as_str()), ("ops-1", "beheerder"));
    assert_eq!(recorded_alarm, alarm);
    assert!(reason.contains("restored"), "{reason}");

    let err = doorzet_ctl::inspect::clear_audit_alarm(
        &node.local_endpoint,
        tls,
        &node.org.token("ops-1", "beheerder"),
        "nothing to clear",
        false,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("FailedPrecondition"), "{err}");
}

#[tokio::test]
async fn a_key_rotation_the_nodes_operator_configured_is_accepted() {
    let new_key = doorzet_ctl::pki::TokenKey::generate().unwrap();
    let new_verifier =
        doorzet_audit::checkpoint::NoteSigner::from_pkcs8_pem(AUDIT_ORIGIN, &new_key.private_pem)
            .unwrap()
            .verifier_key();
    let accepted = new_verifier.clone();
    let mut mesh = TestMesh::start_with(1, move |config| {
        config.audit.accepted_verifier_keys = vec![accepted.clone()];
    })
    .await;
    let actor = mesh.nodes[0].org.org;
    append(member_channel(&mesh), actor, 0, 3).await;
    mesh.wait_audit_verified(3).await;
    mesh.restart_coordinator(|data| {
        doorzet_ctl::pki::write_private(&data.join("audit.key"), new_key.private_pem.as_bytes())
            .unwrap();
    })
    .await;
    mesh.wait_coordinator().await;
    append(member_channel(&mesh), actor, 3, 2).await;
    mesh.wait_audit_verified(5).await;
}

#[tokio::test]
async fn a_key_rotation_cosigned_by_the_pinned_key_is_accepted_and_then_the_new_key_suffices() {
    let mut mesh = TestMesh::start(1).await;
    let actor = mesh.nodes[0].org.org;
    append(member_channel(&mesh), actor, 0, 3).await;
    mesh.wait_audit_verified(3).await;
    // The ZVH rotates: the new key signs, the old one co-signs, the directory publishes the new.
    let new_key = doorzet_ctl::pki::TokenKey::generate().unwrap();
    mesh.restart_coordinator_with(|data, config| {
        std::fs::rename(data.join("audit.key"), data.join("audit-previous.key")).unwrap();
        doorzet_ctl::pki::write_private(&data.join("audit.key"), new_key.private_pem.as_bytes())
            .unwrap();
        config.audit.previous_signing_key = Some(data.join("audit-previous.key"));
    })
    .await;
    mesh.wait_coordinator().await;
    append(member_channel(&mesh), actor, 3, 2).await;
    mesh.wait_audit_verified(5).await;
    let new_verifier =
        doorzet_audit::checkpoint::NoteSigner::from_pkcs8_pem(AUDIT_ORIGIN, &new_key.private_pem)
            .unwrap()
            .verifier_key();
    eventually(
        Duration::from_secs(10),
        "node pinned the new key",
        || async { (mesh.node_status().await.audit_verifier_key == new_verifier).then_some(()) },
    )
    .await;
    // Re-pinned: once every node moved, the previous key goes and the new one alone verifies.
    mesh.restart_coordinator_with(|_, config| config.audit.previous_signing_key = None)
        .await;
    mesh.wait_coordinator().await;
    append(member_channel(&mesh), actor, 5, 2).await;
    mesh.wait_audit_verified(7).await;
    let status = mesh.node_status().await;
    assert!(status.audit_alarm.is_empty(), "{}", status.audit_alarm);
    assert_eq!(status.audit_verifier_key, new_verifier);
}
