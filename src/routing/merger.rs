//! The merger's logic: folds every worker's harvested recorder into sliding windows of per-interval histograms per
//! provider x method (and per method class and provider-wide), tracks process-wide exclusions (open breakers,
//! cool-downs, unsupported methods, wrong chains) and heads, and builds the immutable [`RoutingTable`]. The thread
//! that drives it lives in `monitor`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{Config, Provider, ProviderUrl};
use crate::evm::methods::MethodKey;
use crate::routing::recorder::{IntervalStats, Recorder};
use crate::routing::table::{ProviderState, RoutingTable, Scope, StatKey, Summary};

/// What a worker hands the merger each interval.
#[derive(Debug, Default)]
pub struct Harvest {
    pub recorder: Recorder,
    /// Providers whose breaker is open on this worker, and until when.
    pub breakers_open: Vec<(u32, Instant)>,
    /// Providers this worker saw rate limiting, and until when to leave them alone.
    pub cooldowns: Vec<(u32, Instant)>,
    /// (provider, method) pairs the provider said it cannot serve.
    pub unsupported: Vec<(u32, MethodKey)>,
    /// The highest head the worker answered per chain (global chain index).
    pub head_floors: Vec<u64>,
}

struct Window {
    intervals: VecDeque<Option<IntervalStats>>,
    total: IntervalStats,
}

/// How long a last known summary stands in for a provider without recent samples.
const LAST_KNOWN_TTL: Duration = Duration::from_secs(1800);

/// How long a provider stays marked as unable to serve a method.
const UNSUPPORTED_TTL: Duration = Duration::from_secs(600);

/// A provider as a configuration generation sees it: the same identity in the next generation is the same provider
/// (a changed URL is a different endpoint, measured afresh).
/// (No `Debug`: the URL may carry an API key.)
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProviderIdentity {
    profile: String,
    chain: String,
    id: String,
    url: ProviderUrl,
}

impl ProviderIdentity {
    fn of(p: &Provider) -> Self {
        ProviderIdentity {
            profile: p.profile.clone(),
            chain: p.chain.clone(),
            id: p.id.clone(),
            url: p.url.clone(),
        }
    }
}

/// What a retiring generation's merger hands to the next one (indexed by the retiring generation's provider ids).
pub struct Inheritance {
    identities: Vec<ProviderIdentity>,
    summaries: rustc_hash::FxHashMap<StatKey, Summary>,
    providers: Vec<ProviderState>,
    unsupported: Vec<((u32, MethodKey), Instant)>,
}

/// The merger's state.
pub struct Merger {
    window_len: usize,
    min_samples: u64,
    windows: HashMap<StatKey, Window>,
    /// The last summary of each key that had enough samples, and when: a provider that gets little traffic (because
    /// another is faster) keeps its last known latency instead of turning cold.
    last_known: HashMap<StatKey, (Summary, Instant)>,
    prior: HashMap<StatKey, Summary>,
    providers: Vec<ProviderState>,
    chain_of: Vec<usize>,
    chain_heads: Vec<Option<u64>>,
    /// The highest head any worker answered per chain: every worker's floor.
    chain_floors: Vec<u64>,
    unsupported: HashMap<(u32, MethodKey), Instant>,
    generation: u64,
    hedges: u64,
    failovers: u64,
}

fn summarize(stats: &IntervalStats) -> Summary {
    let h = &stats.latency;
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Summary {
        samples: stats.answered,
        attempts: stats.attempts(),
        failures: stats.failed,
        rate_limited: stats.rate_limited,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p95_us: q(0.95),
        p99_us: q(0.99),
        from_snapshot: false,
    }
}

impl Merger {
    /// `chain_of[pid]` is the global chain index of each provider.
    pub fn new(window_len: usize, min_samples: u64, chain_of: Vec<usize>, chains: usize) -> Self {
        Merger {
            window_len: window_len.max(1),
            min_samples: min_samples.max(1),
            windows: HashMap::new(),
            last_known: HashMap::new(),
            prior: HashMap::new(),
            providers: vec![ProviderState::default(); chain_of.len()],
            chain_of,
            chain_heads: vec![None; chains],
            chain_floors: vec![0; chains],
            unsupported: HashMap::new(),
            generation: 0,
            hedges: 0,
            failovers: 0,
        }
    }

    /// Summaries of a previous run, used for keys without enough live samples (zero cold start).
    pub fn set_prior(&mut self, prior: HashMap<StatKey, Summary>) {
        self.prior = prior;
    }

