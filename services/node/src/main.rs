//! `doorzet-node`: loads the configuration, installs telemetry and runs the partner node until
//! SIGTERM. Exit code 64 means the configuration is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use doorzet_mesh::service_main::{bad_config, run};
use doorzet_node::{Listeners, NodeConfig, serve};

/// A doorzet partner node: serves this organisation's mandates and consented case facts to the
/// region's mesh over mutual TLS, and a local API to its own systems.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Every configuration key is explained in deploy/node.example.toml. Exit codes: 0 stopped cleanly after SIGTERM, 64 invalid configuration, 1 runtime failure."
)]
struct Args {
    /// Configuration file (TOML). Every key can be overridden by an environment variable
    /// DOORZET_<SECTION>__<KEY>, e.g. DOORZET_STORAGE__URL=postgres://doorzet@db/doorzet.
    #[arg(short, long, env = "DOORZET_CONFIG", default_value = "node.toml")]
    config: PathBuf,
    /// Check the configuration, then exit.
    #[arg(long)]
    check: bool,
}

// Memory a flood took is purged back to the system in the background once it is freed.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[tokio::main]
async fn main() -> ExitCode {
    const BINARY: &str = "doorzet-node";
    let args = Args::parse();
    let config = match NodeConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return bad_config(BINARY, format!("{}: {e}", args.config.display())),
    };
    if args.check {
        return ExitCode::SUCCESS;
    }
    let telemetry = config.telemetry.clone();
    run(BINARY, &telemetry, |shutdown| async move {
        let listeners = Listeners::bind(&config).await?;
        serve(listeners, config, shutdown).await
    })
    .await
}
