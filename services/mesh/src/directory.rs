//! The region's member directory as this process sees it: a verified snapshot, swapped atomically
//! when a new copy arrives, that every listener consults on every request. A member removed from it,
//! or a certificate it lists as revoked, is refused as soon as the new snapshot is in place.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use doorzet_domain::{Oin, OrgKind};
use doorzet_proto::convert::{self, ConvertError};
use doorzet_proto::v1;
use jsonwebtoken::{Algorithm, DecodingKey};

/// A key that verifies one organisation's tokens, pinned to one algorithm.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id (`kid`).
    pub kid: String,
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    /// The key itself.
    pub key: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Converts a JWK from the directory; only Ed25519 (`EdDSA`) and P-256 (`ES256`) are accepted.
    pub fn from_pb(field: &'static str, jwk: &v1::JsonWebKey) -> Result<Self, ConvertError> {
        let bad = |reason: String| ConvertError::new(field, reason);
        let (alg, key) = match (jwk.alg.as_str(), jwk.kty.as_str(), jwk.crv.as_str()) {
            ("EdDSA", "OKP", "Ed25519") => (
                Algorithm::EdDSA,
                DecodingKey::from_ed_components(&jwk.x).map_err(|e| bad(e.to_string()))?,
            ),
            ("ES256", "EC", "P-256") => (
                Algorithm::ES256,
                DecodingKey::from_ec_components(&jwk.x, &jwk.y).map_err(|e| bad(e.to_string()))?,
            ),
            (alg, kty, crv) => {
                return Err(bad(format!(
                    "key `{}` has alg={alg} kty={kty} crv={crv}; only EdDSA/OKP/Ed25519 and ES256/EC/P-256 are allowed",
                    jwk.kid
                )));
            }
        };
        if jwk.kid.is_empty() {
            return Err(bad("kid must be set".into()));
        }
        Ok(Self {
            kid: jwk.kid.clone(),
            alg,
            key,
        })
    }
}

/// One member organisation.
#[derive(Debug, Clone)]
pub struct Member {
    /// Organisation id.
    pub org: Oin,
    /// Kind of organisation.
    pub kind: OrgKind,
    /// Display name of the organisation.
    pub name: String,
    /// Address of its mesh listener.
    pub mesh_endpoint: String,
    /// Keys that verify its tokens.
    pub signing_keys: Vec<SigningKey>,
}

/// Returns a certificate's SHA-256 fingerprint in the one form the directory compares: 64 lowercase
/// hex digits (colons, as some tools print them, removed); `None` when it is not one.
pub fn normalize_fingerprint(fingerprint: &str) -> Option<String> {
    let fp = fingerprint.to_ascii_lowercase().replace(':', "");
    (fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then_some(fp)
}

/// An immutable, verified copy of the directory.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The directory as served on the wire, kept for re-serving and persisting.
    pub wire: v1::ListMembersResponse,
    /// Members by organisation id.
    pub members: BTreeMap<Oin, Member>,
    /// The coordinator's organisation id.
    pub coordinator: Oin,
    /// Keys of the coordinator (for participation grants).
    pub coordinator_keys: Vec<SigningKey>,
    /// SHA-256 fingerprints (lowercase hex) of revoked certificates.
    pub revoked: HashSet<String>,
    /// When this copy was obtained from its source (file load or fetch).
    pub obtained_at: SystemTime,
}

impl Snapshot {
    /// Verifies a wire directory; errors name the member and field.
    pub fn from_pb(
        wire: v1::ListMembersResponse,
        obtained_at: SystemTime,
    ) -> Result<Self, ConvertError> {
        let mut members = BTreeMap::new();
        for m in &wire.members {
            let org = convert::oin("members.org_id", &m.org_id)?;
            let kind = convert::org_kind("members.kind", m.kind)?;
            let signing_keys = m
                .signing_keys
                .iter()
                .map(|k| SigningKey::from_pb("members.signing_keys", k))
                .collect::<Result<_, _>>()?;
            let member = Member {
                org,
                kind,
                name: m.name.clone(),
                mesh_endpoint: m.mesh_endpoint.clone(),
                signing_keys,
            };
            if members.insert(org, member).is_some() {
                return Err(ConvertError::new(
                    "members.org_id",
                    format!("{org} is listed twice"),
                ));
            }
        }
        let coordinator_entry = wire
            .coordinator
            .as_ref()
            .ok_or_else(|| ConvertError::new("coordinator", "must be set"))?;
        let coordinator = convert::oin("coordinator.org_id", &coordinator_entry.org_id)?;
        let coordinator_keys = coordinator_entry
            .signing_keys
            .iter()
            .map(|k| SigningKey::from_pb("coordinator.signing_keys", k))
            .collect::<Result<_, _>>()?;
        let revoked = wire
            .revoked_certificate_sha256
            .iter()
            .map(|fp| {
                normalize_fingerprint(fp).ok_or_else(|| {
                    ConvertError::new(
                        "revoked_certificate_sha256",
                        "each entry must be 64 hex digits",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            wire,
            members,
            coordinator,
            coordinator_keys,
            revoked,
            obtained_at,
        })
    }

    /// Returns the member with this organisation id.
    pub fn member(&self, org: &Oin) -> Option<&Member> {
        self.members.get(org)
    }

    /// Returns true when `org` may use the mesh: a member or the coordinator.
    pub fn is_participant(&self, org: &Oin) -> bool {
        self.members.contains_key(org) || *org == self.coordinator
    }

    /// Returns the token keys of `org` (a member or the coordinator).
    pub fn signing_keys(&self, org: &Oin) -> Option<&[SigningKey]> {
        if *org == self.coordinator {
            return Some(&self.coordinator_keys);
        }
        self.members.get(org).map(|m| m.signing_keys.as_slice())
    }

    /// Returns true when the certificate with this SHA-256 fingerprint is revoked.
    pub fn is_revoked(&self, sha256_hex: &str) -> bool {
        self.revoked.contains(sha256_hex)
    }

    /// Returns the directory version.
    pub fn version(&self) -> u64 {
        self.wire.version
    }

    /// Returns how old this copy is at `now`.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.obtained_at).unwrap_or_default()
    }
}

/// The current directory snapshot, shared by every listener of a process.
#[derive(Debug)]
pub struct Directory {
    current: ArcSwapOption<Snapshot>,
    max_age: Option<Duration>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Directory {
    /// Makes an empty directory whose copies expire after `max_age` (`None`: never, as at the
    /// coordinator, which owns the source).
    pub fn new(max_age: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwapOption::empty(),
            max_age,
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Swaps in a new snapshot and tells every subscriber.
    pub fn replace(&self, snapshot: Snapshot) {
        let version = snapshot.version();
        self.current.store(Some(Arc::new(snapshot)));
        self.changed.send_replace(version);
    }

    /// Returns a receiver that sees the version of every snapshot swapped in from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Returns the current snapshot, if any, whatever its age.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Returns the maximum age, if copies expire.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Returns the snapshot to decide on at `now`, or why there is none usable.
    pub fn usable(&self, now: SystemTime) -> Result<Arc<Snapshot>, crate::IdentityError> {
        let snapshot = self
            .current()
            .ok_or_else(|| crate::IdentityError::DirectoryUnavailable("not loaded yet".into()))?;
        if let Some(max_age) = self.max_age {
            let age = snapshot.age(now);
            if age > max_age {
                return Err(crate::IdentityError::DirectoryUnavailable(format!(
                    "last copy is {}s old, more than the maximum of {}s",
                    age.as_secs(),
                    max_age.as_secs()
                )));
            }
        }
        Ok(snapshot)
    }
}
