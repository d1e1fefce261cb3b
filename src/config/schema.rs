//! The configuration's types, as validated: every worker reads one immutable `Config` of its generation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::redact;
use crate::config::routing_policy::{BreakerSettings, Strategy};
use crate::config::url::ProviderUrl;
use crate::evm::methods::MethodClass;

/// The operator dashboard (`/dashboard`): off unless `enabled` or a `token` is set.
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    pub enabled: bool,
    /// A read-only token for the dashboard (`${VAR}` expanded; a secret). The admin token opens it too.
    pub token: Option<String>,
    /// Lifetime of the session cookie a token is exchanged for.
    pub session_ttl: Duration,
}

impl DashboardSettings {
    /// Whether the dashboard is served at all.
    pub fn on(&self) -> bool {
        self.enabled || self.token.is_some()
    }
}

/// Limits and timeouts of the client-facing HTTP server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub port: u16,
    pub bind: String,
    /// 0 = one worker per available core.
    pub workers: usize,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub max_batch_size: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub soft_max_connections: usize,
    pub hard_max_connections: usize,
    pub drain_timeout: Duration,
    /// How long one write to a client may make no progress before the connection is closed.
    pub send_timeout: Duration,
    /// Connections one client address (IPv6: one /64) may hold at once; 0 = no cap.
    pub max_connections_per_ip: usize,
    /// An SSE stream ends after this long.
    pub event_stream_lifetime: Duration,
    /// Plain successful routing events one worker publishes per profile and second (0 = none; failures, retries and
    /// hedges always).
    pub event_stream_successes_per_s: u32,
    /// Who may read `/rpc` and `/ws/rpc` answers from a browser.
    pub cors: CorsOrigins,
    /// Failed authentication attempts per client address and window before 429 (admin token, cluster secret).
    pub auth_max_failures: u32,
    pub auth_failure_window: Duration,
}

/// `server.cors_origins`: the origins browsers may call `/rpc` and `/ws/rpc` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (answered with `Access-Control-Allow-Origin: *`).
    Any,
    /// Only these origins (echoed back with `Vary: Origin`); WebSocket upgrades from other origins get 403.
    List(Vec<String>),
}

impl CorsOrigins {
    /// The `Access-Control-Allow-Origin` value for a request sent from `origin`, if it may read the answer.
    pub fn allow(&self, origin: Option<&str>) -> Option<String> {
        match self {
            CorsOrigins::Any => Some("*".into()),
            CorsOrigins::List(list) => {
                let origin = origin?;
                list.iter()
                    .any(|o| o.eq_ignore_ascii_case(origin))
                    .then(|| origin.to_string())
            }
        }
    }
}

/// Settings of the upstream (provider-facing) client.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_attempts: usize,
    pub max_response_bytes: usize,
    /// Answer bytes being received from providers, whole process (each worker gets an equal share).
    pub max_buffered_response_bytes: usize,
    pub pool_max_idle_per_provider: usize,
    pub pool_idle_timeout: Duration,
    /// Send single read calls that are ready together to one provider as one JSON-RPC batch: the default of every
    /// provider that does not say (`batch:`). Off by default: batching changes what the provider receives.
    pub coalesce: bool,
    /// Calls per such batch, for providers that do not set `batch_max`.
    pub max_coalesce: usize,
    /// After a provider refuses a batch, its calls go alone for this long (doubling while it keeps refusing).
    pub coalesce_retry: Duration,
    /// Extra PEM certificates trusted for HTTPS/WSS providers, besides the webpki roots (private CAs).
    pub extra_ca_file: Option<PathBuf>,
}

/// OpenTelemetry traces (`telemetry.traces`): off unless an endpoint is set.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// OTLP/HTTP traces endpoint (`http://host:port/v1/traces`); `None` = tracing off.
    pub endpoint: Option<TraceEndpoint>,
    /// Share of requests traced when the client's `traceparent` does not decide (0..=1).
    pub sample_ratio: f64,
    pub service_name: String,
    /// Extra headers of every export request (e.g. an API key of the collector); their values are secrets.
    pub headers: Vec<(String, String)>,
    /// Finished request traces queued for the exporter thread; past it they are dropped (and counted).
    pub queue_traces: usize,
    pub export_timeout: Duration,
}

