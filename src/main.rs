//! The `lasso` command: run the proxy, or validate a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lasso",
    version,
    about = "Thread-per-core blockchain JSON-RPC aggregator"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Chains configuration file (default: $LASSO_CHAINS_PATH, seeded from the image default when missing, else
    /// config/chains.yml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads, one event loop each (default: one per core).
    #[arg(long, env = lasso::config::env::WORKERS)]
    workers: Option<usize>,
    /// Port to listen on (default: 4000; 0 picks a free port).
    #[arg(long, env = lasso::config::env::PORT)]
    port: Option<u16>,
    /// Address to bind (default: :: , dual-stack).
    #[arg(long, env = lasso::config::env::BIND)]
    bind: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match lasso::config::load_file(&file) {
            Ok(config) => {
                println!(
                    "ok: {} chains, {} providers",
                    config.chain_count(),
                    config.providers.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        None => {
            lasso::app::logging::init();
            let opts = lasso::app::supervisor::RunOptions {
                config: cli.config,
                workers: cli.workers,
                port: cli.port,
                bind: cli.bind,
            };
            let code = match lasso::app::supervisor::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "lasso failed to start");
                    eprintln!("lasso: {e}");
                    ExitCode::FAILURE
                }
            };
            lasso::app::logging::flush();
            code
        }
    }
}
