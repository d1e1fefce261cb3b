//! Latency histograms: an HDR histogram in microseconds (1 µs .. 1 h, 3 significant digits, so any percentile is
//! within 0.1 % of the exact nearest-rank value), summaries (p50/p90/p99/p99.9) and log-spaced buckets for plots.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour in microseconds (larger values are clamped).
pub const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyHist {
    h: Histogram<u64>,
}

/// Percentile summary of a histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// One bucket of a log-spaced distribution: values in (`lo_us`, `hi_us`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bucket {
    pub lo_us: u64,
    pub hi_us: u64,
    pub count: u64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    pub fn new() -> Self {
        Self::with_sigfig(3)
    }

    /// A coarser histogram (e.g. 2 significant digits for per-second series: much smaller).
    pub fn with_sigfig(sigfig: u8) -> Self {
        LatencyHist {
            h: Histogram::new_with_bounds(1, MAX_US, sigfig).expect("valid histogram bounds"),
        }
    }

    #[inline]
    pub fn record_us(&mut self, us: u64) {
        self.h.saturating_record(us.clamp(1, MAX_US));
    }

    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(MAX_US as u128) as u64);
    }

    pub fn merge(&mut self, other: &LatencyHist) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.h.add(&other.h);
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at quantile `q` in [0, 1] (nearest rank, within the histogram's precision); 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }

    pub fn summary(&self) -> Summary {
        if self.h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.h.len(),
            min_us: self.h.min(),
            mean_us: self.h.mean(),
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.h.max(),
        }
    }

    /// Log-spaced buckets (`per_decade` per factor of ten) from the minimum to the maximum recorded value; empty
    /// buckets are kept so plots have a continuous x axis.
    pub fn log_buckets(&self, per_decade: u32) -> Vec<Bucket> {
        let mut out = Vec::new();
        if self.h.is_empty() {
            return out;
        }
        let step = 10f64.powf(1.0 / per_decade.max(1) as f64);
        let max = self.h.max();
        let mut lo = (self.h.min().max(1) as f64 / step).floor().max(0.0) as u64;
        while lo < max {
            let hi = ((lo.max(1) as f64) * step).ceil() as u64;
            let hi = hi.max(lo + 1);
            let count = self.h.count_between(lo + 1, hi);
            out.push(Bucket {
                lo_us: lo,
                hi_us: hi,
                count,
            });
            lo = hi;
        }
        out
    }
}

/// Exact nearest-rank percentile of sorted values: the smallest value with at least `q` of the values at or below it.
pub fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Formats microseconds as milliseconds with sensible precision ("0.123", "12.3", "1234").
pub fn fmt_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_summary_is_zero() {
        let h = LatencyHist::new();
        assert_eq!(h.summary(), Summary::default());
        assert_eq!(h.quantile_us(0.99), 0);
        assert!(h.log_buckets(10).is_empty());
    }

    #[test]
    fn buckets_cover_every_value() {
        let mut h = LatencyHist::new();
        for v in [1u64, 5, 50, 500, 5000, 50_000, 123_456] {
            h.record_us(v);
        }
        let b = h.log_buckets(10);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 7);
        assert!(b.windows(2).all(|w| w[0].hi_us == w[1].lo_us));
    }

    #[test]
    fn fmt_ms_precision() {
        assert_eq!(fmt_ms(123), "0.123");
        assert_eq!(fmt_ms(12_345), "12.35");
        assert_eq!(fmt_ms(1_234_000), "1234");
    }
}
