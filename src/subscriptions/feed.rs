//! One shared upstream feed's state machine: it subscribes on the best WebSocket-capable provider ([`establish`]),
//! receives that provider's notifications in order, deduplicates them (heads by hash, logs by block hash + log index +
//! `removed`), fills gaps over HTTP (`eth_getBlockByNumber` for heads, `eth_getLogs` in chunks for logs) and fans each
//! event out to the feed's clients under their own subscription ids. When the provider drops the connection, stalls
//! (no head for the stall timeout) or falls more than `max_lag_blocks` behind the consensus head, the feed
//! resubscribes on the next provider and backfills what was missed ([`run_feed`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use sonic_rs::{JsonValueMutTrait, JsonValueTrait};

use crate::config::Chain;
use crate::error::RpcError;
use crate::evm::methods::{BlockTarget, MethodKey};
use crate::routing::router::{RouteInputs, RouteQuery};
use crate::rpc::target::{Pick, Target};
use crate::shard::state::Worker;
use crate::subscriptions::registry::{Feed, Kind, Registry};
use crate::upstream::ws::{UpstreamEvent, UpstreamWs};

/// The provider currently serving a feed.
struct Current {
    pid: usize,
    ws: Rc<UpstreamWs>,
    sub_id: String,
}

/// Per-feed delivery state.
struct Delivery {
    last_head: Option<u64>,
    seen: VecDeque<Vec<u8>>,
    seen_set: HashSet<Vec<u8>>,
    /// Logs: the highest block whose logs are known delivered (backfill starts here after a failover).
    covered: Option<u64>,
    last_event: Instant,
    /// The last event processed had waited in this worker's queue (the worker is behind, not the provider).
    backlogged: bool,
}

const SEEN_WINDOW: usize = 4096;

impl Delivery {
    fn remember(&mut self, key: Vec<u8>) -> bool {
        if self.seen_set.contains(&key) {
            return false;
        }
        if self.seen.len() == SEEN_WINDOW {
            if let Some(old) = self.seen.pop_front() {
                self.seen_set.remove(&old);
            }
        }
        self.seen.push_back(key.clone());
        self.seen_set.insert(key);
        true
    }
}

fn field_u64(raw: &[u8], name: &str) -> Option<u64> {
    let v = sonic_rs::get(raw, [name]).ok()?;
    let s = sonic_rs::JsonValueTrait::as_str(&v)?;
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

fn field_raw(raw: &[u8], name: &str) -> Vec<u8> {
    sonic_rs::get(raw, [name])
        .map(|v| v.as_raw_str().as_bytes().to_vec())
        .unwrap_or_default()
}

fn chain_of(worker: &Worker, target: Target) -> &Chain {
    &worker.config.profiles[target.profile].chains[target.chain]
}

/// Candidate providers with a WebSocket URL, in routing order, skipping those avoided.
fn ws_candidates(worker: &Worker, target: Target, avoid: &HashMap<usize, Instant>) -> Vec<usize> {
    let config = &worker.config;
    let chain = chain_of(worker, target);
    let now = Instant::now();
    let list = match target.pick {
        Pick::Provider(pid) => vec![pid],
        Pick::Strategy(strategy) => {
            let routing = worker.routing.borrow();
            let inputs = RouteInputs {
                config,
                table: &routing.table,
                health: &routing.health,
                now,
            };
            let q = RouteQuery {
                chain,
                strategy,
                method: "eth_subscribe",
                key: MethodKey::of("eth_subscribe"),
                target: BlockTarget::Head,
            };
            worker.router.borrow_mut().candidates(&inputs, &q).to_vec()
        }
    };
    list.into_iter()
        .filter(|&p| config.providers[p].ws_url.is_some())
        .filter(|p| avoid.get(p).is_none_or(|until| *until <= now))
        .collect()
}

async fn establish(
    worker: &Rc<Worker>,
    registry: &Rc<Registry>,
    target: Target,
    feed: &Feed,
    avoid: &HashMap<usize, Instant>,
) -> Result<Current, String> {
    let timeout = worker.config.websocket.upstream_connect_timeout;
    let mut errors = Vec::new();
    for pid in ws_candidates(worker, target, avoid) {
        let ws = match registry.upstream(worker, pid).await {
            Ok(ws) => ws,
            Err(e) => {
                errors.push(format!("{}: {e}", worker.config.providers[pid].id));
                continue;
            }
        };
        match ws
            .subscribe(&feed.params, feed.inbox.clone(), timeout)
            .await
        {
            Ok(sub_id) => return Ok(Current { pid, ws, sub_id }),
            Err(e) => errors.push(format!(
                "{}: {}",
                worker.config.providers[pid].id,
                worker.config.redact(&e)
            )),
        }
    }
    if errors.is_empty()
        && chain_of(worker, target)
            .providers
            .iter()
            .all(|&p| worker.config.providers[p].ws_url.is_none())
    {
        Err("no provider of this chain has a ws_url".into())
    } else if errors.is_empty() {
        Err("every provider with a ws_url is excluded for now".into())
    } else {
        Err(errors.join("; "))
    }
}

/// One HTTP JSON-RPC call to `pid` (used for backfill); the raw `result`.
async fn http_call(worker: &Worker, pid: usize, method: &str, params: &str) -> Option<Vec<u8>> {
    let body =
        format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{method}\",\"params\":{params}}}");
    let p = &worker.config.providers[pid];
    let resp = worker
        .upstream
        .post(
            p,
            body.as_bytes(),
            worker.config.upstream.request_timeout,
            true,
        )
        .await
        .ok()?;
    if crate::wire::jsonrpc::nesting_exceeds(&resp.body, crate::wire::jsonrpc::MAX_REPLY_DEPTH) {
        return None;
    }
    let result = sonic_rs::get(resp.body.as_slice(), ["result"]).ok()?;
    if result.get_type() == sonic_rs::JsonType::Null {
        return None;
    }
    Some(result.as_raw_str().as_bytes().to_vec())
}

