//! Forwarding one upstream call (a single call or a sub-batch) to a plan's candidates until one answers usably,
//! inside the method's deadline. The progress is an explicit state, [`Attempts`]: which candidate is next, how many
//! were tried, the deadline and each attempt's share of it, whether to hedge, the failures so far, and the providers
//! the breakers excluded (tried last, best first, unless known dead, so a read is not refused while a provider might
//! still answer). A write is never sent to a second provider once it may have reached one.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};

use crate::config::Chain;
use crate::error::{Attempt, RpcError};
use crate::routing::breaker::BreakerState;
use crate::routing::classify::{Category, FailureClass};
use crate::routing::health;
use crate::rpc::attempt::{AttemptResult, Sending, attempt};
use crate::rpc::meta::Meta;
use crate::rpc::plan::CallPlan;
use crate::shard::state::Worker;
use crate::telemetry::trace::{AttemptKind, Child, RequestTrace, Value};
use crate::upstream::stream::BodyTail;
use crate::wire::jsonrpc::ReplyView;

/// The shortest time worth giving an attempt; below it the deadline is spent.
const MIN_ATTEMPT: Duration = Duration::from_millis(1);

/// A usable answer from a provider.
pub(crate) struct Forwarded {
    pub body: Vec<u8>,
    pub views: Vec<ReplyView>,
    /// The provider that answered.
    pub pid: usize,
    /// A streamed answer's verified rest (`body` then holds its first bytes; see `rpc::attempt`).
    pub tail: Option<BodyTail>,
}

/// What to send next.
struct Step {
    pid: usize,
    timeout: Duration,
    /// Race this provider if `pid` is slower than its tail latency.
    hedge_to: Option<usize>,
    /// Time left before the deadline when the step started.
    remaining: Duration,
}

/// What settling one attempt's result decided.
enum Settled {
    Answered(Forwarded),
    Continue,
    /// A write may have reached a provider: nothing more is sent.
    Stop,
    /// The worker's budget of buffered answer bytes refused the answer: the request ends.
    OverBudget,
}

/// The progress of forwarding one call.
struct Attempts<'p> {
    plan: &'p CallPlan,
    deadline: Instant,
    max_attempts: usize,
    request_timeout: Duration,
    hedging: bool,
    /// Attempts sent so far (hedges included).
    tried: usize,
    /// Index of the next candidate to consider.
    next: usize,
    /// Candidates the breakers rejected, in candidate order (best first).
    excluded: Vec<usize>,
    /// Providers that timed out on this call: struck only if another one answers it in time.
    timed_out: Vec<usize>,
    last_was_timeout: bool,
    failures: Vec<Attempt>,
    /// The last provider's JSON-RPC error reply: the answer when every provider declines.
    fallback: Option<Forwarded>,
    started: Instant,
}

