//! Request coalescing: single read calls bound for the same provider within one event-loop turn travel as one
//! JSON-RPC batch, and the batch reply is split back to the callers. Nothing waits for company: the batch is sent
//! by a task that runs right after the calls that are ready in this turn, so an idle worker sends single calls as
//! before. Only calls of one method class share a batch (a cheap read never waits behind a heavy one); writes are
//! never coalesced.
//!
//! Sharing a batch never ties callers together: each caller waits no longer than its own attempt timeout (then it
//! fails over like any timed-out attempt, while the batch carries on for the others), and the batch stops when every
//! caller has given up. A batch that fails as a whole for a reason one member can cause (reset, malformed or
//! oversized reply, the worker's buffer budget) has its members re-sent alone, at once, each within its own time; a
//! member the reply omits is re-sent alone. A provider that answers a batch with anything but an array of replies
//! (or with ids that do not match) refuses batches: its members are re-sent alone, and its calls go alone for
//! `upstream.coalesce_retry_ms` (doubling while it keeps refusing), after which a batch is offered again.

use std::collections::HashMap;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{Either, join_all, select};

use super::client::UpstreamClient;
use super::coalesce_queue::Waiter;
use super::error::{FailureKind, UpstreamError, UpstreamResponse};
use crate::config::Provider;
use crate::evm::methods::MethodClass;
use crate::wire::jsonrpc::{ReplyView, inspect_batch_reply, parse_upstream_id};

/// What a provider's answer to a batch comes to.
enum BatchOutcome<'r> {
    /// One reply per id, every id one we sent: handed out by upstream id.
    Replies(HashMap<u64, &'r ReplyView>),
    /// Throttled or failing as a whole (429, 5xx): every member sees that answer and fails over on its own.
    Failing,
    /// Not a usable batch reply: the provider does not take batches.
    Refused,
}

