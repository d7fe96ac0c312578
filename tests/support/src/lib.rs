//! Test support for doorzet: a throwaway PKI that also makes the bad cases (foreign CA, expired,
//! no organisation id), token minting including malformed and forged tokens, and an in-process
//! mesh of a coordinator and nodes on real sockets over real mutual TLS.
//!
//! # Layout
//! - [`pki`]: [`Pki`], [`TestOrg`] and token helpers.
//! - [`mesh`]: [`TestMesh`], clients and waiting helpers.
//! - [`audit`]: disclosure records, appending them, and waiting on a node's audit checks.
//! - [`process`]: a coordinator as a real process.
//! - [`gateway`]: a REST gateway beside a node of the mesh.
//! - [`metrics`]: reading the services' `/metrics`.

pub mod audit;
pub mod gateway;
pub mod measure;
pub mod mesh;
pub mod metrics;
pub mod pki;
pub mod process;

pub use mesh::TestMesh;
pub use pki::{Pki, TestOrg};

/// Polls `check` every 25 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
