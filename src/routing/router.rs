//! Provider selection: for one request, which providers of a chain to try, in which order. Each worker owns a
//! [`Router`] and reads its local copy of the merged [`RoutingTable`] (no sharing, no locks). `fastest` ranks by a
//! measured latency quantile (with probe traffic for cold providers), `latency-weighted` picks at random weighted by
//! (best/latency)^beta, `cheapest` by cost then latency, `priority` by configuration, `load-balanced` round-robin.
//! Providers that are excluded for now (breaker, cool-down, lag, unsupported) go last; wrong-chain ones never.

use std::time::Instant;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::config::{Chain, Config, Strategy};
use crate::evm::methods::{BlockTarget, MethodKey};
use crate::routing::breaker::{Breaker, BreakerState};
use crate::routing::table::RoutingTable;

/// Provider ids (`pid`) in the order they should be tried.
pub type Candidates = SmallVec<[usize; 8]>;

/// A worker's own view of provider health, updated by its requests (and by the table for other workers' findings).
pub struct LocalHealth {
    pub breakers: Vec<Breaker>,
    pub cooldown_until: Vec<Option<Instant>>,
    /// (provider, method) pairs found unsupported, and until when to believe it.
    pub unsupported: FxHashMap<(u32, MethodKey), Instant>,
}

impl LocalHealth {
    pub fn new(providers: usize, seed: u64) -> Self {
        LocalHealth {
            breakers: (0..providers)
                .map(|i| Breaker::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1)))
                .collect(),
            cooldown_until: vec![None; providers],
            unsupported: FxHashMap::default(),
        }
    }

    pub fn cooling_down(&self, pid: usize, now: Instant) -> bool {
        self.cooldown_until
            .get(pid)
            .copied()
            .flatten()
            .is_some_and(|u| u > now)
    }
}

/// What a routing decision reads.
pub struct RouteInputs<'a> {
    pub config: &'a Config,
    pub table: &'a RoutingTable,
    pub health: &'a LocalHealth,
    pub now: Instant,
}

/// One request's routing question.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    pub chain: &'a Chain,
    pub strategy: Strategy,
    pub method: &'a str,
    pub key: MethodKey,
    pub target: BlockTarget,
}

/// A chain's providers with their measured scores for one method key (`None` = not enough samples).
type Scores = SmallVec<[(usize, Option<f64>); 8]>;

/// A worker's router: per-worker round-robin cursor and random state, and the scores of the table in use.
pub struct Router {
    cursor: usize,
    rng: u64,
    /// Scores by (chain, method key), computed from the current table on first use: a request reads its chain's
    /// scores with one lookup instead of one to three table lookups per provider. Bounded by chains x method keys;
    /// emptied by [`Router::forget_scores`] when the worker installs a new table.
    scores: FxHashMap<(usize, MethodKey), Scores>,
}

impl Router {
    pub fn new(seed: u64) -> Self {
        Router {
            cursor: 0,
            rng: seed | 1,
            scores: FxHashMap::default(),
        }
    }

    /// The routing table changed: scores are computed again from the new one.
    pub fn forget_scores(&mut self) {
        self.scores.clear();
    }

