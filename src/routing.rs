//! The routing seam: for one request, which providers of a chain to try, in which order. Each worker owns a
//! [`Router`] (no sharing, no locks). In this version strategies rank by static configuration (priority, cost,
//! round-robin, uniform random); the measured strategies plug in here, per core, through the same `candidates` call.

use std::str::FromStr;

use smallvec::SmallVec;

use crate::config::{Chain, Config};

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

/// Provider ids (`pid`) in the order they should be tried.
pub type Candidates = SmallVec<[usize; 8]>;

/// A worker's router: per-worker round-robin cursors and random state.
pub struct Router {
    cursor: usize,
    rng: u64,
}

impl Router {
    pub fn new(seed: u64) -> Self {
        Router { cursor: 0, rng: seed | 1 }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: fast, per worker, good enough for spreading load.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Orders the providers of `chain` that permit `method` for `strategy`. Empty when no provider permits it.
    pub fn candidates(&mut self, config: &Config, chain: &Chain, strategy: Strategy, method: &str) -> Candidates {
        let mut out: Candidates =
            chain.providers.iter().copied().filter(|&pid| config.providers[pid].methods.permits(method)).collect();
        let by_priority = |a: &usize, b: &usize| {
            let (pa, pb) = (&config.providers[*a], &config.providers[*b]);
            pa.priority.cmp(&pb.priority).then(a.cmp(b))
        };
        match strategy {
            Strategy::Priority | Strategy::Fastest => out.sort_by(by_priority),
            Strategy::Cheapest => out.sort_by(|a, b| {
                let (pa, pb) = (&config.providers[*a], &config.providers[*b]);
                pa.cost.total_cmp(&pb.cost).then_with(|| by_priority(a, b))
            }),
            Strategy::LoadBalanced => {
                out.sort_by(by_priority);
                if !out.is_empty() {
                    let n = out.len();
                    out.rotate_left(self.cursor % n);
                    self.cursor = self.cursor.wrapping_add(1);
                }
            }
            Strategy::LatencyWeighted => {
                out.sort_by(by_priority);
                if out.len() > 1 {
                    let first = (self.next_random() % out.len() as u64) as usize;
                    out.swap(0, first);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
chains:
  c:
    chain_id: 5
    providers:
      - { id: a, url: "http://a", priority: 2, cost: 1 }
      - { id: b, url: "http://b", priority: 1, cost: 3 }
      - { id: c, url: "http://c", priority: 3, cost: 0, methods: { deny: ["debug_*"] } }
"#;
        crate::config::load_str(text, Path::new("t.yml"), &|_| None).unwrap()
    }

    fn ids(config: &Config, c: &Candidates) -> Vec<String> {
        c.iter().map(|&p| config.providers[p].id.clone()).collect()
    }

    #[test]
    fn static_strategies_order_providers() {
        let config = config();
        let chain = &config.profiles[0].chains[0];
        let mut router = Router::new(7);
        assert_eq!(ids(&config, &router.candidates(&config, chain, Strategy::Priority, "eth_call")), ["b", "a", "c"]);
        assert_eq!(ids(&config, &router.candidates(&config, chain, Strategy::Cheapest, "eth_call")), ["c", "a", "b"]);
        assert_eq!(ids(&config, &router.candidates(&config, chain, Strategy::Priority, "debug_x")), ["b", "a"]);
        let firsts: Vec<_> = (0..3)
            .map(|_| ids(&config, &router.candidates(&config, chain, Strategy::LoadBalanced, "m"))[0].clone())
            .collect();
        assert_eq!(firsts, ["b", "a", "c"]);
    }

    #[test]
    fn strategy_names_parse() {
        assert_eq!("round-robin".parse::<Strategy>().unwrap(), Strategy::LoadBalanced);
        assert!("quickest".parse::<Strategy>().is_err());
    }
}
