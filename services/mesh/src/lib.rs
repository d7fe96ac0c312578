//! Mesh plumbing shared by every doorzet server and client: who is calling (organisation by mutual
//! TLS, person by JWT), the region's directory, the tower layers and the server and client builders.
//!
//! # Layout
//! - [`config`]: configuration sections every binary shares, and the figment loader.
//! - [`directory`]: the member directory as a verified, swappable snapshot.
//! - [`tls`]: certificate loading, rustls configs, and reload on change or SIGHUP.
//! - [`grant_signer`]: signing participation grants with the coordinator's key.
//! - [`identity`]: `Caller`, and the checks that turn a peer certificate and a JWT into one.
//! - [`layers`]: tower layers for tracing, timeouts, load shedding, identity and metrics.
//! - [`connections`]: connection caps, handshake and idle timeouts, per listener.
//! - [`server`]: the shared gRPC server builder.
//! - [`log_throttle`]: rate limits for log lines that can repeat.
//! - [`client`]: mutual-TLS channels to peers.
//! - [`coalesce`]: fewer, fuller writes on busy HTTP/2 connections.
//! - [`admin`]: the admin HTTP listener with Prometheus metrics and probes.
//! - [`telemetry`]: tracing subscriber, OTLP export and W3C trace-context propagation.
//! - [`service_main`]: the shared tail of every service binary (telemetry, signals, exit codes).
//! - [`shutdown`]: turning SIGTERM and SIGINT into a cancellation token.
//! - [`error`]: the crate's errors and their one mapping to `tonic::Status`.

pub mod admin;
pub mod client;
pub mod coalesce;
pub mod config;
pub mod connections;
pub mod directory;
pub mod error;
pub mod grant_signer;
pub mod identity;
pub mod layers;
pub mod log_throttle;
pub mod server;
pub mod service_main;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use directory::{Directory, Snapshot};

/// The metadata key that carries the caller's latest verified audit checkpoint (its signed note)
/// on calls between members, so the callee can compare histories.
pub const CHECKPOINT_HEADER: &str = "doorzet-checkpoint-bin";
pub use error::{IdentityError, MeshError};
pub use identity::{Caller, ListenerKind, Person, Verifier};
pub use tls::ReloadingTls;