impl TraceSettings {
    /// Whether requests are traced at all: the one check on the request path when tracing is off.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }
}

/// Where an OTLP/HTTP exporter posts: plain HTTP (a collector next to Lasso).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEndpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// `Host` header value.
    pub host: String,
    pub port: u16,
    /// Request target, `/v1/traces` when the URL has no path.
    pub path: String,
}

/// What Lasso reports about itself (`telemetry:`).
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub traces: TraceSettings,
}

/// When to send a second attempt for an idempotent read.
#[derive(Debug, Clone)]
pub struct HedgeSettings {
    pub enabled: bool,
    /// The provider's latency quantile after which a hedge starts.
    pub quantile: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

/// Measured routing: merging, strategies, deadlines, breakers, heads, hedging, snapshots.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub merge_interval: Duration,
    /// Merge intervals a latency window spans.
    pub window_intervals: usize,
    /// Quantile `fastest` ranks by.
    pub fastest_quantile: f64,
    /// Answered samples a provider needs before its latency is trusted.
    pub min_samples: u64,
    /// Share of requests sent first to a provider without enough samples, so it can qualify.
    pub probe_share: f64,
    /// Exponent of `latency-weighted`: weight = (best / latency) ^ beta.
    pub latency_weight_beta: f64,
    pub max_lag_blocks: u64,
    /// Blocks behind the head beyond which a block counts as old (archival providers only).
    pub archive_threshold_blocks: u64,
    /// Deadline covering all attempts of a request, per method class (indexed by `MethodClass::index`).
    pub deadlines: [Duration; 7],
    pub breaker: BreakerSettings,
    pub hedge: HedgeSettings,
    /// Indexer-grade read and send behaviour: the defaults of every chain (`routing.indexing`).
    pub indexing: Indexing,
    pub snapshots_dir: Option<PathBuf>,
    pub snapshot_interval: Duration,
    pub snapshot_retention: usize,
}

impl RoutingSettings {
    pub fn deadline(&self, class: MethodClass) -> Duration {
        self.deadlines[class.index()]
    }
}

/// Indexer-grade read and send behaviour of one chain (`routing.indexing`, overridden per chain by the same keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexing {
    /// `eth_getLogs` ranges longer than this many blocks are split into chunks (0 = no proactive split; a provider's
    /// "range too large" still bisects). A provider's own `max_logs_range` lowers it.
    pub max_logs_range: u64,
    /// Chunks of one split `eth_getLogs` in flight at once.
    pub logs_concurrency: usize,
    /// Upstream calls one split `eth_getLogs` may make (chunks and bisections); past it the request fails.
    pub logs_max_requests: usize,
    /// `latest` (and a missing block) in state reads is resolved to the consensus head before routing.
    pub pin_latest: bool,
    /// `eth_sendRawTransaction` goes to every healthy provider of the chain, once each.
    pub broadcast_sends: bool,
    /// `eth_getTransactionCount(.., "pending")` asks several providers and answers the highest.
    pub highest_pending_nonce: bool,
}

/// WebSocket endpoint limits and subscription behaviour.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    pub max_in_flight: usize,
    pub max_subscriptions: usize,
    /// Bytes queued to a client before it is disconnected as too slow.
    pub max_queued_bytes: usize,
    /// Bytes queued to all WebSocket clients of the process (split across workers); past it the slowest are cut.
    pub max_total_queued_bytes: usize,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Closes a connection without subscriptions after this long without a message.
    pub idle_timeout: Duration,
    /// Closes any session (1001, "reconnect") after this long, subscribed or not.
    pub session_lifetime: Duration,
    /// An upstream subscription lingers this long after its last client leaves.
    pub unsubscribe_grace: Duration,
    /// No newHeads for this long = stalled (default: 3 block times, at least 1 s).
    pub stall_timeout: Option<Duration>,
    pub backfill_limit_blocks: u64,
    pub backfill_chunk_blocks: u64,
    pub upstream_connect_timeout: Duration,
}

