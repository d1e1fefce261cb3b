//! The mock provider's command line, shared by `lasso-mockprovider` and `lasso-bench mock` (the runner starts its
//! mock providers as child processes of itself so that it needs no second binary).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;

use super::{MockConfig, start};

/// Mock provider options.
#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// YAML/JSON file with a full MockConfig (flags below override it).
    #[arg(long)]
    pub config: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Port (0 picks a free one; the bound address is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Worker threads (one io_uring event loop each).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Pin worker i to the i-th CPU of this comma-separated list.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    #[arg(long)]
    pub chain_id: Option<u64>,
    /// Time between blocks.
    #[arg(long)]
    pub block_time_ms: Option<u64>,
    #[arg(long)]
    pub start_block: Option<u64>,
    #[arg(long)]
    pub txs_per_block: Option<u32>,
    #[arg(long)]
    pub logs_per_block: Option<u32>,
    /// Hash seed (two mocks with different seeds disagree on hashes).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial faults as a control JSON patch, e.g. '{"latency":{"*":{"fixed_ms":1}}}'.
    #[arg(long)]
    pub faults: Option<String>,
    /// Exit after this many seconds (everything the harness starts stops by itself).
    #[arg(long, default_value_t = 3600)]
    pub exit_after: u64,
}

impl MockArgs {
    pub fn to_config(&self) -> Result<MockConfig, String> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
                serde_norway::from_str(&text).map_err(|e| format!("{p}: {e}"))?
            }
            None => MockConfig::default(),
        };
        cfg.bind = format!("{}:{}", self.bind, self.port)
            .parse()
            .map_err(|e| format!("--bind/--port: {e}"))?;
        if let Some(w) = self.workers {
            cfg.workers = w;
        }
        if !self.cpus.is_empty() {
            cfg.cpus = self.cpus.clone();
        }
        let c = &mut cfg.chain;
        if let Some(v) = self.chain_id {
            c.chain_id = v;
        }
        if let Some(v) = self.block_time_ms {
            c.block_time_ms = v;
        }
        if let Some(v) = self.start_block {
            c.start_block = v;
        }
        if let Some(v) = self.txs_per_block {
            c.txs_per_block = v;
        }
        if let Some(v) = self.logs_per_block {
            c.logs_per_block = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(f) = &self.faults {
            let patch: serde_json::Value =
                serde_json::from_str(f).map_err(|e| format!("--faults: {e}"))?;
            cfg.faults = super::faults::apply_patch(&cfg.faults, &patch)
                .map_err(|e| format!("--faults: {e}"))?
                .0;
        }
        Ok(cfg)
    }
}

/// Starts the mock, prints `listening address=IP:PORT workers=N`, and blocks until `exit_after`.
pub fn run(args: &MockArgs) -> Result<(), String> {
    let cfg = args.to_config()?;
    let workers = cfg.workers.max(1);
    let srv = start(cfg).map_err(|e| format!("mock provider: {e}"))?;
    println!(
        "lasso-mockprovider listening address={} workers={workers} control=http://{}/control",
        srv.addr, srv.addr
    );
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + Duration::from_secs(args.exit_after);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("lasso-mockprovider exiting after {} s", args.exit_after);
    Ok(())
}
