//! One worker: a pinned thread running its own monoio runtime, its own SO_REUSEPORT listener, upstream pools, router
//! and counters. [`Shared`] is the little that is process-wide (read-only config, the connection count used for the
//! hard limit at accept time, and the control channels the status page and shutdown use); nothing on the request
//! path touches it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_channel::mpsc;

use crate::config::Config;
use crate::routing::recorder::Recorder;
use crate::routing::router::{LocalHealth, Router};
use crate::routing::table::RoutingTable;
use crate::shard::control::Control;
use crate::shard::sync::LocalNotify;
use crate::telemetry::stats::ProviderStats;
use crate::upstream::UpstreamClient;

/// Process-wide, shared by all workers.
pub struct Shared {
    pub config: Arc<Config>,
    pub started: Instant,
    pub node_id: String,
    pub region: Option<String>,
    pub workers: usize,
    pub controls: Vec<mpsc::UnboundedSender<Control>>,
    /// Open client connections across all workers of every configuration generation (accept and close only).
    pub connections: Arc<AtomicUsize>,
    /// Open client connections by address, for `server.max_connections_per_ip` (accept and close only).
    pub peers: Arc<crate::shard::peers::PeerCounts>,
    /// The supervisor (main thread): configuration changes go there, one at a time.
    pub supervisor: std::sync::mpsc::Sender<crate::config::change::SupervisorCommand>,
    /// Configuration generation (1 at start, +1 per applied change).
    pub generation: u64,
    /// TLS client configuration for providers (built once; cloning shares it).
    pub tls: monoio_rustls::TlsConnector,
    /// The routing table workers start with (from the newest snapshot, if any).
    pub initial_table: Arc<RoutingTable>,
    /// Wall-clock start, for request ids.
    pub started_epoch_ms: u64,
    /// Share of successful requests logged (`LOG_SAMPLE_RATE`, default 0.01); errors are always logged.
    pub log_sample_rate: f64,
}

