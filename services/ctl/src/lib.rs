//! The library behind `doorzetctl`: a development PKI, development tokens, a local mesh of real
//! processes, and small clients for the mesh's services.
//!
//! # Layout
//! - [`demo`]: the eviction case walked through a running local mesh.
//! - [`calendar`]: the region's working-day calendar and deadlines, by hand.
//! - [`audit_verify`]: downloading and verifying the whole audit log.
//! - [`pki`]: development CA and organisation certificates of the production shape.
//! - [`token`]: minting JWTs with an organisation's development signing key.
//! - [`local_mesh`]: `mesh up`, `mesh down` and `mesh status`.
//! - [`inspect`]: asking a running mesh who is in the directory and who the caller is.
//! - [`partner`]: a node's cases, facts, consents, mandates and disclosure log; development grants.

pub mod audit_verify;
pub mod calendar;
pub mod demo;
pub mod inspect;
pub mod local_mesh;
pub mod partner;
pub mod pki;
pub mod token;
