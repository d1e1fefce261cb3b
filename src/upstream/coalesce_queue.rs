//! The state of request coalescing on one worker: calls waiting to be sent, per provider and method class, and the
//! providers that refused a batch with the back-off before they are offered one again. The upstream client holds it;
//! [`super::coalesce`] fills and drains it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::error::{UpstreamError, UpstreamResponse};
use crate::evm::methods::MethodClass;

/// A refusing provider's back-off doubles at each refusal up to this many times `upstream.coalesce_retry_ms`.
const MAX_BACKOFF_FACTOR: u32 = 16;

pub(super) struct Waiter {
    pub(super) body: Vec<u8>,
    pub(super) uid: u64,
    /// When its caller stops waiting (the attempt's own timeout).
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<UpstreamResponse, UpstreamError>>,
}

/// A provider that refused a batch: not batched before `until`.
struct Refusal {
    until: Instant,
    backoff: Duration,
}

/// Calls waiting to be sent, per provider and method class.
#[derive(Default)]
pub struct Coalescer {
    pub(super) queues: RefCell<HashMap<(usize, MethodClass), Vec<Waiter>>>,
    /// Providers that refused a batch, until one is accepted again.
    refusals: RefCell<HashMap<usize, Refusal>>,
}

impl Coalescer {
    /// True unless `pid` refused a batch and its back-off has not run out.
    pub(super) fn batching(&self, pid: usize, now: Instant) -> bool {
        self.refusals
            .borrow()
            .get(&pid)
            .is_none_or(|r| now >= r.until)
    }

    /// `pid` refused a batch sent at `sent`: its calls go alone for a back-off that starts at `base` and doubles
    /// with every refusal of a batch sent after the previous back-off ran out. Returns the back-off.
    pub(super) fn refused(&self, pid: usize, base: Duration, sent: Instant) -> Duration {
        let mut refusals = self.refusals.borrow_mut();
        let now = Instant::now();
        let backoff = match refusals.get(&pid) {
            // Batches that were already on their way when it refused: the same refusal.
            Some(r) if sent < r.until => return r.backoff,
            Some(r) => (r.backoff * 2).min(base * MAX_BACKOFF_FACTOR),
            None => base,
        };
        refusals.insert(
            pid,
            Refusal {
                until: now + backoff,
                backoff,
            },
        );
        backoff
    }

    /// `pid` answered a batch: forget its refusals.
    pub(super) fn accepted(&self, pid: usize) {
        if !self.refusals.borrow().is_empty() {
            self.refusals.borrow_mut().remove(&pid);
        }
    }
}