/// Calls `method` on `first`, then the chain's other providers, until one answers.
async fn http_call_any(
    worker: &Worker,
    target: Target,
    first: usize,
    method: &str,
    params: &str,
) -> Option<Vec<u8>> {
    if let Some(r) = http_call(worker, first, method, params).await {
        return Some(r);
    }
    for &pid in &chain_of(worker, target).providers {
        if pid != first {
            if let Some(r) = http_call(worker, pid, method, params).await {
                return Some(r);
            }
        }
    }
    None
}

fn deliver(registry: &Registry, feed: &Feed, result: &[u8]) {
    let mut clients = feed.clients.borrow_mut();
    let mut gone = Vec::new();
    for (id, client) in clients.iter() {
        let mut msg = Vec::with_capacity(result.len() + 96);
        msg.extend_from_slice(
            b"{\"jsonrpc\":\"2.0\",\"method\":\"eth_subscription\",\"params\":{\"subscription\":\"",
        );
        msg.extend_from_slice(id.as_bytes());
        msg.extend_from_slice(b"\",\"result\":");
        msg.extend_from_slice(result);
        msg.extend_from_slice(b"}}");
        if !client.send_text(&msg) {
            gone.push(id.clone());
        }
    }
    registry.counters.borrow_mut().delivered += clients.len() as u64;
    if !gone.is_empty() {
        let mut by_id = registry.by_id.borrow_mut();
        for id in gone {
            clients.swap_remove(&id);
            by_id.remove(&id);
        }
        if clients.is_empty() {
            feed.empty_since.set(Some(Instant::now()));
        }
    }
}

async fn on_head(
    worker: &Rc<Worker>,
    registry: &Rc<Registry>,
    target: Target,
    feed: &Feed,
    d: &mut Delivery,
    pid: usize,
    head: Vec<u8>,
) {
    let Some(n) = field_u64(&head, "number") else {
        return;
    };
    let hash = field_raw(&head, "hash");
    if d.seen_set.contains(&hash) {
        return;
    }
    if let Some(last) = d.last_head {
        if n > last + 1 {
            let limit = worker.config.websocket.backfill_limit_blocks;
            let from = (last + 1).max(n.saturating_sub(limit));
            for k in from..n {
                let Some(block) = http_call_any(
                    worker,
                    target,
                    pid,
                    "eth_getBlockByNumber",
                    &format!("[\"0x{k:x}\",false]"),
                )
                .await
                else {
                    tracing::warn!(chain = %chain_of(worker, target).name, block = k, "backfill could not fetch a block");
                    continue;
                };
                if d.remember(field_raw(&block, "hash")) {
                    deliver(registry, feed, &block);
                    registry.counters.borrow_mut().backfilled += 1;
                }
            }
        }
    }
    d.remember(hash);
    deliver(registry, feed, &head);
    // After a reorg the chain's head is the replacement block, even if its number is lower.
    d.last_head = Some(n);
}

fn log_key(log: &[u8]) -> Vec<u8> {
    let mut key = field_raw(log, "blockHash");
    key.extend_from_slice(&field_raw(log, "logIndex"));
    key.extend_from_slice(&field_raw(log, "removed"));
    key
}

