//! Subscriptions that survive provider failures. Per worker (share-nothing), client subscriptions with the same key
//! (chain, kind, filter) share one upstream subscription, a *feed*. A feed's task receives the provider's
//! notifications in order, deduplicates them (heads by hash, logs by block hash + log index), fills gaps over HTTP
//! (`eth_getBlockByNumber` for heads, `eth_getLogs` in chunks for logs) and fans events out to its clients. When its
//! provider drops, stalls (no head for a few block times) or falls behind the consensus head, the feed resubscribes
//! on the next provider and backfills what was missed, so clients see no gap and no duplicate. Subscription ids are
//! Lasso's own and stay the same across failovers; the upstream subscription is torn down after a grace period once
//! its last client leaves.

use std::cell::{Cell, RefCell};
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
use crate::upstream::ws::{UpstreamEvent, UpstreamWs};
use crate::wire::ws_frame as frame;

/// What a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    NewHeads,
    Logs,
    PendingTransactions,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewHeads => "newHeads",
            Kind::Logs => "logs",
            Kind::PendingTransactions => "newPendingTransactions",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FeedKey {
    profile: usize,
    chain: usize,
    kind: Kind,
    /// The logs filter as the client sent it (whitespace-trimmed).
    filter: Vec<u8>,
}

/// The bytes queued to every WebSocket client of one worker, against this worker's share of the process-wide budget
/// (`websocket.max_total_queued_bytes` split across workers: no shared counter on the hot path). Past the budget, a
/// client whose queue is above the mean is cut as too slow; faster clients keep receiving.
#[derive(Debug, Default)]
pub struct WsBudget {
    limit: usize,
    queued: Cell<usize>,
    clients: Cell<usize>,
}

impl WsBudget {
    pub fn new(limit: usize) -> Self {
        WsBudget {
            limit,
            ..Default::default()
        }
    }

    /// Bytes queued to this worker's clients now.
    pub fn queued(&self) -> usize {
        self.queued.get()
    }

    pub fn client_opened(&self) {
        self.clients.set(self.clients.get() + 1);
    }

    /// A client closed with `unsent` bytes still queued (they will never be written).
    pub fn client_closed(&self, unsent: usize) {
        self.clients.set(self.clients.get().saturating_sub(1));
        self.written(unsent);
    }

    /// `n` queued bytes reached the socket (or were dropped).
    pub fn written(&self, n: usize) {
        self.queued.set(self.queued.get().saturating_sub(n));
    }
}

/// A client WebSocket connection as subscriptions see it: where to send its frames.
pub struct ClientConn {
    pub id: u64,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes queued but not yet written (shared with the connection's writer).
    pub queued: Rc<Cell<usize>>,
    max_queued: usize,
    budget: Rc<WsBudget>,
    /// Set when the client is too slow and must be disconnected.
    pub overflowed: Cell<bool>,
    /// Fired when the session ends: the connection's request tasks stop with it.
    pub closed: Rc<crate::shard::sync::LocalNotify>,
}

impl ClientConn {
    pub fn new(
        id: u64,
        out: mpsc::UnboundedSender<Vec<u8>>,
        queued: Rc<Cell<usize>>,
        max_queued: usize,
        budget: Rc<WsBudget>,
    ) -> Self {
        ClientConn {
            id,
            out,
            queued,
            max_queued,
            budget,
            overflowed: Cell::new(false),
            closed: Rc::new(crate::shard::sync::LocalNotify::default()),
        }
    }

    /// Whether `len` more bytes may be queued; cuts the connection as too slow when not. Every frame counts, control
    /// frames included.
    fn admit(&self, len: usize) -> bool {
        if self.overflowed.get() {
            return false;
        }
        let mine = self.queued.get() + len;
        let over_own_cap = mine > self.max_queued;
        let budget = &self.budget;
        let over_budget = budget.queued.get() + len > budget.limit
            && mine >= budget.queued.get() / budget.clients.get().max(1);
        if over_own_cap || over_budget {
            self.overflowed.set(true);
            self.out.close_channel();
            return false;
        }
        true
    }

    fn enqueue(&self, framed: Vec<u8>) -> bool {
        let len = framed.len();
        if !self.admit(len) {
            return false;
        }
        self.queued.set(self.queued.get() + len);
        self.budget.queued.set(self.budget.queued.get() + len);
        if self.out.unbounded_send(framed).is_ok() {
            true
        } else {
            self.queued.set(self.queued.get() - len);
            self.budget.written(len);
            false
        }
    }

    /// Queues one text frame; false when the connection is gone or too far behind.
    pub fn send_text(&self, payload: &[u8]) -> bool {
        let mut framed = Vec::with_capacity(payload.len() + 10);
        frame::encode(&mut framed, frame::OP_TEXT, payload, None);
        self.enqueue(framed)
    }

