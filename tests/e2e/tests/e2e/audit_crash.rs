//! A coordinator killed with SIGKILL in the middle of a burst of appends loses no acknowledged
//! entry, and the log it comes back with verifies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use doorzet_audit::checkpoint::NoteVerifier;
use doorzet_audit::entry;
use doorzet_proto::v1::{
    self, audit_log_client::AuditLogClient, directory_client::DirectoryClient,
};
use doorzet_testkit::process::CoordinatorProcess;

/// A leaf index the coordinator acknowledged, and the entry bytes it was given.
type Acked = (u64, Vec<u8>);

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_entry_is_lost_when_the_coordinator_is_killed() {
    let mut coordinator = CoordinatorProcess::new("");
    coordinator.start();
    coordinator.wait_serving().await;
    let actor = coordinator.member.org.to_string();

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..32u64 {
        let (channel, acked, actor) = (coordinator.member_channel(), acked.clone(), actor.clone());
        writers.push(tokio::spawn(async move {
            let mut client = AuditLogClient::new(channel);
            for seq in 0.. {
                let entries: Vec<_> = (0..1 + (seq % 3))
                    .map(|k| {
                        let mut e = entry::new_entry(
                            std::time::SystemTime::now(),
                            actor.parse().unwrap(),
                            v1::AuditAction::FactsDisclosed,
                        );
                        e.case_ref = format!("w{w}-s{seq}-k{k}");
                        e
                    })
                    .collect();
                let Ok(response) = client.append(v1::AppendRequest::of(&entries)).await else {
                    return;
                };
                let indexes = response.into_inner().leaf_indexes;
                let mut acked = acked.lock().unwrap();
                for (index, e) in indexes.into_iter().zip(entries) {
                    acked.push((index, entry::encode(&e).unwrap()));
                }
            }
        }));
    }
    // Let the burst run, then pull the plug mid-stream.
    doorzet_testkit::eventually(
        Duration::from_secs(30),
        "a few hundred acknowledged appends",
        || {
            let count = acked.lock().unwrap().len();
            async move { (count >= 400).then_some(()) }
        },
    )
    .await;
    coordinator.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 400);

    coordinator.start();
    coordinator.wait_serving().await;
    let mut client = AuditLogClient::new(coordinator.member_channel());
    for (index, bytes) in &acked {
        let served = client
            .get_entries(v1::GetEntriesRequest {
                start: *index,
                limit: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert_eq!(
            served.first(),
            Some(bytes),
            "acknowledged entry {index} lost or changed"
        );
    }

    let directory = DirectoryClient::new(coordinator.member_channel())
        .list_members(v1::ListMembersRequest {})
        .await
        .unwrap()
        .into_inner();
    let verifier =
        NoteVerifier::parse(&directory.coordinator.unwrap().audit_log_verifier_key).unwrap();
    let state = tempfile::tempdir().unwrap();
    let report =
        doorzet_ctl::audit_verify::verify(coordinator.member_channel(), &verifier, state.path())
            .await
            .expect("the log verifies after the crash");
    assert!(report.size >= acked.len() as u64);
}
