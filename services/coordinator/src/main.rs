//! `doorzet-coordinator`: loads the configuration, installs telemetry and runs the coordinator
//! until SIGTERM. Exit code 64 means the configuration is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use doorzet_coordinator::directory_file::DirectoryFile;
use doorzet_coordinator::{CoordinatorConfig, Listeners, serve};
use doorzet_mesh::service_main::{bad_config, run};

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

// Memory a flood took is purged back to the system in the background once it is freed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[tokio::main]
async fn main() -> ExitCode {
    const BINARY: &str = "doorzet-coordinator";
    let args = Args::parse();
    let config = match CoordinatorConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return bad_config(BINARY, format!("{}: {e}", args.config.display())),
    };
    if args.check {
        return match DirectoryFile::load(&config.directory.file) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => bad_config(BINARY, e),
        };
    }
    let telemetry = config.telemetry.clone();
    run(BINARY, &telemetry, |shutdown| async move {
        let listeners = Listeners::bind(&config).await?;
        serve(listeners, config, shutdown).await
    })
    .await
}
