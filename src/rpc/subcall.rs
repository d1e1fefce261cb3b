//! Forwarding one single call through the plan's providers (`forward_single`, the pipeline's ordinary path for a
//! single call), and the calls Lasso makes itself on a client's behalf: a synthesized call routed like a client's
//! ([`ask`]), or one sent to one named provider only ([`ask_provider`]), with the answer read as a result or an error
//! ([`Answer`]).

use std::rc::Rc;
use std::time::Duration;

use sonic_rs::JsonValueTrait;

use crate::config::Chain;
use crate::error::RpcError;
use crate::evm::methods::MethodKey;
use crate::routing::router::Candidates;
use crate::rpc::attempt::{AttemptResult, Sending, attempt};
use crate::rpc::filters;
use crate::rpc::forward::{Forwarded, Upstream, forward};
use crate::rpc::meta::Meta;
use crate::rpc::plan::{CallPlan, plan};
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::telemetry::trace::RequestTrace;
use crate::upstream::stream::BodyTail;
use crate::wire::jsonrpc::{self, CallView, RequestBody};

/// How a request's calls are forwarded: under its trace (when traced), and whether a large single-call answer may be
/// streamed to the client.
#[derive(Clone, Copy)]
pub(crate) struct Forwarding<'a> {
    pub trace: Option<&'a RequestTrace>,
    pub stream: bool,
}

/// Serves a single call through the plan's providers, with the client's id restored, read whole (for the calls
/// whose answer Lasso reads before the client gets it).
pub(crate) async fn forward_single(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    trace: Option<&RequestTrace>,
) -> Result<Vec<u8>, RpcError> {
    let how = Forwarding {
        trace,
        stream: false,
    };
    let (reply, _tail) = forward_call(worker, target, chain, body, call, meta, how).await?;
    Ok(reply)
}

/// Serves a single call through the plan's providers, with the client's id restored. When `how.stream` allows it, a
/// large answer comes as its first bytes (the id spliced there) and the rest ([`BodyTail`]) still to be read.
pub(crate) async fn forward_call(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    how: Forwarding<'_>,
) -> Result<(Vec<u8>, Option<BodyTail>), RpcError> {
    let creates_filter = filters::creates_filter(&call.method);
    let forwarded = forward_raw(worker, target, chain, body, call, meta, how).await?;
    let (pid, mut reply_body) = (forwarded.pid, forwarded.body);
    let view = &forwarded.views[0];
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    if let Some(tail) = forwarded.tail {
        // The first bytes of a streamed answer: the id is spliced there, the rest follows untouched.
        reply_body.splice(view.id.clone(), client_id.iter().copied());
        return Ok((reply_body, Some(tail)));
    }
    // Splice the client's id in place of ours; the reply object is the whole body for a single call.
    let reply = if view.span.start == 0 && view.span.end == reply_body.len() {
        reply_body.splice(view.id.clone(), client_id.iter().copied());
        reply_body
    } else {
        let mut out = Vec::with_capacity(view.span.len() + client_id.len());
        jsonrpc::restore_id(&reply_body, view, client_id, &mut out);
        out
    };
    if creates_filter {
        return Ok((filters::wrap_reply(&worker.config, pid, reply), None));
    }
    Ok((reply, None))
}

/// Plans and forwards a single call: the provider's answer as it came (our upstream id in it), and who gave it.
pub(crate) async fn forward_raw(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    meta: Option<&mut Meta>,
    how: Forwarding<'_>,
) -> Result<Forwarded, RpcError> {
    let plan = plan(worker, target, chain, body, call)?;
    let uid = worker.upstream_ids(1);
    let mut upstream_body = Vec::with_capacity(call.span.len() + 16);
    filters::write_upstream(&worker.config, chain, body, call, uid, &mut upstream_body);
    let upstream = Upstream {
        body: &upstream_body,
        ids: &[uid],
        trace: how.trace,
        stream: how.stream && !filters::creates_filter(&call.method),
    };
    forward(worker, chain, &plan, upstream, meta).await
}

/// A single JSON-RPC request of `method` with raw JSON `params`, id 1.
pub(crate) fn request(method: &str, params: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#).into_bytes()
}

/// A reply object read as its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The raw JSON of `result`.
    Result(String),
    /// A JSON-RPC error: code and message.
    Error(i64, String),
}

impl Answer {
    /// Reads one reply object; `None` if it is neither a result nor an error.
    pub(crate) fn of(reply: &[u8]) -> Option<Answer> {
        if let Ok(result) = sonic_rs::get(reply, ["result"]) {
            return Some(Answer::Result(result.as_raw_str().to_string()));
        }
        let error = sonic_rs::get(reply, ["error"]).ok()?;
        let value: sonic_rs::Value = sonic_rs::from_str(error.as_raw_str()).ok()?;
        Some(Answer::Error(
            value.get("code").and_then(|c| c.as_i64()).unwrap_or(0),
            value
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string(),
        ))
    }
}

/// Sends a call Lasso makes itself (`method`, raw `params`), routed like a client's call to `target`; the reply
/// object as the provider answered it (id 1).
pub(crate) async fn ask(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    method: &str,
    params: &str,
    meta: Option<&mut Meta>,
) -> Result<Vec<u8>, RpcError> {
    let body = request(method, params);
    let call = match jsonrpc::parse_request(&body)? {
        RequestBody::Single(call) => call,
        RequestBody::Batch(_) => unreachable!("a single call was built"),
    };
    forward_single(worker, target, chain, &body, &call, meta, None).await
}

/// Sends `body` (a single call Lasso built, id 1) to provider `pid` only, once, within `timeout`; the reply object
/// (any JSON-RPC answer), or why none came. Recorded like any attempt.
pub(crate) async fn ask_provider(
    worker: &Rc<Worker>,
    pid: usize,
    method: &str,
    params: &str,
    write: bool,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let body = request(method, params);
    let call = match jsonrpc::parse_request(&body) {
        Ok(RequestBody::Single(call)) => call,
        _ => return Err("invalid call".into()),
    };
    let uid = worker.upstream_ids(1);
    let mut upstream_body = Vec::with_capacity(body.len() + 16);
    jsonrpc::with_upstream_id(&body, &call, uid, &mut upstream_body);
    let key = MethodKey::of(method);
    let mut candidates = Candidates::new();
    candidates.push(pid);
    let plan = CallPlan {
        key,
        class: key.class(),
        write,
        candidates,
        strategy: None,
    };
    let (reply, views) = match attempt(
        worker,
        pid,
        &plan,
        &upstream_body,
        &[uid],
        timeout,
        Sending {
            traceparent: None,
            stream: false,
        },
    )
    .await
    {
        AttemptResult::Usable { body, views, .. } => (body, views),
        AttemptResult::Failed {
            reply: Some((body, views)),
            ..
        } => (body, views),
        AttemptResult::Failed { error, .. } => return Err(worker.config.redact(&error)),
        AttemptResult::OverBudget => return Err(RpcError::ResponseBudget.message()),
    };
    let mut out = Vec::with_capacity(reply.len());
    jsonrpc::restore_id(&reply, &views[0], b"1", &mut out);
    Ok(out)
}
