//! The operations API: `/api/health` (liveness, identity), `/api/status` (chains and providers with exact counters
//! gathered from every worker, secrets redacted) and `/api/chains`.

use std::rc::Rc;

use serde::Serialize;

use crate::ops::error::OpsError;

use crate::routing::table::{Scope, Summary};
use crate::shard::state::Worker;
use crate::wire::http::response::Response;

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
    cluster: crate::ops::cluster::HealthBlock,
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
            cluster: crate::ops::cluster::health(shared.region.as_deref()),
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

/// `GET /api/status`.
pub async fn status(worker: &Worker) -> Response {
    json(200, &crate::ops::snapshot::status(worker).await)
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
    routing: crate::ops::snapshot::RoutingView,
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
                return OpsError::not_found(format!("unknown profile '{name}'")).into();
            }
        },
    };
    let Some((_, chain)) = profile.chain(chain_key) else {
        return OpsError::not_found(format!("unknown chain '{chain_key}'")).into();
    };
    let stats = crate::ops::snapshot::gather(worker).await;
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
                routing: crate::ops::snapshot::routing_view(worker, pid),
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
