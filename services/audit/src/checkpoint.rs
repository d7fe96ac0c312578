//! Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes with Ed25519:
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n\n— <key name> <base64(key id ‖ signature)>\n
//! ```
//!
//! The key id is the first four bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key), and the
//! verifier key is published as `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Largest note accepted by the parser.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;
const ED25519: u8 = 0x01;

/// A checkpoint: the log's origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, e.g. `zvh-hofland.example/doorzet/audit`.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash of the tree of that size.
    pub root: Hash,
}

impl Checkpoint {
    /// Returns the note text that is signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }
}

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note does not have the signed-note shape.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// The checkpoint body is not origin / size / root.
    #[error("malformed checkpoint: {0}")]
    Body(&'static str),
    /// No signature by the expected key verifies.
    #[error("no valid signature by {0}")]
    Signature(String),
    /// A verifier or signing key is unusable.
    #[error("bad key: {0}")]
    Key(String),
    /// The checkpoint is for another log.
    #[error("checkpoint is for origin `{found}`, expected `{expected}`")]
    Origin {
        /// Origin in the note.
        found: String,
        /// Origin expected.
        expected: String,
    },
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', ' ', '\n']) && name.chars().all(|c| !c.is_control())
}

/// Signs checkpoints with an Ed25519 key, and during a planned key rotation with the previous key
/// too, so a node that pinned the previous key can see the new one vouched for by it.
pub struct NoteSigner {
    name: String,
    key: ed25519_dalek::SigningKey,
    id: [u8; 4],
    previous: Option<Box<NoteSigner>>,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Makes a signer named `name` (conventionally the origin) from a PKCS#8 PEM Ed25519 key.
    pub fn from_pkcs8_pem(name: &str, pem: &str) -> Result<Self, CheckpointError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| CheckpointError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Self::new(name, key)
    }

    /// Makes a signer from a key.
    pub fn new(name: &str, key: ed25519_dalek::SigningKey) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::Key(format!("invalid key name `{name}`")));
        }
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
            previous: None,
        })
    }

    /// Co-signs every checkpoint with `previous`, the key this one replaces. Both must carry the
    /// same name (the origin) and differ.
    pub fn cosigned_by(mut self, previous: NoteSigner) -> Result<Self, CheckpointError> {
        if previous.name != self.name {
            return Err(CheckpointError::Key(format!(
                "the previous key is named `{}`, the current `{}`",
                previous.name, self.name
            )));
        }
        if previous.key.verifying_key() == self.key.verifying_key() {
            return Err(CheckpointError::Key(
                "the previous key is the current key".into(),
            ));
        }
        self.previous = Some(Box::new(previous));
        Ok(self)
    }

    fn signature_line(&self, body: &str) -> String {
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", self.name, B64.encode(blob))
    }

    /// Returns the signed note for `checkpoint`: this key's signature, then the previous key's.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let mut note = format!("{body}\n{}", self.signature_line(&body));
        if let Some(previous) = &self.previous {
            note.push_str(&previous.signature_line(&body));
        }
        note
    }

    /// Returns the verifier key string for publication.
    pub fn verifier_key(&self) -> String {
        let mut blob = vec![ED25519];
        blob.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(blob)
        )
    }
}

/// Verifies checkpoints signed by one key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: ed25519_dalek::VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key `<name>+<hex key id>+<base64(0x01 ‖ key)>`.
    pub fn parse(vkey: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Key(format!("verifier key: {why}"));
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name+id+key"));
        };
        if !valid_name(name) {
            return Err(bad("invalid name"));
        }
        let id: [u8; 4] = hex::decode(id_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("id must be 8 hex digits"))?;
        let blob = B64.decode(key_b64).map_err(|_| bad("key is not base64"))?;
        if blob.len() != 33 || blob[0] != ED25519 {
            return Err(bad("only Ed25519 keys are supported"));
        }
        let raw: [u8; 32] = blob[1..].try_into().map_err(|_| bad("key length"))?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| bad("not a valid point"))?;
        if key_id(name, &raw) != id {
            return Err(bad("id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Returns the key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `note`, checks that a signature by this key verifies over its text, and returns the
    /// checkpoint.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::Malformed("note too large"));
        }
        let split = note.find("\n\n").ok_or(CheckpointError::Malformed(
            "no blank line before the signatures",
        ))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        if !signatures.ends_with('\n') {
            return Err(CheckpointError::Malformed(
                "signature block must end with a newline",
            ));
        }
        let mut verified = false;
        for line in signatures.lines() {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or(CheckpointError::Malformed(
                    "signature line must start with an em dash",
                ))?;
            let (name, b64) = rest.rsplit_once(' ').ok_or(CheckpointError::Malformed(
                "signature line needs a name and a signature",
            ))?;
            let blob = B64
                .decode(b64)
                .map_err(|_| CheckpointError::Malformed("signature is not base64"))?;
            if blob.len() < 4 {
                return Err(CheckpointError::Malformed("signature too short"));
            }
            if name != self.name || blob[..4] != self.id {
                continue; // another witness's signature; not ours to judge
            }
            let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| CheckpointError::Signature(self.name.clone()))?;
            if self.key.verify(text.as_bytes(), &signature).is_ok() {
                verified = true;
            } else {
                return Err(CheckpointError::Signature(self.name.clone()));
            }
        }
        if !verified {
            return Err(CheckpointError::Signature(self.name.clone()));
        }
        parse_body(text)
    }
}

fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
    let mut lines = text.split('\n');
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or(CheckpointError::Body("empty origin"))?;
    let size_line = lines.next().ok_or(CheckpointError::Body("missing size"))?;
    if size_line.is_empty()
        || !size_line.bytes().all(|b| b.is_ascii_digit())
        || (size_line.len() > 1 && size_line.starts_with('0'))
    {
        return Err(CheckpointError::Body(
            "size must be a decimal number without leading zeros",
        ));
    }
    let size = size_line
        .parse()
        .map_err(|_| CheckpointError::Body("size out of range"))?;
    let root_line = lines
        .next()
        .ok_or(CheckpointError::Body("missing root hash"))?;
    let root: Hash = B64
        .decode(root_line)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(CheckpointError::Body(
            "root hash must be 32 bytes of base64",
        ))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> NoteSigner {
        NoteSigner::new(
            "example.org/log",
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.org/log".into(),
            size: 42,
            root: crate::merkle::leaf_hash(b"x"),
        }
    }

    #[test]
    fn signs_and_verifies_in_the_c2sp_shape() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let lines: Vec<_> = note.lines().collect();
        assert_eq!(lines[0], "example.org/log");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} example.org/log "));
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        assert_eq!(v.verify(&note).unwrap(), checkpoint());
    }

    #[test]
    fn a_cosigned_note_verifies_under_both_keys_and_names_no_stranger() {
        let old = signer();
        let old_verifier = NoteVerifier::parse(&old.verifier_key()).unwrap();
        let new = NoteSigner::new(
            "example.org/log",
            ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        )
        .unwrap();
        let new_verifier = NoteVerifier::parse(&new.verifier_key()).unwrap();
        assert!(old_verifier.verify(&new.sign(&checkpoint())).is_err());
        let both = new.cosigned_by(signer()).unwrap();
        assert_eq!(both.verifier_key(), new_verifier_key_of(&[8; 32]));
        let note = both.sign(&checkpoint());
        assert_eq!(old_verifier.verify(&note).unwrap(), checkpoint());
        assert_eq!(new_verifier.verify(&note).unwrap(), checkpoint());
        let stranger = NoteVerifier::parse(
            &NoteSigner::new(
                "example.org/log",
                ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
            )
            .unwrap()
            .verifier_key(),
        )
        .unwrap();
        assert!(stranger.verify(&note).is_err());
        assert!(
            signer().cosigned_by(signer()).is_err(),
            "the same key twice"
        );
        let other_name = NoteSigner::new(
            "other.org/log",
            ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        )
        .unwrap();
        assert!(other_name.cosigned_by(signer()).is_err());
    }

    fn new_verifier_key_of(seed: &[u8; 32]) -> String {
        NoteSigner::new(
            "example.org/log",
            ed25519_dalek::SigningKey::from_bytes(seed),
        )
        .unwrap()
        .verifier_key()
    }

    #[test]
    fn refuses_tampered_notes_and_other_keys() {
        let s = signer();
        let note = s.sign(&checkpoint());
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let tampered = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            v.verify(&tampered),
            Err(CheckpointError::Signature(_))
        ));
        let other = NoteSigner::new(
            "example.org/log",
            ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        )
        .unwrap();
        assert!(v.verify(&other.sign(&checkpoint())).is_err());
        assert!(v.verify("example.org/log\n42\n").is_err());
        let mut vkey = s.verifier_key();
        vkey.replace_range(vkey.len() - 4.., "AAA=");
        assert!(NoteVerifier::parse(&vkey).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_input(s in "\\PC{0,300}", t in proptest::collection::vec(any::<u8>(), 0..300)) {
            let v = NoteVerifier::parse(&signer().verifier_key()).unwrap();
            let _ = v.verify(&s);
            let _ = v.verify(&String::from_utf8_lossy(&t));
            let _ = NoteVerifier::parse(&s);
            let _ = parse_body(&s);
        }

        #[test]
        fn every_checkpoint_round_trips(size in any::<u64>(), root in any::<[u8; 32]>()) {
            let s = signer();
            let cp = Checkpoint { origin: "example.org/log".into(), size, root };
            let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
            prop_assert_eq!(v.verify(&s.sign(&cp)).unwrap(), cp);
        }
    }
}
