//! The per-worker benchmark recorder: every upstream attempt lands in this worker's own HDR histograms, keyed by
//! provider and method (no locks, no shared atomics). Each merge interval the merger harvests the recorder by value
//! (the worker starts a fresh one), so recording is a plain histogram increment.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::evm::methods::MethodKey;

/// Highest latency tracked, in microseconds (larger values are clamped).
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// What one attempt came to, as statistics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// Answered (a result or a deterministic JSON-RPC error): latency counts.
    Answered,
    /// Failed (connect, timeout, reset, 5xx, garbage).
    Failed,
    RateLimited,
    /// Could not serve the method or block.
    Unsupported,
}

pub fn new_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("static histogram bounds are valid")
}

/// One interval's statistics of one provider x method.
#[derive(Debug, Clone)]
pub struct IntervalStats {
    /// Latencies of answered attempts, microseconds.
    pub latency: Histogram<u32>,
    pub answered: u64,
    pub failed: u64,
    pub rate_limited: u64,
    pub unsupported: u64,
}

impl Default for IntervalStats {
    fn default() -> Self {
        IntervalStats {
            latency: new_histogram(),
            answered: 0,
            failed: 0,
            rate_limited: 0,
            unsupported: 0,
        }
    }
}

impl IntervalStats {
    pub fn record(&mut self, kind: SampleKind, latency: Duration) {
        match kind {
            SampleKind::Answered => {
                self.answered += 1;
                let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
                self.latency.saturating_record(us);
            }
            SampleKind::Failed => self.failed += 1,
            SampleKind::RateLimited => self.rate_limited += 1,
            SampleKind::Unsupported => self.unsupported += 1,
        }
    }

    /// Adds `other` into `self` (exact: merging histograms equals recording all samples in one).
    pub fn add(&mut self, other: &IntervalStats) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.answered += other.answered;
        self.failed += other.failed;
        self.rate_limited += other.rate_limited;
        self.unsupported += other.unsupported;
    }

    /// Removes `other` (previously added) from `self`.
    pub fn subtract(&mut self, other: &IntervalStats) {
        let _ = self.latency.subtract(&other.latency);
        self.answered -= other.answered.min(self.answered);
        self.failed -= other.failed.min(self.failed);
        self.rate_limited -= other.rate_limited.min(self.rate_limited);
        self.unsupported -= other.unsupported.min(self.unsupported);
    }

    pub fn attempts(&self) -> u64 {
        self.answered + self.failed + self.rate_limited + self.unsupported
    }
}

/// A worker's samples since the last harvest.
#[derive(Debug, Default)]
pub struct Recorder {
    pub entries: rustc_hash::FxHashMap<(u32, MethodKey), IntervalStats>,
    pub hedges: u64,
    pub failovers: u64,
}

impl Recorder {
    pub fn record(&mut self, pid: usize, method: MethodKey, kind: SampleKind, latency: Duration) {
        self.entries
            .entry((pid as u32, method))
            .or_default()
            .record(kind, latency);
    }

    /// Takes everything recorded so far, leaving an empty recorder.
    pub fn take(&mut self) -> Recorder {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_worker_histograms_equal_one_histogram_of_all_samples() {
        let key = MethodKey::of("eth_call");
        let mut workers: Vec<Recorder> = (0..4).map(|_| Recorder::default()).collect();
        let mut single = IntervalStats::default();
        let mut x: u64 = 0x1234_5678;
        for i in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let latency = Duration::from_micros(50 + x % 200_000);
            let kind = if i % 97 == 0 {
                SampleKind::Failed
            } else {
                SampleKind::Answered
            };
            workers[(i % 4) as usize].record(1, key, kind, latency);
            single.record(kind, latency);
        }
        let mut merged = IntervalStats::default();
        for w in &workers {
            merged.add(&w.entries[&(1, key)]);
        }
        assert_eq!(merged.answered, single.answered);
        assert_eq!(merged.failed, single.failed);
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            assert_eq!(
                merged.latency.value_at_quantile(q),
                single.latency.value_at_quantile(q),
                "q{q}"
            );
        }
        assert_eq!(merged.latency.len(), single.latency.len());
        let mut back = merged.clone();
        back.subtract(&workers[0].entries[&(1, key)]);
        assert_eq!(
            back.attempts(),
            merged.attempts() - workers[0].entries[&(1, key)].attempts()
        );
    }
}
