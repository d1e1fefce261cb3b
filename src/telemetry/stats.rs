//! Per-worker counters of upstream outcomes per provider. Workers own and write their counters without sharing;
//! `/api/status` gathers a snapshot from every worker over the control channel and sums them. The measured routing
//! recorder plugs in beside these counters at [`ProviderStats::record`].

use std::time::Duration;

/// What one upstream attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// Counters of one provider on one worker.
#[derive(Debug, Clone, Default)]
pub struct ProviderCounters {
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub latency_us_total: u64,
    pub last_error: Option<String>,
    /// Monotonic sequence of the last error, to pick the newest across workers.
    pub last_error_seq: u64,
}

/// WebSocket and subscription figures of one worker (summed across workers).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WsStats {
    pub clients: u64,
    pub subscriptions_new_heads: u64,
    pub subscriptions_logs: u64,
    pub subscriptions_pending_transactions: u64,
    pub upstream_subscriptions: u64,
    pub failovers: u64,
    pub backfilled_events: u64,
    pub delivered_events: u64,
}

/// What the indexer-grade handling of calls did (`rpc::indexing`), counted per worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexingStats {
    /// `eth_getLogs` queries answered by splitting (proactively or after a refusal).
    pub logs_split: u64,
    /// Upstream calls those made (chunks and halves).
    pub logs_subrequests: u64,
    /// Pieces a provider refused as too large and that were halved.
    pub logs_bisections: u64,
    /// `eth_blockNumber` answers raised to the floor.
    pub heads_floored: u64,
    /// Calls whose `latest` was pinned to the head.
    pub latest_pinned: u64,
    /// Sends answered with their hash although a provider refused them (already known, mined, answer lost).
    pub sends_idempotent: u64,
    /// Sends broadcast to every healthy provider.
    pub sends_broadcast: u64,
}

impl IndexingStats {
    fn add(&mut self, o: &IndexingStats) {
        self.logs_split += o.logs_split;
        self.logs_subrequests += o.logs_subrequests;
        self.logs_bisections += o.logs_bisections;
        self.heads_floored += o.heads_floored;
        self.latest_pinned += o.latest_pinned;
        self.sends_idempotent += o.sends_idempotent;
        self.sends_broadcast += o.sends_broadcast;
    }

    /// Every counter with its `kind` label, as `/metrics` renders them.
    pub fn kinds(&self) -> [(&'static str, u64); 7] {
        [
            ("logs_split", self.logs_split),
            ("logs_subrequests", self.logs_subrequests),
            ("logs_bisections", self.logs_bisections),
            ("heads_floored", self.heads_floored),
            ("latest_pinned", self.latest_pinned),
            ("sends_idempotent", self.sends_idempotent),
            ("sends_broadcast", self.sends_broadcast),
        ]
    }
}

impl WsStats {
    fn add(&mut self, o: &WsStats) {
        self.clients += o.clients;
        self.subscriptions_new_heads += o.subscriptions_new_heads;
        self.subscriptions_logs += o.subscriptions_logs;
        self.subscriptions_pending_transactions += o.subscriptions_pending_transactions;
        self.upstream_subscriptions += o.upstream_subscriptions;
        self.failovers += o.failovers;
        self.backfilled_events += o.backfilled_events;
        self.delivered_events += o.delivered_events;
    }
}

/// In-flight multiplexing and response cache figures of one worker (summed across workers).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CacheStats {
    /// Reads answered from another identical read's upstream call.
    pub multiplexed: u64,
    pub hits: u64,
    pub misses: u64,
    /// Answers kept.
    pub stored: u64,
    /// Entries evicted by the byte bound.
    pub evictions: u64,
    /// Entries dropped when read after their TTL.
    pub expired: u64,
    /// Entries dropped by reorgs.
    pub purged: u64,
    /// Reorgs reported to the workers (counted once per worker).
    pub reorgs: u64,
    /// Requests that asked to bypass the cache (`X-Lasso-Cache: bypass`).
    pub bypassed: u64,
    pub entries: u64,
    pub bytes: u64,
    /// The byte bound (sum of the workers' shares).
    pub max_bytes: u64,
}

impl CacheStats {
    fn add(&mut self, o: &CacheStats) {
        self.multiplexed += o.multiplexed;
        self.hits += o.hits;
        self.misses += o.misses;
        self.stored += o.stored;
        self.evictions += o.evictions;
        self.expired += o.expired;
        self.purged += o.purged;
        self.reorgs += o.reorgs;
        self.bypassed += o.bypassed;
        self.entries += o.entries;
        self.bytes += o.bytes;
        self.max_bytes += o.max_bytes;
    }
}

/// A worker's counters for every provider (indexed by `pid`) plus client-facing totals.
#[derive(Debug, Clone, Default)]
pub struct ProviderStats {
    pub providers: Vec<ProviderCounters>,
    pub client_requests: u64,
    /// Client-facing JSON-RPC errors by code (whole responses and batch members).
    pub client_errors: std::collections::BTreeMap<i32, u64>,
    pub ws: WsStats,
    pub indexing: IndexingStats,
    pub cache: CacheStats,
    /// Which worker these counters are from (meaningless after merging).
    pub worker: usize,
    seq: u64,
}

impl ProviderStats {
    pub fn new(providers: usize) -> Self {
        ProviderStats {
            providers: vec![ProviderCounters::default(); providers],
            ..Default::default()
        }
    }

    /// Records one upstream attempt.
    pub fn record(&mut self, pid: usize, outcome: Outcome, latency: Duration, error: Option<&str>) {
        let Some(c) = self.providers.get_mut(pid) else {
            return;
        };
        c.requests += 1;
        c.latency_us_total += latency.as_micros() as u64;
        match outcome {
            Outcome::Success => c.successes += 1,
            Outcome::Failure => {
                c.failures += 1;
                self.seq += 1;
                c.last_error = error.map(str::to_owned);
                c.last_error_seq = self.seq;
            }
        }
    }

    /// Adds another worker's counters into these.
    pub fn merge(&mut self, other: &ProviderStats) {
        self.client_requests += other.client_requests;
        for (code, n) in &other.client_errors {
            *self.client_errors.entry(*code).or_insert(0) += n;
        }
        self.ws.add(&other.ws);
        self.indexing.add(&other.indexing);
        self.cache.add(&other.cache);
        if self.providers.len() < other.providers.len() {
            self.providers
                .resize(other.providers.len(), ProviderCounters::default());
        }
        for (mine, theirs) in self.providers.iter_mut().zip(&other.providers) {
            mine.requests += theirs.requests;
            mine.successes += theirs.successes;
            mine.failures += theirs.failures;
            mine.latency_us_total += theirs.latency_us_total;
            if theirs.last_error.is_some() && theirs.last_error_seq >= mine.last_error_seq {
                mine.last_error = theirs.last_error.clone();
                mine.last_error_seq = theirs.last_error_seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_workers_sums_counters() {
        let mut a = ProviderStats::new(2);
        let mut b = ProviderStats::new(2);
        a.record(0, Outcome::Success, Duration::from_micros(10), None);
        b.record(
            0,
            Outcome::Failure,
            Duration::from_micros(30),
            Some("HTTP 500"),
        );
        b.record(1, Outcome::Success, Duration::from_micros(5), None);
        let mut total = ProviderStats::new(2);
        total.merge(&a);
        total.merge(&b);
        assert_eq!(total.providers[0].requests, 2);
        assert_eq!(total.providers[0].failures, 1);
        assert_eq!(total.providers[0].last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(total.providers[1].successes, 1);
        assert_eq!(total.providers[0].latency_us_total, 40);
    }
}
