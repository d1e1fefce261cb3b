//! Reading configuration files: YAML parsing with key paths in every error, `${VAR}` expansion, profile files,
//! validation, and seeding a missing `LASSO_CHAINS_PATH` from the image default. Every error names the file, the key
//! path and what is wrong.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use indexmap::IndexMap;
use serde::Deserialize;

use super::defaults::*;
use super::redact::mask_url;
use super::routing_policy::{BreakerSettings, Strategy};
use super::schema::{
    AccessSettings, ApiKey, Chain, Config, CorsOrigins, DashboardSettings, HedgeSettings, Indexing,
    MethodFilter, Profile, Provider, RateLimit, RequireKey, RoutingSettings, ServerSettings,
    TelemetrySettings, TraceEndpoint, TraceSettings, UpstreamSettings, WsSettings,
};
use super::url::ProviderUrl;

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    websocket: RawWs,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    dashboard: RawDashboard,
    #[serde(default)]
    access: RawAccess,
    #[serde(default)]
    cache: crate::config::cache::RawCache,
    #[serde(default)]
    chains: IndexMap<String, RawChain>,
    #[serde(default)]
    profiles: IndexMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRequireKey {
    All(bool),
    Profiles(Vec<String>),
}

impl Default for RawRequireKey {
    fn default() -> Self {
        RawRequireKey::All(DEFAULT_ACCESS_REQUIRE_KEY)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAccess {
    require_key: RawRequireKey,
    keys: Vec<RawKey>,
    per_key: Option<RawRateLimit>,
    per_ip: Option<RawRateLimit>,
    trusted_proxies: Vec<String>,
    weights: HashMap<String, f64>,
    redis_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    requests_per_s: f64,
    #[serde(default)]
    compute_units_per_s: f64,
    #[serde(default = "default_burst_s")]
    burst_s: f64,
}

fn default_burst_s() -> f64 {
    DEFAULT_ACCESS_BURST_S
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    /// The key itself (usually `${VAR}`); or its SHA-256 in `key_sha256` (what the admin API writes).
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_sha256: Option<String>,
    #[serde(default)]
    profiles: Vec<String>,
    #[serde(default)]
    chains: Vec<String>,
    #[serde(default)]
    methods: Option<RawMethods>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    limit: Option<RawRateLimit>,
    #[serde(default)]
    contracts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    traces: RawTraces,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTraces {
    endpoint: Option<String>,
    sample_ratio: f64,
    service_name: String,
    headers: IndexMap<String, String>,
    queue_traces: usize,
    export_timeout_ms: u64,
}

impl Default for RawTraces {
    fn default() -> Self {
        RawTraces {
            endpoint: None,
            sample_ratio: DEFAULT_TRACES_SAMPLE_RATIO,
            service_name: DEFAULT_TRACES_SERVICE_NAME.to_string(),
            headers: IndexMap::new(),
            queue_traces: DEFAULT_TRACES_QUEUE_TRACES,
            export_timeout_ms: DEFAULT_TRACES_EXPORT_TIMEOUT_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWs {
    max_message_bytes: usize,
    max_in_flight: usize,
    max_subscriptions: usize,
    max_queued_bytes: usize,
    max_total_queued_bytes: usize,
    ping_interval_ms: u64,
    pong_timeout_ms: u64,
    idle_timeout_ms: u64,
    session_lifetime_ms: u64,
    unsubscribe_grace_ms: u64,
    stall_timeout_ms: Option<u64>,
    backfill_limit_blocks: u64,
    backfill_chunk_blocks: u64,
    upstream_connect_timeout_ms: u64,
}

impl Default for RawWs {
    fn default() -> Self {
        RawWs {
            max_message_bytes: DEFAULT_WS_MAX_MESSAGE_BYTES,
            max_in_flight: DEFAULT_WS_MAX_IN_FLIGHT,
            max_subscriptions: DEFAULT_WS_MAX_SUBSCRIPTIONS,
            max_queued_bytes: DEFAULT_WS_MAX_QUEUED_BYTES,
            max_total_queued_bytes: DEFAULT_WS_MAX_TOTAL_QUEUED_BYTES,
            ping_interval_ms: DEFAULT_WS_PING_INTERVAL_MS,
            pong_timeout_ms: DEFAULT_WS_PONG_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_WS_IDLE_TIMEOUT_MS,
            session_lifetime_ms: DEFAULT_WS_SESSION_LIFETIME_MS,
            unsubscribe_grace_ms: DEFAULT_WS_UNSUBSCRIBE_GRACE_MS,
            stall_timeout_ms: None,
            backfill_limit_blocks: DEFAULT_WS_BACKFILL_LIMIT_BLOCKS,
            backfill_chunk_blocks: DEFAULT_WS_BACKFILL_CHUNK_BLOCKS,
            upstream_connect_timeout_ms: DEFAULT_WS_UPSTREAM_CONNECT_TIMEOUT_MS,
        }
    }
}

/// `routing.indexing` (all set) and a chain's overrides of it (each optional).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
struct RawIndexing {
    max_logs_range: Option<u64>,
    logs_concurrency: Option<usize>,
    logs_max_requests: Option<usize>,
    pin_latest: Option<bool>,
    broadcast_sends: Option<bool>,
    highest_pending_nonce: Option<bool>,
}

impl RawIndexing {
    /// These settings over `base`.
    fn over(&self, base: &Indexing) -> Indexing {
        Indexing {
            max_logs_range: self.max_logs_range.unwrap_or(base.max_logs_range),
            logs_concurrency: self
                .logs_concurrency
                .unwrap_or(base.logs_concurrency)
                .max(1),
            logs_max_requests: self
                .logs_max_requests
                .unwrap_or(base.logs_max_requests)
                .max(1),
            pin_latest: self.pin_latest.unwrap_or(base.pin_latest),
            broadcast_sends: self.broadcast_sends.unwrap_or(base.broadcast_sends),
            highest_pending_nonce: self
                .highest_pending_nonce
                .unwrap_or(base.highest_pending_nonce),
        }
    }
}

/// The built-in indexing defaults.
fn default_indexing() -> Indexing {
    Indexing {
        max_logs_range: DEFAULT_MAX_LOGS_RANGE,
        logs_concurrency: DEFAULT_LOGS_CONCURRENCY,
        logs_max_requests: DEFAULT_LOGS_MAX_REQUESTS,
        pin_latest: DEFAULT_PIN_LATEST,
        broadcast_sends: DEFAULT_BROADCAST_SENDS,
        highest_pending_nonce: DEFAULT_HIGHEST_PENDING_NONCE,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRouting {
    merge_interval_ms: u64,
    window_intervals: usize,
    fastest_quantile: f64,
    min_samples: u64,
    probe_share: f64,
    latency_weight_beta: f64,
    max_lag_blocks: u64,
    archive_threshold_blocks: u64,
    deadlines_ms: RawDeadlines,
    breaker: RawBreaker,
    hedge: RawHedge,
    indexing: RawIndexing,
    snapshots_dir: Option<String>,
    snapshot_interval_ms: u64,
    snapshot_retention: usize,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            merge_interval_ms: DEFAULT_ROUTING_MERGE_INTERVAL_MS,
            window_intervals: DEFAULT_ROUTING_WINDOW_INTERVALS,
            fastest_quantile: DEFAULT_ROUTING_FASTEST_QUANTILE,
            min_samples: DEFAULT_ROUTING_MIN_SAMPLES,
            probe_share: DEFAULT_ROUTING_PROBE_SHARE,
            latency_weight_beta: DEFAULT_ROUTING_LATENCY_WEIGHT_BETA,
            max_lag_blocks: DEFAULT_ROUTING_MAX_LAG_BLOCKS,
            archive_threshold_blocks: DEFAULT_ROUTING_ARCHIVE_THRESHOLD_BLOCKS,
            deadlines_ms: RawDeadlines::default(),
            breaker: RawBreaker::default(),
            hedge: RawHedge::default(),
            indexing: RawIndexing::default(),
            snapshots_dir: None,
            snapshot_interval_ms: DEFAULT_ROUTING_SNAPSHOT_INTERVAL_MS,
            snapshot_retention: DEFAULT_ROUTING_SNAPSHOT_RETENTION,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDeadlines {
    light: u64,
    call: u64,
    logs: u64,
    block: u64,
    trace: u64,
    write: u64,
    other: u64,
}

impl Default for RawDeadlines {
    fn default() -> Self {
        RawDeadlines {
            light: DEFAULT_DEADLINE_LIGHT_MS,
            call: DEFAULT_DEADLINE_CALL_MS,
            logs: DEFAULT_DEADLINE_LOGS_MS,
            block: DEFAULT_DEADLINE_BLOCK_MS,
            trace: DEFAULT_DEADLINE_TRACE_MS,
            write: DEFAULT_DEADLINE_WRITE_MS,
            other: DEFAULT_DEADLINE_OTHER_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBreaker {
    server_threshold: u32,
    connect_threshold: u32,
    timeout_threshold: u32,
    recovery_ms: u64,
    max_recovery_ms: u64,
    half_open_successes: u32,
}

impl Default for RawBreaker {
    fn default() -> Self {
        RawBreaker {
            server_threshold: DEFAULT_BREAKER_SERVER_THRESHOLD,
            connect_threshold: DEFAULT_BREAKER_CONNECT_THRESHOLD,
            timeout_threshold: DEFAULT_BREAKER_TIMEOUT_THRESHOLD,
            recovery_ms: DEFAULT_BREAKER_RECOVERY_MS,
            max_recovery_ms: DEFAULT_BREAKER_MAX_RECOVERY_MS,
            half_open_successes: DEFAULT_BREAKER_HALF_OPEN_SUCCESSES,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHedge {
    enabled: bool,
    quantile: f64,
    min_delay_ms: u64,
    max_delay_ms: u64,
}

impl Default for RawHedge {
    fn default() -> Self {
        RawHedge {
            enabled: DEFAULT_HEDGE_ENABLED,
            quantile: DEFAULT_HEDGE_QUANTILE,
            min_delay_ms: DEFAULT_HEDGE_MIN_DELAY_MS,
            max_delay_ms: DEFAULT_HEDGE_MAX_DELAY_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProfile {
    File(String),
    Inline(RawProfileBody),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProfileBody {
    #[serde(default)]
    chains: IndexMap<String, RawChain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDashboard {
    enabled: bool,
    token: Option<String>,
    session_ttl_ms: u64,
}

impl Default for RawDashboard {
    fn default() -> Self {
        RawDashboard {
            enabled: DEFAULT_DASHBOARD_ENABLED,
            token: None,
            session_ttl_ms: DEFAULT_DASHBOARD_SESSION_TTL_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    port: u16,
    bind: String,
    workers: usize,
    max_body_bytes: usize,
    max_header_bytes: usize,
    max_batch_size: usize,
    header_timeout_ms: u64,
    body_timeout_ms: u64,
    idle_timeout_ms: u64,
    soft_max_connections: usize,
    hard_max_connections: usize,
    drain_timeout_ms: u64,
    send_timeout_ms: u64,
    max_connections_per_ip: usize,
    event_stream_lifetime_ms: u64,
    event_stream_successes_per_s: u32,
    cors_origins: RawOrigins,
    auth_max_failures: u32,
    auth_failure_window_ms: u64,
}

/// `server.cors_origins`: `"*"`, one origin, or a list of origins.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawOrigins {
    One(String),
    List(Vec<String>),
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            port: DEFAULT_SERVER_PORT,
            bind: DEFAULT_SERVER_BIND.into(),
            workers: DEFAULT_SERVER_WORKERS,
            max_body_bytes: DEFAULT_SERVER_MAX_BODY_BYTES,
            max_header_bytes: DEFAULT_SERVER_MAX_HEADER_BYTES,
            max_batch_size: DEFAULT_SERVER_MAX_BATCH_SIZE,
            header_timeout_ms: DEFAULT_SERVER_HEADER_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_SERVER_BODY_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_SERVER_IDLE_TIMEOUT_MS,
            soft_max_connections: DEFAULT_SERVER_SOFT_MAX_CONNECTIONS,
            hard_max_connections: DEFAULT_SERVER_HARD_MAX_CONNECTIONS,
            drain_timeout_ms: DEFAULT_SERVER_DRAIN_TIMEOUT_MS,
            send_timeout_ms: DEFAULT_SERVER_SEND_TIMEOUT_MS,
            max_connections_per_ip: DEFAULT_SERVER_MAX_CONNECTIONS_PER_IP,
            event_stream_lifetime_ms: DEFAULT_SERVER_EVENT_STREAM_LIFETIME_MS,
            event_stream_successes_per_s: DEFAULT_SERVER_EVENT_STREAM_SUCCESSES_PER_S,
            cors_origins: RawOrigins::One(DEFAULT_SERVER_CORS_ORIGINS.into()),
            auth_max_failures: DEFAULT_SERVER_AUTH_MAX_FAILURES,
            auth_failure_window_ms: DEFAULT_SERVER_AUTH_FAILURE_WINDOW_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    max_attempts: usize,
    max_response_bytes: usize,
    max_buffered_response_bytes: usize,
    pool_max_idle_per_provider: usize,
    pool_idle_timeout_ms: u64,
    extra_ca_file: Option<String>,
    coalesce: bool,
    max_coalesce: usize,
    coalesce_retry_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            connect_timeout_ms: DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            request_timeout_ms: DEFAULT_UPSTREAM_REQUEST_TIMEOUT_MS,
            max_attempts: DEFAULT_UPSTREAM_MAX_ATTEMPTS,
            max_response_bytes: DEFAULT_UPSTREAM_MAX_RESPONSE_BYTES,
            max_buffered_response_bytes: DEFAULT_UPSTREAM_MAX_BUFFERED_RESPONSE_BYTES,
            pool_max_idle_per_provider: DEFAULT_UPSTREAM_POOL_MAX_IDLE_PER_PROVIDER,
            pool_idle_timeout_ms: DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS,
            extra_ca_file: None,
            coalesce: DEFAULT_UPSTREAM_COALESCE,
            max_coalesce: DEFAULT_UPSTREAM_MAX_COALESCE,
            coalesce_retry_ms: DEFAULT_UPSTREAM_COALESCE_RETRY_MS,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawChainId {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    chain_id: RawChainId,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    block_time_ms: Option<u64>,
    #[serde(default)]
    default_strategy: Option<String>,
    #[serde(default)]
    max_lag_blocks: Option<u64>,
    #[serde(default)]
    hedge: Option<bool>,
    #[serde(default)]
    head_poll_ms: Option<u64>,
    // Overrides of `routing.indexing` for this chain (same keys, at the chain's level).
    #[serde(default)]
    max_logs_range: Option<u64>,
    #[serde(default)]
    logs_concurrency: Option<usize>,
    #[serde(default)]
    logs_max_requests: Option<usize>,
    #[serde(default)]
    pin_latest: Option<bool>,
    #[serde(default)]
    broadcast_sends: Option<bool>,
    #[serde(default)]
    highest_pending_nonce: Option<bool>,
    #[serde(default)]
    finality_depth: Option<u64>,
    #[serde(default)]
    cache: Option<crate::config::cache::RawChainCache>,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    #[serde(default)]
    name: Option<String>,
    url: String,
    #[serde(default)]
    ws_url: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    headers: IndexMap<String, String>,
    #[serde(default)]
    archival: bool,
    /// Opt in to (or out of) upstream batching for this provider; unset = `upstream.coalesce`.
    #[serde(default)]
    batch: Option<bool>,
    #[serde(default)]
    batch_max: Option<usize>,
    #[serde(default)]
    max_logs_range: Option<u64>,
    #[serde(default)]
    methods: Option<RawMethods>,
    /// Accepted for compatibility with Lasso RPC files (`public`, `paid`, ...); informational.
    #[serde(default, rename = "type")]
    _kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMethods {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// Where the image keeps its default chains file, used to seed a missing `LASSO_CHAINS_PATH`.
pub fn image_default_path() -> PathBuf {
    super::env::process(super::env::DEFAULT_CHAINS_PATH)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/app/config/chains.yml"))
}

/// Copies the image default to `path` when `path` is missing and the default exists. Returns true when it seeded.
pub fn seed_if_missing(path: &Path, default: &Path) -> std::io::Result<bool> {
    if path.exists() || !default.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("yml.seeding");
    std::fs::copy(default, &tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// The profile file `rel` names, confined to the directory of the config file `config`: no `..`, no path (absolute,
/// or through a symbolic link) that resolves outside that directory, a regular file of at most
/// `MAX_PROFILE_FILE_BYTES`. Errors name the path as written and why, never anything read from it.
fn profile_file(config: &Path, rel: &str) -> Result<PathBuf, String> {
    let written = Path::new(rel);
    if written
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "{rel}: profile files must be inside the config file's directory ('..' is not allowed)"
        ));
    }
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let root = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the config file's directory: {e}"))?;
    // An absolute path elsewhere is refused before the file system is asked anything about it (whether such a file
    // exists is none of the caller's business either).
    if written.is_absolute() && !written.starts_with(&root) && !written.starts_with(dir) {
        return Err(format!(
            "{rel}: profile files must be inside the config file's directory"
        ));
    }
    let real = dir
        .join(written)
        .canonicalize()
        .map_err(|e| format!("cannot read {rel}: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{rel}: profile files must be inside the config file's directory"
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot read {rel}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{rel}: not a regular file"));
    }
    if meta.len() > MAX_PROFILE_FILE_BYTES {
        return Err(format!("{rel}: larger than {MAX_PROFILE_FILE_BYTES} bytes"));
    }
    Ok(real)
}

/// A YAML error's message without the values it quotes from the document: serde names an unexpected value
/// (`invalid type: string "root:x:0:0:..."`, `integer `5``), and a file that is not Lasso's (a profile path naming
/// some other file) must never come back in an error. Key names (`unknown field `x``) and positions stay.
pub(crate) fn scrub_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[i];
        let before = &rest[..i];
        let after = &rest[i + 1..];
        // The literal's end: the next unescaped quote of the same kind.
        let mut end = None;
        let mut escaped = false;
        for (j, b) in after.bytes().enumerate() {
            match b {
                b'\\' if quote == b'"' && !escaped => escaped = true,
                b if b == quote && !escaped => {
                    end = Some(j);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            out.push_str(before);
            rest = "";
            break;
        };
        // Backticks quote key names (kept) except after a value kind (`integer `5``: dropped).
        let value_kind = [
            "integer ",
            "floating point ",
            "boolean ",
            "character ",
            "string ",
        ]
        .iter()
        .any(|k| before.ends_with(k));
        if quote == b'`' && !value_kind {
            let name = &after[..end];
            out.push_str(before);
            out.push('`');
            out.extend(name.chars().take(64));
            out.push('`');
        } else {
            out.push_str(before.strip_suffix(' ').unwrap_or(before));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Loads and validates a configuration file, reading environment variables for `${VAR}` expansion.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
    load_str(&text, path, &super::env::process)
}

fn parse_yaml<T: for<'de> Deserialize<'de>>(text: &str, file: &Path) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(file, "(document)", "file is empty"));
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." {
            match inner.location() {
                Some(loc) => format!("line {} column {}", loc.line(), loc.column()),
                None => "(document)".to_string(),
            }
        } else {
            key
        };
        ConfigError::new(file, key, scrub_values(&inner.to_string()))
    })
}

/// Loads and validates configuration text; `env` resolves `${VAR}`.
pub fn load_str(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw: RawFile = parse_yaml(text, file)?;
    let mut builder = Builder {
        file: file.to_path_buf(),
        env,
        providers: Vec::new(),
        secrets: Vec::new(),
        chains: 0,
        routing: None,
        cache: None,
    };
    let server = builder.server(&raw.server)?;
    let upstream = builder.upstream(&raw.upstream)?;
    let routing = builder.routing(&raw.routing, &|name| env(name))?;
    let websocket = builder.websocket(&raw.websocket)?;
    let telemetry = TelemetrySettings {
        traces: builder.traces(&raw.telemetry.traces)?,
    };
    let dashboard = builder.dashboard(&raw.dashboard)?;
    let redis_url = match &raw.cache.redis_url {
        Some(url) => Some(builder.expand("cache.redis_url", url)?),
        None => None,
    };
    let cache = raw
        .cache
        .build(redis_url.as_deref())
        .map_err(|(key, reason)| builder.err(key, reason))?;
    builder.routing = Some(routing.clone());
    let access = builder.access(&raw.access)?;
    builder.cache = Some(cache.policy.clone());

    let mut profiles = Vec::new();
    let has_default_entry = raw.profiles.contains_key("default");
    if has_default_entry && !raw.chains.is_empty() {
        return Err(builder.err(
            "profiles.default",
            "top-level `chains` already is the default profile",
        ));
    }
    if !has_default_entry {
        profiles.push(builder.profile("default", &raw.chains, "chains", file)?);
    }
    for (name, profile) in &raw.profiles {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(builder.err(
                format!("profiles.{name}"),
                "profile names use letters, digits, - and _",
            ));
        }
        let built = match profile {
            RawProfile::Inline(body) => {
                builder.profile(name, &body.chains, &format!("profiles.{name}.chains"), file)?
            }
            RawProfile::File(rel) => {
                let path = profile_file(file, rel)
                    .map_err(|reason| builder.err(format!("profiles.{name}"), reason))?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    builder.err(
                        format!("profiles.{name}"),
                        format!("cannot read {rel}: {e}"),
                    )
                })?;
                let body: RawProfileBody = parse_yaml(&text, &path)?;
                let saved = std::mem::replace(&mut builder.file, path.clone());
                let built = builder.profile(name, &body.chains, "chains", &path);
                builder.file = saved;
                built?
            }
        };
        if name == "default" {
            profiles.insert(0, built);
        } else {
            profiles.push(built);
        }
    }
    if profiles.iter().all(|p| p.chains.is_empty()) {
        return Err(builder.err("chains", "no chain is configured"));
    }
    let known = |name: &String| profiles.iter().any(|p| &p.name == name);
    if let RequireKey::Profiles(list) = &access.require_key {
        if let Some(unknown) = list.iter().find(|n| !known(n)) {
            return Err(builder.err("access.require_key", format!("unknown profile '{unknown}'")));
        }
    }
    for key in &access.keys {
        if let Some(unknown) = key.profiles.iter().find(|n| !known(n)) {
            return Err(builder.err(
                format!("access.keys.{}.profiles", key.id),
                format!("unknown profile '{unknown}'"),
            ));
        }
    }
    let mut secrets = builder.secrets;
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    Ok(Config {
        source: file.to_path_buf(),
        server,
        upstream,
        routing,
        websocket,
        telemetry,
        dashboard,
        access,
        cache,
        profiles,
        providers: builder.providers,
        secrets,
    })
}

struct Builder<'e> {
    file: PathBuf,
    env: &'e dyn Fn(&str) -> Option<String>,
    providers: Vec<Provider>,
    secrets: Vec<String>,
    /// Chains built so far (the next chain's global index).
    chains: usize,
    routing: Option<RoutingSettings>,
    /// The `cache:` policy chains start from.
    cache: Option<crate::config::cache::CachePolicy>,
}

impl Builder<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, key, reason)
    }

    fn server(&self, raw: &RawServer) -> Result<ServerSettings, ConfigError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(self.err(format!("server.{key}"), "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("max_body_bytes", raw.max_body_bytes as u64)?;
        positive("max_header_bytes", raw.max_header_bytes as u64)?;
        positive("max_batch_size", raw.max_batch_size as u64)?;
        positive("header_timeout_ms", raw.header_timeout_ms)?;
        positive("body_timeout_ms", raw.body_timeout_ms)?;
        positive("idle_timeout_ms", raw.idle_timeout_ms)?;
        positive("hard_max_connections", raw.hard_max_connections as u64)?;
        positive("send_timeout_ms", raw.send_timeout_ms)?;
        positive("event_stream_lifetime_ms", raw.event_stream_lifetime_ms)?;
        let origins = match &raw.cors_origins {
            RawOrigins::One(o) => vec![o.clone()],
            RawOrigins::List(list) => list.clone(),
        };
        let cors = if origins.iter().any(|o| o == "*") {
            CorsOrigins::Any
        } else {
            if let Some(bad) = origins.iter().find(|o| {
                !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/')
            }) {
                return Err(self.err(
                    "server.cors_origins",
                    format!("'{bad}' is not an origin (scheme://host[:port], no path) or \"*\""),
                ));
            }
            CorsOrigins::List(origins)
        };
        positive("auth_max_failures", u64::from(raw.auth_max_failures))?;
        positive("auth_failure_window_ms", raw.auth_failure_window_ms)?;
        if raw.soft_max_connections > raw.hard_max_connections {
            return Err(self.err(
                "server.soft_max_connections",
                "must not exceed hard_max_connections",
            ));
        }
        if raw.max_header_bytes < 1024 {
            return Err(self.err("server.max_header_bytes", "must be at least 1024"));
        }
        Ok(ServerSettings {
            port: raw.port,
            bind: raw.bind.clone(),
            workers: raw.workers,
            max_body_bytes: raw.max_body_bytes,
            max_header_bytes: raw.max_header_bytes,
            max_batch_size: raw.max_batch_size,
            header_timeout: Duration::from_millis(raw.header_timeout_ms),
            body_timeout: Duration::from_millis(raw.body_timeout_ms),
            idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
            soft_max_connections: raw.soft_max_connections,
            hard_max_connections: raw.hard_max_connections,
            drain_timeout: Duration::from_millis(raw.drain_timeout_ms),
            send_timeout: Duration::from_millis(raw.send_timeout_ms),
            max_connections_per_ip: raw.max_connections_per_ip,
            event_stream_lifetime: Duration::from_millis(raw.event_stream_lifetime_ms),
            event_stream_successes_per_s: raw.event_stream_successes_per_s,
            cors,
            auth_max_failures: raw.auth_max_failures,
            auth_failure_window: Duration::from_millis(raw.auth_failure_window_ms),
        })
    }

    fn upstream(&self, raw: &RawUpstream) -> Result<UpstreamSettings, ConfigError> {
        for (key, v) in [
            ("connect_timeout_ms", raw.connect_timeout_ms),
            ("request_timeout_ms", raw.request_timeout_ms),
            ("max_attempts", raw.max_attempts as u64),
            ("max_response_bytes", raw.max_response_bytes as u64),
            (
                "max_buffered_response_bytes",
                raw.max_buffered_response_bytes as u64,
            ),
        ] {
            if v == 0 {
                return Err(self.err(format!("upstream.{key}"), "must be greater than 0"));
            }
        }
        let extra_ca_file = match &raw.extra_ca_file {
            Some(rel) => {
                let path = self.file.parent().unwrap_or(Path::new(".")).join(rel);
                crate::config::tls::load_pem_certificates(&path)
                    .map_err(|e| self.err("upstream.extra_ca_file", e))?;
                Some(path)
            }
            None => None,
        };
        Ok(UpstreamSettings {
            extra_ca_file,
            coalesce: raw.coalesce,
            max_coalesce: raw.max_coalesce.max(1),
            coalesce_retry: Duration::from_millis(raw.coalesce_retry_ms),
            connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
            request_timeout: Duration::from_millis(raw.request_timeout_ms),
            max_attempts: raw.max_attempts,
            max_response_bytes: raw.max_response_bytes,
            max_buffered_response_bytes: raw.max_buffered_response_bytes,
            pool_max_idle_per_provider: raw.pool_max_idle_per_provider,
            pool_idle_timeout: Duration::from_millis(raw.pool_idle_timeout_ms),
        })
    }

    fn routing(
        &self,
        raw: &RawRouting,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RoutingSettings, ConfigError> {
        let fraction = |key: &str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(v)
            } else {
                Err(self.err(
                    format!("routing.{key}"),
                    format!("must be between {lo} and {hi}"),
                ))
            }
        };
        fraction("fastest_quantile", raw.fastest_quantile, 0.01, 0.999)?;
        fraction("probe_share", raw.probe_share, 0.0, 0.5)?;
        fraction("latency_weight_beta", raw.latency_weight_beta, 0.0, 20.0)?;
        fraction("hedge.quantile", raw.hedge.quantile, 0.5, 0.999)?;
        if raw.merge_interval_ms < 10 {
            return Err(self.err("routing.merge_interval_ms", "must be at least 10"));
        }
        if raw.window_intervals == 0 {
            return Err(self.err("routing.window_intervals", "must be greater than 0"));
        }
        if raw.hedge.min_delay_ms > raw.hedge.max_delay_ms {
            return Err(self.err("routing.hedge.min_delay_ms", "must not exceed max_delay_ms"));
        }
        let d = &raw.deadlines_ms;
        let deadlines = [d.light, d.call, d.logs, d.block, d.trace, d.write, d.other];
        if let Some(pos) = deadlines.iter().position(|&v| v == 0) {
            let names = ["light", "call", "logs", "block", "trace", "write", "other"];
            return Err(self.err(
                format!("routing.deadlines_ms.{}", names[pos]),
                "must be greater than 0",
            ));
        }
        let b = &raw.breaker;
        let snapshots_dir = raw
            .snapshots_dir
            .clone()
            .map(PathBuf::from)
            .or_else(|| env(super::env::SNAPSHOTS_DIR).map(PathBuf::from));
        Ok(RoutingSettings {
            merge_interval: Duration::from_millis(raw.merge_interval_ms),
            window_intervals: raw.window_intervals,
            fastest_quantile: raw.fastest_quantile,
            min_samples: raw.min_samples,
            probe_share: raw.probe_share,
            latency_weight_beta: raw.latency_weight_beta,
            max_lag_blocks: raw.max_lag_blocks,
            archive_threshold_blocks: raw.archive_threshold_blocks,
            deadlines: deadlines.map(Duration::from_millis),
            breaker: BreakerSettings {
                server_threshold: b.server_threshold.max(1),
                connect_threshold: b.connect_threshold.max(1),
                timeout_threshold: b.timeout_threshold.max(1),
                recovery: Duration::from_millis(b.recovery_ms),
                max_recovery: Duration::from_millis(b.max_recovery_ms.max(b.recovery_ms)),
                half_open_successes: b.half_open_successes.max(1),
            },
            hedge: HedgeSettings {
                enabled: raw.hedge.enabled,
                quantile: raw.hedge.quantile,
                min_delay: Duration::from_millis(raw.hedge.min_delay_ms),
                max_delay: Duration::from_millis(raw.hedge.max_delay_ms),
            },
            indexing: raw.indexing.over(&default_indexing()),
            snapshots_dir,
            snapshot_interval: Duration::from_millis(raw.snapshot_interval_ms.max(1000)),
            snapshot_retention: raw.snapshot_retention.max(1),
        })
    }

    fn traces(&mut self, raw: &RawTraces) -> Result<TraceSettings, ConfigError> {
        let key = |k: &str| format!("telemetry.traces.{k}");
        if !(0.0..=1.0).contains(&raw.sample_ratio) {
            return Err(self.err(key("sample_ratio"), "must be between 0 and 1"));
        }
        if raw.queue_traces == 0 || raw.export_timeout_ms == 0 {
            let which = if raw.queue_traces == 0 {
                "queue_traces"
            } else {
                "export_timeout_ms"
            };
            return Err(self.err(key(which), "must be greater than 0"));
        }
        let service_name = raw.service_name.trim().to_string();
        if service_name.is_empty() {
            return Err(self.err(key("service_name"), "must not be empty"));
        }
        let endpoint = match raw.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => {
                Some(trace_endpoint(url).map_err(|reason| self.err(key("endpoint"), reason))?)
            }
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            let bad = |c: char| c.is_control() || (c != ' ' && c.is_whitespace());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || value.chars().any(bad)
            {
                return Err(self.err(
                    format!("telemetry.traces.headers.{name}"),
                    "header names use letters, digits, - and _; values no control characters",
                ));
            }
            if !value.is_empty() {
                self.secrets.push(value.clone());
            }
            headers.push((name.clone(), value.clone()));
        }
        Ok(TraceSettings {
            endpoint,
            sample_ratio: raw.sample_ratio,
            service_name,
            headers,
            queue_traces: raw.queue_traces,
            export_timeout: Duration::from_millis(raw.export_timeout_ms),
        })
    }

    fn websocket(&self, raw: &RawWs) -> Result<WsSettings, ConfigError> {
        for (key, v) in [
            ("max_message_bytes", raw.max_message_bytes as u64),
            ("max_in_flight", raw.max_in_flight as u64),
            ("max_subscriptions", raw.max_subscriptions as u64),
            ("max_queued_bytes", raw.max_queued_bytes as u64),
            ("max_total_queued_bytes", raw.max_total_queued_bytes as u64),
            ("ping_interval_ms", raw.ping_interval_ms),
            ("pong_timeout_ms", raw.pong_timeout_ms),
            ("idle_timeout_ms", raw.idle_timeout_ms),
            ("session_lifetime_ms", raw.session_lifetime_ms),
            ("backfill_chunk_blocks", raw.backfill_chunk_blocks),
            (
                "upstream_connect_timeout_ms",
                raw.upstream_connect_timeout_ms,
            ),
        ] {
            if v == 0 {
                return Err(self.err(format!("websocket.{key}"), "must be greater than 0"));
            }
        }
        Ok(WsSettings {
            max_message_bytes: raw.max_message_bytes,
            max_in_flight: raw.max_in_flight,
            max_subscriptions: raw.max_subscriptions,
            max_queued_bytes: raw.max_queued_bytes,
            max_total_queued_bytes: raw.max_total_queued_bytes,
            ping_interval: Duration::from_millis(raw.ping_interval_ms),
            pong_timeout: Duration::from_millis(raw.pong_timeout_ms),
            idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
            session_lifetime: Duration::from_millis(raw.session_lifetime_ms),
            unsubscribe_grace: Duration::from_millis(raw.unsubscribe_grace_ms),
            stall_timeout: raw.stall_timeout_ms.map(Duration::from_millis),
            backfill_limit_blocks: raw.backfill_limit_blocks,
            backfill_chunk_blocks: raw.backfill_chunk_blocks,
            upstream_connect_timeout: Duration::from_millis(raw.upstream_connect_timeout_ms),
        })
    }

    fn dashboard(&mut self, raw: &RawDashboard) -> Result<DashboardSettings, ConfigError> {
        if raw.session_ttl_ms == 0 {
            return Err(self.err("dashboard.session_ttl_ms", "must be greater than 0"));
        }
        let token = match raw.token.as_deref() {
            None => None,
            Some(text) => {
                let token = self.expand("dashboard.token", text)?.trim().to_string();
                if token.is_empty() {
                    None
                } else {
                    self.secrets.push(token.clone());
                    Some(token)
                }
            }
        };
        Ok(DashboardSettings {
            enabled: raw.enabled,
            token,
            session_ttl: Duration::from_millis(raw.session_ttl_ms),
        })
    }

    /// `access:`: keys hashed here (the key itself is kept only as a secret to redact, never in the settings).
    fn access(&mut self, raw: &RawAccess) -> Result<AccessSettings, ConfigError> {
        let redis = match &raw.redis_url {
            Some(url) => {
                let url = self.expand("access.redis_url", url)?;
                crate::config::cache::RawCache::default()
                    .build(Some(&url))
                    .map_err(|(_, reason)| self.err("access.redis_url", reason))?
                    .redis
            }
            None => None,
        };
        if let Some(password) = redis.as_ref().and_then(|r| r.password.clone()) {
            self.secrets.push(password);
        }
        let require_key = match &raw.require_key {
            RawRequireKey::All(false) => RequireKey::None,
            RawRequireKey::All(true) => RequireKey::All,
            RawRequireKey::Profiles(list) => RequireKey::Profiles(list.clone()),
        };
        let mut keys: Vec<ApiKey> = Vec::new();
        for raw_key in &raw.keys {
            let at = format!("access.keys.{}", raw_key.id);
            if raw_key.id.is_empty()
                || raw_key.id.len() > 64
                || !raw_key
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.err(
                    "access.keys",
                    "key ids use 1 to 64 letters, digits, - and _",
                ));
            }
            if keys.iter().any(|k| k.id == raw_key.id) {
                return Err(self.err(&at, "duplicate key id"));
            }
            let hash = match (&raw_key.key, &raw_key.key_sha256) {
                (Some(text), None) => {
                    let key = self.expand(&format!("{at}.key"), text)?.trim().to_string();
                    if key.len() < ACCESS_MIN_KEY_BYTES {
                        return Err(self.err(
                            format!("{at}.key"),
                            format!("a key needs at least {ACCESS_MIN_KEY_BYTES} characters"),
                        ));
                    }
                    self.secrets.push(key.clone());
                    crate::config::schema::hash_key(&key)
                }
                (None, Some(hex)) => {
                    crate::config::schema::parse_key_hash(hex).ok_or_else(|| {
                        self.err(format!("{at}.key_sha256"), "expected 64 hexadecimal digits")
                    })?
                }
                _ => {
                    return Err(self.err(&at, "give exactly one of `key` and `key_sha256`"));
                }
            };
            if keys.iter().any(|k| k.hash == hash) {
                return Err(self.err(format!("{at}.key"), "two keys have the same value"));
            }
            let methods = raw_key.methods.as_ref();
            keys.push(ApiKey {
                id: raw_key.id.clone(),
                hash,
                profiles: raw_key.profiles.clone(),
                chains: raw_key.chains.clone(),
                methods_allow: methods.map(|m| m.allow.clone()).unwrap_or_default(),
                methods_deny: methods.map(|m| m.deny.clone()).unwrap_or_default(),
                origins: raw_key.origins.clone(),
                limit: self.rate_limit(&format!("{at}.limit"), raw_key.limit.as_ref())?,
                contracts: raw_key
                    .contracts
                    .iter()
                    .map(|a| {
                        crate::config::schema::parse_address(a).ok_or_else(|| {
                            self.err(
                                format!("{at}.contracts"),
                                format!("'{a}' is not a 0x address"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            });
        }
        let mut trusted_proxies = Vec::new();
        for text in &raw.trusted_proxies {
            trusted_proxies.push(text.trim().parse().map_err(|_| {
                self.err(
                    "access.trusted_proxies",
                    format!("'{text}' is not an IP address"),
                )
            })?);
        }
        if let Some((m, w)) = raw
            .weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(self.err(
                format!("access.weights.{m}"),
                format!("{w} is not a weight >= 0"),
            ));
        }
        Ok(AccessSettings {
            require_key,
            keys,
            per_key: self.rate_limit("access.per_key", raw.per_key.as_ref())?,
            per_ip: self.rate_limit("access.per_ip", raw.per_ip.as_ref())?,
            trusted_proxies,
            weights: raw.weights.clone(),
            redis,
        })
    }

    fn rate_limit(
        &self,
        key: &str,
        raw: Option<&RawRateLimit>,
    ) -> Result<Option<RateLimit>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        for (name, v) in [
            ("requests_per_s", raw.requests_per_s),
            ("compute_units_per_s", raw.compute_units_per_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(self.err(
                    format!("{key}.{name}"),
                    "must be a number >= 0 (0 = no limit)",
                ));
            }
        }
        if !(raw.burst_s.is_finite() && raw.burst_s > 0.0) {
            return Err(self.err(format!("{key}.burst_s"), "must be greater than 0"));
        }
        Ok(Some(RateLimit {
            requests_per_s: raw.requests_per_s,
            compute_units_per_s: raw.compute_units_per_s,
            burst_s: raw.burst_s,
        }))
    }

    /// Expands `${VAR}` and `${VAR:-default}`; expanded values become secrets.
    fn expand(&mut self, key: &str, value: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.err(key, "unterminated ${...}"))?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(key, format!("invalid variable name '{name}'")));
            }
            if !super::env::may_expand(self.env, name) {
                return Err(self.err(
                    key,
                    format!(
                        "${{{name}}} may not be expanded: only variables matching {} (default {}) are, and \
                         never Lasso's own LASSO_* variables",
                        super::env::EXPAND_ALLOW,
                        DEFAULT_EXPAND_ALLOW
                    ),
                ));
            }
            let resolved = match ((self.env)(name), default) {
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(self.err(key, format!("environment variable {name} is not set")));
                }
            };
            if !resolved.is_empty() {
                self.secrets.push(resolved.clone());
            }
            out.push_str(&resolved);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn profile(
        &mut self,
        name: &str,
        chains: &IndexMap<String, RawChain>,
        prefix: &str,
        _file: &Path,
    ) -> Result<Profile, ConfigError> {
        let mut built = Vec::new();
        let mut lookup: HashMap<String, usize> = HashMap::new();
        for (chain_name, raw) in chains {
            let key = format!("{prefix}.{chain_name}");
            let chain = self.chain(name, chain_name, raw, &key)?;
            let index = built.len();
            let mut keys = vec![chain.name.clone(), chain.chain_id.to_string()];
            keys.extend(chain.aliases.iter().cloned());
            for k in keys {
                if let Some(&other) = lookup.get(&k) {
                    if other != index {
                        return Err(self.err(
                            &key,
                            format!("'{k}' already names chain '{}'", built_name(&built, other)),
                        ));
                    }
                }
                lookup.insert(k, index);
            }
            built.push(chain);
        }
        Ok(Profile {
            name: name.to_string(),
            chains: built,
            lookup,
        })
    }

    fn chain(
        &mut self,
        profile: &str,
        name: &str,
        raw: &RawChain,
        key: &str,
    ) -> Result<Chain, ConfigError> {
        if name.is_empty() || name.contains('/') {
            return Err(self.err(key, "chain names must be non-empty and contain no '/'"));
        }
        let chain_id = match &raw.chain_id {
            RawChainId::Number(n) => *n,
            RawChainId::Text(t) => {
                let t = t.trim();
                let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16).ok(),
                    None => t.parse().ok(),
                };
                parsed.ok_or_else(|| {
                    self.err(
                        format!("{key}.chain_id"),
                        format!("'{t}' is not a chain id"),
                    )
                })?
            }
        };
        if chain_id == 0 {
            return Err(self.err(format!("{key}.chain_id"), "must be greater than 0"));
        }
        let default_strategy = match &raw.default_strategy {
            Some(s) => s
                .parse::<Strategy>()
                .map_err(|e| self.err(format!("{key}.default_strategy"), e))?,
            None => Strategy::Fastest,
        };
        if raw.providers.is_empty() {
            return Err(self.err(
                format!("{key}.providers"),
                "at least one provider is required",
            ));
        }
        let _ = raw.name.as_deref();
        let gid = self.chains;
        self.chains += 1;
        let routing = self
            .routing
            .clone()
            .expect("routing settings are built before chains");
        let block_time_ms = raw.block_time_ms.unwrap_or(12_000);
        if block_time_ms == 0 {
            return Err(self.err(format!("{key}.block_time_ms"), "must be greater than 0"));
        }
        let mut ids = HashSet::new();
        let mut pids = Vec::new();
        for (i, p) in raw.providers.iter().enumerate() {
            let pkey = format!("{key}.providers[{i}]");
            if !ids.insert(p.id.clone()) {
                return Err(self.err(
                    format!("{pkey}.id"),
                    format!("duplicate provider id '{}'", p.id),
                ));
            }
            let provider = self.provider(profile, name, i, p, &pkey)?;
            let provider = Provider {
                chain_gid: gid,
                chain_id,
                ..provider
            };
            pids.push(provider.pid);
            self.providers.push(provider);
        }
        Ok(Chain {
            name: name.to_string(),
            chain_id,
            chain_id_hex: format!("0x{chain_id:x}"),
            aliases: raw.aliases.clone(),
            block_time_ms,
            default_strategy,
            gid,
            max_lag_blocks: raw.max_lag_blocks.unwrap_or(routing.max_lag_blocks),
            hedge: raw.hedge.unwrap_or(routing.hedge.enabled),
            head_poll_interval: Duration::from_millis(
                raw.head_poll_ms
                    .unwrap_or_else(|| block_time_ms.clamp(1_000, 12_000))
                    .max(100),
            ),
            finality_depth: raw.finality_depth,
            cache: match &raw.cache {
                Some(over) => over.apply(self.cache.as_ref().expect("cache built before chains")),
                None => self.cache.clone().expect("cache built before chains"),
            },
            providers: pids,
            indexing: RawIndexing {
                max_logs_range: raw.max_logs_range,
                logs_concurrency: raw.logs_concurrency,
                logs_max_requests: raw.logs_max_requests,
                pin_latest: raw.pin_latest,
                broadcast_sends: raw.broadcast_sends,
                highest_pending_nonce: raw.highest_pending_nonce,
            }
            .over(&routing.indexing),
        })
    }

    fn provider(
        &mut self,
        profile: &str,
        chain: &str,
        position: usize,
        raw: &RawProvider,
        key: &str,
    ) -> Result<Provider, ConfigError> {
        if raw.id.is_empty() || raw.id.contains('/') {
            return Err(self.err(
                format!("{key}.id"),
                "provider ids must be non-empty and contain no '/'",
            ));
        }
        let api_key = match &raw.api_key {
            Some(k) => {
                let k = self.expand(&format!("{key}.api_key"), k)?;
                if !k.is_empty() {
                    self.secrets.push(k.clone());
                }
                Some(k)
            }
            None => None,
        };
        let with_key = |s: String| match &api_key {
            Some(k) => s.replace("{api_key}", k),
            None => s,
        };
        let url_text = with_key(self.expand(&format!("{key}.url"), &raw.url)?);
        let url = ProviderUrl::parse(&url_text).map_err(|e| self.err(format!("{key}.url"), e))?;
        if url.websocket {
            return Err(self.err(
                format!("{key}.url"),
                "must be http:// or https:// (put ws:// URLs in ws_url)",
            ));
        }
        let ws_url = match &raw.ws_url {
            Some(w) => {
                let text = with_key(self.expand(&format!("{key}.ws_url"), w)?);
                let parsed =
                    ProviderUrl::parse(&text).map_err(|e| self.err(format!("{key}.ws_url"), e))?;
                if !parsed.websocket {
                    return Err(self.err(format!("{key}.ws_url"), "must be ws:// or wss://"));
                }
                Some((parsed, text))
            }
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            let hkey = format!("{key}.headers.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(self.err(hkey, "invalid header name"));
            }
            let lower = name.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err(self.err(hkey, "this header is set by Lasso"));
            }
            let value = with_key(self.expand(&hkey, value)?);
            if value.contains(['\r', '\n']) {
                return Err(self.err(hkey, "header values must not contain line breaks"));
            }
            self.secrets.push(value.clone());
            headers.push((name.clone(), value));
        }
        if let Some(userinfo) = &url.userinfo {
            self.secrets.push(userinfo.clone());
            headers.push((
                "Authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(userinfo.as_bytes())
                ),
            ));
        }
        let methods = raw.methods.as_ref().map(|m| MethodFilter {
            allow: m.allow.clone(),
            deny: m.deny.clone(),
        });
        let cost = raw.cost.unwrap_or(0.0);
        if !(cost.is_finite() && cost >= 0.0) {
            return Err(self.err(format!("{key}.cost"), "must be a number >= 0"));
        }
        let redact = |s: &str, secrets: &[String]| super::redact::redact(s, secrets);
        let url_redacted = redact(&mask_url(&url_text), &self.all_secrets());
        let ws_url_redacted = ws_url
            .as_ref()
            .map(|(_, t)| redact(&mask_url(t), &self.all_secrets()));
        Ok(Provider {
            pid: self.providers.len(),
            id: raw.id.clone(),
            name: raw.name.clone().unwrap_or_else(|| raw.id.clone()),
            profile: profile.to_string(),
            chain: chain.to_string(),
            chain_gid: 0,
            chain_id: 0,
            url,
            url_redacted,
            ws_url: ws_url.map(|(u, _)| u),
            ws_url_redacted,
            priority: raw.priority.unwrap_or(position as i64),
            cost,
            headers,
            archival: raw.archival,
            batch: raw.batch,
            batch_max: raw.batch_max,
            max_logs_range: raw.max_logs_range,
            methods: methods.unwrap_or_default(),
        })
    }

    fn all_secrets(&self) -> Vec<String> {
        let mut s = self.secrets.clone();
        s.sort_by_key(|s| std::cmp::Reverse(s.len()));
        s
    }
}

fn built_name(chains: &[Chain], index: usize) -> &str {
    chains.get(index).map(|c| c.name.as_str()).unwrap_or("?")
}

/// Parses an OTLP/HTTP endpoint: `http://host[:port][/path]` (port 4318 and path `/v1/traces` by default).
fn trace_endpoint(url: &str) -> Result<TraceEndpoint, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// endpoints are supported (an OpenTelemetry Collector next to Lasso)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("expected http://host[:port][/path]".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (h, after) = bracketed.split_once(']').ok_or("invalid host")?;
        let port = match after {
            "" => 4318,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or("invalid port")?,
        };
        (format!("[{h}]"), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "invalid port")?),
            None => (authority.to_string(), 4318),
        }
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("invalid host".into());
    }
    Ok(TraceEndpoint {
        authority: format!("{host}:{port}"),
        host: if port == 80 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        },
        port,
        path: if path.is_empty() {
            "/v1/traces".to_string()
        } else {
            path.to_string()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| match name {
            "RPC_KEY" => Some("k3y-from-env".to_string()),
            _ => None,
        };
        load_str(text, Path::new("test.yml"), &env)
    }

    const GOOD: &str = r#"
chains:
  ethereum:
    chain_id: 1
    aliases: [eth]
    providers:
      - id: a
        url: https://a.example/v1/${RPC_KEY}
        headers: { X-Key: "{api_key}" }
        api_key: "abc123secret"
      - id: b
        url: http://127.0.0.1:8545
        priority: 0
        cost: 2
profiles:
  premium:
    chains:
      base: { chain_id: "0x2105", providers: [ { id: c, url: "http://u:pw@10.0.0.1:1/" } ] }
"#;

    #[test]
    fn traces_are_off_by_default_and_endpoints_are_checked() {
        let c = load(GOOD).unwrap();
        assert!(!c.telemetry.traces.enabled());
        assert_eq!(c.telemetry.traces.sample_ratio, DEFAULT_TRACES_SAMPLE_RATIO);
        let with = |traces: &str| load(&format!("telemetry:\n  traces: {traces}\n{GOOD}"));
        let c = with(
            r#"{ endpoint: "http://collector:4318", headers: { Authorization: "Bearer t0ken" } }"#,
        )
        .unwrap();
        let t = &c.telemetry.traces;
        assert!(t.enabled());
        let e = t.endpoint.as_ref().unwrap();
        assert_eq!(
            (e.authority.as_str(), e.host.as_str(), e.path.as_str()),
            ("collector:4318", "collector:4318", "/v1/traces")
        );
        assert!(
            c.secrets.contains(&"Bearer t0ken".to_string()),
            "header values are secrets"
        );
        let e = trace_endpoint("http://[::1]:9000/otlp/v1/traces").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("[::1]:9000", "/otlp/v1/traces")
        );
        assert_eq!(trace_endpoint("http://h").unwrap().authority, "h:4318");
        for (traces, key) in [
            (
                r#"{ endpoint: "https://c:4318" }"#,
                "telemetry.traces.endpoint",
            ),
            (r#"{ endpoint: "http://c:x" }"#, "telemetry.traces.endpoint"),
            (
                r#"{ endpoint: "http://u:p@c" }"#,
                "telemetry.traces.endpoint",
            ),
            ("{ sample_ratio: 1.5 }", "telemetry.traces.sample_ratio"),
            ("{ queue_traces: 0 }", "telemetry.traces.queue_traces"),
            (
                r#"{ headers: { "a b": x } }"#,
                "telemetry.traces.headers.a b",
            ),
        ] {
            assert_eq!(with(traces).unwrap_err().key, key, "{traces}");
        }
    }

    #[test]
    fn loads_chains_profiles_and_lookups() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.profiles[0].name, "default");
        let (_, eth) = c.profiles[0].chain("eth").unwrap();
        assert_eq!(eth.chain_id_hex, "0x1");
        assert!(c.profiles[0].chain("1").is_some());
        let (_, premium) = c.profile("premium").unwrap();
        assert_eq!(premium.chain("8453").unwrap().1.name, "base");
        let a = &c.providers[eth.providers[0]];
        assert_eq!(a.url.target, "/v1/k3y-from-env");
        assert_eq!(
            a.headers[0],
            ("X-Key".to_string(), "abc123secret".to_string())
        );
        assert!(
            !a.url_redacted.contains("k3y-from-env"),
            "{}",
            a.url_redacted
        );
        let c_prov = &c.providers[premium.chains[0].providers[0]];
        assert_eq!(c_prov.headers[0].1, "Basic dTpwdw==");
        assert!(
            c.redact("boom abc123secret k3y-from-env")
                .matches("***")
                .count()
                == 2
        );
    }

    #[test]
    fn errors_name_file_key_and_reason_table() {
        let rows: &[(&str, &str, &str)] = &[
            ("chains: {}", "chains", "no chain"),
            (
                "chains: { e: { chain_id: 1, providers: [] } }",
                "chains.e.providers",
                "at least one",
            ),
            (
                "chains: { e: { chain_id: 1, providers: [ { id: a } ] } }",
                "chains.e.providers[0]",
                "url",
            ),
            (
                "chains: { e: { chain_id: 1, providers: [ { id: a, url: \"ftp://x\" } ] } }",
                "chains.e.providers[0].url",
                "scheme",
            ),
            (
                "chains: { e: { chain_id: 1, default_strategy: quickest, providers: [ { id: a, url: \"http://x\" } ] } }",
                "chains.e.default_strategy",
                "quickest",
            ),
            (
                "chains: { e: { chain_id: 1, providers: [ { id: a, url: \"http://x/${RPC_NOPE}\" } ] } }",
                "chains.e.providers[0].url",
                "RPC_NOPE is not set",
            ),
            (
                "chains: { e: { chain_id: 1, providers: [ { id: a, url: \"http://x\" }, { id: a, url: \"http://y\" } ] } }",
                "chains.e.providers[1].id",
                "duplicate",
            ),
            (
                "chains: { e: { chain_id: 1, typo: 1, providers: [ { id: a, url: \"http://x\" } ] } }",
                "chains.e",
                "typo",
            ),
            (
                "server: { max_body_bytes: 0 }\nchains: { e: { chain_id: 1, providers: [ { id: a, url: \"http://x\" } ] } }",
                "server.max_body_bytes",
                "greater than 0",
            ),
            ("\"unterminated", "line", ""),
            (
                "chains: { e: { chain_id: 1, aliases: [f], providers: [ { id: a, url: \"http://x\" } ] }, f: { chain_id: 2, providers: [ { id: a, url: \"http://x\" } ] } }",
                "chains.f",
                "already names",
            ),
        ];
        for (text, key, reason) in rows {
            let err = load(text).expect_err(text);
            assert_eq!(err.file, "test.yml");
            assert!(
                err.key.starts_with(key),
                "{text}: key {:?} should start with {key:?} ({err})",
                err.key
            );
            assert!(
                err.reason.contains(reason),
                "{text}: reason {:?} should contain {reason:?}",
                err.reason
            );
        }
    }

    #[test]
    fn lassos_own_and_unlisted_variables_are_never_expanded() {
        let env = |name: &str| {
            (name != crate::config::env::EXPAND_ALLOW).then(|| format!("value-of-{name}"))
        };
        for name in [
            "LASSO_CLUSTER_SECRET",
            "LASSO_ADMIN_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            for field in [
                "url: \"http://x/${NAME}\"",
                "url: \"http://x\", api_key: \"${NAME:-d}\"",
                "url: \"http://x\", headers: { X: \"${NAME}\" }",
            ] {
                let text = format!(
                    "chains: {{ e: {{ chain_id: 1, providers: [ {{ id: a, {} }} ] }} }}",
                    field.replace("NAME", name)
                );
                let err = load_str(&text, Path::new("t.yml"), &env).expect_err(&text);
                assert!(err.reason.contains("may not be expanded"), "{err}");
                assert!(!err.to_string().contains("value-of"), "{err}");
            }
        }
        let ok =
            "chains: { e: { chain_id: 1, providers: [ { id: a, url: \"http://x/${RPC_K}\" } ] } }";
        let c = load_str(ok, Path::new("t.yml"), &env).unwrap();
        assert_eq!(c.providers[0].url.target, "/value-of-RPC_K");
    }

    #[test]
    fn profile_files_stay_in_the_config_directory_and_never_echo_content() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("conf");
        std::fs::create_dir_all(dir.join("profiles")).unwrap();
        let secret = outer.path().join("secret.txt");
        std::fs::write(&secret, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::write(dir.join("notyaml.txt"), "hunter2-password-line\n").unwrap();
        std::fs::write(dir.join("number.yml"), "123456789\n").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("profiles/link.yml")).unwrap();
        std::fs::write(
            dir.join("profiles/other.yml"),
            "chains: { e: { chain_id: 1, providers: [ { id: a, url: \"http://x\" } ] } }\n",
        )
        .unwrap();
        let config = dir.join("chains.yml");
        let load_with = |profile: &str| {
            let text = format!(
                "chains: {{ e: {{ chain_id: 1, providers: [ {{ id: a, url: \"http://x\" }} ] }} }}\nprofiles: {{ other: \"{profile}\" }}\n"
            );
            load_str(&text, &config, &|_| None)
        };
        let c = load_with("profiles/other.yml").unwrap();
        assert_eq!(c.profiles.len(), 2);
        let inside_absolute = dir.join("profiles/other.yml");
        assert!(load_with(inside_absolute.to_str().unwrap()).is_ok());
        for (path, why) in [
            ("../secret.txt", "'..'"),
            ("profiles/../../secret.txt", "'..'"),
            (
                secret.to_str().unwrap(),
                "inside the config file's directory",
            ),
            ("/etc/passwd", "inside the config file's directory"),
            // Whether a file outside exists is not told either.
            ("/no/such/file.yml", "inside the config file's directory"),
            ("profiles/link.yml", "inside the config file's directory"),
            ("profiles", "not a regular file"),
            ("missing.yml", "cannot read missing.yml"),
            ("notyaml.txt", "invalid type"),
            ("number.yml", "invalid type"),
        ] {
            let err = load_with(path).expect_err(path);
            assert!(err.reason.contains(why), "{path}: {err}");
            let text = err.to_string();
            for content in ["root:x", "hunter2", "123456789"] {
                assert!(!text.contains(content), "{path}: {text}");
            }
        }
    }

    #[test]
    fn parse_errors_keep_key_names_and_drop_values() {
        assert_eq!(
            scrub_values("invalid type: string \"root:x:\\\"0\", expected struct X at line 1"),
            "invalid type: string, expected struct X at line 1"
        );
        assert_eq!(
            scrub_values("invalid type: integer `5`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            scrub_values("unknown field `typo`, expected one of `chains`"),
            "unknown field `typo`, expected one of `chains`"
        );
        assert_eq!(scrub_values("unterminated \"abc"), "unterminated ");
    }

    #[test]
    fn seeds_missing_file_from_default() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("default.yml");
        std::fs::write(&default, GOOD).unwrap();
        let target = dir.path().join("data/chains.yml");
        assert!(seed_if_missing(&target, &default).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), GOOD);
        std::fs::write(&target, "changed").unwrap();
        assert!(!seed_if_missing(&target, &default).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "changed");
    }
}
