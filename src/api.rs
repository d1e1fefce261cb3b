//! The operations API: `/api/health` (liveness, identity), `/api/status` (chains and providers with exact counters
//! gathered from every worker, secrets redacted) and `/api/chains`.

use std::rc::Rc;

use futures_channel::oneshot;
use serde::Serialize;

use crate::breaker::BreakerState;
use crate::errors::{ResourceKind, RpcError};
use crate::http::response::Response;
use crate::stats::ProviderStats;
use crate::table::{Scope, Summary};
use crate::worker::{Control, Worker};

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    Response::json(
        status,
        sonic_rs::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    version: &'a str,
    uptime_s: u64,
    node_id: &'a str,
    region: Option<&'a str>,
    workers: usize,
    cluster: crate::cluster::HealthBlock,
}

pub fn health(worker: &Worker) -> Response {
    let shared = &worker.shared;
    let draining = worker.draining.get();
    json(
        if draining { 503 } else { 200 },
        &Health {
            status: if draining { "draining" } else { "ok" },
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: shared.started.elapsed().as_secs(),
            node_id: &shared.node_id,
            region: shared.region.as_deref(),
            workers: shared.workers,
            cluster: crate::cluster::health(shared.region.as_deref()),
        },
    )
}

#[derive(Serialize)]
struct ChainSummary<'a> {
    profile: &'a str,
    name: &'a str,
    chain_id: u64,
    aliases: &'a [String],
    providers: usize,
}

#[derive(Serialize)]
struct Chains<'a> {
    chains: Vec<ChainSummary<'a>>,
}

pub fn chains(worker: &Worker) -> Response {
    let config = &worker.config;
    let chains = config
        .profiles
        .iter()
        .flat_map(|p| {
            p.chains.iter().map(move |c| ChainSummary {
                profile: &p.name,
                name: &c.name,
                chain_id: c.chain_id,
                aliases: &c.aliases,
                providers: c.providers.len(),
            })
        })
        .collect();
    json(200, &Chains { chains })
}

/// Measured routing view of one provider.
#[derive(Serialize, Default)]
struct RoutingView {
    breaker: &'static str,
    cooling_down: bool,
    disabled: Option<String>,
    head: Option<u64>,
    lag: Option<u64>,
    samples: u64,
    success_rate: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    from_snapshot: bool,
}

fn routing_view(worker: &Worker, pid: usize) -> RoutingView {
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
struct ProviderStatus {
    id: String,
    name: String,
    url: String,
    ws_url: Option<String>,
    priority: i64,
    cost: f64,
    archival: bool,
    state: &'static str,
    requests: u64,
    successes: u64,
    failures: u64,
    avg_latency_us: u64,
    idle_connections_this_worker: usize,
    last_error: Option<String>,
    routing: RoutingView,
}

#[derive(Serialize)]
struct ChainStatus {
    profile: String,
    name: String,
    chain_id: u64,
    aliases: Vec<String>,
    default_strategy: &'static str,
    head: Option<u64>,
    providers: Vec<ProviderStatus>,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_s: u64,
    workers: usize,
    connections: usize,
    routing_generation: u64,
    hedges: u64,
    failovers: u64,
    websocket: crate::stats::WsStats,
    chains: Vec<ChainStatus>,
}

/// Gathers every worker's counters (over the control channels) and sums them.
async fn gather(worker: &Worker) -> ProviderStats {
    gather_per_worker(worker).await.0
}

/// Every worker's counters (over the control channels): the sum, and each worker's client request count.
pub async fn gather_per_worker(worker: &Worker) -> (ProviderStats, Vec<(usize, u64)>) {
    let mut per_worker = Vec::with_capacity(worker.shared.workers);
    let mut total = ProviderStats::new(worker.config.providers.len());
    let mut pending = Vec::new();
    for (i, control) in worker.shared.controls.iter().enumerate() {
        if i == worker.index {
            continue;
        }
        let (tx, rx) = oneshot::channel();
        if control.unbounded_send(Control::Snapshot(tx)).is_ok() {
            pending.push(rx);
        }
    }
    let mut mine = worker.stats.borrow().clone();
    mine.ws = crate::stats::WsStats::from_worker(worker.ws_clients.get(), &worker.hub.stats());
    mine.worker = worker.index;
    per_worker.push((worker.index, mine.client_requests));
    total.merge(&mine);
    for rx in pending {
        if let Ok(Ok(stats)) = monoio::time::timeout(std::time::Duration::from_secs(2), rx).await {
            per_worker.push((stats.worker, stats.client_requests));
            total.merge(&stats);
        }
    }
    per_worker.sort();
    (total, per_worker)
}

pub async fn status(worker: &Rc<Worker>) -> Response {
    let stats = gather(worker).await;
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
                providers,
            });
        }
    }
    json(
        200,
        &Status {
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
            chains,
        },
    )
}

