//! The JSON-RPC proxy pipeline for one HTTP request: parse lazily, answer locally what needs no provider
//! (`eth_chainId`, subscriptions over HTTP, invalid members), ask the worker's router for candidates, forward with
//! classification-driven failover and hedging inside a per-method deadline (never re-sending a write that may have
//! reached a provider), record every attempt, and restore the client's ids by splicing bytes into the provider's
//! reply. Batches are grouped by candidate list, sent as sub-batches concurrently, and reassembled in request order.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, join_all, select};

use crate::config::Chain;
use crate::config::Strategy;
use crate::error::{Attempt, RpcError};
use crate::evm::methods::{self, MethodClass, MethodKey};
use crate::routing::breaker::{Admission, BreakerState};
use crate::routing::classify::{Category, FailureClass, classify_http_failure, classify_rpc_error};
use crate::routing::recorder::SampleKind;
use crate::routing::router::{Candidates, RouteInputs, RouteQuery};
use crate::rpc::meta::{Meta, MetaMode};
use crate::rpc::target::{Pick, Target};
use crate::shard::state::Worker;
use crate::telemetry::stats::Outcome;
use crate::wire::http::response::Response;
use crate::wire::jsonrpc::{self, CallView, ReplyKind, ReplyView, RequestBody};

/// Which transport a request came over (subscriptions exist only on WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    WebSocket,
}

fn is_subscription(method: &str) -> bool {
    matches!(method, "eth_subscribe" | "eth_unsubscribe")
}

