//! The tables a worker's hub and its feeds share: feeds by key, client subscription ids, the upstream WebSocket
//! connection per provider (with reconnect back-off) and the subscription counters.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;

use crate::shard::state::Worker;
use crate::subscriptions::client::ClientConn;
use crate::upstream::ws::{UpstreamEvent, UpstreamWs};

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

/// What makes client subscriptions share one feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FeedKey {
    pub(crate) profile: usize,
    pub(crate) chain: usize,
    pub(crate) kind: Kind,
    /// The logs filter as the client sent it (whitespace-trimmed).
    pub(crate) filter: Vec<u8>,
}

/// One shared upstream subscription and the client subscriptions it serves.
pub(crate) struct Feed {
    pub(crate) key: FeedKey,
    /// `eth_subscribe` params for providers.
    pub(crate) params: Vec<u8>,
    pub(crate) clients: RefCell<indexmap::IndexMap<String, Rc<ClientConn>>>,
    pub(crate) inbox: mpsc::UnboundedSender<UpstreamEvent>,
    pub(crate) empty_since: Cell<Option<Instant>>,
}

/// Counters shown on the status page and in metrics.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionCounters {
    pub failovers: u64,
    pub backfilled: u64,
    pub delivered: u64,
}

/// The shared tables of one worker's subscriptions.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) feeds: RefCell<HashMap<FeedKey, Rc<Feed>>>,
    /// Client subscription id -> its feed and the client connection that owns it.
    pub(crate) by_id: RefCell<HashMap<String, (Rc<Feed>, u64)>>,
    pub(crate) upstreams: RefCell<HashMap<usize, Rc<UpstreamWs>>>,
    /// Per provider: when a connect may be tried again, and the current back-off.
    backoff: RefCell<HashMap<usize, (Instant, Duration)>>,
    pub(crate) next_id: Cell<u64>,
    pub(crate) counters: RefCell<SubscriptionCounters>,
}

impl Registry {
    /// A live connection to `pid`'s WebSocket, connecting (with jittered exponential back-off after failures).
    pub(crate) async fn upstream(
        &self,
        worker: &Worker,
        pid: usize,
    ) -> Result<Rc<UpstreamWs>, String> {
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
    pub(crate) fn close_all(&self) {
        for ws in self.upstreams.borrow().values() {
            ws.close("shutting down");
        }
    }
}

fn config_redact(worker: &Worker, text: &str) -> String {
    worker.config.redact(text)
}
