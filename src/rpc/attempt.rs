//! One attempt against one provider: send the call (coalesced with identical reads when allowed), judge the answer
//! (HTTP status, JSON-RPC shape, ids, error classification; a large answer by its envelope head, its rest verified on
//! its way to the client), and record the outcome in the worker's routing state
//! (through `routing::health`), its statistics and its logs.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::defaults::UPSTREAM_STREAM_ABOVE_BYTES;
use crate::routing::classify::{Category, FailureClass, classify_http_failure, classify_rpc_error};
use crate::routing::health;
use crate::routing::recorder::SampleKind;
use crate::rpc::plan::CallPlan;
use crate::shard::state::Worker;
use crate::telemetry::log_limit::Warning;
use crate::telemetry::stats::Outcome;
use crate::telemetry::trace::{TRACEPARENT_LEN, Traceparent};
use crate::upstream::error::{FailureKind, UpstreamError, UpstreamResponse};
use crate::upstream::stream::BodyTail;
use crate::wire::jsonrpc::{self, ReplyKind, ReplyView};
use crate::wire::stream_reply;

/// `traceparent: <value>\r\n`.
const TRACEPARENT_LINE: usize = 13 + TRACEPARENT_LEN + 2;

/// How an attempt is sent: the trace's `traceparent` for the provider, and whether a large answer may be streamed.
#[derive(Clone, Copy)]
pub(crate) struct Sending<'a> {
    pub traceparent: Option<&'a Traceparent>,
    pub stream: bool,
}

/// The result of one attempt against one provider.
pub(crate) enum AttemptResult {
    Usable {
        body: Vec<u8>,
        views: Vec<ReplyView>,
        /// A streamed answer: `body` holds its first bytes (the envelope head, judged), this the verified rest.
        tail: Option<BodyTail>,
    },
    Failed {
        category: Category,
        error: String,
        /// The request may have reached the provider (a write must then not be sent elsewhere).
        reached: bool,
        /// The provider's JSON-RPC error reply, returned when every provider declines.
        reply: Option<(Vec<u8>, Vec<ReplyView>)>,
    },
    /// The worker's budget of buffered answer bytes could not take this answer: the request ends with
    /// [`crate::error::RpcError::ResponseBudget`] (not the provider's fault: nothing is recorded against it).
    OverBudget,
}

impl AttemptResult {
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self, AttemptResult::Usable { .. })
    }

    /// The outcome as a trace attribute: `ok` or why the attempt failed.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            AttemptResult::Usable { .. } => "ok",
            AttemptResult::OverBudget => "over_budget",
            AttemptResult::Failed { category, .. } => match category {
                Category::Success | Category::Deterministic => "ok",
                Category::RateLimited { .. } => "rate_limited",
                Category::Capability => "unsupported",
                Category::ThisRequest => "not_for_this_provider",
                Category::ProviderFailure(FailureClass::Connect) => "connect_error",
                Category::ProviderFailure(FailureClass::Timeout) => "timeout",
                Category::ProviderFailure(FailureClass::Server) => "server_error",
                Category::ProviderFailure(FailureClass::Reply) => "bad_reply",
            },
        }
    }
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
        // A client can provoke this (ids the provider mangles): retried elsewhere, never a strike on the breaker.
        return Err((
            Category::ProviderFailure(FailureClass::Reply),
            "reply ids do not match the request".into(),
        ));
    }
    Ok(replies)
}

/// Sends one attempt to `pid`, classifies it, and records it (statistics, breaker, cool-down, capability). With
/// `stream`, a large successful single-call answer is handed on once its envelope head is judged ([`streamed`]).
pub(crate) async fn attempt(
    worker: &Rc<Worker>,
    pid: usize,
    plan: &CallPlan,
    upstream_body: &[u8],
    expected: &[u64],
    timeout: Duration,
    how: Sending<'_>,
) -> AttemptResult {
    let Sending {
        traceparent,
        stream,
    } = how;
    let config = &worker.config;
    let provider = &config.providers[pid];
    let batch = upstream_body.first() == Some(&b'[');
    let started = Instant::now();
    let coalesce = !batch && !plan.write && config.batches(pid) && expected.len() == 1;
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
            .map(|resp| (resp, None))
    } else {
        // Coalesced batches carry no traceparent: they hold several requests' calls.
        let mut line = [0u8; TRACEPARENT_LINE];
        let extra: &[u8] = match traceparent {
            Some(tp) => {
                line[..13].copy_from_slice(b"traceparent: ");
                line[13..13 + TRACEPARENT_LEN].copy_from_slice(tp);
                line[TRACEPARENT_LINE - 2..].copy_from_slice(b"\r\n");
                &line
            }
            None => &[],
        };
        let stream_above =
            (stream && !batch && expected.len() == 1).then_some(UPSTREAM_STREAM_ABOVE_BYTES);
        worker
            .upstream
            .post_stream(
                provider,
                upstream_body,
                timeout,
                !plan.write,
                extra,
                stream_above,
            )
            .await
    };
    let result = match result {
        Ok((resp, Some(tail))) => {
            let left = timeout.saturating_sub(started.elapsed());
            streamed(resp, tail, expected[0], left).await
        }
        Ok((resp, None)) => Ok(assess(resp, expected, batch)),
        Err(e) => Err(e),
    };
    let latency = started.elapsed();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) if e.kind == FailureKind::Budget => {
            tracing::debug!(provider = %provider.id, error = %e.message, "upstream answer over the buffer budget");
            return AttemptResult::OverBudget;
        }
        Err(e) => AttemptResult::Failed {
            category: Category::ProviderFailure(FailureClass::from_transport(e.kind)),
            error: e.message,
            reached: e.may_have_reached,
            reply: None,
        },
    };
    record(worker, pid, plan, &outcome, latency);
    outcome
}

