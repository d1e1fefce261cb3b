//! Scenario files (`loadtest/scenarios/*.yml`): what the runner starts (worker count, upstream mock providers and
//! their chain/faults) and the steps it runs against every target, in order. `quick` and `soak` are one file each;
//! `all` is every other file, ordered by their `order` field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One scenario file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Position in `all`.
    #[serde(default)]
    pub order: u32,
    /// Worker threads/processes of every target: `1` (pinned to the target CPU) or `all` (every CPU).
    #[serde(default = "one_str")]
    pub workers: String,
    /// Upstream mock providers behind the proxies (1 or more; the first is primary).
    #[serde(default = "one_usize")]
    pub providers: usize,
    #[serde(default)]
    pub mock: MockSettings,
    /// Targets to run (default: all available).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// Each step runs this many times per target, interleaved (mock, lasso, nginx, ..., mock, lasso, ...); the report
    /// keeps the least disturbed round (highest throughput in closed loop, lowest p99 in open loop), since on a shared
    /// machine noise only ever lowers throughput and raises latency.
    #[serde(default = "one_usize")]
    pub rounds: usize,
    /// Lasso folds concurrent single reads into upstream JSON-RPC batches (`upstream.coalesce`). Off unless a scenario
    /// says so: it changes what the provider sees, so the report labels every scenario that turns it on.
    #[serde(default)]
    pub lasso_coalesce: bool,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The description as reports print it, with upstream batching labelled where it is on.
    pub fn labelled_description(&self) -> String {
        if self.lasso_coalesce {
            format!(
                "{} [Lasso: upstream batching ON, changes semantics]",
                self.description
            )
        } else {
            self.description.clone()
        }
    }
}

/// Simulated chain and initial faults of the upstream mocks (and of the mock target).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockSettings {
    pub block_time_ms: u64,
    pub txs_per_block: u32,
    pub logs_per_block: u32,
    /// Control patch applied at the start of every step (e.g. latency).
    pub faults: Value,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            block_time_ms: 1000,
            txs_per_block: 50,
            logs_per_block: 40,
            faults: Value::Object(Default::default()),
        }
    }
}

/// How a step's load is offered.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Closed loop: maximum throughput at fixed concurrency.
    Closed,
    /// Open loop: fixed rate (absolute or a fraction of an earlier step's throughput).
    Open,
    /// WebSocket newHeads fan-out.
    Subscribe,
    /// Hold `idle_connections` keep-alive connections, then run an open-loop stream at `rate`; reports RSS.
    Idle,
    /// RSS across `sequential_connections` one-request connections, then `idle_connections` held for `duration_s`
    /// (see `crate::soak`).
    Soak,
}

/// Which throughput a `rate_fraction` multiplies.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateBasis {
    /// The lowest throughput among the proxies (so every target gets the same absolute rate).
    #[default]
    Slowest,
    /// Each target's own throughput.
    Each,
}

/// A timed control call during a step.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub at_s: f64,
    /// Upstream provider index (0 = primary; the mock target counts as provider 0).
    #[serde(default)]
    pub provider: usize,
    pub control: Value,
    #[serde(default)]
    pub label: String,
}

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    #[serde(default = "default_connections")]
    pub connections: usize,
    #[serde(default = "default_duration")]
    pub duration_s: f64,
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    #[serde(default = "default_mix")]
    pub mix: String,
    #[serde(default = "one_usize")]
    pub batch: usize,
    /// Absolute rate (open / idle).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Name of an earlier step whose throughput `rate_fraction` multiplies.
    #[serde(default)]
    pub rate_of: Option<String>,
    #[serde(default)]
    pub rate_fraction: Option<f64>,
    #[serde(default)]
    pub rate_basis: RateBasis,
    /// Control patch for every mock (upstreams and the mock target) before the step; reset after it.
    #[serde(default)]
    pub faults: Option<Value>,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub idle_connections: usize,
    /// Soak: connections made one after another (connect, one request, read the answer, close).
    #[serde(default)]
    pub sequential_connections: usize,
    /// Soak: sequential connections before the "before" RSS reading (not counted).
    #[serde(default)]
    pub warmup_connections: usize,
    /// Soak: 2 repeats the idle phase (shows whether memory left by the first round is reused or leaked).
    #[serde(default = "one_usize")]
    pub idle_rounds: usize,
    /// Soak: bound on the warm-up and sequential phases together (they stop early and report what they did).
    #[serde(default = "default_time_limit")]
    pub time_limit_s: f64,
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Load threads (default 1: the load generator has one CPU).
    #[serde(default = "one_usize")]
    pub threads: usize,
    /// Overrides the scenario's `rounds` for this step.
    #[serde(default)]
    pub rounds: Option<usize>,
}

