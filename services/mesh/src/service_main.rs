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

/// Installs telemetry and runs `serve` until SIGTERM or SIGINT has drained it.
pub async fn run<F, Fut, E>(binary: &'static str, telemetry: &Telemetry, serve: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let _telemetry = match crate::telemetry::init(telemetry, binary) {
        Ok(guard) => guard,
        Err(e) => return bad_config(binary, e),
    };
    match serve(crate::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}
