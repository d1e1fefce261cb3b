//! Request coalescing: single read calls bound for the same provider within one event-loop turn travel as one
//! JSON-RPC batch, and the batch reply is split back to the callers. Nothing waits for company: the batch is sent
//! by a task that runs right after the calls that are ready in this turn, so an idle worker sends single calls as
//! before. Only calls of one method class share a batch (a cheap read never waits behind a heavy one); writes are
//! never coalesced. A provider that answers a batch with anything but an array of replies gets its calls re-sent
//! one by one and is not batched again by this worker.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use super::client::UpstreamClient;
use super::coalesce_queue::Waiter;
use super::error::{FailureKind, UpstreamError, UpstreamResponse};
use crate::evm::methods::MethodClass;

impl UpstreamClient {
    /// Sends one single-call body (whose upstream id is `uid`) to provider `pid`, batched with other calls of the
    /// same class that are ready in this event-loop turn.
    pub async fn post_coalesced(
        self: &Rc<Self>,
        pid: usize,
        class: MethodClass,
        body: Vec<u8>,
        uid: u64,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let provider = &self.config().providers[pid];
        if self.coalescer.no_batch.borrow().contains(&pid) {
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
                timeout,
                reply: tx,
            });
            queue.len() == 1
        };
        if first {
            monoio::spawn(self.clone().flush(key));
        }
        rx.await.unwrap_or_else(|_| {
            Err(UpstreamError::new(
                FailureKind::Reset,
                "coalesced call was dropped",
                true,
            ))
        })
    }

    async fn flush(self: Rc<Self>, key: (usize, MethodClass)) {
        let max = self.settings().max_coalesce.max(1);
        let batch: Vec<Waiter> = {
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
        let provider = &self.config().providers[key.0];
        if batch.len() == 1 {
            let w = batch.into_iter().next().expect("one waiter");
            let result = self.post(provider, &w.body, w.timeout, true).await;
            let _ = w.reply.send(result);
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
        let timeout = batch.iter().map(|w| w.timeout).max().unwrap_or_default();
        let resp = match self.post(provider, &body, timeout, true).await {
            Ok(resp) => resp,
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let replies = if (200..300).contains(&resp.status) {
            crate::wire::jsonrpc::inspect_batch_reply(&resp.body).ok()
        } else {
            None
        };
        match replies {
            Some(views) => {
                let mut by_uid: HashMap<u64, &crate::wire::jsonrpc::ReplyView> =
                    HashMap::with_capacity(views.len());
                for v in &views {
                    if let Some(id) =
                        crate::wire::jsonrpc::parse_upstream_id(&resp.body[v.id.clone()])
                    {
                        by_uid.insert(id, v);
                    }
                }
                for w in batch {
                    let result = match by_uid.get(&w.uid) {
                        Some(v) => Ok(UpstreamResponse {
                            status: resp.status,
                            body: resp.body[v.span.clone()].to_vec(),
                            retry_after: resp.retry_after,
                        }),
                        None => Err(UpstreamError::new(
                            FailureKind::Protocol,
                            "provider omitted the reply to a batched call",
                            true,
                        )),
                    };
                    let _ = w.reply.send(result);
                }
            }
            None if resp.status == 429 || resp.status >= 500 => {
                // Throttled or failing: every caller sees the same answer and fails over on its own.
                for w in batch {
                    let _ = w.reply.send(Ok(UpstreamResponse {
                        status: resp.status,
                        body: resp.body.clone(),
                        retry_after: resp.retry_after,
                    }));
                }
            }
            None => {
                // Not an array of replies: this provider does not take batches. Send each call alone from now on.
                tracing::info!(provider = %provider.id, status = resp.status, "provider refused a JSON-RPC batch; not batching its calls");
                self.coalescer.no_batch.borrow_mut().insert(key.0);
                for w in batch {
                    let result = self.post(provider, &w.body, w.timeout, true).await;
                    let _ = w.reply.send(result);
                }
            }
        }
    }
}