fn on_log(registry: &Registry, feed: &Feed, d: &mut Delivery, log: Vec<u8>) {
    if !d.remember(log_key(&log)) {
        return;
    }
    if let Some(n) = field_u64(&log, "blockNumber") {
        d.covered = Some(d.covered.map_or(n, |c| c.max(n)));
    }
    deliver(registry, feed, &log);
}

/// Fetches the logs of blocks `from..=to` in chunks and delivers those not seen yet.
async fn backfill_logs(
    worker: &Rc<Worker>,
    registry: &Rc<Registry>,
    target: Target,
    feed: &Feed,
    d: &mut Delivery,
    pid: usize,
    blocks: std::ops::RangeInclusive<u64>,
) {
    let (from, to) = blocks.into_inner();
    let chunk = worker.config.websocket.backfill_chunk_blocks.max(1);
    let limit = worker.config.websocket.backfill_limit_blocks;
    let from = from.max(to.saturating_sub(limit));
    let Ok(mut filter) = sonic_rs::from_slice::<sonic_rs::Value>(&feed.key.filter) else {
        return;
    };
    let mut start = from;
    while start <= to {
        let end = (start + chunk - 1).min(to);
        if let Some(obj) = filter.as_object_mut() {
            obj.insert(
                "fromBlock",
                sonic_rs::Value::from(format!("0x{start:x}").as_str()),
            );
            obj.insert(
                "toBlock",
                sonic_rs::Value::from(format!("0x{end:x}").as_str()),
            );
        }
        let params = format!("[{}]", sonic_rs::to_string(&filter).unwrap_or_default());
        match http_call_any(worker, target, pid, "eth_getLogs", &params).await {
            Some(logs) => {
                for item in sonic_rs::to_array_iter(logs.as_slice()).flatten() {
                    let log = item.as_raw_str().as_bytes().to_vec();
                    if d.remember(log_key(&log)) {
                        deliver(registry, feed, &log);
                        registry.counters.borrow_mut().backfilled += 1;
                    }
                }
            }
            None => {
                tracing::warn!(chain = %chain_of(worker, target).name, from = start, to = end, "log backfill failed")
            }
        }
        start = end + 1;
    }
    d.covered = Some(d.covered.map_or(to, |c| c.max(to)));
}

fn stall_timeout(worker: &Worker, target: Target) -> Duration {
    worker.config.websocket.stall_timeout.unwrap_or_else(|| {
        Duration::from_millis(chain_of(worker, target).block_time_ms.saturating_mul(3))
            .max(Duration::from_secs(1))
    })
}

