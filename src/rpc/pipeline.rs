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
use crate::rpc::filters;
use crate::rpc::forward::{Upstream, forward};
use crate::rpc::meta::{Meta, MetaMode};
use crate::rpc::observe::{Observed, Served, observe};
pub use crate::rpc::plan::Transport;
use crate::rpc::plan::{local_answer, plan};
use crate::rpc::reply::Reply;
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::wire::jsonrpc::{self, CallView, RequestBody};

/// Answers one JSON-RPC request (single or batch) for `target`.
pub async fn handle(
    worker: &Rc<Worker>,
    target: Target,
    body: &[u8],
    meta_mode: MetaMode,
    transport: Transport,
) -> Reply {
    worker.stats.borrow_mut().client_requests += 1;
    let profile = &worker.config.profiles[target.profile];
    let request = Observed {
        worker,
        profile: &profile.name,
        chain: &profile.chains[target.chain],
        started: Instant::now(),
        meta_mode,
        sampled: worker.sample_log(),
        events: crate::telemetry::events::active(),
    };
    // Routing metadata is collected when the client asks, for sampled logs, or for SSE subscribers (events).
    let mut meta = (meta_mode != MetaMode::Off || request.sampled || request.events)
        .then(|| Meta::new(worker.request_id(), target.pick));
    let served = serve(
        worker,
        target,
        request.chain,
        body,
        transport,
        meta.as_mut(),
    )
    .await;
    observe(&request, served, meta)
}

/// Parses and serves the request; observation is the caller's.
async fn serve(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    transport: Transport,
    meta: Option<&mut Meta>,
) -> Served {
    let failed = |method: &str, error, id: &[u8]| Served::Failed {
        method: method.to_string(),
        error,
        id: id.to_vec(),
    };
    let items = match jsonrpc::parse_request(body) {
        Ok(RequestBody::Single(call)) => {
            let client_id = call.id.clone().map(|r| &body[r]);
            return match (
                client_id,
                call_one(worker, target, chain, body, &call, meta).await,
            ) {
                (None, _) => Served::Answered {
                    reply: Reply::nothing(),
                    method: call.method.to_string(),
                },
                (Some(_), Ok(reply)) => Served::Answered {
                    reply: Reply::answer(reply),
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
        reply: batch(worker, target, chain, body, &items, meta, transport).await,
        method: format!("batch({})", items.len()),
    }
}

/// Serves a single call: locally, or through the plan's providers, with the client's id restored.
async fn call_one(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
) -> Result<Vec<u8>, RpcError> {
    if let Some(answer) = local_answer(chain, body, call, Transport::Http) {
        return answer;
    }
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    if let Some(prepared) = crate::rpc::reuse::prepare(worker, target, chain, body, call) {
        let fetch = || async {
            let (forwarded, _) = forward_call(worker, target, chain, body, call, meta).await?;
            Ok(crate::rpc::reuse::answer_of(&forwarded))
        };
        return crate::rpc::reuse::serve(worker, prepared, client_id, fetch).await;
    }
    let (forwarded, pid) = forward_call(worker, target, chain, body, call, meta).await?;
    let mut reply_body = forwarded.body;
    let view = &forwarded.views[0];
    // Splice the client's id in place of ours; the reply object is the whole body for a single call.
    let reply = if view.span.start == 0 && view.span.end == reply_body.len() {
        reply_body.splice(view.id.clone(), client_id.iter().copied());
        reply_body
    } else {
        let mut out = Vec::with_capacity(view.span.len() + client_id.len());
        jsonrpc::restore_id(&reply_body, view, client_id, &mut out);
        out
    };
    if filters::creates_filter(&call.method) {
        return Ok(filters::wrap_reply(&worker.config, pid, reply));
    }
    Ok(reply)
}

/// Plans and forwards a single call; the provider's answer (with our upstream id) and who gave it.
async fn forward_call(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
) -> Result<(crate::rpc::forward::Forwarded, usize), RpcError> {
    let plan = plan(worker, target, chain, body, call)?;
    let uid = worker.upstream_ids(1);
    let mut upstream_body = Vec::with_capacity(call.span.len() + 16);
    filters::write_upstream(&worker.config, chain, body, call, uid, &mut upstream_body);
    let upstream = Upstream {
        body: &upstream_body,
        ids: &[uid],
    };
    let forwarded = forward(worker, chain, &plan, upstream, meta).await?;
    let pid = forwarded.pid;
    Ok((forwarded, pid))
}
