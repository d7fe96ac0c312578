//! `doorzet-gateway`: loads the configuration, installs telemetry and runs the REST gateway until
//! SIGTERM. Exit code 64 means the configuration is invalid.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use doorzet_gateway::{GatewayConfig, Listeners, serve};
use doorzet_mesh::service_main::{bad_config, run};

/// The doorzet gateway: a REST/JSON API in front of this organisation's node and the region's
/// coordinator, for systems that do not speak gRPC.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Every configuration key is explained in deploy/gateway.example.toml. Exit codes: 0 stopped cleanly after SIGTERM, 64 invalid configuration, 1 runtime failure."
)]
struct Args {
    /// Configuration file (TOML). Every key can be overridden by an environment variable
    /// DOORZET_<SECTION>__<KEY>, e.g. DOORZET_HTTP__LISTEN=127.0.0.1:8080.
    #[arg(short, long, env = "DOORZET_CONFIG", default_value = "gateway.toml")]
    config: PathBuf,
    /// Check the configuration, then exit.
    #[arg(long)]
    check: bool,
    /// Print the OpenAPI document, then exit.
    #[arg(long)]
    openapi: bool,
}

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    const BINARY: &str = "doorzet-gateway";
    let args = Args::parse();
    if args.openapi {
        match doorzet_gateway::openapi().to_pretty_json() {
            Ok(doc) => {
                println!("{doc}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("{BINARY}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let config = match GatewayConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return bad_config(BINARY, format!("{}: {e}", args.config.display())),
    };
    if args.check {
        // The identity provider's settings and files, as the console will read them.
        if let Err(e) = doorzet_gateway::console::oidc::Oidc::load(&config) {
            return bad_config(BINARY, format!("{}: {e}", args.config.display()));
        }
        return ExitCode::SUCCESS;
    }
    let telemetry = config.telemetry.clone();
    run(BINARY, &telemetry, |shutdown| async move {
        let listeners = Listeners::bind(&config).await?;
        serve(listeners, config, shutdown).await
    })
    .await
}