/// Runs one feed until its last client has been gone for the grace period or the worker drains. `ready` tells the
/// first subscriber whether the upstream subscription started; on success it carries the sender the subscriber fires
/// once its client is attached (and answered), and nothing is delivered before that.
pub(crate) async fn run_feed(
    worker: Rc<Worker>,
    registry: Rc<Registry>,
    target: Target,
    feed: Rc<Feed>,
    mut inbox: mpsc::UnboundedReceiver<UpstreamEvent>,
    ready: oneshot::Sender<Result<oneshot::Sender<()>, RpcError>>,
) {
    let chain_name = chain_of(&worker, target).name.clone();
    let mut avoid: HashMap<usize, Instant> = HashMap::new();
    let mut current = match establish(&worker, &registry, target, &feed, &avoid).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(RpcError::NoProviderAvailable {
                reason: format!("cannot subscribe upstream: {e}"),
            }));
            return;
        }
    };
    let mut d = Delivery {
        last_head: None,
        seen: VecDeque::new(),
        seen_set: HashSet::new(),
        covered: None,
        last_event: Instant::now(),
        backlogged: false,
    };
    if feed.key.kind == Kind::Logs {
        d.covered = http_call_any(&worker, target, current.pid, "eth_blockNumber", "[]")
            .await
            .and_then(|raw| sonic_rs::from_slice::<String>(&raw).ok())
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
    }
    // Events that came with the upstream subscription wait until the first client is attached and has its
    // subscription id: they reach it, after the reply.
    let (attached_tx, attached_rx) = oneshot::channel();
    let _ = ready.send(Ok(attached_tx));
    if attached_rx.await.is_err() && feed.clients.borrow().is_empty() {
        // The subscriber went away while the feed started: the feed ends after the grace period like any empty one.
        feed.empty_since.set(Some(Instant::now()));
    }
    let stall = stall_timeout(&worker, target);
    let tick = (stall / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let grace = worker.config.websocket.unsubscribe_grace;
    let backlog_limit =
        Duration::from_millis((chain_of(&worker, target).block_time_ms / 2).clamp(50, 1000));
    let mut next_check = Instant::now() + tick;
    loop {
        let wait = next_check.saturating_duration_since(Instant::now());
        let next = select(inbox.next(), Box::pin(monoio::time::sleep(wait))).await;
        let mut failover_reason: Option<String> = None;
        match next {
            Either::Left((Some(UpstreamEvent::Notification { pid, result, at }), _))
                if pid == current.pid =>
            {
                d.last_event = Instant::now();
                // Events that waited in our own queue say this worker is behind, not the provider.
                d.backlogged = at.elapsed() > backlog_limit;
                match feed.key.kind {
                    Kind::NewHeads => {
                        on_head(&worker, &registry, target, &feed, &mut d, pid, result).await
                    }
                    Kind::Logs => on_log(&registry, &feed, &mut d, result),
                    Kind::PendingTransactions => deliver(&registry, &feed, &result),
                }
            }
            Either::Left((Some(UpstreamEvent::Lost { pid, reason }), _)) if pid == current.pid => {
                failover_reason = Some(reason);
            }
            Either::Left((Some(_), _)) => {}
            Either::Left((None, _)) => break,
            Either::Right(_) => d.backlogged = false,
        }
        if worker.draining.get() {
            current.ws.forget(&current.sub_id);
            break;
        }
        if let Some(since) = feed.empty_since.get() {
            if feed.clients.borrow().is_empty() && since.elapsed() >= grace {
                break;
            }
        }
        let due = Instant::now() >= next_check;
        if due {
            next_check = Instant::now() + tick;
        }
        if due && failover_reason.is_none() && feed.key.kind == Kind::NewHeads && !d.backlogged {
            let chain = chain_of(&worker, target);
            let consensus = worker
                .routing
                .borrow()
                .table
                .chain_heads
                .get(chain.gid)
                .copied()
                .flatten();
            if d.last_event.elapsed() > stall {
                failover_reason = Some(format!(
                    "no new head for {} ms",
                    d.last_event.elapsed().as_millis()
                ));
            } else if let (Some(last), Some(consensus)) = (d.last_head, consensus) {
                if consensus > last + chain.max_lag_blocks {
                    failover_reason = Some(format!(
                        "{} blocks behind the consensus head",
                        consensus - last
                    ));
                }
            }
        }
        let Some(reason) = failover_reason else {
            continue;
        };
        let provider = worker.config.providers[current.pid].id.clone();
        tracing::warn!(chain = %chain_name, %provider, kind = feed.key.kind.as_str(), %reason, "subscription failing over");
        registry.counters.borrow_mut().failovers += 1;
        avoid.insert(current.pid, Instant::now() + Duration::from_secs(30));
        if current.ws.is_alive() {
            let (ws, id) = (current.ws.clone(), current.sub_id.clone());
            ws.forget(&id);
            monoio::spawn(async move { ws.unsubscribe(&id).await });
        }
        // Resubscribe, waiting out outages: clients keep their subscription ids throughout.
        let mut wait = Duration::from_millis(100);
        current = loop {
            match establish(&worker, &registry, target, &feed, &avoid).await {
                Ok(c) => break c,
                Err(e) => {
                    // Nothing else works: give every provider (the failed one included) another chance; connection
                    // back-off still spaces out the attempts.
                    avoid.clear();
                    tracing::warn!(chain = %chain_name, error = %e, "resubscribe failed; retrying");
                    monoio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    if feed.clients.borrow().is_empty() || worker.draining.get() {
                        registry.feeds.borrow_mut().remove(&feed.key);
                        return;
                    }
                }
            }
        };
        d.last_event = Instant::now();
        tracing::info!(chain = %chain_name, provider = %worker.config.providers[current.pid].id, kind = feed.key.kind.as_str(), "subscription resumed");
        if feed.key.kind == Kind::Logs {
            let head = http_call_any(&worker, target, current.pid, "eth_blockNumber", "[]")
                .await
                .and_then(|raw| sonic_rs::from_slice::<String>(&raw).ok())
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
            if let (Some(from), Some(to)) = (d.covered, head) {
                backfill_logs(
                    &worker,
                    &registry,
                    target,
                    &feed,
                    &mut d,
                    current.pid,
                    from..=to,
                )
                .await;
            }
        }
    }
    registry.feeds.borrow_mut().remove(&feed.key);
    if current.ws.is_alive() {
        current.ws.unsubscribe(&current.sub_id).await;
    }
}