    /// Queues a raw frame (control frames), under the same bounds as data.
    pub fn send_frame(&self, framed: Vec<u8>) -> bool {
        self.enqueue(framed)
    }

    pub fn close_output(&self) {
        self.out.close_channel();
    }
}

struct Feed {
    key: FeedKey,
    /// `eth_subscribe` params for providers.
    params: Vec<u8>,
    clients: RefCell<indexmap::IndexMap<String, Rc<ClientConn>>>,
    inbox: mpsc::UnboundedSender<UpstreamEvent>,
    empty_since: Cell<Option<Instant>>,
}

/// Counters shown on the status page and in metrics.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionCounters {
    pub failovers: u64,
    pub backfilled: u64,
    pub delivered: u64,
}

/// A worker's subscriptions.
#[derive(Default)]
pub struct Hub {
    /// The queued-bytes budget of this worker's WebSocket clients.
    pub ws_budget: Rc<WsBudget>,
    feeds: RefCell<HashMap<FeedKey, Rc<Feed>>>,
    by_id: RefCell<HashMap<String, (Rc<Feed>, u64)>>,
    /// Subscription ids per client connection.
    by_conn: RefCell<HashMap<u64, Vec<String>>>,
    upstreams: RefCell<HashMap<usize, Rc<UpstreamWs>>>,
    /// Per provider: when a connect may be tried again, and the current back-off.
    backoff: RefCell<HashMap<usize, (Instant, Duration)>>,
    next_id: Cell<u64>,
    pub counters: RefCell<SubscriptionCounters>,
}

/// A snapshot of a worker's subscription state.
#[derive(Debug, Clone, Default)]
pub struct HubStats {
    pub feeds_by_kind: [u64; 3],
    pub client_subscriptions_by_kind: [u64; 3],
    pub upstream_subscriptions: u64,
    pub counters: SubscriptionCounters,
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::NewHeads => 0,
        Kind::Logs => 1,
        Kind::PendingTransactions => 2,
    }
}

impl Hub {
    /// A hub whose clients may queue `ws_budget_bytes` in all.
    pub fn new(ws_budget_bytes: usize) -> Self {
        Hub {
            ws_budget: Rc::new(WsBudget::new(ws_budget_bytes)),
            ..Default::default()
        }
    }

    /// This worker's WebSocket figures: `clients` open sessions plus the hub's subscription state.
    pub fn ws_stats(&self, clients: usize) -> crate::telemetry::stats::WsStats {
        let hub = self.stats();
        crate::telemetry::stats::WsStats {
            clients: clients as u64,
            subscriptions_new_heads: hub.client_subscriptions_by_kind[0],
            subscriptions_logs: hub.client_subscriptions_by_kind[1],
            subscriptions_pending_transactions: hub.client_subscriptions_by_kind[2],
            upstream_subscriptions: hub.upstream_subscriptions,
            failovers: hub.counters.failovers,
            backfilled_events: hub.counters.backfilled,
            delivered_events: hub.counters.delivered,
        }
    }

    pub fn stats(&self) -> HubStats {
        let mut s = HubStats {
            counters: self.counters.borrow().clone(),
            ..Default::default()
        };
        for feed in self.feeds.borrow().values() {
            let k = kind_index(feed.key.kind);
            s.feeds_by_kind[k] += 1;
            s.client_subscriptions_by_kind[k] += feed.clients.borrow().len() as u64;
        }
        s.upstream_subscriptions = self
            .upstreams
            .borrow()
            .values()
            .map(|u| u.subscription_count() as u64)
            .sum();
        s
    }

    fn new_id(&self, worker: &Worker) -> String {
        let n = self.next_id.get() + 1;
        self.next_id.set(n);
        let salt = worker
            .shared
            .started_epoch_ms
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!("0x{:016x}{:08x}{:08x}", salt, worker.index, n)
    }