    /// Folds one interval of harvests from every worker.
    pub fn fold(&mut self, harvests: Vec<Harvest>, now: Instant) {
        let mut interval: HashMap<StatKey, IntervalStats> = HashMap::new();
        for harvest in harvests {
            self.hedges += harvest.recorder.hedges;
            self.failovers += harvest.recorder.failovers;
            for ((pid, method), stats) in &harvest.recorder.entries {
                for scope in [
                    Scope::Method(*method),
                    Scope::Class(method.class()),
                    Scope::Provider,
                ] {
                    interval
                        .entry(StatKey { pid: *pid, scope })
                        .or_default()
                        .add(stats);
                }
            }
            for (pid, until) in harvest.breakers_open {
                if let Some(p) = self.providers.get_mut(pid as usize) {
                    p.breaker_open_until =
                        Some(p.breaker_open_until.map_or(until, |u| u.max(until)));
                }
            }
            for (pid, until) in harvest.cooldowns {
                if let Some(p) = self.providers.get_mut(pid as usize) {
                    p.cooldown_until = Some(p.cooldown_until.map_or(until, |u| u.max(until)));
                }
            }
            for (chain, &floor) in harvest.head_floors.iter().enumerate() {
                if let Some(f) = self.chain_floors.get_mut(chain) {
                    *f = (*f).max(floor);
                }
            }
            for key in harvest.unsupported {
                self.unsupported.insert(key, now + UNSUPPORTED_TTL);
            }
        }
        for p in &mut self.providers {
            if p.breaker_open_until.is_some_and(|u| u <= now) {
                p.breaker_open_until = None;
            }
            if p.cooldown_until.is_some_and(|u| u <= now) {
                p.cooldown_until = None;
            }
        }
        self.unsupported.retain(|_, until| *until > now);
        // Age every window by one interval, adding the new stats where there are some.
        for (key, window) in self.windows.iter_mut() {
            let fresh = interval.remove(key);
            if let Some(stats) = &fresh {
                window.total.add(stats);
            }
            window.intervals.push_back(fresh);
            while window.intervals.len() > self.window_len {
                if let Some(Some(old)) = window.intervals.pop_front() {
                    window.total.subtract(&old);
                }
            }
        }
        for (key, stats) in interval {
            let mut window = Window {
                intervals: VecDeque::with_capacity(self.window_len),
                total: IntervalStats::default(),
            };
            window.total.add(&stats);
            window.intervals.push_back(Some(stats));
            self.windows.insert(key, window);
        }
        self.windows
            .retain(|_, w| w.intervals.iter().any(Option::is_some));
        for (key, window) in &self.windows {
            if window.total.answered >= self.min_samples {
                self.last_known
                    .insert(*key, (summarize(&window.total), now));
            }
        }
        self.last_known
            .retain(|_, (_, at)| now.duration_since(*at) < LAST_KNOWN_TTL);
        self.generation += 1;
    }

    /// Marks a provider as disabled (e.g. it serves another chain) or enabled again.
    pub fn set_disabled(&mut self, pid: usize, reason: Option<String>) {
        if let Some(p) = self.providers.get_mut(pid) {
            p.disabled = reason;
        }
    }

    /// Records a provider's latest head and recomputes its chain's consensus head and every lag.
    pub fn set_head(&mut self, pid: usize, head: u64) {
        if let Some(p) = self.providers.get_mut(pid) {
            p.head = Some(head);
        }
        let chain = self.chain_of[pid];
        // The consensus head is the highest head among enabled providers of the chain.
        let consensus = self
            .providers
            .iter()
            .enumerate()
            .filter(|(i, p)| self.chain_of[*i] == chain && p.disabled.is_none())
            .filter_map(|(_, p)| p.head)
            .max();
        self.chain_heads[chain] = consensus;
        for (i, p) in self.providers.iter_mut().enumerate() {
            if self.chain_of[i] == chain {
                p.lag = match (consensus, p.head) {
                    (Some(c), Some(h)) => Some(c.saturating_sub(h)),
                    _ => None,
                };
            }
        }
    }

    pub fn chain_head(&self, chain: usize) -> Option<u64> {
        self.chain_heads.get(chain).copied().flatten()
    }

