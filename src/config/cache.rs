//! The `cache:` section and a chain's `cache:` override: in-flight multiplexing of identical reads, and the
//! finality-aware response cache (its byte bound, and the policy per chain and per method: how long answers about
//! finalized and unfinalized blocks are kept, whether empty results are). Raw YAML forms and their validation live
//! here so `load` only wires them in.

use std::time::Duration;

use serde::Deserialize;

use crate::config::defaults::*;

/// How answers of one chain are kept (the top-level policy with the chain's and the method's overrides applied).
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    pub enabled: bool,
    /// Answers about blocks at or below the finalized head.
    pub finalized_ttl: Duration,
    /// Answers about newer blocks (dropped earlier on a reorg).
    pub unfinalized_ttl: Duration,
    /// Keep `null` and `[]` results too.
    pub cache_empty: bool,
    /// Per-method overrides, exact names.
    pub methods: Vec<(String, MethodPolicy)>,
}

/// One method's override of its chain's policy; unset fields inherit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodPolicy {
    pub enabled: Option<bool>,
    pub finalized_ttl: Option<Duration>,
    pub unfinalized_ttl: Option<Duration>,
    pub cache_empty: Option<bool>,
}

/// The policy applied to one method: whether to keep, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodRule {
    pub enabled: bool,
    pub finalized_ttl: Duration,
    pub unfinalized_ttl: Duration,
    pub cache_empty: bool,
}

impl CachePolicy {
    /// The rule for `method` (linear in the overrides, which are few).
    pub fn rule(&self, method: &str) -> MethodRule {
        let mut rule = MethodRule {
            enabled: self.enabled,
            finalized_ttl: self.finalized_ttl,
            unfinalized_ttl: self.unfinalized_ttl,
            cache_empty: self.cache_empty,
        };
        if let Some((_, m)) = self.methods.iter().find(|(name, _)| name == method) {
            rule.enabled = m.enabled.unwrap_or(rule.enabled);
            rule.finalized_ttl = m.finalized_ttl.unwrap_or(rule.finalized_ttl);
            rule.unfinalized_ttl = m.unfinalized_ttl.unwrap_or(rule.unfinalized_ttl);
            rule.cache_empty = m.cache_empty.unwrap_or(rule.cache_empty);
        }
        rule
    }
}

/// The `cache:` section.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Identical reads in flight on a worker share one upstream call.
    pub multiplex: bool,
    /// Bytes of cached answers (keys included) for the whole process; each worker keeps `max_bytes / workers`.
    pub max_bytes: usize,
    /// Answers larger than this are not kept.
    pub max_entry_bytes: usize,
    /// The policy of every chain that does not override it.
    pub policy: CachePolicy,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMethodPolicy {
    enabled: Option<bool>,
    finalized_ttl_ms: Option<u64>,
    unfinalized_ttl_ms: Option<u64>,
    cache_empty: Option<bool>,
}

impl RawMethodPolicy {
    fn build(&self) -> MethodPolicy {
        MethodPolicy {
            enabled: self.enabled,
            finalized_ttl: self.finalized_ttl_ms.map(Duration::from_millis),
            unfinalized_ttl: self.unfinalized_ttl_ms.map(Duration::from_millis),
            cache_empty: self.cache_empty,
        }
    }
}

/// A chain's `cache:` override: every field optional.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawChainCache {
    enabled: Option<bool>,
    finalized_ttl_ms: Option<u64>,
    unfinalized_ttl_ms: Option<u64>,
    cache_empty: Option<bool>,
    methods: indexmap::IndexMap<String, RawMethodPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCache {
    multiplex: bool,
    enabled: bool,
    max_bytes: usize,
    max_entry_bytes: usize,
    finalized_ttl_ms: u64,
    unfinalized_ttl_ms: u64,
    cache_empty: bool,
    methods: indexmap::IndexMap<String, RawMethodPolicy>,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            multiplex: DEFAULT_CACHE_MULTIPLEX,
            enabled: DEFAULT_CACHE_ENABLED,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_entry_bytes: DEFAULT_CACHE_MAX_ENTRY_BYTES,
            finalized_ttl_ms: DEFAULT_CACHE_FINALIZED_TTL_MS,
            unfinalized_ttl_ms: DEFAULT_CACHE_UNFINALIZED_TTL_MS,
            cache_empty: DEFAULT_CACHE_EMPTY,
            methods: indexmap::IndexMap::new(),
        }
    }
}

fn methods(raw: &indexmap::IndexMap<String, RawMethodPolicy>) -> Vec<(String, MethodPolicy)> {
    raw.iter().map(|(k, v)| (k.clone(), v.build())).collect()
}

impl RawCache {
    /// The validated section; the error is (key, reason).
    pub(crate) fn build(&self) -> Result<CacheSettings, (String, String)> {
        if self.max_entry_bytes == 0 {
            return Err((
                "cache.max_entry_bytes".into(),
                "must be greater than 0".into(),
            ));
        }
        Ok(CacheSettings {
            multiplex: self.multiplex,
            max_bytes: self.max_bytes,
            max_entry_bytes: self.max_entry_bytes,
            policy: CachePolicy {
                enabled: self.enabled && self.max_bytes > 0,
                finalized_ttl: Duration::from_millis(self.finalized_ttl_ms),
                unfinalized_ttl: Duration::from_millis(self.unfinalized_ttl_ms),
                cache_empty: self.cache_empty,
                methods: methods(&self.methods),
            },
        })
    }
}

impl RawChainCache {
    /// `base` with this chain's overrides; a method named here replaces the base's override of that method.
    pub(crate) fn apply(&self, base: &CachePolicy) -> CachePolicy {
        let mut policy = base.clone();
        policy.enabled = self.enabled.unwrap_or(base.enabled);
        policy.finalized_ttl = self
            .finalized_ttl_ms
            .map_or(base.finalized_ttl, Duration::from_millis);
        policy.unfinalized_ttl = self
            .unfinalized_ttl_ms
            .map_or(base.unfinalized_ttl, Duration::from_millis);
        policy.cache_empty = self.cache_empty.unwrap_or(base.cache_empty);
        for (name, m) in methods(&self.methods) {
            policy.methods.retain(|(n, _)| *n != name);
            policy.methods.push((name, m));
        }
        policy
    }
}
