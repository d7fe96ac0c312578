//! The BSN stays inside the node: sealed at rest with XChaCha20-Poly1305 under the node's own key
//! (`cases.bsn_key_file`), bound to its case id, never returned and never sent. The subject
//! pseudonym that participants may exchange is a keyed hash of the BSN under the region's key
//! (`cases.pseudonym_key_file`), which the coordinator does not hold.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::Error;

const NONCE: usize = 24;

/// The node's BSN keys, each optional: without them a BSN is refused, not stored in the clear.
#[derive(Clone, Default)]
pub struct BsnKeys {
    seal: Option<XChaCha20Poly1305>,
    pseudonym: Option<Vec<u8>>,
}

impl std::fmt::Debug for BsnKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BsnKeys")
            .field("seal", &self.seal.is_some())
            .field("pseudonym", &self.pseudonym.is_some())
            .finish()
    }
}

fn read_key(field: &str, path: &Path) -> Result<[u8; 32], Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{field}: cannot read {}: {e}", path.display())))?;
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "{field}: {} must hold 64 hex digits (32 random bytes, e.g. `openssl rand -hex 32`)",
                path.display()
            ))
        })?;
    Ok(bytes)
}

impl BsnKeys {
    /// Loads the configured keys.
    pub fn load(config: &crate::config::Cases) -> Result<Self, Error> {
        let seal = config
            .bsn_key_file
            .as_deref()
            .map(|p| read_key("cases.bsn_key_file", p))
            .transpose()?
            .map(|k| XChaCha20Poly1305::new(&k.into()));
        let pseudonym = config
            .pseudonym_key_file
            .as_deref()
            .map(|p| read_key("cases.pseudonym_key_file", p))
            .transpose()?
            .map(|k| k.to_vec());
        Ok(Self { seal, pseudonym })
    }

    /// Seals `bsn` for case `case_id`: nonce ‖ ciphertext.
    pub fn seal(&self, case_id: &str, bsn: &str) -> Result<Vec<u8>, Error> {
        let cipher = self.seal.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(
                "this node has no cases.bsn_key_file, so it does not store BSNs; leave bsn empty"
                    .into(),
            )
        })?;
        let mut nonce = [0u8; NONCE];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: bsn.as_bytes(),
                    aad: case_id.as_bytes(),
                },
            )
            .map_err(|_| Error::Corrupt("sealing failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Opens what [`BsnKeys::seal`] sealed for `case_id`.
    pub fn open(&self, case_id: &str, sealed: &[u8]) -> Result<String, Error> {
        let cipher = self
            .seal
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition("no cases.bsn_key_file".into()))?;
        if sealed.len() <= NONCE {
            return Err(Error::Corrupt("sealed BSN too short".into()));
        }
        let nonce: [u8; NONCE] = sealed[..NONCE]
            .try_into()
            .map_err(|_| Error::Corrupt("sealed BSN too short".into()))?;
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &sealed[NONCE..],
                    aad: case_id.as_bytes(),
                },
            )
            .map_err(|_| Error::Corrupt("sealed BSN does not open under this key".into()))?;
        String::from_utf8(plain).map_err(|_| Error::Corrupt("sealed BSN is not text".into()))
    }

    /// The subject pseudonym of `bsn` under the region key, as hex.
    pub fn pseudonym(&self, bsn: &str) -> Result<String, Error> {
        let key = self.pseudonym.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(
                "this node has no cases.pseudonym_key_file (the region's key)".into(),
            )
        })?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|_| Error::Corrupt("pseudonym key".into()))?;
        mac.update(b"doorzet-subject-v1\n");
        mac.update(bsn.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BsnKeys {
        BsnKeys {
            seal: Some(XChaCha20Poly1305::new(&[7u8; 32].into())),
            pseudonym: Some(vec![9; 32]),
        }
    }

    #[test]
    fn a_sealed_bsn_opens_only_for_its_case_and_key() {
        let k = keys();
        let sealed = k.seal("case-a", "123456782").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"123456782"));
        assert_eq!(k.open("case-a", &sealed).unwrap(), "123456782");
        assert!(k.open("case-b", &sealed).is_err(), "bound to its case");
        let other = BsnKeys {
            seal: Some(XChaCha20Poly1305::new(&[8u8; 32].into())),
            pseudonym: None,
        };
        assert!(other.open("case-a", &sealed).is_err());
        assert_ne!(
            k.seal("case-a", "123456782").unwrap(),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_refused_without_one() {
        let k = keys();
        assert_eq!(
            k.pseudonym("123456782").unwrap(),
            k.pseudonym("123456782").unwrap()
        );
        assert_ne!(
            k.pseudonym("123456782").unwrap(),
            k.pseudonym("111222333").unwrap()
        );
        assert!(!k.pseudonym("123456782").unwrap().contains("123456782"));
        assert!(BsnKeys::default().pseudonym("123456782").is_err());
        assert!(BsnKeys::default().seal("case-a", "123456782").is_err());
    }
}