/// Which methods a provider serves: exact names or `prefix*` patterns.
#[derive(Debug, Clone, Default)]
pub struct MethodFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl MethodFilter {
    /// True when the provider may be sent `method`.
    pub fn permits(&self, method: &str) -> bool {
        self.permits_given(method, crate::evm::methods::default_denied(method))
    }

    /// [`MethodFilter::permits`] with `denied` = `evm::methods::default_denied(method)` already known (a request
    /// checks every provider of its chain: the default deny list is scanned once, not once per provider).
    pub fn permits_given(&self, method: &str, denied: Option<&str>) -> bool {
        // Node-control and key-holding methods need an explicit allow entry: the name itself or the very pattern
        // that denies it (a broad `eth_*` or `*` does not open `eth_sign`).
        if let Some(rule) = denied {
            if !self.allow.iter().any(|p| p == method || p == rule) {
                return false;
            }
        }
        (self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|p| crate::evm::methods::matches_pattern(p, method)))
            && !self
                .deny
                .iter()
                .any(|p| crate::evm::methods::matches_pattern(p, method))
    }
}

/// One upstream provider of one chain. `pid` indexes the process-wide provider table.
#[derive(Debug, Clone)]
pub struct Provider {
    pub pid: usize,
    pub id: String,
    pub name: String,
    pub profile: String,
    pub chain: String,
    /// Global index of the provider's chain.
    pub chain_gid: usize,
    /// The chain id the provider must report.
    pub chain_id: u64,
    pub url: ProviderUrl,
    pub url_redacted: String,
    pub ws_url: Option<ProviderUrl>,
    pub ws_url_redacted: Option<String>,
    pub priority: i64,
    pub cost: f64,
    /// Extra request headers (already expanded), including basic auth from the URL.
    pub headers: Vec<(String, String)>,
    pub archival: bool,
    /// The provider declared it takes JSON-RPC batches (`batch: true`) or not; unset = `upstream.coalesce`.
    /// Read it through [`Config::batches`].
    pub batch: Option<bool>,
    /// Calls per coalesced batch for this provider; unset = `upstream.max_coalesce`. Read through
    /// [`Config::batch_max`].
    pub batch_max: Option<usize>,
    /// Longest `eth_getLogs` block range this provider takes (`max_logs_range`); unset = the chain's.
    pub max_logs_range: Option<u64>,
    pub methods: MethodFilter,
}

/// One chain of one profile.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    pub chain_id: u64,
    /// `"0x..."` form of the chain id, as `eth_chainId` answers it.
    pub chain_id_hex: String,
    pub aliases: Vec<String>,
    pub block_time_ms: u64,
    pub default_strategy: Strategy,
    /// Index of this chain among all chains of all profiles.
    pub gid: usize,
    pub max_lag_blocks: u64,
    pub hedge: bool,
    /// How often heads are polled.
    pub head_poll_interval: Duration,
    /// Blocks below the head taken as final (with the providers' `finalized` tag, the lower of the two counts).
    pub finality_depth: Option<u64>,
    /// How answers of this chain are cached (the `cache:` policy with this chain's overrides).
    pub cache: crate::config::cache::CachePolicy,
    /// Process-wide provider ids (`pid`) in configuration order.
    pub providers: Vec<usize>,
    pub indexing: Indexing,
}

/// A named set of chains (tenant, tier).
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub chains: Vec<Chain>,
    pub(crate) lookup: HashMap<String, usize>,
}

impl Profile {
    /// Finds a chain by name, alias or decimal chain id.
    pub fn chain(&self, key: &str) -> Option<(usize, &Chain)> {
        self.lookup.get(key).map(|&i| (i, &self.chains[i]))
    }
}

/// Which profiles demand an API key (`access.require_key`): `true` (all), `false` (none) or a list of profiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequireKey {
    #[default]
    None,
    All,
    Profiles(Vec<String>),
}

