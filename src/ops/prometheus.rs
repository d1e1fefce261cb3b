//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4), assembled from every worker's counters
//! (gathered over the control channels, never on the request path) and the merged routing table: client requests and
//! errors by code, upstream attempts per provider, latency quantiles per provider x method, breaker states, lag and
//! heads, hedges and failovers, WebSocket clients and subscriptions, multiplexing and the response cache, connections,
//! per-worker load and the cluster view. Names follow Prometheus conventions (counters end in `_total`, units in
//! names, bounded labels) and are listed in docs/CONTRACT.md; `deployment/grafana/lasso.json` and
//! `deployment/prometheus/alerts.yml` use them.

use std::fmt::Write as _;
use std::rc::Rc;

use crate::routing::table::Scope;
use crate::shard::state::Worker;
use crate::wire::http::response::Response;

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Renders the metrics page.
pub async fn render(worker: &Rc<Worker>) -> Response {
    let (stats, per_worker) = crate::ops::snapshot::gather_per_worker(worker).await;
    let config = &worker.config;
    let table = worker.routing.borrow().table.clone();
    let now = std::time::Instant::now();
    let mut o = Out(String::with_capacity(16 * 1024));

    o.family(
        "lasso_requests_total",
        "counter",
        "Client JSON-RPC requests received over HTTP and WebSocket.",
    );
    o.sample("lasso_requests_total", &[], stats.client_requests);
    o.family(
        "lasso_worker_requests_total",
        "counter",
        "Client requests per worker (load spread).",
    );
    for (w, n) in &per_worker {
        o.sample(
            "lasso_worker_requests_total",
            &[("worker", &w.to_string())],
            n,
        );
    }
    o.family(
        "lasso_client_errors_total",
        "counter",
        "JSON-RPC errors returned to clients, by error code.",
    );
    for (code, n) in &stats.client_errors {
        o.sample(
            "lasso_client_errors_total",
            &[("code", &code.to_string())],
            n,
        );
    }
    o.family(
        "lasso_connections",
        "gauge",
        "Open client connections (HTTP and WebSocket).",
    );
    o.sample(
        "lasso_connections",
        &[],
        worker
            .shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
    );

    o.family(
        "lasso_upstream_requests_total",
        "counter",
        "Attempts sent to providers, by outcome.",
    );
    for p in &config.providers {
        let c = stats.providers.get(p.pid).cloned().unwrap_or_default();
        let base = [
            ("profile", p.profile.as_str()),
            ("chain", p.chain.as_str()),
            ("provider", p.id.as_str()),
        ];
        o.sample(
            "lasso_upstream_requests_total",
            &[base[0], base[1], base[2], ("outcome", "success")],
            c.successes,
        );
        o.sample(
            "lasso_upstream_requests_total",
            &[base[0], base[1], base[2], ("outcome", "failure")],
            c.failures,
        );
    }
    o.family(
        "lasso_upstream_duration_seconds_total",
        "counter",
        "Time spent in upstream attempts (answered or not), summed; divide its rate by the attempts' rate for a mean.",
    );
    for p in &config.providers {
        let c = stats.providers.get(p.pid).cloned().unwrap_or_default();
        o.sample(
            "lasso_upstream_duration_seconds_total",
            &[
                ("profile", p.profile.as_str()),
                ("chain", p.chain.as_str()),
                ("provider", p.id.as_str()),
            ],
            c.latency_us_total as f64 / 1e6,
        );
    }
    // The quantiles are windowed (the routing table's window); a windowed sample count is not a cumulative
    // `_count`, so it is its own gauge and the summary carries quantiles only.
    o.family(
        "lasso_upstream_latency_seconds",
        "summary",
        "Windowed upstream latency quantiles of answered attempts, by provider and method.",
    );
    let mut keys: Vec<_> = table.summaries.iter().collect();
    keys.sort_by_key(|(k, _)| **k);
    let mut window_samples = Vec::with_capacity(keys.len());
    for (key, s) in keys {
        let Some(p) = config.providers.get(key.pid as usize) else {
            continue;
        };
        let method = match key.scope {
            Scope::Method(m) => m.name(),
            Scope::Class(c) => format!("class:{}", c.as_str()),
            Scope::Provider => "*".to_string(),
        };
        for (q, v) in [("0.5", s.p50_us), ("0.9", s.p90_us), ("0.99", s.p99_us)] {
            let labels = [
                ("profile", p.profile.as_str()),
                ("chain", p.chain.as_str()),
                ("provider", p.id.as_str()),
                ("method", method.as_str()),
                ("quantile", q),
            ];
            o.sample("lasso_upstream_latency_seconds", &labels, v as f64 / 1e6);
        }
        window_samples.push((p, method, s.samples));
    }
    o.family(
        "lasso_upstream_latency_window_samples",
        "gauge",
        "Answered attempts in the latency window behind lasso_upstream_latency_seconds.",
    );
    for (p, method, n) in window_samples {
        let labels = [
            ("profile", p.profile.as_str()),
            ("chain", p.chain.as_str()),
            ("provider", p.id.as_str()),
            ("method", method.as_str()),
        ];
        o.sample("lasso_upstream_latency_window_samples", &labels, n);
    }
    o.family(
        "lasso_provider_breaker_open",
        "gauge",
        "1 when the provider's circuit breaker is open on some worker.",
    );
    o.family(
        "lasso_provider_lag_blocks",
        "gauge",
        "Blocks behind the chain's consensus head.",
    );
    o.family(
        "lasso_provider_head_block",
        "gauge",
        "Latest block the provider reported.",
    );
    o.family(
        "lasso_provider_disabled",
        "gauge",
        "1 when the provider is disabled (wrong chain id).",
    );
    {
        let routing = worker.routing.borrow();
        for p in &config.providers {
            let state = table.provider(p.pid).cloned().unwrap_or_default();
            let open = state.breaker_open_until.is_some_and(|u| u > now)
                || routing.health.breakers[p.pid].state(now)
                    == crate::routing::breaker::BreakerState::Open;
            let labels = [
                ("profile", p.profile.as_str()),
                ("chain", p.chain.as_str()),
                ("provider", p.id.as_str()),
            ];
            o.sample("lasso_provider_breaker_open", &labels, u8::from(open));
            if let Some(lag) = state.lag {
                o.sample("lasso_provider_lag_blocks", &labels, lag);
            }
            if let Some(head) = state.head {
                o.sample("lasso_provider_head_block", &labels, head);
            }
            o.sample(
                "lasso_provider_disabled",
                &labels,
                u8::from(state.disabled.is_some()),
            );
        }
    }
    o.family(
        "lasso_chain_head_block",
        "gauge",
        "Consensus head block per chain.",
    );
    for (profile, chain) in config.all_chains() {
        if let Some(head) = table.chain_heads.get(chain.gid).copied().flatten() {
            o.sample(
                "lasso_chain_head_block",
                &[("profile", &profile.name), ("chain", &chain.name)],
                head,
            );
        }
    }
    o.family(
        "lasso_hedges_total",
        "counter",
        "Second attempts started because the first was slow.",
    );
    o.sample("lasso_hedges_total", &[], table.hedges);
    o.family(
        "lasso_failovers_total",
        "counter",
        "Requests answered by another provider after a failed attempt.",
    );
    o.sample("lasso_failovers_total", &[], table.failovers);

    let ws = &stats.ws;
    o.family(
        "lasso_ws_clients",
        "gauge",
        "Open client WebSocket connections.",
    );
    o.sample("lasso_ws_clients", &[], ws.clients);
    o.family(
        "lasso_ws_subscriptions",
        "gauge",
        "Client subscriptions by kind.",
    );
    o.sample(
        "lasso_ws_subscriptions",
        &[("kind", "newHeads")],
        ws.subscriptions_new_heads,
    );
    o.sample(
        "lasso_ws_subscriptions",
        &[("kind", "logs")],
        ws.subscriptions_logs,
    );
    o.sample(
        "lasso_ws_subscriptions",
        &[("kind", "newPendingTransactions")],
        ws.subscriptions_pending_transactions,
    );
    o.family(
        "lasso_ws_upstream_subscriptions",
        "gauge",
        "Subscriptions held open at providers.",
    );
    o.sample(
        "lasso_ws_upstream_subscriptions",
        &[],
        ws.upstream_subscriptions,
    );
    o.family(
        "lasso_ws_failovers_total",
        "counter",
        "Subscription feeds moved to another provider.",
    );
    o.sample("lasso_ws_failovers_total", &[], ws.failovers);
    o.family(
        "lasso_ws_backfilled_events_total",
        "counter",
        "Events fetched over HTTP to fill subscription gaps.",
    );
    o.sample(
        "lasso_ws_backfilled_events_total",
        &[],
        ws.backfilled_events,
    );
    o.family(
        "lasso_ws_delivered_events_total",
        "counter",
        "Subscription events delivered to clients.",
    );
    o.sample("lasso_ws_delivered_events_total", &[], ws.delivered_events);
    o.family(
        "lasso_event_stream_subscribers",
        "gauge",
        "Routing-event streams (SSE) open on this node.",
    );
    o.sample(
        "lasso_event_stream_subscribers",
        &[],
        crate::telemetry::events::subscribers(),
    );
    o.family(
        "lasso_events_dropped_total",
        "counter",
        "Routing events dropped for lack of room (a worker's buffer, a subscriber's queue, the cluster outbox).",
    );
    o.sample(
        "lasso_events_dropped_total",
        &[],
        crate::telemetry::events::dropped(),
    );
    o.family(
        "lasso_events_sampled_out_total",
        "counter",
        "Plain successful routing events not published past the per-worker allowance per profile and second.",
    );
    o.sample(
        "lasso_events_sampled_out_total",
        &[],
        crate::telemetry::events::sampled_out(),
    );
    o.family(
        "lasso_indexing_total",
        "counter",
        "Indexer-grade handling: log queries split, their upstream calls and bisections, heads floored, latest pinned, sends answered idempotently or broadcast.",
    );
    for (kind, n) in stats.indexing.kinds() {
        o.sample("lasso_indexing_total", &[("kind", kind)], n);
    }
    let cache = &stats.cache;
    for (name, kind, help, value) in [
        (
            "lasso_multiplexed_total",
            "counter",
            "Reads answered from an identical read's upstream call in flight on the same worker.",
            cache.multiplexed,
        ),
        (
            "lasso_cache_hits_total",
            "counter",
            "Reads answered from the response cache.",
            cache.hits,
        ),
        (
            "lasso_cache_misses_total",
            "counter",
            "Cacheable reads not found in the response cache.",
            cache.misses,
        ),
        (
            "lasso_cache_stored_total",
            "counter",
            "Answers kept in the response cache.",
            cache.stored,
        ),
        (
            "lasso_cache_evictions_total",
            "counter",
            "Cached answers evicted by the byte bound.",
            cache.evictions,
        ),
        (
            "lasso_cache_expired_total",
            "counter",
            "Cached answers dropped after their TTL.",
            cache.expired,
        ),
        (
            "lasso_cache_purged_total",
            "counter",
            "Cached answers dropped by reorgs.",
            cache.purged,
        ),
        (
            "lasso_cache_reorgs_total",
            "counter",
            "Reorgs applied to the response cache (once per worker).",
            cache.reorgs,
        ),
        (
            "lasso_cache_bypassed_total",
            "counter",
            "Cacheable reads that asked to bypass the cache (X-Lasso-Cache: bypass).",
            cache.bypassed,
        ),
        (
            "lasso_cache_entries",
            "gauge",
            "Answers in the response cache.",
            cache.entries,
        ),
        (
            "lasso_cache_bytes",
            "gauge",
            "Bytes held by the response cache (keys, answers and per-entry overhead).",
            cache.bytes,
        ),
        (
            "lasso_cache_max_bytes",
            "gauge",
            "The response cache's byte bound (all workers).",
            cache.max_bytes,
        ),
        (
            "lasso_cache_redis_hits_total",
            "counter",
            "Reads answered from Redis (the shared cache layer).",
            cache.redis.hits,
        ),
        (
            "lasso_cache_redis_misses_total",
            "counter",
            "Reads asked of Redis and not found there.",
            cache.redis.misses,
        ),
        (
            "lasso_cache_redis_stored_total",
            "counter",
            "Answers about finalized blocks written to Redis.",
            cache.redis.stored,
        ),
        (
            "lasso_cache_redis_errors_total",
            "counter",
            "Redis commands that failed or timed out (the read went on to the providers).",
            cache.redis.errors,
        ),
        (
            "lasso_cache_redis_skipped_total",
            "counter",
            "Redis commands not sent: circuit open or every connection busy.",
            cache.redis.skipped,
        ),
        (
            "lasso_cache_redis_circuit_opened_total",
            "counter",
            "Times a worker stopped asking Redis after consecutive failures.",
            cache.redis.circuit_opened,
        ),
        (
            "lasso_cache_redis_circuit_open",
            "gauge",
            "Workers not asking Redis now (circuit open).",
            cache.redis.circuit_open,
        ),
    ] {
        o.family(name, kind, help);
        o.sample(name, &[], value);
    }
    let (joins, leaves) = crate::ops::cluster::counters();
    o.family(
        "lasso_cluster_joins_total",
        "counter",
        "Cluster nodes that joined (answered after not answering).",
    );
    o.sample("lasso_cluster_joins_total", &[], joins);
    o.family(
        "lasso_cluster_leaves_total",
        "counter",
        "Cluster nodes that left (stopped answering or were no longer discovered).",
    );
    o.sample("lasso_cluster_leaves_total", &[], leaves);
    o.family(
        "lasso_cluster_nodes",
        "gauge",
        "Cluster nodes connected, this one included.",
    );
    o.sample(
        "lasso_cluster_nodes",
        &[],
        crate::ops::cluster::connected() + 1,
    );
    let cluster = crate::ops::cluster::health(worker.shared.region.as_deref());
    o.family(
        "lasso_cluster_enabled",
        "gauge",
        "1 when clustering is configured (discovery and a secret).",
    );
    o.sample("lasso_cluster_enabled", &[], u8::from(cluster.enabled));
    o.family(
        "lasso_cluster_peers",
        "gauge",
        "Other cluster nodes answering (this one excluded).",
    );
    o.sample("lasso_cluster_peers", &[], cluster.nodes_connected);
    o.family(
        "lasso_cluster_nodes_expected",
        "gauge",
        "Nodes expected in the cluster (EXPECTED_NODE_COUNT, else the nodes discovered), this one included.",
    );
    o.sample("lasso_cluster_nodes_expected", &[], cluster.nodes_expected);

    let (exported, dropped, failed) = crate::telemetry::otlp::counters();
    o.family(
        "lasso_trace_spans_exported_total",
        "counter",
        "Trace spans the OTLP collector accepted (telemetry.traces).",
    );
    o.sample("lasso_trace_spans_exported_total", &[], exported);
    o.family(
        "lasso_trace_spans_dropped_total",
        "counter",
        "Trace spans dropped: exporter queue full, export failed, or over the per-request span limit.",
    );
    o.sample("lasso_trace_spans_dropped_total", &[], dropped);
    o.family(
        "lasso_trace_export_failures_total",
        "counter",
        "OTLP export requests that failed (connect, timeout or a non-2xx answer).",
    );
    o.sample("lasso_trace_export_failures_total", &[], failed);
    usage(&mut o);

    let mut resp = Response::json(200, o.0.into_bytes());
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp
}

