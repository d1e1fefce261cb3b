//! The operations API: `/api/health` (liveness, identity), `/api/status` (chains and providers with exact counters
//! gathered from every worker, secrets redacted) and `/api/chains`.

use std::rc::Rc;

use futures_channel::oneshot;
use serde::Serialize;

use crate::http::response::Response;
use crate::stats::ProviderStats;
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
}

#[derive(Serialize)]
struct ChainStatus {
    profile: String,
    name: String,
    chain_id: u64,
    aliases: Vec<String>,
    default_strategy: &'static str,
    providers: Vec<ProviderStatus>,
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_s: u64,
    workers: usize,
    connections: usize,
    chains: Vec<ChainStatus>,
}

/// Gathers every worker's counters (over the control channels) and sums them.
async fn gather(worker: &Worker) -> ProviderStats {
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
    total.merge(&worker.stats.borrow());
    for rx in pending {
        if let Ok(Ok(stats)) = monoio::time::timeout(std::time::Duration::from_secs(2), rx).await {
            total.merge(&stats);
        }
    }
    total
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
                    let state = match (c.requests, c.failures) {
                        (0, _) => "unknown",
                        (n, f) if f == n => "failing",
                        (_, 0) => "healthy",
                        _ => "degraded",
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
                    }
                })
                .collect();
            chains.push(ChainStatus {
                profile: profile.name.clone(),
                name: chain.name.clone(),
                chain_id: chain.chain_id,
                aliases: chain.aliases.clone(),
                default_strategy: chain.default_strategy.as_str(),
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
            chains,
        },
    )
}