    /// The scores of `q`'s chain's providers for `q`'s method: the configured latency quantile inflated by failures.
    fn scores(&mut self, inputs: &RouteInputs<'_>, q: &RouteQuery<'_>) -> Scores {
        let routing = &inputs.config.routing;
        self.scores
            .entry((q.chain.gid, q.key))
            .or_insert_with(|| {
                q.chain
                    .providers
                    .iter()
                    .map(|&pid| {
                        let score =
                            inputs
                                .table
                                .latency(pid, q.key, routing.min_samples)
                                .map(|s| {
                                    let rate = s.success_rate().max(0.05);
                                    s.quantile_us(routing.fastest_quantile).max(1) as f64
                                        / (rate * rate)
                                });
                        (pid, score)
                    })
                    .collect()
            })
            .clone()
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

    fn random_unit(&mut self) -> f64 {
        (self.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Orders the providers of the chain for one request: usable providers ranked by the strategy first, then
    /// providers that are excluded for now (open breaker, cool-down, lag, unsupported) as a last resort. Providers on
    /// the wrong chain, or whose method filter refuses the method, never appear.
    pub fn candidates(&mut self, inputs: &RouteInputs<'_>, q: &RouteQuery<'_>) -> Candidates {
        let RouteInputs {
            config,
            table,
            health,
            now,
        } = *inputs;
        let routing = &config.routing;
        let head = table.chain_heads.get(q.chain.gid).copied().flatten();
        let needs_archive = match (q.target, head) {
            (BlockTarget::Number(n), Some(h)) => {
                h.saturating_sub(n) > routing.archive_threshold_blocks
            }
            _ => false,
        };
        let any_archival = q
            .chain
            .providers
            .iter()
            .any(|&p| config.providers[p].archival);
        let mut usable = Candidates::new();
        let mut last_resort = Candidates::new();
        let denied = crate::evm::methods::default_denied(q.method);
        for &pid in &q.chain.providers {
            let p = &config.providers[pid];
            let state = table.provider(pid);
            if !p.methods.permits_given(q.method, denied)
                || state.is_some_and(|s| s.disabled.is_some())
            {
                continue;
            }
            if needs_archive && any_archival && !p.archival {
                continue;
            }
            let lagging = q.target == BlockTarget::Head
                && state
                    .and_then(|s| s.lag)
                    .is_some_and(|lag| lag > q.chain.max_lag_blocks);
            // An explicit block the provider has not reached yet (as last probed): others first.
            let short = matches!(q.target, BlockTarget::Number(n)
                if state.and_then(|s| s.head).is_some_and(|h| h < n));
            let breaker_open = health.breakers[pid].state(now) == BreakerState::Open
                || state
                    .and_then(|s| s.breaker_open_until)
                    .is_some_and(|u| u > now);
            let cooling = health.cooling_down(pid, now)
                || state
                    .and_then(|s| s.cooldown_until)
                    .is_some_and(|u| u > now);
            // Both sets are almost always empty: no hashing then.
            let unsupported = (!health.unsupported.is_empty()
                && health
                    .unsupported
                    .get(&(pid as u32, q.key))
                    .is_some_and(|u| *u > now))
                || (!table.unsupported.is_empty()
                    && table.unsupported.contains(&(pid as u32, q.key)));
            if lagging || short || breaker_open || cooling || unsupported {
                last_resort.push(pid);
            } else {
                usable.push(pid);
            }
        }
        self.order(inputs, q, &mut usable);
        self.order(inputs, q, &mut last_resort);
        usable.extend(last_resort);
        usable
    }

    fn order(&mut self, inputs: &RouteInputs<'_>, q: &RouteQuery<'_>, list: &mut Candidates) {
        let config = inputs.config;
        let routing = &config.routing;
        let by_priority = |a: &usize, b: &usize| {
            let (pa, pb) = (&config.providers[*a], &config.providers[*b]);
            pa.priority.cmp(&pb.priority).then(a.cmp(b))
        };
        list.sort_by(by_priority);
        if list.len() < 2 {
            return;
        }
        let chain_scores = match q.strategy {
            Strategy::Priority | Strategy::LoadBalanced => Scores::new(),
            Strategy::Cheapest | Strategy::Fastest | Strategy::LatencyWeighted => {
                self.scores(inputs, q)
            }
        };
        let score = |pid: usize| -> Option<f64> {
            chain_scores
                .iter()
                .find(|(p, _)| *p == pid)
                .and_then(|(_, s)| *s)
        };
        match q.strategy {
            Strategy::Priority => {}
            Strategy::LoadBalanced => {
                let n = list.len();
                list.rotate_left(self.cursor % n);
                self.cursor = self.cursor.wrapping_add(1);
            }
            Strategy::Cheapest => list.sort_by(|a, b| {
                let (pa, pb) = (&config.providers[*a], &config.providers[*b]);
                pa.cost
                    .total_cmp(&pb.cost)
                    .then_with(|| {
                        score(*a)
                            .unwrap_or(f64::MAX)
                            .total_cmp(&score(*b).unwrap_or(f64::MAX))
                    })
                    .then_with(|| by_priority(a, b))
            }),
            Strategy::Fastest | Strategy::LatencyWeighted => {
                let scores: SmallVec<[(usize, Option<f64>); 8]> =
                    list.iter().map(|&p| (p, score(p))).collect();
                let mut measured: SmallVec<[(usize, f64); 8]> = scores
                    .iter()
                    .filter_map(|&(p, s)| s.map(|s| (p, s)))
                    .collect();
                measured.sort_by(|a, b| a.1.total_cmp(&b.1));
                let cold: Candidates = scores
                    .iter()
                    .filter(|(_, s)| s.is_none())
                    .map(|(p, _)| *p)
                    .collect();
                list.clear();
                list.extend(measured.iter().map(|(p, _)| *p));
                list.extend(cold.iter().copied());
                if measured.is_empty() {
                    return;
                }
                // Cold providers get a small share of first attempts so they can qualify.
                if !cold.is_empty() && self.random_unit() < routing.probe_share {
                    let pick = cold[(self.next_random() % cold.len() as u64) as usize];
                    let at = list
                        .iter()
                        .position(|&p| p == pick)
                        .expect("cold provider is listed");
                    list[..=at].rotate_right(1);
                    return;
                }
                if q.strategy == Strategy::LatencyWeighted && measured.len() > 1 {
                    let best = measured[0].1;
                    let weights: SmallVec<[f64; 8]> = measured
                        .iter()
                        .map(|(_, s)| (best / s).powf(routing.latency_weight_beta))
                        .collect();
                    let total: f64 = weights.iter().sum();
                    let mut x = self.random_unit() * total;
                    let mut chosen = measured.len() - 1;
                    for (i, w) in weights.iter().enumerate() {
                        if x < *w {
                            chosen = i;
                            break;
                        }
                        x -= w;
                    }
                    list[..=chosen].rotate_right(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::{Scope, StatKey, Summary};
    use std::collections::HashMap;
    use std::path::Path;

    fn config() -> Config {
        let text = r#"
routing: { probe_share: 0.0, min_samples: 5 }
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

    fn measured(table: &mut RoutingTable, pid: u32, p50: u64) {
        let s = Summary {
            samples: 100,
            attempts: 100,
            p50_us: p50,
            p90_us: p50,
            p95_us: p50,
            p99_us: p50,
            ..Default::default()
        };
        table.summaries.insert(
            StatKey {
                pid,
                scope: Scope::Provider,
            },
            s,
        );
    }

    fn route(
        router: &mut Router,
        config: &Config,
        table: &RoutingTable,
        health: &LocalHealth,
        strategy: Strategy,
        method: &str,
    ) -> Vec<String> {
        let chain = &config.profiles[0].chains[0];
        let inputs = RouteInputs {
            config,
            table,
            health,
            now: Instant::now(),
        };
        let q = RouteQuery {
            chain,
            strategy,
            method,
            key: MethodKey::of(method),
            target: BlockTarget::Any,
        };
        ids(config, &router.candidates(&inputs, &q))
    }

    #[test]
    fn static_strategies_order_providers() {
        let config = config();
        let table = RoutingTable::empty(3, 1);
        let health = LocalHealth::new(3, 1);
        let mut r = Router::new(7);
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Priority,
                "eth_call"
            ),
            ["b", "a", "c"]
        );
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Cheapest,
                "eth_call"
            ),
            ["c", "a", "b"]
        );
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Priority,
                "debug_x"
            ),
            ["b", "a"]
        );
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Fastest,
                "eth_call"
            ),
            ["b", "a", "c"],
            "no samples: priority"
        );
        let firsts: Vec<_> = (0..3)
            .map(|_| {
                route(
                    &mut r,
                    &config,
                    &table,
                    &health,
                    Strategy::LoadBalanced,
                    "m",
                )[0]
                .clone()
            })
            .collect();
        assert_eq!(firsts, ["b", "a", "c"]);
    }

    #[test]
    fn fastest_follows_measurements_and_excluded_go_last() {
        let config = config();
        let mut table = RoutingTable::empty(3, 1);
        measured(&mut table, 0, 2_000);
        measured(&mut table, 1, 40_000);
        measured(&mut table, 2, 10_000);
        let mut health = LocalHealth::new(3, 1);
        let mut r = Router::new(7);
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Fastest,
                "eth_call"
            ),
            ["a", "c", "b"]
        );
        health.cooldown_until[0] = Some(Instant::now() + std::time::Duration::from_secs(5));
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Fastest,
                "eth_call"
            ),
            ["c", "b", "a"]
        );
        table.providers[2].disabled = Some("wrong chain".into());
        assert_eq!(
            route(
                &mut r,
                &config,
                &table,
                &health,
                Strategy::Fastest,
                "eth_call"
            ),
            ["b", "a"]
        );
    }

    #[test]
    fn a_new_table_reorders_once_the_old_scores_are_forgotten() {
        let config = config();
        let health = LocalHealth::new(3, 1);
        let mut r = Router::new(7);
        let mut first = RoutingTable::empty(3, 1);
        measured(&mut first, 0, 2_000);
        measured(&mut first, 1, 40_000);
        measured(&mut first, 2, 10_000);
        let fastest = |r: &mut Router, table: &RoutingTable| {
            route(r, &config, table, &health, Strategy::Fastest, "eth_call")
        };
        assert_eq!(fastest(&mut r, &first), ["a", "c", "b"]);
        let mut second = RoutingTable::empty(3, 1);
        measured(&mut second, 0, 40_000);
        measured(&mut second, 1, 1_000);
        measured(&mut second, 2, 10_000);
        r.forget_scores();
        assert_eq!(fastest(&mut r, &second), ["b", "c", "a"]);
        // Another method of the same chain has scores of its own (here from the provider-wide summaries).
        assert_eq!(
            route(
                &mut r,
                &config,
                &second,
                &health,
                Strategy::Fastest,
                "eth_getBalance"
            ),
            ["b", "c", "a"]
        );
    }

    #[test]
    fn latency_weighted_spreads_by_weight() {
        let config = config();
        let mut table = RoutingTable::empty(3, 1);
        measured(&mut table, 0, 10_000);
        measured(&mut table, 1, 20_000);
        measured(&mut table, 2, 10_000);
        let health = LocalHealth::new(3, 1);
        let mut r = Router::new(11);
        let mut counts = HashMap::new();
        let n = 20_000;
        for _ in 0..n {
            *counts
                .entry(
                    route(
                        &mut r,
                        &config,
                        &table,
                        &health,
                        Strategy::LatencyWeighted,
                        "eth_call",
                    )[0]
                    .clone(),
                )
                .or_insert(0) += 1;
        }
        // beta 3: weights 1, 1/8, 1 -> shares 8/17, 1/17, 8/17.
        let share = |id: &str| counts.get(id).copied().unwrap_or(0) as f64 / n as f64;
        assert!((share("a") - 8.0 / 17.0).abs() < 0.02, "{counts:?}");
        assert!((share("b") - 1.0 / 17.0).abs() < 0.02, "{counts:?}");
        assert!((share("c") - 8.0 / 17.0).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn strategy_names_parse() {
        assert_eq!(
            "round-robin".parse::<Strategy>().unwrap(),
            Strategy::LoadBalanced
        );
        assert!("quickest".parse::<Strategy>().is_err());
    }
}
