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
    /// The shared layer behind the embedded one (`cache.redis_url`), when set.
    pub redis: Option<RedisSettings>,
}

/// Where and how to reach Redis: `redis://[:password@]host:port[/db]` and the bounds around each command.
#[derive(Clone, PartialEq)]
pub struct RedisSettings {
    /// `host:port`.
    pub addr: String,
    /// Secret: never logged or shown.
    pub password: Option<String>,
    pub db: u32,
    pub timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub circuit_failures: u32,
    pub circuit_backoff: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("addr", &self.addr)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// Parses `redis://[[user]:password@]host:port[/db]` (already expanded); the error never repeats the URL.
pub(crate) fn parse_redis_url(url: &str) -> Result<(String, Option<String>, u32), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or("must start with redis://")?;
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let password = auth.map(|a| match a.split_once(':') {
        Some((_, p)) => p.to_string(),
        None => a.to_string(),
    });
    let (addr, db) = match hostpart.split_once('/') {
        Some((a, "")) => (a, 0),
        Some((a, d)) => (
            a,
            d.parse::<u32>()
                .map_err(|_| "the database must be a number")?,
        ),
        None => (hostpart, 0),
    };
    let (host, port) = addr.rsplit_once(':').ok_or("needs host:port")?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("needs host:port".into());
    }
    Ok((addr.to_string(), password.filter(|p| !p.is_empty()), db))
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
    pub(crate) redis_url: Option<String>,
    redis_timeout_ms: u64,
    redis_write_timeout_ms: u64,
    redis_max_connections: usize,
    redis_circuit_failures: u32,
    redis_circuit_backoff_ms: u64,
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
            redis_url: None,
            redis_timeout_ms: DEFAULT_CACHE_REDIS_TIMEOUT_MS,
            redis_write_timeout_ms: DEFAULT_CACHE_REDIS_WRITE_TIMEOUT_MS,
            redis_max_connections: DEFAULT_CACHE_REDIS_MAX_CONNECTIONS,
            redis_circuit_failures: DEFAULT_CACHE_REDIS_CIRCUIT_FAILURES,
            redis_circuit_backoff_ms: DEFAULT_CACHE_REDIS_CIRCUIT_BACKOFF_MS,
        }
    }
}

fn methods(raw: &indexmap::IndexMap<String, RawMethodPolicy>) -> Vec<(String, MethodPolicy)> {
    raw.iter().map(|(k, v)| (k.clone(), v.build())).collect()
}

impl RawCache {
    /// The validated section, `redis_url` already expanded (`${VAR}`); the error is (key, reason).
    pub(crate) fn build(&self, redis_url: Option<&str>) -> Result<CacheSettings, (String, String)> {
        let redis = match redis_url.filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                let (addr, password, db) =
                    parse_redis_url(url).map_err(|r| ("cache.redis_url".to_string(), r))?;
                if self.redis_timeout_ms == 0 || self.redis_write_timeout_ms == 0 {
                    return Err((
                        "cache.redis_timeout_ms".into(),
                        "Redis timeouts must be greater than 0".into(),
                    ));
                }
                if self.redis_max_connections == 0 {
                    return Err((
                        "cache.redis_max_connections".into(),
                        "must be greater than 0".into(),
                    ));
                }
                Some(RedisSettings {
                    addr,
                    password,
                    db,
                    timeout: Duration::from_millis(self.redis_timeout_ms),
                    write_timeout: Duration::from_millis(self.redis_write_timeout_ms),
                    max_connections: self.redis_max_connections,
                    circuit_failures: self.redis_circuit_failures.max(1),
                    circuit_backoff: Duration::from_millis(self.redis_circuit_backoff_ms),
                })
            }
        };
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
            redis,
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

#[cfg(test)]
mod tests {
    use super::parse_redis_url;

    #[test]
    fn redis_urls() {
        assert_eq!(
            parse_redis_url("redis://127.0.0.1:6379"),
            Ok(("127.0.0.1:6379".into(), None, 0))
        );
        assert_eq!(
            parse_redis_url("redis://:p@ss@cache.internal:6380/3"),
            Ok(("cache.internal:6380".into(), Some("p@ss".into()), 3))
        );
        assert_eq!(
            parse_redis_url("redis://user:pw@h:1/"),
            Ok(("h:1".into(), Some("pw".into()), 0))
        );
        for bad in [
            "http://h:1",
            "redis://h",
            "redis://:pw@h:x",
            "redis://h:1/db",
        ] {
            let err = parse_redis_url(bad).unwrap_err();
            assert!(!err.contains("pw"), "{err}");
        }
    }
}