/// One client API key (`access.keys[]`). Only the SHA-256 of the key is kept; `id` is what logs and metrics show.
#[derive(Clone)]
pub struct ApiKey {
    pub id: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Profiles the key may use; empty = every profile.
    pub profiles: Vec<String>,
    /// Chains (names, aliases or decimal chain ids as in the URL) the key may use; empty = every chain.
    pub chains: Vec<String>,
    /// Methods the key may call (exact names or `prefix*`); empty allow = every method.
    pub methods_allow: Vec<String>,
    pub methods_deny: Vec<String>,
    /// Browser origins the key may be sent from; empty = any (and requests without `Origin`).
    pub origins: Vec<String>,
    /// Contracts `eth_call` and `eth_sendRawTransaction` may address; empty = any.
    pub contracts: Vec<[u8; 20]>,
    /// This key's rate limit; `None` = `access.per_key`.
    pub limit: Option<RateLimit>,
}

/// A token-bucket limit: requests and compute units per second (0 = not limited), burst in seconds of each rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests_per_s: f64,
    pub compute_units_per_s: f64,
    pub burst_s: f64,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash: only the id and the restrictions.
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("profiles", &self.profiles)
            .field("chains", &self.chains)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a client key: what Lasso keeps and compares instead of the key.
pub fn hash_key(key: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex of a key hash (`access.keys[].key_sha256`).
pub fn key_hash_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 20-byte address from `0x` + 40 hex digits (any case).
pub fn parse_address(text: &str) -> Option<[u8; 20]> {
    let text = text.trim();
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?
        .as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Parses 64 hex digits into a key hash.
pub fn parse_key_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Client access (`access:`): which profiles need a key, and the keys.
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    pub require_key: RequireKey,
    pub keys: Vec<ApiKey>,
    /// Limit of every key without its own.
    pub per_key: Option<RateLimit>,
    /// Limit of every client address.
    pub per_ip: Option<RateLimit>,
    /// Peers whose `Fly-Client-IP` / `X-Forwarded-For` name the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Compute-unit weights by method name, over the default table (`access::weights`).
    pub weights: HashMap<String, f64>,
    /// Redis for rate limits shared by every node (`access.redis_url`, `access::shared`); timeouts, connections
    /// and circuit as the cache's Redis defaults.
    pub redis: Option<crate::config::cache::RedisSettings>,
}

impl AccessSettings {
    /// Whether requests to `profile` must carry a valid key.
    pub fn requires_key(&self, profile: &str) -> bool {
        match &self.require_key {
            RequireKey::None => false,
            RequireKey::All => true,
            RequireKey::Profiles(list) => list.iter().any(|p| p == profile),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub routing: RoutingSettings,
    pub websocket: WsSettings,
    pub telemetry: TelemetrySettings,
    pub dashboard: DashboardSettings,
    /// Client API keys and which profiles require them.
    pub access: AccessSettings,
    pub cache: crate::config::cache::CacheSettings,
    /// Index 0 is always the `default` profile.
    pub profiles: Vec<Profile>,
    pub providers: Vec<Provider>,
    /// Values that must never be shown (expanded variables, API keys, URL credentials).
    pub secrets: Vec<String>,
}

impl Config {
    /// Whether single reads to provider `pid` may be coalesced into upstream batches: only where the provider
    /// declares it (`batch: true`) or, for providers that do not say, where `upstream.coalesce` is on.
    pub fn batches(&self, pid: usize) -> bool {
        self.providers[pid].batch.unwrap_or(self.upstream.coalesce)
    }

    /// Largest coalesced batch sent to provider `pid`.
    pub fn batch_max(&self, pid: usize) -> usize {
        self.providers[pid]
            .batch_max
            .unwrap_or(self.upstream.max_coalesce)
            .max(1)
    }

    pub fn profile(&self, name: &str) -> Option<(usize, &Profile)> {
        self.profiles
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
    }

    /// Redacts every secret of this configuration from `text`.
    pub fn redact(&self, text: &str) -> String {
        redact::redact(text, &self.secrets)
    }

    pub fn chain_count(&self) -> usize {
        self.profiles.iter().map(|p| p.chains.len()).sum()
    }

    /// Every chain of every profile, in global index order (`Chain::gid`).
    pub fn all_chains(&self) -> impl Iterator<Item = (&Profile, &Chain)> {
        self.profiles
            .iter()
            .flat_map(|p| p.chains.iter().map(move |c| (p, c)))
    }
}
