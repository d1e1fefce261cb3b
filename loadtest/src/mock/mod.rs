//! The mock JSON-RPC provider: a thread-per-core (monoio, io_uring) server for a simulated chain, speaking HTTP
//! JSON-RPC (single and batch) and WebSocket JSON-RPC (`eth_subscribe` newHeads / logs, `eth_unsubscribe`), with fault
//! injection and counters behind a control endpoint on the same port (`GET|POST /control`).
//!
//! In-process use (tests): `let srv = loadtest::mock::start(MockConfig::default())?;` binds 127.0.0.1:0 on its own
//! thread(s) and returns the bound address; `srv.control(json!({...}))` changes faults directly.

pub mod cli;
pub mod faults;
pub mod rpc;
pub mod server;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{Chain, ChainConfig};
pub use faults::{Actions, Counters, Faults, Latency};

/// How to run a mock provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    pub bind: SocketAddr,
    /// Worker threads (one event loop each, SO_REUSEPORT listeners on one port).
    pub workers: usize,
    /// CPUs to pin workers to (worker i on cpus[i % len]); empty = no pinning.
    pub cpus: Vec<usize>,
    pub chain: ChainConfig,
    /// Faults in force at start.
    pub faults: Faults,
    pub max_body_bytes: usize,
    /// Keep-alive idle time before the mock closes a connection.
    pub idle_timeout_ms: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            bind: "127.0.0.1:0".parse().expect("literal address"),
            workers: 1,
            cpus: Vec::new(),
            chain: ChainConfig::default(),
            faults: Faults::default(),
            max_body_bytes: 16 << 20,
            idle_timeout_ms: 120_000,
        }
    }
}

/// State shared by every worker of one mock provider: the chain, the faults in force, counters.
#[derive(Debug)]
pub struct MockChain {
    pub chain: Chain,
    pub counters: Counters,
    faults: RwLock<Arc<Faults>>,
    faults_version: AtomicU64,
    ws_generation: AtomicU64,
    next_sub: AtomicU64,
    pub max_body_bytes: usize,
    pub idle_timeout_ms: u64,
}

impl MockChain {
    pub fn new(cfg: &MockConfig) -> MockChain {
        let chain = Chain::new(cfg.chain.clone());
        if cfg.faults.stall_head {
            chain.set_stalled(true);
        }
        MockChain {
            chain,
            counters: Counters::default(),
            faults: RwLock::new(Arc::new(cfg.faults.clone())),
            faults_version: AtomicU64::new(1),
            ws_generation: AtomicU64::new(0),
            next_sub: AtomicU64::new(1),
            max_body_bytes: cfg.max_body_bytes,
            idle_timeout_ms: cfg.idle_timeout_ms,
        }
    }

    pub fn faults(&self) -> Arc<Faults> {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn faults_version(&self) -> u64 {
        self.faults_version.load(Ordering::Acquire)
    }

    pub fn ws_generation(&self) -> u64 {
        self.ws_generation.load(Ordering::Acquire)
    }

    /// A fresh subscription id.
    pub fn new_subscription_id(&self) -> String {
        let n = self.next_sub.fetch_add(1, Ordering::Relaxed);
        format!(
            "0x{:032x}",
            crate::rng::mix64(n) as u128 | ((n as u128) << 64)
        )
    }

    /// The chain id answered (override or configured).
    pub fn chain_id(&self) -> u64 {
        self.faults().chain_id.unwrap_or(self.chain.cfg.chain_id)
    }

    /// The head as reported (lag applied).
    pub fn visible_head(&self, faults: &Faults) -> u64 {
        self.chain.head().saturating_sub(faults.lag_blocks)
    }

    /// Applies a control patch (see [`faults::apply_patch`]) and returns the state afterwards.
    pub fn control(&self, patch: &Value) -> Result<Value, String> {
        if !patch.as_object().is_some_and(|o| o.is_empty()) {
            let current = self.faults();
            let (new, actions) = faults::apply_patch(&current, patch)?;
            if actions.reset_counters {
                self.counters.reset();
            }
            if new.stall_head != self.chain.is_stalled() {
                self.chain.set_stalled(new.stall_head);
            }
            if let Some(depth) = actions.reorg {
                self.chain.reorg(depth);
            }
            *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
            self.faults_version.fetch_add(1, Ordering::AcqRel);
            if actions.drop_ws {
                self.ws_generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(self.state())
    }

    /// Faults, head and counters as JSON (`GET /control`).
    pub fn state(&self) -> Value {
        let f = self.faults();
        serde_json::json!({
            "faults": &*f,
            "head": self.chain.head(),
            "visible_head": self.visible_head(&f),
            "chain_id": f.chain_id.unwrap_or(self.chain.cfg.chain_id),
            "block_time_ms": self.chain.cfg.block_time_ms,
            "stalled": self.chain.is_stalled(),
            "counters": self.counters.snapshot(),
        })
    }
}

/// A running mock provider.
pub struct MockServer {
    pub addr: SocketAddr,
    pub state: Arc<MockChain>,
    _threads: Vec<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// `http://addr/`
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `ws://addr/`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Applies a control patch in-process (same effect as `POST /control`).
    pub fn control(&self, patch: Value) -> Result<Value, String> {
        self.state.control(&patch)
    }
}

/// Starts a mock provider on its own worker threads; returns once every worker listens. The threads run until the
/// process exits.
pub fn start(cfg: MockConfig) -> io::Result<MockServer> {
    let state = Arc::new(MockChain::new(&cfg));
    let workers = cfg.workers.max(1);
    let first = crate::sys::reuseport_listener(cfg.bind, 4096)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(crate::sys::reuseport_listener(addr, 4096)?);
    }
    let mut threads = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    for (i, l) in listeners.into_iter().enumerate() {
        let state = state.clone();
        let cpus = cfg.cpus.clone();
        let ready = ready_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("mock-worker-{i}"))
            .spawn(move || {
                if !cpus.is_empty() {
                    let _ = crate::sys::pin_current_thread(&[cpus[i % cpus.len()]]);
                }
                server::run_worker(state, l, i as u64, ready);
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("mock worker exited during start-up")),
        }
    }
    Ok(MockServer {
        addr,
        state,
        _threads: threads,
    })
}
