//! The routing settings a config names: the strategy that orders a chain's providers, and breaker thresholds and
//! timings. Routing reads them; it does not own them.

use std::str::FromStr;
use std::time::Duration;

use super::defaults;

/// How to order a chain's providers for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    Fastest,
    Cheapest,
    LoadBalanced,
    LatencyWeighted,
    Priority,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fastest => "fastest",
            Strategy::Cheapest => "cheapest",
            Strategy::LoadBalanced => "load-balanced",
            Strategy::LatencyWeighted => "latency-weighted",
            Strategy::Priority => "priority",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "fastest" => Strategy::Fastest,
            "cheapest" => Strategy::Cheapest,
            "load-balanced" | "round-robin" => Strategy::LoadBalanced,
            "latency-weighted" => Strategy::LatencyWeighted,
            "priority" => Strategy::Priority,
            other => {
                return Err(format!(
                    "unknown strategy '{other}'; expected one of fastest, cheapest, load-balanced, round-robin, \
                     latency-weighted, priority"
                ));
            }
        })
    }
}

/// Breaker thresholds and timings.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    pub server_threshold: u32,
    pub connect_threshold: u32,
    pub timeout_threshold: u32,
    pub recovery: Duration,
    pub max_recovery: Duration,
    pub half_open_successes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            server_threshold: defaults::DEFAULT_BREAKER_SERVER_THRESHOLD,
            connect_threshold: defaults::DEFAULT_BREAKER_CONNECT_THRESHOLD,
            timeout_threshold: defaults::DEFAULT_BREAKER_TIMEOUT_THRESHOLD,
            recovery: Duration::from_millis(defaults::DEFAULT_BREAKER_RECOVERY_MS),
            max_recovery: Duration::from_millis(defaults::DEFAULT_BREAKER_MAX_RECOVERY_MS),
            half_open_successes: defaults::DEFAULT_BREAKER_HALF_OPEN_SUCCESSES,
        }
    }
}
