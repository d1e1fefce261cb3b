//! Subscriptions that survive provider failures. Per worker (share-nothing), client subscriptions with the same key
//! (chain, kind, filter) share one upstream subscription, a *feed* (its state machine is [`crate::subscriptions::feed`]).
//! The hub is the client-facing side: subscribe, unsubscribe, forget a closed connection, report figures. Subscription
//! ids are Lasso's own and stay the same across failovers; the upstream subscription is torn down after a grace period
//! once its last client leaves.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use futures_channel::{mpsc, oneshot};
use sonic_rs::JsonValueTrait;

use crate::error::RpcError;
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::subscriptions::client::{ClientConn, WsBudget};
use crate::subscriptions::feed::run_feed;
use crate::subscriptions::registry::{Feed, FeedKey, Kind, Registry, SubscriptionCounters};

/// A worker's subscriptions.
#[derive(Default)]
pub struct Hub {
    /// The queued-bytes budget of this worker's WebSocket clients.
    pub ws_budget: Rc<WsBudget>,
    /// The tables this hub's feeds share with it.
    registry: Rc<Registry>,
    /// Subscription ids per client connection.
    by_conn: RefCell<HashMap<u64, Vec<String>>>,
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
            counters: self.registry.counters.borrow().clone(),
            ..Default::default()
        };
        for feed in self.registry.feeds.borrow().values() {
            let k = kind_index(feed.key.kind);
            s.feeds_by_kind[k] += 1;
            s.client_subscriptions_by_kind[k] += feed.clients.borrow().len() as u64;
        }
        s.upstream_subscriptions = self
            .registry
            .upstreams
            .borrow()
            .values()
            .map(|u| u.subscription_count() as u64)
            .sum();
        s
    }

    fn new_id(&self, worker: &Worker) -> String {
        let n = self.registry.next_id.get() + 1;
        self.registry.next_id.set(n);
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
        let existing = hub.registry.feeds.borrow().get(&key).cloned();
        let mut attached = None;
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
                hub.registry
                    .feeds
                    .borrow_mut()
                    .insert(key.clone(), feed.clone());
                let (ready_tx, ready_rx) = oneshot::channel();
                monoio::spawn(run_feed(
                    worker.clone(),
                    hub.registry.clone(),
                    target,
                    feed.clone(),
                    rx,
                    ready_tx,
                ));
                match ready_rx.await {
                    Ok(Ok(started)) => {
                        attached = Some(started);
                        feed
                    }
                    Ok(Err(e)) => {
                        hub.registry.feeds.borrow_mut().remove(&key);
                        return Err(e);
                    }
                    Err(_) => {
                        hub.registry.feeds.borrow_mut().remove(&key);
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
        hub.registry
            .by_id
            .borrow_mut()
            .insert(id.clone(), (feed, client.id));
        // A new feed delivers from now on; this task queues the reply before the feed runs again.
        if let Some(attached) = attached {
            let _ = attached.send(());
        }
        Ok(id)
    }

    /// Cancels a client's subscription; false when `id` is not one of this connection's.
    pub fn unsubscribe(&self, conn: u64, id: &str) -> bool {
        let entry = self.registry.by_id.borrow().get(id).cloned();
        match entry {
            Some((feed, owner)) if owner == conn => {
                self.registry.by_id.borrow_mut().remove(id);
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

    /// Closes every upstream connection (shutdown).
    pub fn close_all(&self) {
        self.registry.close_all();
    }
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