fn one_str() -> String {
    "1".into()
}
fn one_usize() -> usize {
    1
}
fn default_connections() -> usize {
    64
}
fn default_duration() -> f64 {
    5.0
}
fn default_warmup() -> f64 {
    1.0
}
fn default_mix() -> String {
    "small".into()
}
fn default_timeout() -> f64 {
    10.0
}
fn default_time_limit() -> f64 {
    240.0
}

/// `loadtest/scenarios` of this source tree.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    pub fn load_file(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("no steps".into());
        }
        if self.workers != "all"
            && self
                .workers
                .parse::<usize>()
                .map(|n| n == 0)
                .unwrap_or(true)
        {
            return Err(format!(
                "workers: {:?} is neither a positive number nor \"all\"",
                self.workers
            ));
        }
        for (i, st) in self.steps.iter().enumerate() {
            let earlier = &self.steps[..i];
            match st.kind {
                StepKind::Open | StepKind::Idle => {
                    if st.rate.is_none() && st.rate_of.is_none() {
                        return Err(format!(
                            "step {}: an open-loop step needs rate or rate_of + rate_fraction",
                            st.name
                        ));
                    }
                    if let Some(r) = &st.rate_of {
                        if !earlier.iter().any(|e| &e.name == r) {
                            return Err(format!(
                                "step {}: rate_of {r:?} names no earlier step",
                                st.name
                            ));
                        }
                    }
                }
                StepKind::Closed | StepKind::Subscribe | StepKind::Soak => {}
            }
            if st.kind == StepKind::Idle && st.idle_connections == 0 {
                return Err(format!("step {}: idle needs idle_connections", st.name));
            }
            if st.kind == StepKind::Soak
                && st.sequential_connections == 0
                && st.idle_connections == 0
            {
                return Err(format!(
                    "step {}: soak needs sequential_connections or idle_connections",
                    st.name
                ));
            }
            if st.time_limit_s.is_nan() || st.time_limit_s <= 0.0 {
                return Err(format!("step {}: time_limit_s must be positive", st.name));
            }
            crate::mix::Mix::load(&st.mix).map_err(|e| format!("step {}: {e}", st.name))?;
        }
        Ok(())
    }

    /// Worker count on a machine with `ncpu` CPUs.
    pub fn worker_count(&self, ncpu: usize) -> usize {
        if self.workers == "all" {
            ncpu.max(1)
        } else {
            self.workers.parse().unwrap_or(1)
        }
    }

    /// Measured seconds of one pass over all targets (no start-up), for time estimates.
    pub fn seconds_per_target(&self) -> f64 {
        self.steps
            .iter()
            .map(|s| {
                let one = match s.kind {
                    // Upper bound: the sequential phases' time limit, the hold and the RSS settling.
                    StepKind::Soak => {
                        s.time_limit_s + (s.duration_s + 10.0) * s.idle_rounds.max(1) as f64
                    }
                    _ => s.duration_s + s.warmup_s + 0.7,
                };
                s.rounds.unwrap_or(self.rounds).max(1) as f64 * one
            })
            .sum::<f64>()
    }
}

/// Resolves `--scenario`: `all`, a scenario name in `dir`, or a path to a file.
pub fn resolve(spec: &str, dir: &Path) -> Result<Vec<Scenario>, String> {
    if spec == "all" {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yml" || x == "yaml")
                && p.file_stem().is_some_and(|s| s != "quick" && s != "soak")
            {
                out.push(Scenario::load_file(&p)?);
            }
        }
        out.sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(&b.name)));
        if out.is_empty() {
            return Err(format!("no scenarios in {}", dir.display()));
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let as_path = Path::new(part);
        let p = if as_path.is_file() {
            as_path.to_path_buf()
        } else {
            dir.join(format!("{part}.yml"))
        };
        if !p.is_file() {
            let names: Vec<String> = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            e.path()
                                .file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Err(format!(
                "no scenario {part:?} (have: all, {})",
                names.join(", ")
            ));
        }
        out.push(Scenario::load_file(&p)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse() {
        let all = resolve("all", &scenarios_dir()).unwrap();
        assert!(all.len() >= 7, "{}", all.len());
        let quick = resolve("quick", &scenarios_dir()).unwrap();
        assert_eq!(quick[0].name, "quick");
        assert!(all.iter().all(|s| s.name != "soak" && s.name != "quick"));
        let soak = resolve("soak", &scenarios_dir()).unwrap();
        let st = &soak[0].steps[0];
        assert_eq!(st.kind, StepKind::Soak);
        assert_eq!(
            (st.sequential_connections, st.idle_connections),
            (200_000, 10_000)
        );
    }

    #[test]
    fn rejects_bad_rate_reference() {
        let bad = "name: x\nsteps:\n  - {name: a, kind: open, rate_of: nope, rate_fraction: 0.5}\n";
        assert!(Scenario::parse(bad).unwrap_err().contains("nope"));
    }
}
