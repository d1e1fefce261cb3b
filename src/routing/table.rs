//! The routing table: an immutable snapshot the merger publishes every merge interval and every worker reads
//! locally. It holds latency summaries per provider at three levels (method, method class, provider-wide), the
//! process-wide exclusions (breakers opened on any worker, rate-limit cool-downs, providers on the wrong chain), and
//! chain heads with each provider's lag.

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Instant;

use crate::evm::methods::{MethodClass, MethodKey};

/// Which samples a summary covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Method(MethodKey),
    Class(MethodClass),
    Provider,
}

/// A summary key: provider and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatKey {
    pub pid: u32,
    pub scope: Scope,
}

/// Windowed statistics of one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Answered attempts (latency samples).
    pub samples: u64,
    pub attempts: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    /// From a snapshot of a previous run (no live samples yet).
    pub from_snapshot: bool,
}

impl Summary {
    pub fn success_rate(&self) -> f64 {
        if self.attempts == 0 {
            1.0
        } else {
            self.samples as f64 / self.attempts as f64
        }
    }

    /// The latency at `q` (0..1), interpolating between the stored quantiles.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if q <= 0.5 {
            self.p50_us
        } else if q <= 0.9 {
            self.p90_us
        } else if q <= 0.95 {
            self.p95_us
        } else {
            self.p99_us
        }
    }
}

/// Process-wide state of one provider.
#[derive(Debug, Clone, Default)]
pub struct ProviderState {
    /// A breaker is open on some worker until then.
    pub breaker_open_until: Option<Instant>,
    /// Rate limited until then.
    pub cooldown_until: Option<Instant>,
    /// Why the provider is disabled (wrong chain id), if it is.
    pub disabled: Option<String>,
    pub head: Option<u64>,
    pub lag: Option<u64>,
}

/// The table workers route by.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    pub generation: u64,
    pub summaries: FxHashMap<StatKey, Summary>,
    pub providers: Vec<ProviderState>,
    /// Consensus head per chain (global chain index).
    pub chain_heads: Vec<Option<u64>>,
    /// The highest head any worker answered per chain (global chain index; missing = 0).
    pub chain_floors: Vec<u64>,
    /// (provider, method) pairs a provider said it cannot serve.
    pub unsupported: FxHashSet<(u32, MethodKey)>,
    pub hedges: u64,
    pub failovers: u64,
}

impl RoutingTable {
    pub fn empty(providers: usize, chains: usize) -> Self {
        RoutingTable {
            providers: vec![ProviderState::default(); providers],
            chain_heads: vec![None; chains],
            ..Default::default()
        }
    }

    pub fn summary(&self, pid: usize, scope: Scope) -> Option<&Summary> {
        self.summaries.get(&StatKey {
            pid: pid as u32,
            scope,
        })
    }

    /// The most specific summary with at least `min_samples` samples: the method, then its class, then the provider.
    pub fn latency(&self, pid: usize, method: MethodKey, min_samples: u64) -> Option<&Summary> {
        [
            Scope::Method(method),
            Scope::Class(method.class()),
            Scope::Provider,
        ]
        .into_iter()
        .filter_map(|scope| self.summary(pid, scope))
        .find(|s| s.samples >= min_samples)
    }

    pub fn provider(&self, pid: usize) -> Option<&ProviderState> {
        self.providers.get(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_falls_back_from_method_to_class_to_provider() {
        let call = MethodKey::of("eth_call");
        let mut t = RoutingTable::empty(1, 1);
        let s = |samples, p50| Summary {
            samples,
            attempts: samples,
            p50_us: p50,
            ..Default::default()
        };
        t.summaries.insert(
            StatKey {
                pid: 0,
                scope: Scope::Provider,
            },
            s(100, 3),
        );
        assert_eq!(t.latency(0, call, 10).unwrap().p50_us, 3);
        t.summaries.insert(
            StatKey {
                pid: 0,
                scope: Scope::Class(MethodClass::Call),
            },
            s(20, 2),
        );
        assert_eq!(t.latency(0, call, 10).unwrap().p50_us, 2);
        t.summaries.insert(
            StatKey {
                pid: 0,
                scope: Scope::Method(call),
            },
            s(5, 1),
        );
        assert_eq!(
            t.latency(0, call, 10).unwrap().p50_us,
            2,
            "too few method samples"
        );
        t.summaries.insert(
            StatKey {
                pid: 0,
                scope: Scope::Method(call),
            },
            s(15, 1),
        );
        assert_eq!(t.latency(0, call, 10).unwrap().p50_us, 1);
        assert!(t.latency(0, call, 1000).is_none());
    }
}