/// A large answer arriving: passed on as it comes when its head says it is our call's `result` (`jsonrpc` and `id`
/// first; the rest is verified piece by piece on its way to the client); read whole and judged as any answer
/// otherwise (an error reply, another shape), so failover stays possible for them.
async fn streamed(
    resp: UpstreamResponse,
    mut tail: BodyTail,
    expected: u64,
    left: Duration,
) -> Result<AttemptResult, UpstreamError> {
    if let Some(head) = stream_reply::reply_head(&resp.body) {
        if jsonrpc::parse_upstream_id(&resp.body[head.id.clone()]) == Some(expected) {
            if let Err(e) = tail.start(&resp.body[head.value_start..]) {
                return Ok(AttemptResult::Failed {
                    category: Category::ProviderFailure(FailureClass::Server),
                    error: format!("response is not a JSON-RPC reply: {e}"),
                    reached: true,
                    reply: None,
                });
            }
            let views = vec![ReplyView {
                span: 0..resp.body.len(),
                id: head.id,
                kind: ReplyKind::Result,
            }];
            return Ok(AttemptResult::Usable {
                body: resp.body,
                views,
                tail: Some(tail),
            });
        }
    }
    let body = match monoio::time::timeout(left, tail.collect(resp.body)).await {
        Ok(body) => body?,
        Err(_) => {
            return Err(UpstreamError::new(
                FailureKind::Timeout,
                "answer not finished in time",
                true,
            ));
        }
    };
    let resp = UpstreamResponse { body, ..resp };
    Ok(assess(resp, &[expected], false))
}

/// What a provider's HTTP answer to an attempt is worth.
fn assess(resp: UpstreamResponse, expected: &[u64], batch: bool) -> AttemptResult {
    let views = match judge(resp.status, &resp.body, expected, batch, resp.retry_after) {
        Ok(views) => views,
        Err((category, error)) => {
            return AttemptResult::Failed {
                category,
                error,
                reached: true,
                reply: None,
            };
        }
    };
    // A single call's JSON-RPC error may still mean "try elsewhere" (throttled, unsupported, internal).
    let category = match (&views[..], batch) {
        ([only], false) => match &only.kind {
            ReplyKind::Result => Category::Success,
            ReplyKind::Error { code, message } => match classify_rpc_error(*code, message) {
                Category::RateLimited { .. } => Category::RateLimited {
                    retry_after: resp.retry_after,
                },
                other => other,
            },
        },
        _ => Category::Success,
    };
    if matches!(category, Category::Success | Category::Deterministic) {
        return AttemptResult::Usable {
            body: resp.body,
            views,
            tail: None,
        };
    }
    let error = match &views[0].kind {
        ReplyKind::Error { code, message } => format!("JSON-RPC error {code}: {message}"),
        ReplyKind::Result => String::new(),
    };
    AttemptResult::Failed {
        category,
        error,
        reached: true,
        reply: Some((resp.body, views)),
    }
}

/// A streamed answer that failed after its head was judged (and recorded as answered): the provider reset, stalled
/// or sent a body that is not the reply its head promised. A strike against its breaker (the client's connection is
/// closed by the edge), counted as a failed attempt and logged.
pub(crate) fn stream_failed(worker: &Worker, pid: usize, error: &UpstreamError, elapsed: Duration) {
    let config = &worker.config;
    let class = FailureClass::from_transport(error.kind);
    let opened = worker.routing.borrow_mut().health.breakers[pid].on_failure(
        class,
        &config.routing.breaker,
        Instant::now(),
    );
    let provider = &config.providers[pid];
    let error = config.redact(&error.message);
    if opened {
        tracing::warn!(provider = %provider.id, chain = %provider.chain, worker = worker.index, "circuit breaker opened");
    }
    tracing::warn!(provider = %provider.id, chain = %provider.chain, %error, "streamed answer failed mid-body: client connection closed");
    worker
        .stats
        .borrow_mut()
        .record(pid, Outcome::Failure, elapsed, Some(&error));
}

/// Records one attempt: routing state (through `routing::health`), statistics and logs.
fn record(
    worker: &Worker,
    pid: usize,
    plan: &CallPlan,
    outcome: &AttemptResult,
    latency: Duration,
) {
    let config = &worker.config;
    let (failure, error) = match outcome {
        AttemptResult::Usable { .. } | AttemptResult::OverBudget => (None, None),
        AttemptResult::Failed {
            category, error, ..
        } => (Some(category), Some(config.redact(error))),
    };
    let recorded = health::record(
        &mut worker.routing.borrow_mut(),
        &config.routing.breaker,
        pid,
        plan.key,
        failure,
        latency,
    );
    let provider = &config.providers[pid];
    if recorded.breaker_opened {
        tracing::warn!(provider = %provider.id, chain = %provider.chain, worker = worker.index, "circuit breaker opened");
    }
    let outcome = if recorded.kind == SampleKind::Answered {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    if let Some(error) = &error
        && let Some(suppressed) = worker.log_limit.allow(Warning::AttemptFailed)
    {
        tracing::warn!(provider = %provider.id, chain = %provider.chain, %error, suppressed, "upstream attempt failed");
    }
    worker
        .stats
        .borrow_mut()
        .record(pid, outcome, latency, error.as_deref());
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
                Category::ProviderFailure(FailureClass::Reply),
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