    /// Subscribes `client` to `params` (`["newHeads"]`, `["logs", {filter}]`, `["newPendingTransactions"]`).
    pub async fn subscribe(
        self: &Rc<Self>,
        worker: &Rc<Worker>,
        target: Target,
        client: &Rc<ClientConn>,
        params: &[u8],
    ) -> Result<String, RpcError> {
        let hub = self;
        let (kind, filter) = parse_params(params)?;
        let key = FeedKey {
            profile: target.profile,
            chain: target.chain,
            kind,
            filter,
        };
        let id = hub.new_id(worker);
        let existing = hub.feeds.borrow().get(&key).cloned();
        let feed = match existing {
            Some(feed) => feed,
            None => {
                let (tx, rx) = mpsc::unbounded();
                let feed = Rc::new(Feed {
                    key: key.clone(),
                    params: params.to_vec(),
                    clients: RefCell::new(indexmap::IndexMap::new()),
                    inbox: tx,
                    empty_since: Cell::new(None),
                });
                hub.feeds.borrow_mut().insert(key.clone(), feed.clone());
                let (ready_tx, ready_rx) = oneshot::channel();
                monoio::spawn(run_feed(
                    worker.clone(),
                    hub.clone(),
                    target,
                    feed.clone(),
                    rx,
                    ready_tx,
                ));
                match ready_rx.await {
                    Ok(Ok(())) => feed,
                    Ok(Err(e)) => {
                        hub.feeds.borrow_mut().remove(&key);
                        return Err(e);
                    }
                    Err(_) => {
                        hub.feeds.borrow_mut().remove(&key);
                        return Err(RpcError::NoProviderAvailable {
                            reason: "subscription could not start".into(),
                        });
                    }
                }
            }
        };
        feed.clients.borrow_mut().insert(id.clone(), client.clone());
        hub.by_conn
            .borrow_mut()
            .entry(client.id)
            .or_default()
            .push(id.clone());
        feed.empty_since.set(None);
        hub.by_id.borrow_mut().insert(id.clone(), (feed, client.id));
        Ok(id)
    }

    /// Cancels a client's subscription; false when `id` is not one of this connection's.
    pub fn unsubscribe(&self, conn: u64, id: &str) -> bool {
        let entry = self.by_id.borrow().get(id).cloned();
        match entry {
            Some((feed, owner)) if owner == conn => {
                self.by_id.borrow_mut().remove(id);
                if let Some(ids) = self.by_conn.borrow_mut().get_mut(&conn) {
                    ids.retain(|sid| sid != id);
                }
                let mut clients = feed.clients.borrow_mut();
                clients.swap_remove(id);
                if clients.is_empty() {
                    feed.empty_since.set(Some(Instant::now()));
                }
                true
            }
            _ => false,
        }
    }

    /// Forgets every subscription of a closed connection.
    pub fn drop_connection(&self, conn: u64) {
        let ids = self.by_conn.borrow_mut().remove(&conn).unwrap_or_default();
        for id in ids {
            self.unsubscribe(conn, &id);
        }
    }

    pub fn subscription_count(&self, conn: u64) -> usize {
        self.by_conn.borrow().get(&conn).map_or(0, Vec::len)
    }

    /// A live connection to `pid`'s WebSocket, connecting (with jittered exponential back-off after failures).
    async fn upstream(&self, worker: &Worker, pid: usize) -> Result<Rc<UpstreamWs>, String> {
        if let Some(ws) = self.upstreams.borrow().get(&pid).filter(|ws| ws.is_alive()) {
            return Ok(ws.clone());
        }
        if let Some((retry_at, _)) = self.backoff.borrow().get(&pid) {
            if Instant::now() < *retry_at {
                return Err("reconnect back-off".into());
            }
        }
        let p = &worker.config.providers[pid];
        let seed = worker.shared.started_epoch_ms
            ^ ((worker.index as u64) << 40)
            ^ (pid as u64)
            ^ self.next_id.get();
        match UpstreamWs::connect(
            p,
            &worker.shared.tls,
            worker.config.websocket.upstream_connect_timeout,
            seed,
        )
        .await
        {
            Ok(ws) => {
                self.backoff.borrow_mut().remove(&pid);
                self.upstreams.borrow_mut().insert(pid, ws.clone());
                Ok(ws)
            }
            Err(e) => {
                let mut backoff = self.backoff.borrow_mut();
                let previous = backoff
                    .get(&pid)
                    .map_or(Duration::from_millis(250), |(_, d)| *d * 2);
                let delay = previous.min(Duration::from_secs(30));
                let jitter = 0.75 + (seed % 500) as f64 / 1000.0;
                backoff.insert(pid, (Instant::now() + delay.mul_f64(jitter), delay));
                Err(config_redact(worker, &e))
            }
        }
    }

    /// Closes every upstream connection (shutdown).
    pub fn close_all(&self) {
        for ws in self.upstreams.borrow().values() {
            ws.close("shutting down");
        }
    }
}

fn config_redact(worker: &Worker, text: &str) -> String {
    worker.config.redact(text)
}

