//! `lasso-loadgen`: open-loop (fixed rate, coordinated-omission corrected) or closed-loop (fixed concurrency)
//! JSON-RPC load over HTTP/1.1 keep-alive or WebSocket, or a WebSocket newHeads fan-out; prints a human summary and
//! optionally writes the full result as JSON. See loadtest/README.md.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use loadtest::loadgen::{LoadSpec, Mode};
use loadtest::mix::{HeadInfo, Mix, build_pool};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lasso-loadgen",
    version,
    about = "JSON-RPC load generator (HTTP keep-alive / WebSocket)"
)]
struct Cli {
    /// Target: http://host:port/path or ws://host:port/path.
    #[arg(long)]
    url: String,
    /// Requests per second (open loop). Without it the loop is closed (as fast as answers come).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unrecorded seconds before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Connections (HTTP keep-alive or WebSocket).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// In-flight requests in closed loop (one per connection: this sets --connections when given).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Load threads (one monoio event loop each).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin load threads to these CPUs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Method mix: default | small | block-number | get-logs | method:NAME | path/to/mix.yml
    #[arg(long, default_value = "default")]
    mix: String,
    /// Calls per HTTP request (JSON-RPC batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Subscribe to newHeads on every (ws://) connection and measure notification fan-out instead of requests.
    #[arg(long)]
    subscribe: bool,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Stop after this many requests (0 = only the duration bounds the run).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// Do not read the live head from the target (use synthetic block numbers, hashes and addresses).
    #[arg(long)]
    no_head: bool,
    /// HTTP URL to read the live head from (default: --url when it is http://).
    #[arg(long)]
    head_url: Option<String>,
    /// Write the full result (with histogram and per-second series) to this JSON file.
    #[arg(long)]
    json: Option<String>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lasso-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    loadtest::sys::raise_nofile(1 << 20);
    let mix = Mix::load(&cli.mix)?;
    // The live head comes over HTTP: from --head-url, or the target itself (ws:// read as http:// on the same port).
    let head_url = cli
        .head_url
        .clone()
        .or_else(|| Some(cli.url.replacen("ws://", "http://", 1)));
    let head = match (&head_url, cli.no_head) {
        (Some(u), false) => match HeadInfo::discover(u, Duration::from_secs(5)) {
            Ok(h) => h,
            Err(e) => {
                eprintln!(
                    "lasso-loadgen: could not read the live head from {u} ({e}); using synthetic values"
                );
                HeadInfo::synthetic()
            }
        },
        _ => HeadInfo::synthetic(),
    };
    eprintln!(
        "lasso-loadgen: mix {} ({} methods), head {} ({})",
        mix.name,
        mix.methods.len(),
        head.head,
        head.source
    );
    let pool = Arc::new(build_pool(&mix, &head, 4096, 42));
    let connections = cli.concurrency.unwrap_or(cli.connections);
    let mode = if cli.subscribe {
        Mode::Subscribe
    } else if cli.rate.is_some() {
        Mode::Open
    } else {
        Mode::Closed
    };
    let spec = LoadSpec {
        label: format!("lasso-loadgen {}", mix.name),
        url: cli.url.clone(),
        mode,
        rate: cli.rate.unwrap_or(0.0),
        duration: Duration::from_secs_f64(cli.duration),
        warmup: Duration::from_secs_f64(cli.warmup),
        connections,
        threads: cli.threads,
        cpus: cli.cpus.clone(),
        batch: cli.batch.max(1),
        timeout: Duration::from_secs_f64(cli.timeout),
        max_requests: cli.max_requests,
        progress: !cli.quiet,
        force_progress: false,
        start_at: None,
    };
    let result = loadtest::loadgen::run(&spec, pool)?;
    print!("{}", result.human());
    if let Some(path) = cli.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
        eprintln!("lasso-loadgen: wrote {path}");
    }
    Ok(())
}