/// Metered usage per key id, chain and method (`access::usage`): only when some request carried a key.
fn usage(o: &mut Out) {
    if crate::access::shared::in_use() {
        o.family(
            "lasso_access_redis_fail_open_total",
            "counter",
            "Requests let through on the local limit share because Redis (access.redis_url) did not answer.",
        );
        o.sample(
            "lasso_access_redis_fail_open_total",
            &[],
            crate::access::shared::fail_open_total(),
        );
    }
    let totals = crate::access::usage::totals();
    if totals.is_empty() {
        return;
    }
    o.family(
        "lasso_access_requests_total",
        "counter",
        "Calls admitted with an API key, by key id, chain and method (batch members each).",
    );
    for ((key, chain, method), c) in &totals {
        let labels = [
            ("key", key.as_str()),
            ("chain", chain.as_str()),
            ("method", method.as_str()),
        ];
        o.sample("lasso_access_requests_total", &labels, c.requests);
    }
    o.family(
        "lasso_access_compute_units_total",
        "counter",
        "Compute units by key id, chain and method: (bytes in + bytes out) times the method weight.",
    );
    for ((key, chain, method), c) in &totals {
        let labels = [
            ("key", key.as_str()),
            ("chain", chain.as_str()),
            ("method", method.as_str()),
        ];
        o.sample("lasso_access_compute_units_total", &labels, c.units.round());
    }
}
