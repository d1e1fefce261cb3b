//! `lasso-mockprovider`: a fast mock JSON-RPC provider (HTTP + WebSocket) for a simulated chain, with fault injection
//! at run time through `POST /control` on the same port. See loadtest/README.md.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lasso-mockprovider",
    version,
    about = "Mock JSON-RPC provider (HTTP + WS) with fault injection"
)]
struct Cli {
    #[command(flatten)]
    mock: loadtest::mock::cli::MockArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match loadtest::mock::cli::run(&cli.mock) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lasso-mockprovider: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
