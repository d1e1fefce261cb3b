//! One worker: a pinned thread running its own monoio runtime, its own SO_REUSEPORT listener, upstream pools, router
//! and counters. [`Shared`] is the little that is process-wide (read-only config, the connection count used for the
//! hard limit at accept time, and the control channels the status page and shutdown use); nothing on the request
//! path touches it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use monoio::net::TcpListener;

use crate::config::Config;
use crate::merger::Harvest;
use crate::methods::MethodKey;
use crate::recorder::Recorder;
use crate::routing::{LocalHealth, Router};
use crate::stats::ProviderStats;
use crate::sync::LocalNotify;
use crate::table::RoutingTable;
use crate::upstream::UpstreamClient;

/// How long a retired worker keeps long-lived (WebSocket) connections after a reload.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(600);

/// A message from another thread to a worker.
pub enum Control {
    /// Send back a copy of this worker's counters.
    Snapshot(oneshot::Sender<ProviderStats>),
    /// Stop accepting, drain connections, and return.
    Shutdown,
    /// A newer configuration took over: stop accepting, let HTTP connections finish their current request, keep
    /// WebSocket sessions until they end (or the retire timeout), then return.
    /// The sender is told once this worker no longer accepts connections.
    Retire(std::sync::mpsc::Sender<()>),
    /// Hand over the samples and health findings since the last harvest.
    Harvest(oneshot::Sender<Harvest>),
    /// A newly merged routing table.
    Table(Arc<RoutingTable>),
}

/// A worker's routing state: its copy of the merged table, its own breakers and cool-downs, and its recorder.
pub struct RoutingState {
    pub table: Arc<RoutingTable>,
    pub health: LocalHealth,
    pub recorder: Recorder,
    /// Unsupported (provider, method) pairs found since the last harvest.
    pub new_unsupported: Vec<(u32, MethodKey)>,
}