/// A worker's state. Lives in an `Rc` on its own thread.
pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    pub upstream: Rc<UpstreamClient>,
    pub router: RefCell<Router>,
    pub routing: RefCell<crate::routing::state::RoutingState>,
    next_request_id: Cell<u64>,
    pub stats: RefCell<ProviderStats>,
    /// In-flight multiplexing and the response cache of this core.
    pub cache: crate::cache::WorkerCache,
    next_upstream_id: Cell<u64>,
    pub draining: Cell<bool>,
    /// A newer configuration generation serves new connections; this one winds down.
    pub retiring: Cell<bool>,
    /// Who waits for this worker to stop accepting after a reload.
    pub retire_acks: RefCell<Vec<std::sync::mpsc::Sender<()>>>,
    /// Fired once when draining starts: idle connections close.
    pub drain_started: Rc<LocalNotify>,
    /// Fired once when a reload retires this worker: it stops accepting; connections close after their next response.
    pub retire_started: Rc<LocalNotify>,
    /// Fired whenever a connection closes.
    pub connection_closed: Rc<LocalNotify>,
    pub live_connections: Cell<usize>,
    pub ws_clients: Cell<usize>,
    /// Per-kind rate limits of the warnings clients can cause once per request.
    pub log_limit: crate::telemetry::log_limit::LogLimit,
    next_connection_id: Cell<u64>,
    sample_rng: Cell<u64>,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>) -> Self {
        let config = shared.config.clone();
        Worker {
            index,
            upstream: Rc::new(UpstreamClient::new(
                &config,
                shared.tls.clone(),
                config.upstream.max_buffered_response_bytes / shared.workers.max(1),
            )),
            router: RefCell::new(Router::new(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1))),
            routing: RefCell::new(crate::routing::state::RoutingState {
                table: shared.initial_table.clone(),
                health: LocalHealth::new(config.providers.len(), index as u64 + 1),
                recorder: Recorder::default(),
                new_unsupported: Vec::new(),
                head_floors: Vec::new(),
            }),
            next_request_id: Cell::new(0),
            stats: RefCell::new(ProviderStats::new(config.providers.len())),
            cache: crate::cache::WorkerCache::new(
                config.cache.max_bytes,
                shared.workers,
                config.chain_count(),
                config
                    .cache
                    .redis
                    .clone()
                    .map(|r| crate::cache::redis::Redis::new(r, config.cache.max_entry_bytes)),
            ),
            next_upstream_id: Cell::new(1),
            draining: Cell::new(false),
            retiring: Cell::new(false),
            retire_acks: RefCell::new(Vec::new()),
            drain_started: Rc::new(LocalNotify::default()),
            retire_started: Rc::new(LocalNotify::default()),
            connection_closed: Rc::new(LocalNotify::default()),
            live_connections: Cell::new(0),
            ws_clients: Cell::new(0),
            log_limit: Default::default(),
            next_connection_id: Cell::new(0),
            sample_rng: Cell::new(0x2545_F491_4F6C_DD1D ^ (index as u64 + 7)),
            config,
            shared,
        }
    }

    /// A fresh id for `n` consecutive upstream calls; returns the first.
    pub fn upstream_ids(&self, n: u64) -> u64 {
        let first = self.next_upstream_id.get();
        self.next_upstream_id.set(first.wrapping_add(n).max(1));
        first
    }

    /// Counts a client-facing JSON-RPC error.
    pub fn count_error(&self, code: i32) {
        *self
            .stats
            .borrow_mut()
            .client_errors
            .entry(code)
            .or_insert(0) += 1;
    }

    /// This worker's cache figures, for the status page.
    pub fn cache_stats(&self) -> crate::telemetry::stats::CacheStats {
        let store = self.cache.store.counters();
        let reuse = self.cache.counters.get();
        crate::telemetry::stats::CacheStats {
            multiplexed: reuse.multiplexed,
            hits: store.hits,
            misses: store.misses,
            stored: store.stored,
            evictions: store.evictions,
            expired: store.expired,
            purged: store.purged,
            reorgs: reuse.reorgs,
            bypassed: reuse.bypassed,
            entries: store.entries,
            bytes: store.bytes,
            max_bytes: (self.config.cache.max_bytes / self.shared.workers.max(1)) as u64,
            redis: match &self.cache.redis {
                Some(redis) => {
                    let r = redis.counters();
                    crate::telemetry::stats::RedisStats {
                        configured: true,
                        hits: r.hits,
                        misses: r.misses,
                        stored: r.stored,
                        errors: r.errors,
                        skipped: r.skipped,
                        circuit_opened: r.circuit_opened,
                        circuit_open: r.circuit_open,
                    }
                }
                None => Default::default(),
            },
        }
    }

    /// Whether to log this successful request (`LOG_SAMPLE_RATE`).
    pub fn sample_log(&self) -> bool {
        let rate = self.shared.log_sample_rate;
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        let mut x = self.sample_rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.sample_rng.set(x);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
    }

    /// A connection id unique within this worker.
    pub fn next_connection_id(&self) -> u64 {
        let n = self.next_connection_id.get() + 1;
        self.next_connection_id.set(n);
        n
    }

    /// A request id unique in this process: worker index and a per-worker counter.
    pub fn request_id(&self) -> String {
        let n = self.next_request_id.get() + 1;
        self.next_request_id.set(n);
        format!("{:x}-{}-{n:x}", self.shared.started_epoch_ms, self.index)
    }

    /// True once this worker takes no new connections (shutdown or retirement).
    pub fn winding_down(&self) -> bool {
        self.draining.get() || self.retiring.get()
    }

    /// Routes by a newly merged table from now on (the router's scores of the old one are dropped with it).
    pub fn install_table(&self, table: Arc<RoutingTable>) {
        self.routing.borrow_mut().table = table;
        self.router.borrow_mut().forget_scores();
    }

    pub fn begin_retire(&self) {
        if !self.retiring.replace(true) {
            self.retire_started.notify_all();
        }
    }

    pub fn begin_drain(&self) {
        if !self.draining.replace(true) {
            self.drain_started.notify_all();
        }
    }
}

/// Counts a connection (worker and process) for as long as it lives.
pub struct ConnectionGuard {
    worker: Rc<Worker>,
}

impl ConnectionGuard {
    pub fn new(worker: Rc<Worker>) -> Self {
        worker
            .live_connections
            .set(worker.live_connections.get() + 1);
        ConnectionGuard { worker }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.worker
            .live_connections
            .set(self.worker.live_connections.get() - 1);
        self.worker
            .shared
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        self.worker.connection_closed.notify_all();
    }
}
