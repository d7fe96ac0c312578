//! `doorzetctl audit verify`: downloads the whole audit log, recomputes the tree, checks the latest
//! signed checkpoint and every checkpoint seen before (kept in a state directory), and checks the
//! coordinator's proofs, stopping with a precise message at the first break.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use doorzet_audit::checkpoint::{Checkpoint, NoteVerifier};
use doorzet_audit::entry;
use doorzet_audit::merkle::{self, Frontier, Hash};
use doorzet_proto::v1::{self, audit_log_client::AuditLogClient};
use tonic::transport::Channel;

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Size of the latest checkpoint, all of whose entries were recomputed.
    pub size: u64,
    /// Checkpoints seen before and re-checked.
    pub checkpoints: usize,
    /// Proofs requested and verified.
    pub proofs: usize,
}

fn to_hashes(hashes: Vec<Vec<u8>>) -> anyhow::Result<Vec<Hash>> {
    doorzet_audit::merkle::hashes_from_wire(hashes)
        .ok_or_else(|| anyhow::anyhow!("proof hash is not 32 bytes"))
}

/// Reads the checkpoints seen before from `state`, verifying each signature.
fn seen(state: &Path, verifier: &NoteVerifier) -> anyhow::Result<Vec<(Checkpoint, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(state) else {
        return Ok(out);
    };
    for item in dir {
        let path = item?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("note") {
            continue;
        }
        let note = std::fs::read_to_string(&path)?;
        let checkpoint = verifier
            .verify(&note)
            .with_context(|| format!("stored checkpoint {} does not verify", path.display()))?;
        out.push((checkpoint, path));
    }
    out.sort_by_key(|(c, _)| c.size);
    Ok(out)
}

/// Verifies the log served on `channel` against `verifier`, remembering checkpoints in `state`.
pub async fn verify(
    channel: Channel,
    verifier: &NoteVerifier,
    state: &Path,
) -> anyhow::Result<Report> {
    let mut client = AuditLogClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let note = client
        .get_checkpoint(v1::GetCheckpointRequest {})
        .await
        .context("fetching the latest checkpoint")?
        .into_inner()
        .checkpoint;
    let latest = verifier
        .verify(&note)
        .context("the latest checkpoint's signature does not verify")?;
    let seen = seen(state, verifier)?;
    if let Some((max, path)) = seen.last()
        && max.size > latest.size
    {
        bail!(
            "audit log rolled back: the coordinator serves a checkpoint of size {}, but size {} was seen before ({})",
            latest.size,
            max.size,
            path.display()
        );
    }

    let mut frontier = Frontier::default();
    let mut leaves: Vec<Hash> = Vec::with_capacity(latest.size as usize);
    let mut pending = seen.iter().peekable();
    while frontier.size() < latest.size {
        let start = frontier.size();
        let page = client
            .get_entries(v1::GetEntriesRequest { start, limit: 1000 })
            .await
            .with_context(|| format!("fetching entries from {start}"))?
            .into_inner()
            .entries;
        if page.is_empty() {
            bail!(
                "entry {start} is missing: the signed checkpoint covers {} entries but the log serves only {start}",
                latest.size
            );
        }
        for body in page {
            let index = frontier.size();
            if index >= latest.size {
                break;
            }
            entry::decode(&body)
                .with_context(|| format!("entry {index} is not a valid canonical audit entry"))?;
            let leaf = merkle::leaf_hash(&body);
            leaves.push(leaf);
            frontier.push(leaf, |_, _| {});
            while let Some((old, path)) = pending.peek() {
                if old.size != frontier.size() {
                    break;
                }
                if old.root != frontier.root() {
                    bail!(
                        "entries 0..{} no longer hash to the checkpoint of that size seen before ({}): the log was rewritten",
                        old.size,
                        path.display()
                    );
                }
                pending.next();
            }
        }
    }
    if frontier.root() != latest.root {
        bail!(
            "entries 0..{} hash to {}, but the signed checkpoint says {}: an entry was changed or replaced",
            latest.size,
            hex::encode(frontier.root()),
            hex::encode(latest.root)
        );
    }

    let mut proofs = 0;
    for (old, _) in &seen {
        if old.size == 0 || old.size == latest.size {
            continue;
        }
        let proof = client
            .get_consistency_proof(v1::GetConsistencyProofRequest {
                first_size: old.size,
                second_size: latest.size,
            })
            .await?
            .into_inner()
            .hashes;
        merkle::verify_consistency(
            old.size,
            latest.size,
            &old.root,
            &latest.root,
            &to_hashes(proof)?,
        )
        .with_context(|| {
            format!(
                "consistency proof from {} to {} does not verify",
                old.size, latest.size
            )
        })?;
        proofs += 1;
    }
    let mut sample: Vec<u64> = (0..16).map(|i| i * latest.size / 16).collect();
    sample.extend(
        seen.iter()
            .filter(|(c, _)| c.size > 0)
            .map(|(c, _)| c.size - 1),
    );
    if latest.size > 0 {
        sample.push(latest.size - 1);
    }
    sample.sort_unstable();
    sample.dedup();
    for index in sample.into_iter().filter(|i| *i < latest.size) {
        let proof = client
            .get_inclusion_proof(v1::GetInclusionProofRequest {
                tree_size: latest.size,
                entry: Some(v1::get_inclusion_proof_request::Entry::LeafIndex(index)),
            })
            .await?
            .into_inner()
            .hashes;
        merkle::verify_inclusion(
            index,
            latest.size,
            &leaves[index as usize],
            &to_hashes(proof)?,
            &latest.root,
        )
        .with_context(|| format!("inclusion proof of entry {index} does not verify"))?;
        proofs += 1;
    }

    std::fs::create_dir_all(state)?;
    std::fs::write(
        state.join(format!("checkpoint-{:020}.note", latest.size)),
        &note,
    )?;
    Ok(Report {
        size: latest.size,
        checkpoints: seen.len(),
        proofs,
    })
}
