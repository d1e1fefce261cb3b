//! The observe step, run once after a request's reply is known (like pingora's logging phase): count and log a
//! whole-request error, publish the routing event to SSE subscribers, write the sampled access log line, and add the
//! routing metadata the client asked for. Nothing before this step logs a request or publishes it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::Chain;
use crate::error::RpcError;
use crate::rpc::meta::{Meta, MetaMode};
use crate::rpc::reply::Reply;
use crate::shard::state::Worker;
use crate::telemetry::events::{self, RoutingEvent};
use crate::telemetry::log_limit::Warning;

/// What the pipeline produced for one request, before observation.
pub(crate) enum Served {
    /// An answer (single or batch; a batch's per-member errors are inside it).
    Answered { reply: Reply, method: String },
    /// The whole request failed: answered with the error under the client's id (raw JSON).
    Failed {
        method: String,
        error: RpcError,
        id: Vec<u8>,
    },
}

/// Who asked, and what observation they are owed.
pub(crate) struct Observed<'a> {
    pub worker: &'a Worker,
    pub profile: &'a str,
    pub chain: &'a Chain,
    pub started: Instant,
    pub meta_mode: MetaMode,
    /// This request is in the access-log sample.
    pub sampled: bool,
    /// Someone subscribes to routing events.
    pub events: bool,
    /// The id of the API key the request came with (never the key itself).
    pub key_id: Option<&'a str>,
}

/// Observes one served request and returns the reply to send.
pub(crate) fn observe(request: &Observed<'_>, served: Served, meta: Option<Meta>) -> Reply {
    let (reply, method) = match served {
        Served::Failed { method, error, id } => return whole_error(request, &method, &error, &id),
        Served::Answered { reply, method } => (reply, method),
    };
    let Some(meta) = meta else { return reply };
    if request.events {
        publish(request, &meta, &method, reply.status);
    }
    if request.sampled {
        access_log(request, &meta, &method, reply.status);
    }
    if request.meta_mode == MetaMode::Off {
        return reply;
    }
    meta.apply(
        reply,
        request.meta_mode,
        request.started.elapsed(),
        request.worker,
    )
}

/// A whole request answered with an error: counted, always logged (not published), and returned.
fn whole_error(request: &Observed<'_>, method: &str, e: &RpcError, id: &[u8]) -> Reply {
    let worker = request.worker;
    worker.count_error(e.code());
    if let Some(suppressed) = worker.log_limit.allow(Warning::RequestFailed) {
        tracing::warn!(
            target: "lasso::access",
            chain = %request.chain.name,
            method = ?RoutingEvent::client_text(method),
            code = e.code(),
            status = e.http_status(),
            error = %worker.config.redact(&e.message()),
            total_us = request.started.elapsed().as_micros() as u64,
            suppressed,
            "request failed"
        );
    }
    Reply::error(e, id)
}

fn publish(request: &Observed<'_>, meta: &Meta, method: &str, status: u16) {
    let worker = request.worker;
    let strategy = match meta.strategy {
        Some(s) => s.as_str(),
        None if meta.pick_provider => "provider",
        None => "-",
    };
    let ok = status < 400;
    let notable = events::notable(ok, meta.retries, meta.hedged);
    let allowance = worker.config.server.event_stream_successes_per_s;
    events::publish(request.profile, notable, allowance, || RoutingEvent {
        ts_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        profile: request.profile,
        key_id: request.key_id,
        chain: &request.chain.name,
        method: RoutingEvent::client_text(method),
        provider: meta.provider.as_deref(),
        strategy,
        latency_us: request.started.elapsed().as_micros() as u64,
        upstream_us: meta.upstream.as_micros() as u64,
        retries: meta.retries,
        hedged: meta.hedged,
        ok,
        status,
        source_node: &worker.shared.node_id,
        source_region: worker.shared.region.as_deref(),
        worker: worker.index,
    });
}

fn access_log(request: &Observed<'_>, meta: &Meta, method: &str, status: u16) {
    tracing::info!(
        target: "lasso::access",
        request_id = %meta.request_id,
        chain = %request.chain.name,
        method = ?RoutingEvent::client_text(method),
        provider = meta.provider.as_deref().unwrap_or("-"),
        strategy = meta.strategy.map_or("-", |s| s.as_str()),
        status,
        retries = meta.retries,
        hedged = meta.hedged,
        upstream_us = meta.upstream.as_micros() as u64,
        total_us = request.started.elapsed().as_micros() as u64,
        "request"
    );
}