impl RoutingState {
    fn harvest(&mut self) -> Harvest {
        let now = Instant::now();
        Harvest {
            recorder: self.recorder.take(),
            breakers_open: self
                .health
                .breakers
                .iter()
                .enumerate()
                .filter_map(|(pid, b)| b.open_until().filter(|u| *u > now).map(|u| (pid as u32, u)))
                .collect(),
            cooldowns: self
                .health
                .cooldown_until
                .iter()
                .enumerate()
                .filter_map(|(pid, u)| u.filter(|u| *u > now).map(|u| (pid as u32, u)))
                .collect(),
            unsupported: std::mem::take(&mut self.new_unsupported),
        }
    }
}

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
    /// The supervisor (main thread): configuration changes go there, one at a time.
    pub supervisor: std::sync::mpsc::Sender<crate::runtime::SupervisorCommand>,
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
    pub routing: RefCell<RoutingState>,
    next_request_id: Cell<u64>,
    pub stats: RefCell<ProviderStats>,
    next_upstream_id: Cell<u64>,
    pub draining: Cell<bool>,
    /// A newer configuration generation serves new connections; this one winds down.
    pub retiring: Cell<bool>,
    /// Who waits for this worker to stop accepting after a reload.
    retire_acks: RefCell<Vec<std::sync::mpsc::Sender<()>>>,
    /// Fired once when draining starts: idle connections close.
    pub drain_started: Rc<LocalNotify>,
    /// Fired once when a reload retires this worker: it stops accepting; connections close after their next response.
    pub retire_started: Rc<LocalNotify>,
    /// Fired whenever a connection closes.
    pub connection_closed: Rc<LocalNotify>,
    pub live_connections: Cell<usize>,
    /// This worker's subscriptions.
    pub hub: crate::subscriptions::Hub,
    pub ws_clients: Cell<usize>,
    next_connection_id: Cell<u64>,
    sample_rng: Cell<u64>,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>) -> Self {
        let config = shared.config.clone();
        Worker {
            index,
            upstream: Rc::new(UpstreamClient::new(&config, shared.tls.clone())),
            router: RefCell::new(Router::new(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1))),
            routing: RefCell::new(RoutingState {
                table: shared.initial_table.clone(),
                health: LocalHealth::new(config.providers.len(), index as u64 + 1),
                recorder: Recorder::default(),
                new_unsupported: Vec::new(),
            }),
            next_request_id: Cell::new(0),
            stats: RefCell::new(ProviderStats::new(config.providers.len())),
            next_upstream_id: Cell::new(1),
            draining: Cell::new(false),
            retiring: Cell::new(false),
            retire_acks: RefCell::new(Vec::new()),
            drain_started: Rc::new(LocalNotify::default()),
            retire_started: Rc::new(LocalNotify::default()),
            connection_closed: Rc::new(LocalNotify::default()),
            live_connections: Cell::new(0),
            hub: crate::subscriptions::Hub::default(),
            ws_clients: Cell::new(0),
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

    fn begin_retire(&self) {
        if !self.retiring.replace(true) {
            self.retire_started.notify_all();
        }
    }

    fn begin_drain(&self) {
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
    fn new(worker: Rc<Worker>) -> Self {
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

/// Runs a worker until shutdown and drain complete.
pub async fn run(
    worker: Rc<Worker>,
    listener: TcpListener,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    {
        let worker = worker.clone();
        monoio::spawn(async move {
            while let Some(msg) = control.next().await {
                match msg {
                    Control::Snapshot(reply) => {
                        let mut stats = worker.stats.borrow().clone();
                        stats.worker = worker.index;
                        stats.ws = crate::stats::WsStats::from_worker(
                            worker.ws_clients.get(),
                            &worker.hub.stats(),
                        );
                        let _ = reply.send(stats);
                    }
                    Control::Shutdown => worker.begin_drain(),
                    Control::Retire(ack) => {
                        worker.retire_acks.borrow_mut().push(ack);
                        worker.begin_retire();
                    }
                    Control::Harvest(reply) => {
                        let _ = reply.send(worker.routing.borrow_mut().harvest());
                    }
                    Control::Table(table) => worker.routing.borrow_mut().table = table,
                }
            }
        });
    }
    {
        let worker = worker.clone();
        monoio::spawn(async move {
            while !worker.draining.get() {
                monoio::time::sleep(Duration::from_secs(5)).await;
                worker.upstream.maintain();
            }
        });
    }
    let settings = &worker.config.server;
    // Accepts are cancel-safe: on shutdown or retirement the pending accept is cancelled and awaited, so a
    // connection the kernel handed over in that instant is still served, never leaked unanswered.
    let (soft, hard) = (settings.soft_max_connections, settings.hard_max_connections);
    while !worker.winding_down() {
        let canceller = monoio::io::Canceller::new();
        let mut pending = Box::pin(listener.cancelable_accept(canceller.handle()));
        let stop = Box::pin(async {
            futures_util::future::select(
                Box::pin(worker.drain_started.notified()),
                Box::pin(worker.retire_started.notified()),
            )
            .await;
        });
        let accepted = match futures_util::future::select(&mut pending, stop).await {
            futures_util::future::Either::Left((accepted, _)) => accepted,
            futures_util::future::Either::Right(_) => {
                let _ = canceller.cancel();
                pending.await
            }
        };
        match accepted {
            Ok((stream, _peer)) => accept(&worker, stream, soft, hard),
            Err(e) if worker.winding_down() => {
                tracing::debug!(worker = worker.index, error = %e, "accept ended");
            }
            Err(e) => {
                tracing::warn!(worker = worker.index, error = %e, "accept failed");
                // Out of descriptors or similar: back off briefly rather than spin.
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    for ack in worker.retire_acks.borrow_mut().drain(..) {
        let _ = ack.send(());
    }
    let all_closed = || async {
        while worker.live_connections.get() > 0 {
            worker.connection_closed.notified().await;
        }
    };
    if worker.retiring.get() && !worker.draining.get() {
        // Retired by a reload: WebSocket sessions may run on (and keep their subscriptions) until they close,
        // a shutdown arrives, or the retire timeout passes; then they get 1001 like at shutdown.
        let shutdown = worker.drain_started.notified();
        let wait = async {
            monoio::select! {
                _ = all_closed() => {},
                _ = shutdown => {},
            }
        };
        let _ = monoio::time::timeout(RETIRE_TIMEOUT, wait).await;
        worker.begin_drain();
    }
    if monoio::time::timeout(settings.drain_timeout, all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = worker.index,
            connections = worker.live_connections.get(),
            "drain timeout reached; closing remaining connections"
        );
    }
}

fn accept(worker: &Rc<Worker>, stream: monoio::net::TcpStream, soft: usize, hard: usize) {
    let open = worker.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let guard = ConnectionGuard::new(worker.clone());
    let _ = stream.set_nodelay(true);
    let worker = worker.clone();
    if open > hard {
        monoio::spawn(async move {
            crate::server::refuse_overloaded(stream).await;
            drop(guard);
        });
        return;
    }
    monoio::spawn(async move {
        crate::server::serve_connection(worker, stream, open <= soft).await;
        drop(guard);
    });
}
