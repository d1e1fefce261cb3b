//! The JSON-RPC proxy pipeline for one HTTP request: parse lazily, answer locally what needs no provider
//! (`eth_chainId`, subscriptions over HTTP, invalid members), pick candidates through the worker's router, forward
//! with failover (never re-sending a write that may have reached a provider), and restore the client's ids by
//! splicing bytes into the provider's reply. Batches are grouped by candidate list, sent as sub-batches concurrently,
//! and reassembled in request order.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::config::Chain;
use crate::errors::{Attempt, RpcError};
use crate::http::response::Response;
use crate::jsonrpc::{self, CallView, ReplyKind, ReplyView, RequestBody};
use crate::routes::{Pick, Target};
use crate::routing::Candidates;
use crate::stats::Outcome;
use crate::upstream::FailureKind;
use crate::worker::Worker;

/// Methods that change chain state: sent to at most one provider once they may have reached it.
pub fn is_write(method: &str) -> bool {
    matches!(
        method,
        "eth_sendRawTransaction" | "eth_sendTransaction" | "eth_sendBundle" | "eth_sendPrivateTransaction"
            | "eth_sendRawTransactionConditional" | "eth_sendRawTransactionSync"
    )
}

fn is_subscription(method: &str) -> bool {
    matches!(method, "eth_subscribe" | "eth_unsubscribe")
}

/// Answers one JSON-RPC HTTP request for `target`.
pub async fn handle(worker: &Rc<Worker>, target: Target, body: &[u8]) -> Response {
    worker.stats.borrow_mut().client_requests += 1;
    let parsed = match jsonrpc::parse_request(body) {
        Ok(parsed) => parsed,
        Err(e) => return Response::json(e.http_status(), e.to_response(b"null")),
    };
    let chain = &worker.config.profiles[target.profile].chains[target.chain];
    match parsed {
        RequestBody::Single(call) => {
            let client_id = call.id.clone().map(|r| &body[r]);
            let result = call_one(worker, target, chain, body, &call).await;
            match (client_id, result) {
                (None, _) => Response::empty(204),
                (Some(_), Ok(reply)) => Response::json(200, reply),
                (Some(id), Err(e)) => Response::json(e.http_status(), e.to_response(id)),
            }
        }
        RequestBody::Batch(items) => {
            let max = worker.config.server.max_batch_size;
            if items.len() > max {
                let e = RpcError::InvalidRequest(format!("batch of {} exceeds the limit of {max}", items.len()));
                return Response::json(e.http_status(), e.to_response(b"null"));
            }
            batch(worker, target, chain, body, items).await
        }
    }
}

/// A call the proxy answers without a provider, if it is one.
fn local_answer(chain: &Chain, body: &[u8], call: &CallView<'_>) -> Option<Result<Vec<u8>, RpcError>> {
    let id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    if call.method == "eth_chainId" {
        let hex = format!("\"{}\"", chain.chain_id_hex);
        return Some(Ok(jsonrpc::result_response(id, hex.as_bytes())));
    }
    if is_subscription(&call.method) {
        return Some(Err(RpcError::SubscriptionOverHttp {
            method: call.method.to_string(),
            ws_path: format!("/ws/rpc/{}", chain.name),
        }));
    }
    None
}

fn candidates(worker: &Worker, target: Target, chain: &Chain, method: &str) -> Result<Candidates, RpcError> {
    let config = &worker.config;
    let list = match target.pick {
        Pick::Strategy(strategy) => worker.router.borrow_mut().candidates(config, chain, strategy, method),
        Pick::Provider(pid) => {
            let mut one = Candidates::new();
            if config.providers[pid].methods.permits(method) {
                one.push(pid);
            }
            one
        }
    };
    if list.is_empty() {
        return Err(RpcError::MethodNotSupported { method: method.to_string() });
    }
    Ok(list)
}