#[derive(Serialize)]
struct MethodMetrics {
    method: String,
    samples: u64,
    attempts: u64,
    success_rate: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
}

#[derive(Serialize)]
struct ProviderMetrics {
    id: String,
    name: String,
    requests: u64,
    routing: RoutingView,
    methods: Vec<MethodMetrics>,
}

#[derive(Serialize)]
struct ChainMetrics {
    profile: String,
    chain: String,
    chain_id: u64,
    head: Option<u64>,
    window_s: f64,
    providers: Vec<ProviderMetrics>,
}

fn method_metrics(name: String, s: &Summary) -> MethodMetrics {
    MethodMetrics {
        method: name,
        samples: s.samples,
        attempts: s.attempts,
        success_rate: s.success_rate(),
        p50_us: s.p50_us,
        p90_us: s.p90_us,
        p99_us: s.p99_us,
    }
}

/// `GET /api/metrics/:chain[?profile=name]`: per provider and per method latency quantiles and success rates.
pub async fn chain_metrics(worker: &Rc<Worker>, chain_key: &str, query: &str) -> Response {
    let config = &worker.config;
    let profile_name = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "profile")
        .map(|(_, v)| v);
    let profile = match profile_name {
        None => &config.profiles[0],
        Some(name) => match config.profile(name) {
            Some((_, p)) => p,
            None => {
                let e = RpcError::NotFound {
                    kind: ResourceKind::Profile,
                    name: name.to_string(),
                };
                return Response::json(e.http_status(), e.to_response(b"null"));
            }
        },
    };
    let Some((_, chain)) = profile.chain(chain_key) else {
        let e = RpcError::NotFound {
            kind: ResourceKind::Chain,
            name: chain_key.to_string(),
        };
        return Response::json(e.http_status(), e.to_response(b"null"));
    };
    let stats = gather(worker).await;
    let table = worker.routing.borrow().table.clone();
    let providers = chain
        .providers
        .iter()
        .map(|&pid| {
            let p = &config.providers[pid];
            let mut methods: Vec<MethodMetrics> = table
                .summaries
                .iter()
                .filter(|(k, _)| k.pid as usize == pid)
                .filter_map(|(k, s)| match k.scope {
                    Scope::Method(m) => Some(method_metrics(m.name(), s)),
                    Scope::Class(c) => Some(method_metrics(format!("class:{}", c.as_str()), s)),
                    Scope::Provider => None,
                })
                .collect();
            methods.sort_by(|a, b| a.method.cmp(&b.method));
            ProviderMetrics {
                id: p.id.clone(),
                name: p.name.clone(),
                requests: stats.providers.get(pid).map_or(0, |c| c.requests),
                routing: routing_view(worker, pid),
                methods,
            }
        })
        .collect();
    json(
        200,
        &ChainMetrics {
            profile: profile.name.clone(),
            chain: chain.name.clone(),
            chain_id: chain.chain_id,
            head: table.chain_heads.get(chain.gid).copied().flatten(),
            window_s: (config.routing.merge_interval * config.routing.window_intervals as u32)
                .as_secs_f64(),
            providers,
        },
    )
}