/// Answers one JSON-RPC HTTP request for `target`.
pub async fn handle(
    worker: &Rc<Worker>,
    target: Target,
    body: &[u8],
    meta_mode: MetaMode,
    transport: Transport,
) -> Response {
    let started = Instant::now();
    worker.stats.borrow_mut().client_requests += 1;
    let chain = &worker.config.profiles[target.profile].chains[target.chain];
    let parsed = match jsonrpc::parse_request(body) {
        Ok(parsed) => parsed,
        Err(e) => return whole_error(worker, chain, "-", e, b"null", started),
    };
    let sampled = worker.sample_log();
    // Routing metadata is collected when the client asks, for sampled logs, or for SSE subscribers (events).
    let events = crate::telemetry::events::active();
    let mut meta = (meta_mode != MetaMode::Off || sampled || events)
        .then(|| Meta::new(worker.request_id(), target.pick));
    let (response, method) = match parsed {
        RequestBody::Single(call) => {
            let client_id = call.id.clone().map(|r| &body[r]);
            let result = call_one(worker, target, chain, body, &call, meta.as_mut()).await;
            let response = match (client_id, result) {
                (None, _) => Response::empty(204),
                (Some(_), Ok(reply)) => Response::json(200, reply),
                (Some(id), Err(e)) => {
                    return whole_error(worker, chain, &call.method, e, id, started);
                }
            };
            (response, call.method.to_string())
        }
        RequestBody::Batch(items) => {
            let max = worker.config.server.max_batch_size;
            if items.len() > max {
                let e = RpcError::InvalidRequest(format!(
                    "batch of {} exceeds the limit of {max}",
                    items.len()
                ));
                return whole_error(worker, chain, "batch", e, b"null", started);
            }
            let method = format!("batch({})", items.len());
            (
                batch(worker, target, chain, body, items, meta.as_mut(), transport).await,
                method,
            )
        }
    };
    let Some(meta) = meta else { return response };
    if events {
        let status = response.status;
        let strategy = match meta.strategy {
            Some(s) => s.as_str(),
            None if meta.pick_provider => "provider",
            None => "-",
        };
        crate::telemetry::events::publish(&crate::telemetry::events::RoutingEvent {
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            profile: &worker.config.profiles[target.profile].name,
            chain: &chain.name,
            method: crate::telemetry::events::RoutingEvent::client_text(&method),
            provider: meta.provider.as_deref(),
            strategy,
            latency_us: started.elapsed().as_micros() as u64,
            upstream_us: meta.upstream.as_micros() as u64,
            retries: meta.retries,
            hedged: meta.hedged,
            ok: status < 400,
            status,
            source_node: &worker.shared.node_id,
            source_region: worker.shared.region.as_deref(),
            worker: worker.index,
        });
    }
    if sampled {
        tracing::info!(
            target: "lasso::access",
            request_id = %meta.request_id,
            chain = %chain.name,
            %method,
            provider = meta.provider.as_deref().unwrap_or("-"),
            strategy = meta.strategy.map_or("-", |s| s.as_str()),
            status = response.status,
            retries = meta.retries,
            hedged = meta.hedged,
            upstream_us = meta.upstream.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    if meta_mode == MetaMode::Off {
        return response;
    }
    meta.apply(response, meta_mode, started.elapsed(), worker)
}

/// A whole request answered with an error: counted, always logged, and returned.
fn whole_error(
    worker: &Worker,
    chain: &Chain,
    method: &str,
    e: RpcError,
    id: &[u8],
    started: Instant,
) -> Response {
    worker.count_error(e.code());
    tracing::warn!(
        target: "lasso::access",
        chain = %chain.name,
        %method,
        code = e.code(),
        status = e.http_status(),
        error = %worker.config.redact(&e.message()),
        total_us = started.elapsed().as_micros() as u64,
        "request failed"
    );
    Response::json(e.http_status(), e.to_response(id))
}

/// A call the proxy answers without a provider, if it is one.
fn local_answer(
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
    transport: Transport,
) -> Option<Result<Vec<u8>, RpcError>> {
    let id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    if call.method == "eth_chainId" {
        let hex = format!("\"{}\"", chain.chain_id_hex);
        return Some(Ok(jsonrpc::result_response(id, hex.as_bytes())));
    }
    if is_subscription(&call.method) && transport == Transport::WebSocket {
        return Some(Err(RpcError::InvalidRequest(format!(
            "{} cannot be batched; send it on its own",
            call.method
        ))));
    }
    if is_subscription(&call.method) {
        return Some(Err(RpcError::SubscriptionOverHttp {
            method: call.method.to_string(),
            ws_path: format!("/ws/rpc/{}", chain.name),
        }));
    }
    None
}

/// Asks the worker's router for the candidates of one call under `strategy`.
fn route(
    worker: &Worker,
    chain: &Chain,
    strategy: Strategy,
    body: &[u8],
    call: &CallView<'_>,
    key: MethodKey,
) -> Candidates {
    let params = call.params.clone().map(|r| &body[r]);
    let target = methods::block_target(&call.method, params);
    let routing = worker.routing.borrow();
    let inputs = RouteInputs {
        config: &worker.config,
        table: &routing.table,
        health: &routing.health,
        now: Instant::now(),
    };
    let query = RouteQuery {
        chain,
        strategy,
        method: &call.method,
        key,
        target,
    };
    worker.router.borrow_mut().candidates(&inputs, &query)
}

/// What routing needs to know about one call.
struct CallPlan {
    key: MethodKey,
    class: MethodClass,
    write: bool,
    candidates: Candidates,
    strategy: Option<Strategy>,
}

fn plan(
    worker: &Worker,
    target: Target,
    chain: &Chain,
    body: &[u8],
    call: &CallView<'_>,
) -> Result<CallPlan, RpcError> {
    let config = &worker.config;
    let key = MethodKey::of(&call.method);
    let write = methods::is_write(&call.method);
    let (candidates, strategy) = match target.pick {
        Pick::Strategy(strategy) => (
            route(worker, chain, strategy, body, call, key),
            Some(strategy),
        ),
        Pick::Provider(pid) => {
            let mut list = Candidates::new();
            if config.providers[pid].methods.permits(&call.method) {
                list.push(pid);
            }
            if target.failover {
                // The named provider first, then the chain's default strategy for the rest.
                let rest = route(worker, chain, chain.default_strategy, body, call, key);
                list.extend(rest.into_iter().filter(|&p| p != pid));
            }
            (list, None)
        }
    };
    if candidates.is_empty() {
        return Err(RpcError::MethodNotSupported {
            method: call.method.to_string(),
        });
    }
    Ok(CallPlan {
        key,
        class: key.class(),
        write,
        candidates,
        strategy,
    })
}

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
    let plan = plan(worker, target, chain, body, call)?;
    let uid = worker.upstream_ids(1);
    let mut upstream_body = Vec::with_capacity(call.span.len() + 16);
    jsonrpc::with_upstream_id(body, call, uid, &mut upstream_body);
    let forwarded = forward(worker, chain, &plan, &upstream_body, &[uid], meta).await?;
    let mut reply_body = forwarded.body;
    let view = &forwarded.views[0];
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

/// A usable answer from a provider.
struct Forwarded {
    body: Vec<u8>,
    views: Vec<ReplyView>,
}

/// The result of one attempt against one provider.
enum AttemptResult {
    Usable {
        body: Vec<u8>,
        views: Vec<ReplyView>,
    },
    Failed {
        category: Category,
        error: String,
        reached: bool,
        reply: Option<(Vec<u8>, Vec<ReplyView>)>,
    },
}

/// How a provider's HTTP answer is judged.
fn judge(
    status: u16,
    body: &[u8],
    expected: &[u64],
    batch: bool,
    retry_after: Option<Duration>,
) -> Result<Vec<ReplyView>, (Category, String)> {
    let parsed = if batch {
        jsonrpc::inspect_batch_reply(body)
    } else {
        jsonrpc::inspect_reply(body).map(|r| vec![r])
    };
    let replies = match parsed {
        Ok(replies) => replies,
        Err(e) => {
            return Err(match status {
                200..=299 => (
                    Category::ProviderFailure(FailureClass::Server),
                    e.to_string(),
                ),
                s => (classify_http_failure(s, retry_after), format!("HTTP {s}")),
            });
        }
    };
    let all_errors = replies
        .iter()
        .all(|r| matches!(r.kind, ReplyKind::Error { .. }));
    match status {
        200..=299 => {}
        // Some providers answer errors with 4xx and a JSON-RPC error body: the body decides below.
        400..=499 if status != 429 && all_errors => {}
        s => return Err((classify_http_failure(s, retry_after), format!("HTTP {s}"))),
    }
    let ids_ok = replies.iter().all(|r| {
        jsonrpc::parse_upstream_id(&body[r.id.clone()]).is_some_and(|id| expected.contains(&id))
    });
    if !ids_ok || (batch && replies.is_empty()) {
        return Err((
            Category::ProviderFailure(FailureClass::Server),
            "reply ids do not match the request".into(),
        ));
    }
    Ok(replies)
}

/// Sends one attempt to `pid`, classifies it, and records it (statistics, breaker, cool-down, capability).
async fn attempt(
    worker: &Rc<Worker>,
    pid: usize,
    plan: &CallPlan,
    upstream_body: &[u8],
    expected: &[u64],
    timeout: Duration,
) -> AttemptResult {
    let config = &worker.config;
    let provider = &config.providers[pid];
    let batch = upstream_body.first() == Some(&b'[');
    let started = Instant::now();
    let coalesce =
        !batch && !plan.write && config.upstream.coalesce && provider.batch && expected.len() == 1;
    let result = if coalesce {
        worker
            .upstream
            .post_coalesced(
                pid,
                plan.class,
                upstream_body.to_vec(),
                expected[0],
                timeout,
            )
            .await
    } else {
        worker
            .upstream
            .post(provider, upstream_body, timeout, !plan.write)
            .await
    };
    let latency = started.elapsed();
    let outcome = match result {
        Ok(resp) => match judge(resp.status, &resp.body, expected, batch, resp.retry_after) {
            Ok(views) => {
                // A single call's JSON-RPC error may still mean "try elsewhere" (throttled, unsupported, internal).
                let category = match (&views[..], batch) {
                    ([only], false) => match &only.kind {
                        ReplyKind::Result => Category::Success,
                        ReplyKind::Error { code, message } => {
                            match classify_rpc_error(*code, message) {
                                Category::RateLimited { .. } => Category::RateLimited {
                                    retry_after: resp.retry_after,
                                },
                                other => other,
                            }
                        }
                    },
                    _ => Category::Success,
                };
                if matches!(category, Category::Success | Category::Deterministic) {
                    AttemptResult::Usable {
                        body: resp.body,
                        views,
                    }
                } else {
                    let error = match &views[0].kind {
                        ReplyKind::Error { code, message } => {
                            format!("JSON-RPC error {code}: {message}")
                        }
                        ReplyKind::Result => String::new(),
                    };
                    AttemptResult::Failed {
                        category,
                        error,
                        reached: true,
                        reply: Some((resp.body, views)),
                    }
                }
            }
            Err((category, error)) => AttemptResult::Failed {
                category,
                error,
                reached: true,
                reply: None,
            },
        },
        Err(e) => AttemptResult::Failed {
            category: Category::ProviderFailure(FailureClass::from_transport(e.kind)),
            error: e.message,
            reached: e.may_have_reached,
            reply: None,
        },
    };
    record(worker, pid, plan.key, &outcome, latency);
    outcome
}

fn record(worker: &Worker, pid: usize, key: MethodKey, outcome: &AttemptResult, latency: Duration) {
    let config = &worker.config;
    let settings = &config.routing.breaker;
    let now = Instant::now();
    let mut routing = worker.routing.borrow_mut();
    let routing = &mut *routing;
    let (kind, error) = match outcome {
        AttemptResult::Usable { .. } => {
            routing.health.breakers[pid].on_success(settings);
            (SampleKind::Answered, None)
        }
        AttemptResult::Failed {
            category, error, ..
        } => {
            let kind = match category {
                Category::RateLimited { retry_after } => {
                    let pause = retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(60));
                    routing.health.cooldown_until[pid] = Some(now + pause);
                    routing.health.breakers[pid].release_probe();
                    SampleKind::RateLimited
                }
                Category::Capability => {
                    let until = now + Duration::from_secs(600);
                    if routing
                        .health
                        .unsupported
                        .insert((pid as u32, key), until)
                        .is_none()
                    {
                        routing.new_unsupported.push((pid as u32, key));
                    }
                    routing.health.breakers[pid].release_probe();
                    SampleKind::Unsupported
                }
                Category::ProviderFailure(class) => {
                    if routing.health.breakers[pid].on_failure(*class, settings, now) {
                        tracing::warn!(provider = %config.providers[pid].id, chain = %config.providers[pid].chain, worker = worker.index, "circuit breaker opened");
                    }
                    SampleKind::Failed
                }
                Category::Success | Category::Deterministic => SampleKind::Answered,
            };
            (kind, Some(config.redact(error)))
        }
    };
    routing.recorder.record(pid, key, kind, latency);
    let outcome = if kind == SampleKind::Answered {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    if let Some(error) = &error {
        tracing::warn!(provider = %config.providers[pid].id, chain = %config.providers[pid].chain, %error, "upstream attempt failed");
    }
    worker
        .stats
        .borrow_mut()
        .record(pid, outcome, latency, error.as_deref());
}

/// Counts a hedge lost by `pid` as a timeout for its breaker (consecutive ones open it; any success resets them).
fn outrun(worker: &Worker, pid: usize) {
    let settings = &worker.config.routing.breaker;
    let mut routing = worker.routing.borrow_mut();
    if routing.health.breakers[pid].on_failure(FailureClass::Timeout, settings, Instant::now()) {
        let p = &worker.config.providers[pid];
        tracing::warn!(provider = %p.id, chain = %p.chain, worker = worker.index, "circuit breaker opened: outrun by hedges");
    }
}

/// May `pid` be tried now? (Its breaker may reject it; a half-open breaker admits one probe.)
fn admit(worker: &Worker, pid: usize) -> bool {
    worker.routing.borrow_mut().health.breakers[pid].admit(Instant::now()) != Admission::Rejected
}

/// When to hedge a read to `pid`: its measured tail latency, bounded.
fn hedge_delay(worker: &Worker, pid: usize, key: MethodKey) -> Duration {
    let hedge = &worker.config.routing.hedge;
    let routing = worker.routing.borrow();
    let measured = routing
        .table
        .latency(pid, key, worker.config.routing.min_samples)
        .map(|s| Duration::from_micros(s.quantile_us(hedge.quantile)));
    measured
        .unwrap_or(hedge.max_delay)
        .clamp(hedge.min_delay, hedge.max_delay)
}

/// Sends `upstream_body` to the plan's candidates until one answers usably, within the method's deadline.
async fn forward(
    worker: &Rc<Worker>,
    chain: &Chain,
    plan: &CallPlan,
    upstream_body: &[u8],
    expected: &[u64],
    mut meta: Option<&mut Meta>,
) -> Result<Forwarded, RpcError> {
    let config = &worker.config;
    let settings = worker.upstream.settings();
    let deadline = Instant::now() + config.routing.deadline(plan.class);
    let max_attempts = if plan.write {
        plan.candidates.len()
    } else {
        settings.max_attempts.min(plan.candidates.len())
    };
    let hedging = chain.hedge && !plan.write && plan.candidates.len() > 1;
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut fallback_reply: Option<(Vec<u8>, Vec<ReplyView>)> = None;
    let mut timed_out = false;
    let mut tried = 0;
    let mut next = 0;
    if let Some(m) = meta.as_deref_mut() {
        m.strategy = plan.strategy;
        m.candidates = plan
            .candidates
            .iter()
            .map(|&p| config.providers[p].id.clone())
            .collect();
    }
    let upstream_started = Instant::now();
    while tried < max_attempts && next < plan.candidates.len() {
        let pid = plan.candidates[next];
        next += 1;
        if !admit(worker, pid) {
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < Duration::from_millis(1) {
            timed_out = true;
            break;
        }
        tried += 1;
        // Reads leave time for the providers after this one: a hanging provider costs a share of the deadline, not
        // all of it. A write gets all that is left (it is sent to one provider only once it may have arrived).
        let after = (max_attempts - tried).min(plan.candidates.len() - next) as u32;
        let share = if plan.write {
            remaining
        } else {
            remaining / (after + 1)
        };
        let timeout = settings
            .request_timeout
            .min(share.max(Duration::from_millis(1)));
        let first = Box::pin(attempt(worker, pid, plan, upstream_body, expected, timeout));
        // Hedge: if the first attempt is slower than the provider's tail latency, race a second provider.
        let hedge_to = if hedging && tried < max_attempts {
            plan.candidates[next..].iter().copied().find(|&p| {
                worker.routing.borrow().health.breakers[p].state(Instant::now())
                    == BreakerState::Closed
            })
        } else {
            None
        };
        let results: Vec<(usize, AttemptResult)> = match hedge_to {
            None => vec![(pid, first.await)],
            Some(second_pid) => {
                let delay = hedge_delay(worker, pid, plan.key).min(remaining);
                match select(first, Box::pin(monoio::time::sleep(delay))).await {
                    Either::Left((result, _)) => vec![(pid, result)],
                    Either::Right((_, first)) => {
                        worker.routing.borrow_mut().recorder.hedges += 1;
                        if let Some(m) = meta.as_deref_mut() {
                            m.hedged = true;
                        }
                        next = plan
                            .candidates
                            .iter()
                            .position(|&p| p == second_pid)
                            .map_or(next, |i| i + 1)
                            .max(next);
                        tried += 1;
                        let left = deadline.saturating_duration_since(Instant::now());
                        let second = Box::pin(attempt(
                            worker,
                            second_pid,
                            plan,
                            upstream_body,
                            expected,
                            settings.request_timeout.min(left),
                        ));
                        match select(first, second).await {
                            Either::Left((r, other))
                                if matches!(r, AttemptResult::Usable { .. }) =>
                            {
                                drop(other);
                                vec![(pid, r)]
                            }
                            Either::Right((r, other))
                                if matches!(r, AttemptResult::Usable { .. }) =>
                            {
                                drop(other);
                                // The first provider was outrun well past its tail latency: a strike against it,
                                // so a provider that stopped answering is excluded after a few requests, not after
                                // its timeouts come due.
                                outrun(worker, pid);
                                vec![(second_pid, r)]
                            }
                            Either::Left((r, other)) => vec![(pid, r), (second_pid, other.await)],
                            Either::Right((r, other)) => vec![(second_pid, r), (pid, other.await)],
                        }
                    }
                }
            }
        };
        let mut stop = false;
        for (pid, result) in results {
            match result {
                AttemptResult::Usable { body, views } => {
                    if let Some(m) = meta.as_deref_mut() {
                        m.provider = Some(config.providers[pid].id.clone());
                        m.retries = attempts.len() as u32;
                        m.upstream = upstream_started.elapsed();
                        m.breaker =
                            worker.routing.borrow().health.breakers[pid].state(Instant::now());
                    }
                    if !attempts.is_empty() {
                        worker.routing.borrow_mut().recorder.failovers += 1;
                    }
                    return Ok(Forwarded { body, views });
                }
                AttemptResult::Failed {
                    category,
                    error,
                    reached,
                    reply,
                } => {
                    timed_out = category == Category::ProviderFailure(FailureClass::Timeout);
                    if reply.is_some() {
                        fallback_reply = reply;
                    }
                    attempts.push(Attempt {
                        provider: config.providers[pid].id.clone(),
                        error: config.redact(&error),
                    });
                    if plan.write && reached {
                        // The provider may have accepted the transaction: never send it to another one.
                        stop = true;
                    }
                }
            }
        }
        if stop {
            break;
        }
    }
    if let Some(m) = meta {
        m.retries = attempts.len().saturating_sub(1) as u32;
        m.upstream = upstream_started.elapsed();
    }
    // Every provider declined with a JSON-RPC error (unsupported, throttled): the last such answer is the truest.
    if let Some((body, views)) = fallback_reply {
        return Ok(Forwarded { body, views });
    }
    if attempts.is_empty() {
        return Err(RpcError::NoProviderAvailable {
            reason: "every provider is excluded for now (circuit breakers open)".into(),
        });
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
}

async fn batch(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    body: &[u8],
    items: Vec<Result<CallView<'_>, jsonrpc::InvalidCall>>,
    meta: Option<&mut Meta>,
    transport: Transport,
) -> Response {
    let n = items.len();
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; n];
    let client_id =
        |range: &Option<std::ops::Range<usize>>| range.clone().map_or(&b"null"[..], |r| &body[r]);
    // Members sharing one candidate list (and write-ness) go to providers as one sub-batch.
    let mut groups: Vec<(CallPlan, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Err(invalid) => {
                worker.count_error(invalid.error.code());
                slots[i] = Some(invalid.error.to_response(client_id(&invalid.id)))
            }
            Ok(call) => {
                let answer = match local_answer(chain, body, call, transport) {
                    Some(answer) => Some(answer),
                    None => match plan(worker, target, chain, body, call) {
                        Ok(p) => {
                            match groups
                                .iter_mut()
                                .find(|(g, _)| g.candidates == p.candidates && g.write == p.write)
                            {
                                Some((g, members)) => {
                                    if g.key != p.key {
                                        // Mixed methods: deadline and statistics follow the slowest class present.
                                        g.key = MethodKey::of("");
                                        g.class = if g.class == p.class {
                                            g.class
                                        } else {
                                            MethodClass::Other
                                        };
                                    }
                                    members.push(i)
                                }
                                None => groups.push((p, vec![i])),
                            }
                            None
                        }
                        Err(e) => Some(Err(e)),
                    },
                };
                if let Some(answer) = answer {
                    if !call.is_notification() {
                        slots[i] =
                            Some(answer.unwrap_or_else(|e| e.to_response(client_id(&call.id))));
                    }
                }
            }
        }
    }
    let calls: Vec<Option<&CallView<'_>>> = items.iter().map(|i| i.as_ref().ok()).collect();
    let mut meta = meta;
    let sends = groups.iter().enumerate().map(|(g, (plan, members))| {
        let calls = &calls;
        // Only the first group reports its routing in the request's metadata.
        let group_meta = if g == 0 { meta.take() } else { None };
        async move {
            let first_uid = worker.upstream_ids(members.len() as u64);
            let mut upstream_body = Vec::new();
            let mut sent = Vec::with_capacity(members.len());
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
                sent.push(Member { index, uid });
            }
            if members.len() > 1 {
                upstream_body.push(b']');
            }
            let uids: Vec<u64> = sent.iter().map(|m| m.uid).collect();
            (
                sent,
                forward(worker, chain, plan, &upstream_body, &uids, group_meta).await,
            )
        }
    });
    for (sent, result) in join_all(sends).await {
        match result {
            Ok(forwarded) => {
                for member in &sent {
                    let call = calls[member.index].expect("sent members are valid calls");
                    if call.is_notification() {
                        continue;
                    }
                    let view = forwarded.views.iter().find(|v| {
                        jsonrpc::parse_upstream_id(&forwarded.body[v.id.clone()])
                            == Some(member.uid)
                    });
                    slots[member.index] = Some(match view {
                        Some(view) => {
                            let mut out = Vec::with_capacity(view.span.len());
                            jsonrpc::restore_id(
                                &forwarded.body,
                                view,
                                client_id(&call.id),
                                &mut out,
                            );
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
                        worker.count_error(e.code());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_replies_table() {
        let ok = br#"{"jsonrpc":"2.0","id":5,"result":"0x1"}"#;
        let err = br#"{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"invalid params"}}"#;
        assert!(judge(200, ok, &[5], false, None).is_ok());
        assert!(
            judge(400, err, &[5], false, None).is_ok(),
            "4xx with a JSON-RPC error body is an answer"
        );
        let rows: &[(u16, &[u8], Category)] = &[
            (
                200,
                b"<html>",
                Category::ProviderFailure(FailureClass::Server),
            ),
            (
                200,
                br#"{"jsonrpc":"2.0","id":6,"result":1}"#,
                Category::ProviderFailure(FailureClass::Server),
            ),
            (500, ok, Category::ProviderFailure(FailureClass::Server)),
            (
                502,
                b"bad gateway",
                Category::ProviderFailure(FailureClass::Server),
            ),
            (
                429,
                b"slow down",
                Category::RateLimited { retry_after: None },
            ),
            (429, err, Category::RateLimited { retry_after: None }),
        ];
        for (status, body, expected) in rows {
            let (category, _) = judge(*status, body, &[5], false, None).unwrap_err();
            assert_eq!(
                &category,
                expected,
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
