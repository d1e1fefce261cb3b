//! One typed snapshot of every worker of this node: counters gathered over the control channels and summed, and the
//! routing view of each provider. `/api/status`, Prometheus and the cluster node report render this one view; none of
//! them re-parses another's JSON.

use futures_channel::oneshot;
use serde::Serialize;

use crate::routing::breaker::BreakerState;
use crate::routing::table::Scope;
use crate::shard::control::Control;
use crate::shard::state::Worker;
use crate::telemetry::stats::ProviderStats;

/// Gathers every worker's counters (over the control channels) and sums them.
pub async fn gather(worker: &Worker) -> ProviderStats {
    gather_per_worker(worker).await.0
}

/// Every worker's counters (over the control channels): the sum, and each worker's client request count.
pub async fn gather_per_worker(worker: &Worker) -> (ProviderStats, Vec<(usize, u64)>) {
    let mut per_worker = Vec::with_capacity(worker.shared.workers);
    let mut total = ProviderStats::new(worker.config.providers.len());
    let mut pending = Vec::new();
    // Every worker answers over its control channel, this one included: its control task runs on this thread
    // while this request waits, and it is the one place that sees the worker's subscription hub.
    for control in &worker.shared.controls {
        let (tx, rx) = oneshot::channel();
        if control.unbounded_send(Control::Snapshot(tx)).is_ok() {
            pending.push(rx);
        }
    }
    for rx in pending {
        if let Ok(Ok(stats)) = monoio::time::timeout(std::time::Duration::from_secs(2), rx).await {
            per_worker.push((stats.worker, stats.client_requests));
            total.merge(&stats);
        }
    }
    per_worker.sort();
    (total, per_worker)
}

/// Measured routing view of one provider.
#[derive(Serialize, Default)]
pub struct RoutingView {
    pub breaker: &'static str,
    pub cooling_down: bool,
    pub disabled: Option<String>,
    pub head: Option<u64>,
    pub lag: Option<u64>,
    pub samples: u64,
    pub success_rate: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub from_snapshot: bool,
}

pub fn routing_view(worker: &Worker, pid: usize) -> RoutingView {
    let routing = worker.routing.borrow();
    let now = std::time::Instant::now();
    let state = routing.table.provider(pid).cloned().unwrap_or_default();
    let local = routing.health.breakers[pid].state(now);
    let breaker =
        if state.breaker_open_until.is_some_and(|u| u > now) && local == BreakerState::Closed {
            "open"
        } else {
            local.as_str()
        };
    let summary = routing
        .table
        .summary(pid, Scope::Provider)
        .cloned()
        .unwrap_or_default();
    RoutingView {
        breaker,
        cooling_down: routing.health.cooling_down(pid, now)
            || state.cooldown_until.is_some_and(|u| u > now),
        disabled: state.disabled.clone(),
        head: state.head,
        lag: state.lag,
        samples: summary.samples,
        success_rate: summary.success_rate(),
        p50_us: summary.p50_us,
        p90_us: summary.p90_us,
        p99_us: summary.p99_us,
        from_snapshot: summary.from_snapshot,
    }
}

#[derive(Serialize)]
pub struct ProviderStatus {
    pub id: String,
    pub name: String,
    pub url: String,
    pub ws_url: Option<String>,
    pub priority: i64,
    pub cost: f64,
    pub archival: bool,
    pub state: &'static str,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub avg_latency_us: u64,
    pub idle_connections_this_worker: usize,
    pub last_error: Option<String>,
    pub routing: RoutingView,
}

#[derive(Serialize)]
pub struct ChainStatus {
    pub profile: String,
    pub name: String,
    pub chain_id: u64,
    pub aliases: Vec<String>,
    pub default_strategy: &'static str,
    pub head: Option<u64>,
    /// The finalized head the response cache works with (chains that cache).
    pub finalized: Option<u64>,
    pub providers: Vec<ProviderStatus>,
}

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_s: u64,
    pub workers: usize,
    pub connections: usize,
    pub routing_generation: u64,
    pub hedges: u64,
    pub failovers: u64,
    pub websocket: crate::telemetry::stats::WsStats,
    /// In-flight multiplexing and the response cache, all workers.
    pub cache: crate::telemetry::stats::CacheStats,
    pub chains: Vec<ChainStatus>,
    /// Every worker's counters summed (not rendered).
    #[serde(skip)]
    pub totals: ProviderStats,
    /// Each worker's index and client request count (not rendered).
    #[serde(skip)]
    pub per_worker: Vec<(usize, u64)>,
}

/// This node's status, gathered from every worker: the one typed view that `/api/status`, the cluster report and
/// Prometheus render.
pub async fn status(worker: &Worker) -> Status {
    let (stats, per_worker) = gather_per_worker(worker).await;
    let config = &worker.config;
    let mut chains = Vec::new();
    for profile in &config.profiles {
        for chain in &profile.chains {
            let providers = chain
                .providers
                .iter()
                .map(|&pid| {
                    let p = &config.providers[pid];
                    let c = stats.providers.get(pid).cloned().unwrap_or_default();
                    let routing = routing_view(worker, pid);
                    let state = if routing.disabled.is_some() {
                        "disabled"
                    } else if routing.breaker != "closed" {
                        "circuit_open"
                    } else if routing.cooling_down {
                        "rate_limited"
                    } else {
                        match (c.requests, c.failures) {
                            (0, _) => "unknown",
                            (n, f) if f == n => "failing",
                            (_, 0) => "healthy",
                            _ => "degraded",
                        }
                    };
                    ProviderStatus {
                        id: p.id.clone(),
                        name: p.name.clone(),
                        url: p.url_redacted.clone(),
                        ws_url: p.ws_url_redacted.clone(),
                        priority: p.priority,
                        cost: p.cost,
                        archival: p.archival,
                        state,
                        requests: c.requests,
                        successes: c.successes,
                        failures: c.failures,
                        avg_latency_us: c.latency_us_total.checked_div(c.requests).unwrap_or(0),
                        idle_connections_this_worker: worker.upstream.idle_connections(pid),
                        last_error: c.last_error.as_deref().map(|e| config.redact(e)),
                        routing,
                    }
                })
                .collect();
            chains.push(ChainStatus {
                profile: profile.name.clone(),
                name: chain.name.clone(),
                chain_id: chain.chain_id,
                aliases: chain.aliases.clone(),
                default_strategy: chain.default_strategy.as_str(),
                head: worker
                    .routing
                    .borrow()
                    .table
                    .chain_heads
                    .get(chain.gid)
                    .copied()
                    .flatten(),
                finalized: worker.cache.finality.borrow().chain(chain.gid).finalized,
                providers,
            });
        }
    }
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: worker.shared.started.elapsed().as_secs(),
        workers: worker.shared.workers,
        connections: worker
            .shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        routing_generation: worker.routing.borrow().table.generation,
        hedges: worker.routing.borrow().table.hedges,
        failovers: worker.routing.borrow().table.failovers,
        websocket: stats.ws.clone(),
        cache: stats.cache.clone(),
        chains,
        totals: stats,
        per_worker,
    }
}