async fn call_one(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Result<Vec<u8>, RpcError> {
    if let Some(answer) = local_answer(chain, body, call) {
        return answer;
    }
    let candidates = candidates(worker, target, chain, &call.method)?;
    let uid = worker.upstream_ids(1);
    let mut upstream_body = Vec::with_capacity(call.span.len() + 16);
    jsonrpc::with_upstream_id(body, call, uid, &mut upstream_body);
    let (mut reply_body, views) = forward(worker, &candidates, &upstream_body, is_write(&call.method), &[uid]).await?;
    let view = &views[0];
    let client_id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    // Splice the client's id in place of ours; the reply object is the whole body for a single call.
    if view.span.start == 0 && view.span.end == reply_body.len() {
        reply_body.splice(view.id.clone(), client_id.iter().copied());
        Ok(reply_body)
    } else {
        let mut out = Vec::with_capacity(view.span.len() + client_id.len());
        jsonrpc::restore_id(&reply_body, view, client_id, &mut out);
        Ok(out)
    }
}

/// How a provider's HTTP answer is judged.
enum Verdict {
    /// Usable replies (results or JSON-RPC errors), one per expected id.
    Replies(Vec<ReplyView>),
    /// A failure worth trying elsewhere.
    Failed(String),
}

fn judge(status: u16, body: &[u8], expected: &[u64], batch: bool) -> Verdict {
    let parsed = if batch {
        jsonrpc::inspect_batch_reply(body)
    } else {
        jsonrpc::inspect_reply(body).map(|r| vec![r])
    };
    let replies = match parsed {
        Ok(replies) => replies,
        Err(e) => {
            return Verdict::Failed(match status {
                200..=299 => e.to_string(),
                429 => "rate limited (HTTP 429)".to_string(),
                s => format!("HTTP {s}"),
            });
        }
    };
    match status {
        200..=299 => {}
        429 => return Verdict::Failed("rate limited (HTTP 429)".into()),
        500..=599 => return Verdict::Failed(format!("HTTP {status}")),
        // Some providers answer invalid params with HTTP 400 and a JSON-RPC error: that is the answer.
        _ if replies.iter().all(|r| matches!(r.kind, ReplyKind::Error { .. })) => {}
        s => return Verdict::Failed(format!("HTTP {s}")),
    }
    // Each reply must answer an id we sent.
    let ids_ok = replies
        .iter()
        .all(|r| jsonrpc::parse_upstream_id(&body[r.id.clone()]).is_some_and(|id| expected.contains(&id)));
    if !ids_ok {
        // A whole-batch error object (id null) from a provider is a failure of that provider.
        return Verdict::Failed("reply ids do not match the request".into());
    }
    Verdict::Replies(replies)
}

/// Sends `upstream_body` to the candidates in order until one answers usably. Returns the reply body and the located
/// reply objects.
async fn forward(
    worker: &Rc<Worker>,
    candidates: &[usize],
    upstream_body: &[u8],
    write: bool,
    expected_ids: &[u64],
) -> Result<(Vec<u8>, Vec<ReplyView>), RpcError> {
    let config = &worker.config;
    let settings = worker.upstream.settings();
    let max_attempts = if write { candidates.len() } else { settings.max_attempts.min(candidates.len()) };
    let deadline = Instant::now() + settings.request_timeout * settings.max_attempts.max(1) as u32;
    let batch = upstream_body.first() == Some(&b'[');
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut timed_out = false;
    for &pid in candidates.iter().take(max_attempts) {
        let provider = &config.providers[pid];
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < Duration::from_millis(1) {
            timed_out = true;
            break;
        }
        let started = Instant::now();
        let result = worker.upstream.post(provider, upstream_body, settings.request_timeout.min(remaining), !write).await;
        let latency = started.elapsed();
        let (error, reached) = match result {
            Ok(resp) => match judge(resp.status, &resp.body, expected_ids, batch) {
                Verdict::Replies(views) => {
                    worker.stats.borrow_mut().record(pid, Outcome::Success, latency, None);
                    return Ok((resp.body, views));
                }
                Verdict::Failed(why) => (why, true),
            },
            Err(e) => {
                timed_out = e.kind == FailureKind::Timeout;
                (e.message, e.may_have_reached)
            }
        };
        let error = config.redact(&error);
        tracing::warn!(provider = %provider.id, chain = %provider.chain, %error, "upstream attempt failed");
        worker.stats.borrow_mut().record(pid, Outcome::Failure, latency, Some(&error));
        attempts.push(Attempt { provider: provider.id.clone(), error });
        if write && reached {
            // The provider may have accepted the transaction: never send it to another one.
            break;
        }
    }
    if timed_out && Instant::now() >= deadline {
        return Err(RpcError::DeadlineExceeded { attempts });
    }
    Err(RpcError::AllProvidersFailed { attempts })
}

/// One member of a batch on its way: where its answer goes, and its upstream id.
struct Member {
    index: usize,
    uid: u64,
    call_span: usize,
}

async fn batch(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    items: Vec<Result<CallView<'_>, jsonrpc::InvalidCall>>,
) -> Response {
    let n = items.len();
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; n];
    let client_id = |range: &Option<std::ops::Range<usize>>| range.clone().map_or(&b"null"[..], |r| &body[r]);
    // Groups of members sharing one candidate list go to providers as one sub-batch.
    let mut groups: Vec<(Candidates, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Err(invalid) => slots[i] = Some(invalid.error.to_response(client_id(&invalid.id))),
            Ok(call) => {
                let answer = match local_answer(chain, body, call) {
                    Some(answer) => Some(answer),
                    None => match candidates(worker, target, chain, &call.method) {
                        Ok(list) => {
                            match groups.iter_mut().find(|(c, _)| *c == list) {
                                Some((_, members)) => members.push(i),
                                None => groups.push((list, vec![i])),
                            }
                            None
                        }
                        Err(e) => Some(Err(e)),
                    },
                };
                if let Some(answer) = answer {
                    if !call.is_notification() {
                        slots[i] = Some(answer.unwrap_or_else(|e| e.to_response(client_id(&call.id))));
                    }
                }
            }
        }
    }
    let calls: Vec<Option<&CallView<'_>>> = items.iter().map(|i| i.as_ref().ok()).collect();
    let sends = groups.iter().map(|(list, members)| {
        let calls = &calls;
        async move {
            let first_uid = worker.upstream_ids(members.len() as u64);
            let mut upstream_body = Vec::new();
            let mut sent = Vec::with_capacity(members.len());
            let mut write = false;
            if members.len() > 1 {
                upstream_body.push(b'[');
            }
            for (k, &index) in members.iter().enumerate() {
                let call = calls[index].expect("grouped members are valid calls");
                if k > 0 {
                    upstream_body.push(b',');
                }
                let uid = first_uid + k as u64;
                jsonrpc::with_upstream_id(body, call, uid, &mut upstream_body);
                write |= is_write(&call.method);
                sent.push(Member { index, uid, call_span: call.span.start });
            }
            if members.len() > 1 {
                upstream_body.push(b']');
            }
            let uids: Vec<u64> = sent.iter().map(|m| m.uid).collect();
            (sent, forward(worker, list, &upstream_body, write, &uids).await)
        }
    });
    for (sent, result) in join_all(sends).await {
        match result {
            Ok((reply_body, views)) => {
                for member in &sent {
                    let call = calls[member.index].expect("sent members are valid calls");
                    debug_assert_eq!(call.span.start, member.call_span);
                    if call.is_notification() {
                        continue;
                    }
                    let view = views
                        .iter()
                        .find(|v| jsonrpc::parse_upstream_id(&reply_body[v.id.clone()]) == Some(member.uid));
                    slots[member.index] = Some(match view {
                        Some(view) => {
                            let mut out = Vec::with_capacity(view.span.len());
                            jsonrpc::restore_id(&reply_body, view, client_id(&call.id), &mut out);
                            out
                        }
                        None => RpcError::AllProvidersFailed {
                            attempts: vec![Attempt {
                                provider: "(batch)".into(),
                                error: "provider omitted the reply to this call".into(),
                            }],
                        }
                        .to_response(client_id(&call.id)),
                    });
                }
            }
            Err(e) => {
                for member in &sent {
                    let call = calls[member.index].expect("sent members are valid calls");
                    if !call.is_notification() {
                        slots[member.index] = Some(e.to_response(client_id(&call.id)));
                    }
                }
            }
        }
    }
    let answers: Vec<Vec<u8>> = slots.into_iter().flatten().collect();
    if answers.is_empty() {
        return Response::empty(204);
    }
    let mut out = Vec::with_capacity(answers.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (k, a) in answers.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(a);
    }
    out.push(b']');
    Response::json(200, out)
}