impl<'p> Attempts<'p> {
    fn new(worker: &Worker, chain: &Chain, plan: &'p CallPlan) -> Self {
        let settings = worker.upstream.settings();
        let max_attempts = if plan.write {
            plan.candidates.len()
        } else {
            settings.max_attempts.min(plan.candidates.len())
        };
        Attempts {
            plan,
            deadline: Instant::now() + worker.config.routing.deadline(plan.class),
            max_attempts,
            request_timeout: settings.request_timeout,
            hedging: chain.hedge && !plan.write && plan.candidates.len() > 1,
            tried: 0,
            next: 0,
            excluded: Vec::new(),
            timed_out: Vec::new(),
            last_was_timeout: false,
            failures: Vec::new(),
            fallback: None,
            started: Instant::now(),
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The next provider to try and its share of the deadline; `None` when done (tried enough, none left, or the
    /// deadline is spent).
    fn next_step(&mut self, worker: &Worker) -> Option<Step> {
        let candidates = &self.plan.candidates;
        while self.tried < self.max_attempts && self.next < candidates.len() {
            let pid = candidates[self.next];
            self.next += 1;
            if !health::admit(&mut worker.routing.borrow_mut(), pid) {
                self.excluded.push(pid);
                continue;
            }
            return self.step_to(worker, pid);
        }
        // The candidates that could be tried failed or were excluded: a read still goes to the best excluded one
        // not known to be down, before the client sees an error.
        if self.tried < self.max_attempts && !self.plan.write {
            let routing = worker.routing.borrow();
            let pick = self
                .excluded
                .iter()
                .position(|&p| !health::known_dead(&routing, p));
            drop(routing);
            if let Some(i) = pick {
                let pid = self.excluded.remove(i);
                return self.step_to(worker, pid);
            }
        }
        None
    }

    fn step_to(&mut self, worker: &Worker, pid: usize) -> Option<Step> {
        let remaining = self.remaining();
        if remaining < MIN_ATTEMPT {
            self.last_was_timeout = true;
            return None;
        }
        self.tried += 1;
        // Reads leave time for the providers after this one: a hanging provider costs a share of the deadline, not
        // all of it. A write gets all that is left (it is sent to one provider only once it may have arrived).
        let after = (self.max_attempts - self.tried).min(self.plan.candidates.len() - self.next);
        let share = if self.plan.write {
            remaining
        } else {
            remaining / (after as u32 + 1)
        };
        let hedge_to = if self.hedging && self.tried < self.max_attempts {
            let routing = worker.routing.borrow();
            self.plan.candidates[self.next..]
                .iter()
                .copied()
                .find(|&p| health::breaker_state(&routing, p) == BreakerState::Closed)
        } else {
            None
        };
        Some(Step {
            pid,
            timeout: self.request_timeout.min(share.max(MIN_ATTEMPT)),
            hedge_to,
            remaining,
        })
    }

    /// A hedge to `pid` was sent: it counts as tried, and the candidates before it are skipped.
    fn hedged(&mut self, worker: &Worker, meta: Option<&mut Meta>, pid: usize) {
        health::count_hedge(&mut worker.routing.borrow_mut());
        if let Some(m) = meta {
            m.hedged = true;
        }
        if let Some(i) = self.plan.candidates.iter().position(|&p| p == pid) {
            self.next = self.next.max(i + 1);
        }
        self.tried += 1;
    }

    fn settle(&mut self, worker: &Worker, pid: usize, result: AttemptResult) -> Settled {
        let config = &worker.config;
        match result {
            AttemptResult::Usable { body, views, tail } => {
                let mut routing = worker.routing.borrow_mut();
                if !self.failures.is_empty() {
                    health::count_failover(&mut routing);
                }
                // Another provider answered this call in time: the ones that timed out on it were slow, not the call.
                for slow in self.timed_out.drain(..) {
                    if health::strike_timeout(&mut routing, &config.routing.breaker, slow) {
                        let p = &config.providers[slow];
                        tracing::warn!(provider = %p.id, chain = %p.chain, worker = worker.index, "circuit breaker opened: timed out where another provider answered");
                    }
                }
                Settled::Answered(Forwarded {
                    body,
                    views,
                    pid,
                    tail,
                })
            }
            AttemptResult::Failed {
                category,
                error,
                reached,
                reply,
            } => {
                self.last_was_timeout =
                    category == Category::ProviderFailure(FailureClass::Timeout);
                if self.last_was_timeout {
                    self.timed_out.push(pid);
                }
                if let Some((body, views)) = reply {
                    self.fallback = Some(Forwarded {
                        body,
                        views,
                        pid,
                        tail: None,
                    });
                }
                self.failures.push(Attempt {
                    provider: config.providers[pid].id.clone(),
                    error: config.redact(&error),
                });
                if self.plan.write && reached {
                    Settled::Stop
                } else {
                    Settled::Continue
                }
            }
            AttemptResult::OverBudget => Settled::OverBudget,
        }
    }

    /// No provider answered usably: the truest error.
    fn finish(self) -> Result<Forwarded, RpcError> {
        // Every provider declined with a JSON-RPC error (unsupported, throttled): the last such answer is the truest.
        if let Some(fallback) = self.fallback {
            return Ok(fallback);
        }
        if self.failures.is_empty() {
            return Err(RpcError::NoProviderAvailable {
                reason: "every provider is excluded for now (circuit breakers open)".into(),
            });
        }
        if self.last_was_timeout && Instant::now() >= self.deadline {
            return Err(RpcError::DeadlineExceeded {
                attempts: self.failures,
            });
        }
        Err(RpcError::AllProvidersFailed {
            attempts: self.failures,
        })
    }
}

/// One call's upstream form: the bytes to send and the upstream ids the reply must carry.
pub(crate) struct Upstream<'a> {
    pub body: &'a [u8],
    pub ids: &'a [u64],
    /// A large successful answer may be streamed to the client (a single call over HTTP, its body untouched).
    pub stream: bool,
    /// The request's trace, when tracing is on and it has one: each attempt gets a child span.
    pub trace: Option<&'a RequestTrace>,
}

/// Sends `call` to the plan's candidates until one answers usably, within the method's deadline.
pub(crate) async fn forward(
    worker: &Rc<Worker>,
    chain: &Chain,
    plan: &CallPlan,
    call: Upstream<'_>,
    mut meta: Option<&mut Meta>,
) -> Result<Forwarded, RpcError> {
    let mut state = Attempts::new(worker, chain, plan);
    if let Some(m) = meta.as_deref_mut() {
        m.strategy = plan.strategy;
    }
    if let Some(m) = meta.as_deref_mut().filter(|m| !m.events_only) {
        m.candidates = plan
            .candidates
            .iter()
            .map(|&p| worker.config.providers[p].id.clone())
            .collect();
    }
    while let Some(step) = state.next_step(worker) {
        let results = run_step(worker, &mut state, &step, &call, meta.as_deref_mut()).await;
        let mut over_budget = false;
        for (pid, result) in results {
            match state.settle(worker, pid, result) {
                Settled::Answered(forwarded) => {
                    if let Some(m) = meta.as_deref_mut() {
                        m.provider = Some(worker.config.providers[pid].id.clone());
                        m.retries = state.failures.len() as u32;
                        m.upstream = state.started.elapsed();
                        m.breaker = health::breaker_state(&worker.routing.borrow(), pid);
                    }
                    return Ok(forwarded);
                }
                Settled::Continue => {}
                Settled::Stop => return finish(state, meta),
                Settled::OverBudget => over_budget = true,
            }
        }
        if over_budget {
            if let Some(m) = meta {
                m.upstream = state.started.elapsed();
            }
            return Err(RpcError::ResponseBudget);
        }
    }
    finish(state, meta)
}

fn finish(state: Attempts<'_>, meta: Option<&mut Meta>) -> Result<Forwarded, RpcError> {
    if let Some(m) = meta {
        m.retries = state.failures.len().saturating_sub(1) as u32;
        m.upstream = state.started.elapsed();
    }
    state.finish()
}

/// Sends one step: the attempt, and a hedge racing it when the first is slower than its provider's tail latency.
/// Returns the results that completed, the winner first; a usable winner cancels the other attempt.
async fn run_step(
    worker: &Rc<Worker>,
    state: &mut Attempts<'_>,
    step: &Step,
    call: &Upstream<'_>,
    meta: Option<&mut Meta>,
) -> Vec<(usize, AttemptResult)> {
    let plan = state.plan;
    let trace = call.trace;
    let first_kind = if state.tried > 1 {
        AttemptKind::Retry
    } else {
        AttemptKind::First
    };
    let send = |pid, timeout, child: Option<Child>| async move {
        let how = Sending {
            traceparent: child.as_ref().map(|c| &c.header),
            stream: call.stream,
        };
        attempt(worker, pid, plan, call.body, call.ids, timeout, how).await
    };
    let first_child = trace.map(RequestTrace::child);
    let first_started = Instant::now();
    let first = Box::pin(send(step.pid, step.timeout, first_child));
    let record =
        |child: Option<Child>, pid: usize, kind: AttemptKind, r: Option<&AttemptResult>| {
            if let (Some(t), Some(c)) = (trace, child) {
                trace_attempt(worker, t, &c, (pid, plan), call.ids.len(), kind, r);
            }
        };
    let Some(second_pid) = step.hedge_to else {
        let r = first.await;
        record(first_child, step.pid, first_kind, Some(&r));
        return vec![(step.pid, r)];
    };
    let delay = hedge_delay(worker, step.pid, plan).min(step.remaining);
    let first = match select(first, std::pin::pin!(monoio::time::sleep(delay))).await {
        Either::Left((result, _)) => {
            record(first_child, step.pid, first_kind, Some(&result));
            return vec![(step.pid, result)];
        }
        Either::Right((_, first)) => first,
    };
    state.hedged(worker, meta, second_pid);
    let second_child = trace.map(RequestTrace::child);
    let second = Box::pin(send(
        second_pid,
        state.request_timeout.min(state.remaining()),
        second_child,
    ));
    let hedge = AttemptKind::Hedge;
    match select(first, second).await {
        Either::Left((r, _)) if r.is_usable() => {
            record(first_child, step.pid, first_kind, Some(&r));
            record(second_child, second_pid, hedge, None);
            vec![(step.pid, r)]
        }
        Either::Right((r, _)) if r.is_usable() => {
            record(second_child, second_pid, hedge, Some(&r));
            record(first_child, step.pid, first_kind, None);
            // The first provider was outrun: it is at least this slow for the method (a sample, not a failure).
            health::outrun(
                &mut worker.routing.borrow_mut(),
                step.pid,
                plan.key,
                first_started.elapsed(),
            );
            vec![(second_pid, r)]
        }
        Either::Left((r, other)) => {
            record(first_child, step.pid, first_kind, Some(&r));
            let r2 = other.await;
            record(second_child, second_pid, hedge, Some(&r2));
            vec![(step.pid, r), (second_pid, r2)]
        }
        Either::Right((r, other)) => {
            record(second_child, second_pid, hedge, Some(&r));
            let r1 = other.await;
            record(first_child, step.pid, first_kind, Some(&r1));
            vec![(second_pid, r), (step.pid, r1)]
        }
    }
}

/// Records one attempt's span on the request's trace; `result` is `None` for an attempt cancelled by a winner.
fn trace_attempt(
    worker: &Worker,
    trace: &RequestTrace,
    child: &Child,
    (pid, plan): (usize, &CallPlan),
    calls: usize,
    kind: AttemptKind,
    result: Option<&AttemptResult>,
) {
    if !trace.sampled() {
        return;
    }
    let config = &worker.config;
    let provider = &config.providers[pid];
    let method = plan.key.name();
    let outcome = result.map_or("cancelled", AttemptResult::outcome);
    let error = match result {
        Some(AttemptResult::Failed { error, .. }) => Some(config.redact(error)),
        Some(AttemptResult::OverBudget) => Some("answer over the buffer budget".to_string()),
        _ => None,
    };
    let mut attributes = vec![
        ("lasso.provider", Value::Str(provider.id.clone())),
        ("lasso.chain", Value::Str(provider.chain.clone())),
        ("rpc.system", Value::Str("jsonrpc".into())),
        ("rpc.method", Value::Str(method.clone())),
        ("lasso.attempt", Value::Str(kind.as_str().into())),
        ("lasso.outcome", Value::Str(outcome.into())),
    ];
    if calls > 1 {
        attributes.push(("lasso.batch_calls", Value::Int(calls as i64)));
    }
    trace.attempt(child, &format!("upstream {method}"), attributes, error);
}

/// When to hedge a read to `pid`: its measured tail latency, bounded.
fn hedge_delay(worker: &Worker, pid: usize, plan: &CallPlan) -> Duration {
    let hedge = &worker.config.routing.hedge;
    let routing = worker.routing.borrow();
    let measured = routing
        .table
        .latency(pid, plan.key, worker.config.routing.min_samples)
        .map(|s| Duration::from_micros(s.quantile_us(hedge.quantile)));
    measured
        .unwrap_or(hedge.max_delay)
        .clamp(hedge.min_delay, hedge.max_delay)
}
