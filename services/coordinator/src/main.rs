//! `doorzet-coordinator`: loads the configuration, installs telemetry and runs the coordinator
//! until SIGTERM. Exit code 64 means the configuration is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use doorzet_coordinator::{CoordinatorConfig, Listeners, serve};

/// The doorzet coordinator at the Zorg- en Veiligheidshuis: member directory, escalation ladder and
/// audit log for a region's mesh.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Every configuration key is explained in deploy/coordinator.example.toml, the directory file in deploy/directory.example.toml. Exit codes: 0 stopped cleanly after SIGTERM, 64 invalid configuration or directory file, 1 runtime failure."
)]
struct Args {
    /// Configuration file (TOML). Every key can be overridden by an environment variable
    /// DOORZET_<SECTION>__<KEY>, e.g. DOORZET_MESH__LISTEN=0.0.0.0:7443.
    #[arg(
        short,
        long,
        env = "DOORZET_CONFIG",
        default_value = "coordinator.toml"
    )]
    config: PathBuf,
    /// Check the configuration and the directory file, then exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match CoordinatorConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("doorzet-coordinator: {}: {e}", args.config.display());
            return ExitCode::from(64);
        }
    };
    if args.check {
        return match doorzet_coordinator::directory_file::DirectoryFile::load(
            &config.directory.file,
        ) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("doorzet-coordinator: {e}");
                ExitCode::from(64)
            }
        };
    }
    let _telemetry = match doorzet_mesh::telemetry::init(&config.telemetry, "doorzet-coordinator") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("doorzet-coordinator: {e}");
            return ExitCode::from(64);
        }
    };
    let shutdown = doorzet_mesh::shutdown::on_signal();
    let result = match Listeners::bind(&config).await {
        Ok(listeners) => serve(listeners, config, shutdown).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "coordinator stopped");
            eprintln!("doorzet-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
