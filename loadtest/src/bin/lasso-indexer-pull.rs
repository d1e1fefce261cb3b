//! `lasso-indexer-pull`: a replayed indexer pull (blocks with transactions, receipts, eth_getLogs in chunks) against
//! one JSON-RPC URL with N requests in flight; prints one JSON line
//! `{"requests","blocks","txs","receipts","logs","ms","rps","client_cpu_ms"}` (the shape of
//! `tests/clients/viem_indexer.mjs pull`). See loadtest/src/indexer.rs and loadtest/scripts/indexer_pull.sh.

use clap::Parser;
use loadtest::client::Target;
use loadtest::indexer::{PullSpec, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lasso-indexer-pull",
    version,
    about = "Replayed indexer pull: blocks, receipts and logs of a range"
)]
struct Cli {
    /// Target: http://host:port/path.
    #[arg(long)]
    url: String,
    /// First block.
    #[arg(long)]
    from: u64,
    /// Last block (inclusive).
    #[arg(long)]
    to: u64,
    /// Requests in flight (one keep-alive connection each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Blocks per eth_getLogs call.
    #[arg(long, default_value_t = 100)]
    log_chunk: u64,
}

/// User + system CPU time of this process so far, in milliseconds.
fn cpu_ms() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

fn main() {
    let cli = Cli::parse();
    let target = Target::parse(&cli.url).unwrap_or_else(|e| {
        eprintln!("lasso-indexer-pull: {e}");
        std::process::exit(2)
    });
    let spec = PullSpec {
        target,
        from: cli.from,
        to: cli.to,
        concurrency: cli.concurrency,
        log_chunk: cli.log_chunk,
    };
    let cpu0 = cpu_ms();
    match run(&spec) {
        Ok(r) => {
            let ms = r.elapsed.as_secs_f64() * 1000.0;
            println!(
                "{}",
                serde_json::json!({
                    "requests": r.requests,
                    "blocks": r.blocks,
                    "txs": r.txs,
                    "receipts": r.receipts,
                    "logs": r.logs,
                    "ms": ms.round() as u64,
                    "rps": (r.requests as f64 * 1000.0 / ms).round() as u64,
                    "client_cpu_ms": cpu_ms() - cpu0,
                })
            );
        }
        Err(e) => {
            println!("FAIL lasso-indexer-pull: {e}");
            std::process::exit(1)
        }
    }
}