    /// Summaries per key: the live window when it has enough samples, else the last known summary of this run,
    /// else the snapshot of a previous run, else the thin live window.
    pub fn summaries(&self) -> rustc_hash::FxHashMap<StatKey, Summary> {
        let mut out: rustc_hash::FxHashMap<StatKey, Summary> = self
            .windows
            .iter()
            .map(|(k, w)| (*k, summarize(&w.total)))
            .collect();
        for (key, (known, _)) in &self.last_known {
            if out.get(key).is_none_or(|s| s.samples < self.min_samples) {
                out.insert(*key, known.clone());
            }
        }
        for (key, prior) in &self.prior {
            if out.get(key).is_none_or(|s| s.samples < self.min_samples) {
                out.insert(
                    *key,
                    Summary {
                        from_snapshot: true,
                        ..prior.clone()
                    },
                );
            }
        }
        out
    }

    /// What this generation's routing knows, for the generation that replaces it: every summary (live or last
    /// known), breakers open and cool-downs still running, and methods providers said they cannot serve.
    pub fn bequeath(&self, config: &Config) -> Inheritance {
        let now = Instant::now();
        Inheritance {
            identities: config.providers.iter().map(ProviderIdentity::of).collect(),
            summaries: self
                .summaries()
                .into_iter()
                .filter(|(_, s)| !s.from_snapshot)
                .collect(),
            providers: self.providers.clone(),
            unsupported: self
                .unsupported
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(k, u)| (*k, *u))
                .collect(),
        }
    }

    /// Takes over what the previous generation knew about the providers that stay (same profile, chain, id and
    /// URL): their measurements count as last known, and their breakers, cool-downs and unsupported methods hold.
    pub fn inherit(&mut self, from: Inheritance, config: &Config) {
        let now = Instant::now();
        let new_pid: HashMap<ProviderIdentity, usize> = config
            .providers
            .iter()
            .map(|p| (ProviderIdentity::of(p), p.pid))
            .collect();
        let map: Vec<Option<u32>> = from
            .identities
            .iter()
            .map(|id| new_pid.get(id).map(|&p| p as u32))
            .collect();
        let moved = |old: u32| map.get(old as usize).copied().flatten();
        for (key, summary) in from.summaries {
            if let Some(pid) = moved(key.pid) {
                self.last_known
                    .insert(StatKey { pid, ..key }, (summary, now));
            }
        }
        for (old, state) in from.providers.into_iter().enumerate() {
            let Some(p) = moved(old as u32).and_then(|pid| self.providers.get_mut(pid as usize))
            else {
                continue;
            };
            p.breaker_open_until = state.breaker_open_until.filter(|u| *u > now);
            p.cooldown_until = state.cooldown_until.filter(|u| *u > now);
            p.head = state.head;
            p.lag = state.lag;
        }
        for ((old, method), until) in from.unsupported {
            if let Some(pid) = moved(old) {
                self.unsupported.insert((pid, method), until);
            }
        }
    }

    pub fn table(&self) -> RoutingTable {
        RoutingTable {
            generation: self.generation,
            summaries: self.summaries(),
            providers: self.providers.clone(),
            chain_heads: self.chain_heads.clone(),
            chain_floors: self.chain_floors.clone(),
            unsupported: self.unsupported.keys().copied().collect(),
            hedges: self.hedges,
            failovers: self.failovers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::recorder::SampleKind;

    fn harvest(pid: u32, method: &str, n: usize, latency_ms: u64) -> Harvest {
        let mut h = Harvest::default();
        for _ in 0..n {
            h.recorder.record(
                pid as usize,
                MethodKey::of(method),
                SampleKind::Answered,
                Duration::from_millis(latency_ms),
            );
        }
        h
    }

    #[test]
    fn windows_slide_and_old_samples_decay_away() {
        let mut m = Merger::new(3, 1_000, vec![0, 0], 1);
        let now = Instant::now();
        m.fold(
            vec![
                harvest(0, "eth_call", 10, 10),
                harvest(0, "eth_call", 10, 10),
            ],
            now,
        );
        let key = StatKey {
            pid: 0,
            scope: Scope::Method(MethodKey::of("eth_call")),
        };
        assert_eq!(
            m.summaries()[&key].samples,
            20,
            "two workers' samples add up"
        );
        let p50 = m.summaries()[&key].p50_us;
        assert!((9_900..=10_100).contains(&p50), "{p50}");
        m.fold(vec![harvest(0, "eth_call", 20, 40)], now);
        let s = &m.summaries()[&key];
        assert_eq!(s.samples, 40);
        assert!(s.p90_us >= 39_000, "{s:?}");
        // After three more intervals without 10 ms samples, only the 40 ms interval remains, then nothing.
        m.fold(vec![], now);
        m.fold(vec![], now);
        assert_eq!(m.summaries()[&key].samples, 20);
        assert!(m.summaries()[&key].p50_us >= 39_000);
        m.fold(vec![], now);
        assert!(!m.summaries().contains_key(&key), "window expired");
    }

    #[test]
    fn class_and_provider_levels_aggregate_methods() {
        let mut m = Merger::new(5, 1, vec![0], 1);
        m.fold(
            vec![
                harvest(0, "eth_call", 5, 10),
                harvest(0, "eth_estimateGas", 5, 10),
                harvest(0, "eth_blockNumber", 4, 1),
            ],
            Instant::now(),
        );
        let s = m.summaries();
        assert_eq!(
            s[&StatKey {
                pid: 0,
                scope: Scope::Class(crate::evm::methods::MethodClass::Call)
            }]
                .samples,
            10
        );
        assert_eq!(
            s[&StatKey {
                pid: 0,
                scope: Scope::Provider
            }]
                .samples,
            14
        );
    }

    #[test]
    fn consensus_head_and_lag() {
        let mut m = Merger::new(5, 1, vec![0, 0, 0, 1], 2);
        m.set_head(0, 100);
        m.set_head(1, 80);
        m.set_head(3, 5);
        assert_eq!(m.chain_head(0), Some(100));
        assert_eq!(m.chain_head(1), Some(5));
        let t = m.table();
        assert_eq!(t.providers[1].lag, Some(20));
        assert_eq!(t.providers[0].lag, Some(0));
        assert_eq!(t.providers[2].lag, None);
        m.set_disabled(0, Some("wrong chain".into()));
        m.set_head(1, 81);
        assert_eq!(
            m.chain_head(0),
            Some(81),
            "a disabled provider does not define the head"
        );
    }

    #[test]
    fn the_highest_head_any_worker_answered_is_every_workers_floor() {
        let mut m = Merger::new(5, 1, vec![0, 1], 2);
        let now = Instant::now();
        let worker = |floors: Vec<u64>| Harvest {
            head_floors: floors,
            ..Default::default()
        };
        m.fold(
            vec![worker(vec![100, 7]), worker(vec![105]), worker(vec![])],
            now,
        );
        assert_eq!(m.table().chain_floors, vec![105, 7]);
        // Floors never go down, whatever a later harvest says.
        m.fold(vec![worker(vec![90, 3])], now);
        assert_eq!(m.table().chain_floors, vec![105, 7]);
    }

    #[test]
    fn exclusions_expire() {
        let mut m = Merger::new(5, 1, vec![0, 0], 1);
        let now = Instant::now();
        let h = Harvest {
            breakers_open: vec![(1, now + Duration::from_secs(2))],
            cooldowns: vec![(0, now + Duration::from_secs(1))],
            ..Default::default()
        };
        m.fold(vec![h], now);
        let t = m.table();
        assert!(t.providers[1].breaker_open_until.is_some());
        assert!(t.providers[0].cooldown_until.is_some());
        m.fold(vec![], now + Duration::from_millis(1500));
        let t = m.table();
        assert!(t.providers[1].breaker_open_until.is_some());
        assert!(t.providers[0].cooldown_until.is_none());
    }

    #[test]
    fn snapshot_priors_fill_in_until_live_samples_arrive() {
        let mut m = Merger::new(5, 1, vec![0], 1);
        let key = StatKey {
            pid: 0,
            scope: Scope::Provider,
        };
        m.set_prior(HashMap::from([(
            key,
            Summary {
                samples: 50,
                attempts: 50,
                p50_us: 7,
                ..Default::default()
            },
        )]));
        assert!(m.summaries()[&key].from_snapshot);
        m.fold(vec![harvest(0, "eth_call", 3, 2)], Instant::now());
        assert!(!m.summaries()[&key].from_snapshot);
    }

    #[test]
    fn a_provider_without_recent_traffic_keeps_its_last_known_latency() {
        let mut m = Merger::new(2, 3, vec![0], 1);
        let key = StatKey {
            pid: 0,
            scope: Scope::Provider,
        };
        let now = Instant::now();
        m.fold(vec![harvest(0, "eth_call", 10, 10)], now);
        m.fold(vec![], now);
        m.fold(vec![], now);
        let s = &m.summaries()[&key];
        assert_eq!(s.samples, 10, "last known summary stands in: {s:?}");
        m.fold(vec![harvest(0, "eth_call", 1, 50)], now);
        assert!(
            m.summaries()[&key].p50_us < 20_000,
            "one fresh sample is too few to replace it"
        );
        m.fold(vec![harvest(0, "eth_call", 5, 50)], now);
        assert!(
            m.summaries()[&key].p50_us >= 49_000,
            "enough fresh samples replace it"
        );
    }
}
