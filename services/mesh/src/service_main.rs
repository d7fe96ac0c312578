//! The shared tail of every service binary: install telemetry, turn SIGTERM into a drain, run the
//! service, and map the outcome to an exit code (64 for configuration errors, 1 for failures).

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::Telemetry;

/// Exit code for an invalid configuration (EX_CONFIG-like; `sysexits.h` calls 64 EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Reports a configuration error the way every binary does, and returns exit code 64.
pub fn bad_config(binary: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("{binary}: {error}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// A service's failure, classed for the exit code.
pub trait Failure: std::fmt::Display {
    /// Returns true when the operator's configuration is at fault (a file, key, certificate or
    /// value), so a restart without a change would fail the same way.
    fn is_config(&self) -> bool;
}

impl Failure for crate::MeshError {
    fn is_config(&self) -> bool {
        use crate::MeshError as E;
        matches!(
            self,
            E::Read { .. }
                | E::Pem { .. }
                | E::Tls(_)
                | E::Verifier(_)
                | E::Config(_)
                | E::Invalid(_)
                | E::Endpoint { .. }
                | E::Telemetry(_)
        )
    }
}

/// Installs telemetry and runs `serve` until SIGTERM or SIGINT has drained it. A configuration
/// failure found while starting exits with 64, so `Restart=on-failure` does not loop on it.
pub async fn run<F, Fut, E>(binary: &'static str, telemetry: &Telemetry, serve: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Failure,
{
    let _telemetry = match crate::telemetry::init(telemetry, binary) {
        Ok(guard) => guard,
        Err(e) => return bad_config(binary, e),
    };
    match serve(crate::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_config() => {
            tracing::error!(error = %e, "invalid configuration");
            bad_config(binary, e)
        }
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}