fn parse_params(params: &[u8]) -> Result<(Kind, Vec<u8>), RpcError> {
    let invalid = |why: &str| RpcError::InvalidParams(why.to_string());
    let kind = sonic_rs::get(params, [0]).map_err(|_| {
        invalid("expected [\"newHeads\"], [\"logs\", filter] or [\"newPendingTransactions\"]")
    })?;
    let kind = match sonic_rs::JsonValueTrait::as_str(&kind) {
        Some("newHeads") => Kind::NewHeads,
        Some("logs") => Kind::Logs,
        Some("newPendingTransactions") => Kind::PendingTransactions,
        Some(other) => return Err(invalid(&format!("unsupported subscription '{other}'"))),
        None => return Err(invalid("the subscription name must be a string")),
    };
    let filter = match sonic_rs::get(params, [1]) {
        Ok(f) if kind == Kind::Logs => {
            if f.get_type() != sonic_rs::JsonType::Object {
                return Err(invalid("the logs filter must be an object"));
            }
            f.as_raw_str().trim().as_bytes().to_vec()
        }
        _ => Vec::new(),
    };
    Ok((kind, filter))
}

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
    hub: &Rc<Hub>,
    target: Target,
    feed: &Feed,
    avoid: &HashMap<usize, Instant>,
) -> Result<Current, String> {
    let timeout = worker.config.websocket.upstream_connect_timeout;
    let mut errors = Vec::new();
    for pid in ws_candidates(worker, target, avoid) {
        let ws = match hub.upstream(worker, pid).await {
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

fn deliver(hub: &Hub, feed: &Feed, result: &[u8]) {
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
    hub.counters.borrow_mut().delivered += clients.len() as u64;
    if !gone.is_empty() {
        let mut by_id = hub.by_id.borrow_mut();
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
    hub: &Rc<Hub>,
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
                    deliver(hub, feed, &block);
                    hub.counters.borrow_mut().backfilled += 1;
                }
            }
        }
    }
    d.remember(hash);
    deliver(hub, feed, &head);
    // After a reorg the chain's head is the replacement block, even if its number is lower.
    d.last_head = Some(n);
}

fn log_key(log: &[u8]) -> Vec<u8> {
    let mut key = field_raw(log, "blockHash");
    key.extend_from_slice(&field_raw(log, "logIndex"));
    key.extend_from_slice(&field_raw(log, "removed"));
    key
}

fn on_log(hub: &Hub, feed: &Feed, d: &mut Delivery, log: Vec<u8>) {
    if !d.remember(log_key(&log)) {
        return;
    }
    if let Some(n) = field_u64(&log, "blockNumber") {
        d.covered = Some(d.covered.map_or(n, |c| c.max(n)));
    }
    deliver(hub, feed, &log);
}

/// Fetches the logs of blocks `from..=to` in chunks and delivers those not seen yet.
async fn backfill_logs(
    worker: &Rc<Worker>,
    hub: &Rc<Hub>,
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
                        deliver(hub, feed, &log);
                        hub.counters.borrow_mut().backfilled += 1;
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

async fn run_feed(
    worker: Rc<Worker>,
    hub: Rc<Hub>,
    target: Target,
    feed: Rc<Feed>,
    mut inbox: mpsc::UnboundedReceiver<UpstreamEvent>,
    ready: oneshot::Sender<Result<(), RpcError>>,
) {
    let chain_name = chain_of(&worker, target).name.clone();
    let mut avoid: HashMap<usize, Instant> = HashMap::new();
    let mut current = match establish(&worker, &hub, target, &feed, &avoid).await {
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
    let _ = ready.send(Ok(()));
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
                        on_head(&worker, &hub, target, &feed, &mut d, pid, result).await
                    }
                    Kind::Logs => on_log(&hub, &feed, &mut d, result),
                    Kind::PendingTransactions => deliver(&hub, &feed, &result),
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
        hub.counters.borrow_mut().failovers += 1;
        avoid.insert(current.pid, Instant::now() + Duration::from_secs(30));
        if current.ws.is_alive() {
            let (ws, id) = (current.ws.clone(), current.sub_id.clone());
            ws.forget(&id);
            monoio::spawn(async move { ws.unsubscribe(&id).await });
        }
        // Resubscribe, waiting out outages: clients keep their subscription ids throughout.
        let mut wait = Duration::from_millis(100);
        current = loop {
            match establish(&worker, &hub, target, &feed, &avoid).await {
                Ok(c) => break c,
                Err(e) => {
                    // Nothing else works: give every provider (the failed one included) another chance; connection
                    // back-off still spaces out the attempts.
                    avoid.clear();
                    tracing::warn!(chain = %chain_name, error = %e, "resubscribe failed; retrying");
                    monoio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    if feed.clients.borrow().is_empty() || worker.draining.get() {
                        hub.feeds.borrow_mut().remove(&feed.key);
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
                backfill_logs(&worker, &hub, target, &feed, &mut d, current.pid, from..=to).await;
            }
        }
    }
    hub.feeds.borrow_mut().remove(&feed.key);
    if current.ws.is_alive() {
        current.ws.unsubscribe(&current.sub_id).await;
    }
}
