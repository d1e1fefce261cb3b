//! The JSON-RPC pipeline for one request, whatever the transport, in phases: parse lazily (a size- and depth-bounded
//! inspection, `wire::jsonrpc`), answer locally what needs no provider, plan each call (`plan`), forward it with
//! failover and hedging inside its deadline (`forward`, one attempt at a time in `attempt`), restore the client's id
//! by splicing bytes into the provider's reply, reassemble batches in order (`batch`), then observe once (`observe`:
//! error accounting, access log, events, client metadata). The answer is a transport-neutral [`Reply`].

use std::rc::Rc;
use std::time::Instant;

use crate::config::Chain;
use crate::error::RpcError;
use crate::rpc::batch::batch;
use crate::rpc::indexing;
use crate::rpc::meta::{Meta, MetaMode};
use crate::rpc::observe::{Observed, Served, observe};
pub use crate::rpc::plan::Transport;
use crate::rpc::plan::local_answer;
use crate::rpc::reply::Reply;
use crate::rpc::reuse::{self, Fetched};
use crate::rpc::subcall::Forwarding;
use crate::rpc::target::Target;
use crate::rpc::{heads, logs_split, subcall};
use crate::shard::state::Worker;
use crate::telemetry::trace::{RequestTrace, Value};
use crate::upstream::stream::BodyTail;
use crate::wire::jsonrpc::{self, CallView, RequestBody};

/// A client's JSON-RPC body, with its parse when the edge made it already (the access checks read its methods), so
/// it is parsed once.
pub struct ClientBody<'a> {
    pub bytes: &'a [u8],
    pub parsed: Option<Result<RequestBody<'a>, RpcError>>,
}

impl<'a> From<&'a [u8]> for ClientBody<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        ClientBody {
            bytes,
            parsed: None,
        }
    }
}

/// Answers one JSON-RPC request (single or batch) for `target`.
pub async fn handle(
    worker: &Rc<Worker>,
    target: Target,
    body: ClientBody<'_>,
    meta_mode: MetaMode,
    transport: Transport,
    traceparent: Option<&str>,
    key_id: Option<&str>,
) -> Reply {
    worker.stats.borrow_mut().client_requests += 1;
    // Tracing off: this one branch is all it costs.
    let trace = if worker.config.telemetry.traces.enabled() {
        RequestTrace::begin(&worker.config.telemetry.traces, traceparent)
    } else {
        None
    };
    let profile = &worker.config.profiles[target.profile];
    let request = Observed {
        worker,
        profile: &profile.name,
        chain: &profile.chains[target.chain],
        started: Instant::now(),
        meta_mode,
        sampled: worker.sample_log(),
        events: crate::telemetry::events::active(),
        key_id,
    };
    // Routing metadata is collected when the client asks, for sampled logs, or for SSE subscribers (events).
    let mut meta = if meta_mode != MetaMode::Off || request.sampled {
        Some(Meta::new(worker.request_id(), target.pick))
    } else {
        request.events.then(|| Meta::for_events(target.pick))
    };
    // A large answer may go to an HTTP client as it arrives when nothing is added to its body afterwards.
    let stream = transport == Transport::Http && meta_mode != MetaMode::Body;
    let served = serve(
        worker,
        target,
        request.chain,
        body,
        transport,
        meta.as_mut(),
        Forwarding {
            trace: trace.as_ref(),
            stream,
        },
    )
    .await;
    if let Some(trace) = trace {
        finish_trace(trace, &request, &served, transport);
    }
    observe(&request, served, meta)
}

/// Ends the request's span (name: the JSON-RPC method) and queues the trace for export.
fn finish_trace(
    trace: RequestTrace,
    request: &Observed<'_>,
    served: &Served,
    transport: Transport,
) {
    let (method, status, error) = match served {
        Served::Answered { reply, method } => (method.as_str(), reply.status, None),
        Served::Failed { method, error, .. } => (
            method.as_str(),
            error.http_status(),
            Some((error.code(), request.worker.config.redact(&error.message()))),
        ),
    };
    // Client text, bounded as in routing events.
    let name = crate::telemetry::events::RoutingEvent::client_text(method).to_string();
    let mut attributes = vec![
        ("rpc.system", Value::Str("jsonrpc".into())),
        ("rpc.method", Value::Str(name.clone())),
        ("lasso.profile", Value::Str(request.profile.to_string())),
        ("lasso.chain", Value::Str(request.chain.name.clone())),
        (
            "lasso.transport",
            Value::Str(
                match transport {
                    Transport::Http => "http",
                    Transport::WebSocket => "websocket",
                }
                .into(),
            ),
        ),
        ("http.response.status_code", Value::Int(i64::from(status))),
        ("lasso.worker", Value::Int(request.worker.index as i64)),
    ];
    let message = error.map(|(code, message)| {
        attributes.push(("rpc.jsonrpc.error_code", Value::Int(i64::from(code))));
        message
    });
    if let Some(finished) = trace.finish(name, attributes, message) {
        crate::telemetry::otlp::submit(finished);
    }
}

