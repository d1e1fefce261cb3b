//! How the outcome of one upstream attempt changes a worker's routing state: breakers, rate-limit cool-downs,
//! unsupported-method marks, the recorder's samples and its hedge and failover counters. The pipeline reports what
//! happened through these functions (narrow parameters, no worker) and keeps logging and statistics to itself.
//!
//! Breakers are shared by every client of the worker, so they only hear what says something about the provider:
//! a timeout counts against a provider only once another provider answered the same request in time (a call that
//! is slow everywhere is the request's weight, not a provider's fault: [`strike_timeout`]); a provider outrun by a
//! hedge gets a slow latency sample, not a strike ([`outrun`]); replies that do not fit the request (ids, size) never
//! count (`FailureClass::Reply`).

use std::time::{Duration, Instant};

use crate::config::BreakerSettings;
use crate::evm::methods::MethodKey;
use crate::routing::breaker::{Admission, BreakerState};
use crate::routing::classify::{Category, FailureClass};
use crate::routing::recorder::SampleKind;
use crate::routing::state::RoutingState;

/// A rate-limited provider without a `Retry-After` pauses this long.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest pause a provider's `Retry-After` can ask for.
const MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// How long a provider that declared a method unsupported is believed.
const UNSUPPORTED_FOR: Duration = Duration::from_secs(600);

/// What recording one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub kind: SampleKind,
    /// The attempt opened the provider's breaker.
    pub breaker_opened: bool,
}

/// Records one attempt of `pid` for `key` that took `latency`: `failure` is `None` for a usable answer, else the
/// category of the failure.
pub(crate) fn record(
    routing: &mut RoutingState,
    settings: &BreakerSettings,
    pid: usize,
    key: MethodKey,
    failure: Option<&Category>,
    latency: Duration,
) -> Recorded {
    let now = Instant::now();
    let mut breaker_opened = false;
    let kind = match failure {
        None => {
            routing.health.breakers[pid].on_success(settings);
            SampleKind::Answered
        }
        Some(Category::RateLimited { retry_after }) => {
            let pause = retry_after.unwrap_or(DEFAULT_COOLDOWN).min(MAX_COOLDOWN);
            routing.health.cooldown_until[pid] = Some(now + pause);
            routing.health.breakers[pid].release_probe();
            SampleKind::RateLimited
        }
        Some(Category::Capability) => {
            let until = now + UNSUPPORTED_FOR;
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
        Some(Category::ThisRequest) => {
            routing.health.breakers[pid].release_probe();
            SampleKind::Unsupported
        }
        Some(Category::ProviderFailure(FailureClass::Timeout)) => {
            // Judged when the request ends (`strike_timeout`); the probe it held is free again meanwhile.
            routing.health.breakers[pid].release_probe();
            SampleKind::Failed
        }
        Some(Category::ProviderFailure(class)) => {
            breaker_opened = routing.health.breakers[pid].on_failure(*class, settings, now);
            SampleKind::Failed
        }
        Some(Category::Success | Category::Deterministic) => SampleKind::Answered,
    };
    routing.recorder.record(pid, key, kind, latency);
    Recorded {
        kind,
        breaker_opened,
    }
}

/// A timeout of `pid` on a request that another provider then answered in time: a strike against `pid`'s breaker
/// (consecutive ones open it; any success resets them). True when this opened the breaker.
pub(crate) fn strike_timeout(
    routing: &mut RoutingState,
    settings: &BreakerSettings,
    pid: usize,
) -> bool {
    routing.health.breakers[pid].on_failure(FailureClass::Timeout, settings, Instant::now())
}

/// `pid` was outrun by a hedge after `waited` without answering: it is at least that slow for `key`, which the
/// latency-ranked strategies see at the next merge. Not a failure: it may well have answered a moment later.
pub(crate) fn outrun(routing: &mut RoutingState, pid: usize, key: MethodKey, waited: Duration) {
    routing
        .recorder
        .record(pid, key, SampleKind::Answered, waited);
}

/// Whether `pid`'s breaker is open because its connections were refused (tried last, if ever, as a last resort).
pub(crate) fn known_dead(routing: &RoutingState, pid: usize) -> bool {
    routing.health.breakers[pid].known_dead(Instant::now())
}

/// May `pid` be tried now? (Its breaker may reject it; a half-open breaker admits one probe.)
pub(crate) fn admit(routing: &mut RoutingState, pid: usize) -> bool {
    routing.health.breakers[pid].admit(Instant::now()) != Admission::Rejected
}

/// The state of `pid`'s breaker now.
pub(crate) fn breaker_state(routing: &RoutingState, pid: usize) -> BreakerState {
    routing.health.breakers[pid].state(Instant::now())
}

/// Counts a hedge sent.
pub(crate) fn count_hedge(routing: &mut RoutingState) {
    routing.recorder.hedges += 1;
}

/// Counts a call answered by a provider after another one failed.
pub(crate) fn count_failover(routing: &mut RoutingState) {
    routing.recorder.failovers += 1;
}