impl UpstreamClient {
    /// Sends one single-call body (whose upstream id is `uid`) to provider `pid`, batched with other calls of the
    /// same class that are ready in this event-loop turn. The caller waits at most `timeout`, whatever its batch.
    pub async fn post_coalesced(
        self: &Rc<Self>,
        pid: usize,
        class: MethodClass,
        body: Vec<u8>,
        uid: u64,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let provider = &self.config().providers[pid];
        let now = Instant::now();
        if !self.coalescer.batching(pid, now) {
            return self.post(provider, &body, timeout, true).await;
        }
        let (tx, rx) = oneshot::channel();
        let key = (pid, class);
        let first = {
            let mut queues = self.coalescer.queues.borrow_mut();
            let queue = queues.entry(key).or_default();
            queue.push(Waiter {
                body,
                uid,
                deadline: now + timeout,
                reply: tx,
            });
            queue.len() == 1
        };
        if first {
            monoio::spawn(self.clone().flush(key));
        }
        match monoio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UpstreamError::new(
                FailureKind::Reset,
                "coalesced call was dropped",
                true,
            )),
            Err(_) => Err(UpstreamError::new(
                FailureKind::Timeout,
                format!("no answer within {} ms (batched)", timeout.as_millis()),
                true,
            )),
        }
    }

    async fn flush(self: Rc<Self>, key: (usize, MethodClass)) {
        let max = self.config().batch_max(key.0);
        let mut batch: Vec<Waiter> = {
            let mut queues = self.coalescer.queues.borrow_mut();
            let Some(queue) = queues.get_mut(&key) else {
                return;
            };
            let take = queue.len().min(max);
            let batch: Vec<Waiter> = queue.drain(..take).collect();
            if queue.is_empty() {
                queues.remove(&key);
            } else {
                monoio::spawn(self.clone().flush(key));
            }
            batch
        };
        // Callers that gave up while queued are not sent.
        batch.retain(|w| !w.reply.is_canceled());
        let provider = &self.config().providers[key.0];
        if batch.len() <= 1 {
            if let Some(w) = batch.pop() {
                self.alone(provider, w).await;
            }
            return;
        }
        let mut body =
            Vec::with_capacity(batch.iter().map(|w| w.body.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, w) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&w.body);
        }
        body.push(b']');
        let sent = Instant::now();
        let latest = batch.iter().map(|w| w.deadline).max().unwrap_or(sent);
        let result = {
            // The batch lasts as long as its most patient caller, and no longer than all of them wait.
            let exchange = pin!(self.post(
                provider,
                &body,
                latest.saturating_duration_since(sent),
                true
            ));
            let all_gone = join_all(batch.iter_mut().map(|w| w.reply.cancellation()));
            match select(exchange, all_gone).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => return,
            }
        };
        drop(body);
        let resp = match result {
            Ok(resp) => resp,
            // Nothing any member could cause: every caller fails over on its own.
            Err(e) if matches!(e.kind, FailureKind::Connect | FailureKind::Timeout) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
                return;
            }
            // Reset, malformed, too large, over the budget: possibly one member's doing. Each goes alone.
            Err(e) => {
                tracing::debug!(provider = %provider.id, error = %e, "batch failed as a whole; its calls go alone");
                self.each_alone(provider, batch).await;
                return;
            }
        };
        let views = if (200..300).contains(&resp.status) {
            inspect_batch_reply(&resp.body).ok()
        } else {
            None
        };
        let outcome = match &views {
            Some(views) => by_uid(&resp.body, views, &batch),
            None if resp.status == 429 || resp.status >= 500 => BatchOutcome::Failing,
            None => BatchOutcome::Refused,
        };
        match outcome {
            BatchOutcome::Replies(replies) => {
                self.coalescer.accepted(key.0);
                let mut omitted = Vec::new();
                for w in batch {
                    match replies.get(&w.uid) {
                        Some(v) => {
                            let _ = w.reply.send(Ok(UpstreamResponse {
                                status: resp.status,
                                body: resp.body[v.span.clone()].to_vec(),
                                retry_after: resp.retry_after,
                            }));
                        }
                        None => omitted.push(w),
                    }
                }
                drop(replies);
                drop(views);
                drop(resp);
                self.each_alone(provider, omitted).await;
            }
            BatchOutcome::Failing => {
                for w in batch {
                    let _ = w.reply.send(Ok(UpstreamResponse {
                        status: resp.status,
                        body: resp.body.clone(),
                        retry_after: resp.retry_after,
                    }));
                }
            }
            BatchOutcome::Refused => {
                let backoff = self
                    .coalescer
                    .refused(key.0, self.settings().coalesce_retry, sent);
                tracing::info!(provider = %provider.id, status = resp.status, backoff_ms = backoff.as_millis() as u64, "provider refused a JSON-RPC batch; its calls go alone for a while");
                drop(views);
                drop(resp);
                self.each_alone(provider, batch).await;
            }
        }
    }

    /// Sends each waiter's call alone, all at once.
    async fn each_alone(&self, provider: &Provider, batch: Vec<Waiter>) {
        join_all(batch.into_iter().map(|w| self.alone(provider, w))).await;
    }

    /// Sends one waiter's call alone within the time its caller still waits; stops when the caller gives up.
    async fn alone(&self, provider: &Provider, mut w: Waiter) {
        let remaining = w.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let result = {
            let exchange = pin!(self.post(provider, &w.body, remaining, true));
            match select(exchange, w.reply.cancellation()).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => return,
            }
        };
        let _ = w.reply.send(result);
    }
}

/// The replies of a batch by upstream id; a reply with an id we did not send, or one id twice, makes the whole
/// reply unusable (refused).
fn by_uid<'r>(body: &[u8], views: &'r [ReplyView], batch: &[Waiter]) -> BatchOutcome<'r> {
    let mut replies = HashMap::with_capacity(views.len());
    for v in views {
        let Some(id) = parse_upstream_id(&body[v.id.clone()]) else {
            return BatchOutcome::Refused;
        };
        if !batch.iter().any(|w| w.uid == id) || replies.insert(id, v).is_some() {
            return BatchOutcome::Refused;
        }
    }
    BatchOutcome::Replies(replies)
}