/// Parses and serves the request; observation is the caller's.
async fn serve(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: ClientBody<'_>,
    transport: Transport,
    meta: Option<&mut Meta>,
    how: Forwarding<'_>,
) -> Served {
    let failed = |method: &str, error, id: &[u8]| Served::Failed {
        method: method.to_string(),
        error,
        id: id.to_vec(),
    };
    let parsed = body
        .parsed
        .unwrap_or_else(|| jsonrpc::parse_request(body.bytes));
    let body = body.bytes;
    let items = match parsed {
        Ok(RequestBody::Single(call)) => {
            let client_id = call.id.clone().map(|r| &body[r]);
            return match (
                client_id,
                call_one(worker, target, chain, body, &call, meta, how).await,
            ) {
                (None, _) => Served::Answered {
                    reply: Reply::nothing(),
                    method: call.method.to_string(),
                },
                (Some(_), Ok((reply, tail))) => Served::Answered {
                    reply: Reply::streamed(reply, tail),
                    method: call.method.to_string(),
                },
                (Some(id), Err(e)) => failed(&call.method, e, id),
            };
        }
        Ok(RequestBody::Batch(items)) => items,
        Err(e) => return failed("-", e, b"null"),
    };
    let max = worker.config.server.max_batch_size;
    if items.len() > max {
        let e = RpcError::InvalidRequest(format!(
            "batch of {} exceeds the limit of {max}",
            items.len()
        ));
        return failed("batch", e, b"null");
    }
    Served::Answered {
        reply: batch(worker, target, body, &items, meta, transport, how.trace).await,
        method: format!("batch({})", items.len()),
    }
}

/// Serves a single call: locally, or through the plan's providers (`indexing` first: split log queries, consistent
/// heads, safe sends), with the client's id restored. A streamed answer comes with its rest ([`BodyTail`]) after the
/// first bytes.
async fn call_one(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    how: Forwarding<'_>,
) -> Result<(Vec<u8>, Option<BodyTail>), RpcError> {
    if let Some(answer) = local_answer(chain, body, call, Transport::Http) {
        return answer.map(|a| (a, None));
    }
    // Calls `indexing` serves alone (split log queries, sends, pinned reads) are not reused as they are.
    let reusable = !indexing::serves_alone(worker, chain, body, call);
    match reusable
        .then(|| reuse::prepare(worker, target, chain, body, call))
        .flatten()
    {
        Some(prepared) => reuse_call(worker, target, chain, body, call, meta, how, prepared).await,
        None => indexing::serve(worker, target, chain, body, call, meta, how).await,
    }
}

/// Serves a reusable call: from the cache, an identical call in flight, or forwarded (a large answer may stream,
/// and is then neither shared nor kept). An `eth_blockNumber` answer is raised to the chain's floor, and an
/// `eth_getLogs` a provider refused as too large is bisected, as `indexing` does for calls it serves.
#[allow(clippy::too_many_arguments)]
async fn reuse_call(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    how: Forwarding<'_>,
    prepared: reuse::Prepared,
) -> Result<(Vec<u8>, Option<BodyTail>), RpcError> {
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    // An answer the cache may keep is read whole; one only shared in flight may stream.
    let how = Forwarding {
        stream: how.stream && !prepared.keeps(),
        ..how
    };
    let fetch = || async {
        let mut forwarded =
            match subcall::forward_raw(worker, target, chain, body, call, meta, how).await {
                Ok(forwarded) => forwarded,
                Err(e) => return Fetched::Whole(Err(e)),
            };
        if let Some(tail) = forwarded.tail.take() {
            let mut first = forwarded.body;
            first.splice(forwarded.views[0].id.clone(), client_id.iter().copied());
            return Fetched::Streamed(first, tail);
        }
        let answer = reuse::answer_of(&forwarded);
        if call.method == "eth_getLogs" && logs_split::refused(&answer.body) {
            let first = Some(answer.with_id(client_id));
            let split = logs_split::get_logs_after(
                worker, target, chain, body, call, None, how.trace, first,
            );
            return Fetched::Whole(split.await.and_then(reuse::answer_of_reply));
        }
        Fetched::Whole(Ok(answer))
    };
    let (reply, tail) = reuse::serve(worker, prepared, client_id, fetch).await?;
    if call.method == "eth_blockNumber" && tail.is_none() {
        let floored = heads::floored(worker, chain, &reply, client_id);
        return Ok((floored.unwrap_or(reply), None));
    }
    Ok((reply, tail))
}
