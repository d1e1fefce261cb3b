//! Every configuration default, as a named constant: `impl Default` for the raw config sections in [`super::load`]
//! uses these, and [`table`] lists them by dotted key (`server.port`) so a test can hold docs/CONTRACT.md to
//! them. WebSocket settings are not in the contract's config reference; their constants are listed all the same.

// `server:`
/// `server.port`
pub const DEFAULT_SERVER_PORT: u16 = 4000;
/// `server.bind`
pub const DEFAULT_SERVER_BIND: &str = "::";
/// `server.workers`
pub const DEFAULT_SERVER_WORKERS: usize = 0;
/// `server.max_body_bytes`
pub const DEFAULT_SERVER_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// `server.max_header_bytes`
pub const DEFAULT_SERVER_MAX_HEADER_BYTES: usize = 16 * 1024;
/// `server.max_batch_size`
pub const DEFAULT_SERVER_MAX_BATCH_SIZE: usize = 100;
/// `server.header_timeout_ms`
pub const DEFAULT_SERVER_HEADER_TIMEOUT_MS: u64 = 10_000;
/// `server.body_timeout_ms`
pub const DEFAULT_SERVER_BODY_TIMEOUT_MS: u64 = 30_000;
/// `server.idle_timeout_ms`
pub const DEFAULT_SERVER_IDLE_TIMEOUT_MS: u64 = 60_000;
/// `server.soft_max_connections`
pub const DEFAULT_SERVER_SOFT_MAX_CONNECTIONS: usize = 500;
/// `server.hard_max_connections`
pub const DEFAULT_SERVER_HARD_MAX_CONNECTIONS: usize = 1000;
/// `server.drain_timeout_ms`
pub const DEFAULT_SERVER_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// `server.send_timeout_ms`: how long one write to a client may make no progress (nginx's `send_timeout`).
pub const DEFAULT_SERVER_SEND_TIMEOUT_MS: u64 = 60_000;
/// `server.max_connections_per_ip` (IPv6: per /64; 0 = no per-address cap)
pub const DEFAULT_SERVER_MAX_CONNECTIONS_PER_IP: usize = 128;
/// `server.event_stream_lifetime_ms`: an SSE stream is ended after this long (EventSource clients reconnect).
pub const DEFAULT_SERVER_EVENT_STREAM_LIFETIME_MS: u64 = 3_600_000;
/// `server.event_stream_successes_per_s`: plain successful routing events (status below 400, no retry, no hedge) one
/// worker publishes per profile and second (a burst of as many); the rest are counted in
/// `lasso_events_sampled_out_total`, never serialised. Failures, retries, failovers and hedges are always published.
pub const DEFAULT_SERVER_EVENT_STREAM_SUCCESSES_PER_S: u32 = 50;
/// `server.cors_origins`: origins answered with `Access-Control-Allow-Origin` on `/rpc` and `/ws/rpc`.
pub const DEFAULT_SERVER_CORS_ORIGINS: &str = "*";
/// `server.auth_max_failures`: failed admin-token or cluster-secret attempts per client address (IPv6: per /64) in
/// one window; past it every authenticated endpoint answers that address 429 until the window ends.
pub const DEFAULT_SERVER_AUTH_MAX_FAILURES: u32 = 10;
/// `server.auth_failure_window_ms`
pub const DEFAULT_SERVER_AUTH_FAILURE_WINDOW_MS: u64 = 60_000;

// Not config keys: fixed bounds of the operator plane.
/// Client addresses whose failed authentication attempts are remembered at once (oldest forgotten first).
pub const AUTH_FAILURE_TRACKED_ADDRESSES: usize = 4096;
/// Validity of a signed inter-node request: its timestamp may differ from this node's clock by at most this much.
pub const CLUSTER_SIGNATURE_VALIDITY_SECS: u64 = 30;
/// Signed inter-node requests remembered (to refuse a replay within the validity window).
pub const CLUSTER_SEEN_SIGNATURES: usize = 65_536;
/// Bytes of routing events a node keeps for peers that follow them (the oldest dropped first).
pub const CLUSTER_EVENTS_BUFFER_BYTES: usize = 1024 * 1024;
/// A peer's ask for events keeps them kept for this long (it asks again every `CLUSTER_EVENTS_PULL_MS`).
pub const CLUSTER_EVENTS_INTEREST_MS: u64 = 10_000;
/// How often a node with event subscribers pulls its peers' events.
pub const CLUSTER_EVENTS_PULL_MS: u64 = 250;
/// Largest batch of events one pull answers (the rest follows at the next pull).
pub const CLUSTER_EVENTS_ANSWER_BYTES: usize = 256 * 1024;
/// Largest forwarded event accepted from a peer.
pub const CLUSTER_EVENT_MAX_BYTES: usize = 4 * 1024;
/// Routing events a worker buffers per profile before it hands them to the profile's subscribers as one chunk; an
/// event arriving at a full buffer is dropped (and counted in `lasso_events_dropped_total`).
pub const EVENTS_WORKER_BUFFER_BYTES: usize = 64 * 1024;
/// How long a worker holds buffered routing events before flushing them (sooner once half its buffer is used).
pub const EVENTS_FLUSH_MS: u64 = 100;
/// Largest profile file read (a profile file is YAML holding a `chains:` map).
pub const MAX_PROFILE_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// `LASSO_EXPAND_ALLOW` when unset: the variables `${VAR}` may expand (`RPC_*` a prefix, `*_API_KEY` a suffix; the
/// deployment provisions every `*_API_KEY` as an app secret).
pub const DEFAULT_EXPAND_ALLOW: &str = "RPC_*,*_API_KEY";

// `upstream:`
/// `upstream.connect_timeout_ms`
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// `upstream.request_timeout_ms`
pub const DEFAULT_UPSTREAM_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// `upstream.max_attempts`
pub const DEFAULT_UPSTREAM_MAX_ATTEMPTS: usize = 3;
/// `upstream.max_response_bytes`
pub const DEFAULT_UPSTREAM_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// `upstream.max_buffered_response_bytes` (answer bytes being received, whole process; each worker gets an equal
/// share)
pub const DEFAULT_UPSTREAM_MAX_BUFFERED_RESPONSE_BYTES: usize = 1024 * 1024 * 1024;
/// A single-call answer (HTTP client, 2xx, `Content-Length` at least this, not gzip) is streamed to the client as it
/// arrives instead of buffered whole (docs/CONTRACT.md, "Large answers").
pub const UPSTREAM_STREAM_ABOVE_BYTES: usize = 256 * 1024;
/// `upstream.pool_max_idle_per_provider`
pub const DEFAULT_UPSTREAM_POOL_MAX_IDLE_PER_PROVIDER: usize = 128;
/// `upstream.pool_idle_timeout_ms`
pub const DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS: u64 = 30_000;
/// `upstream.coalesce` (off: upstream batching is opt-in, per provider with `batch: true` or for all with this)
pub const DEFAULT_UPSTREAM_COALESCE: bool = false;
/// `upstream.max_coalesce`
pub const DEFAULT_UPSTREAM_MAX_COALESCE: usize = 32;
/// `upstream.coalesce_retry_ms` (back-off before batching a provider that refused a batch again; doubles while it
/// keeps refusing, up to 16 times this)
pub const DEFAULT_UPSTREAM_COALESCE_RETRY_MS: u64 = 30_000;

// `routing:`
/// `routing.merge_interval_ms`
pub const DEFAULT_ROUTING_MERGE_INTERVAL_MS: u64 = 1000;
/// `routing.window_intervals`
pub const DEFAULT_ROUTING_WINDOW_INTERVALS: usize = 10;
/// `routing.fastest_quantile`
pub const DEFAULT_ROUTING_FASTEST_QUANTILE: f64 = 0.5;
/// `routing.min_samples`
pub const DEFAULT_ROUTING_MIN_SAMPLES: u64 = 5;
/// `routing.probe_share`
pub const DEFAULT_ROUTING_PROBE_SHARE: f64 = 0.02;
/// `routing.latency_weight_beta`
pub const DEFAULT_ROUTING_LATENCY_WEIGHT_BETA: f64 = 3.0;
/// `routing.max_lag_blocks`
pub const DEFAULT_ROUTING_MAX_LAG_BLOCKS: u64 = 10;
/// `routing.archive_threshold_blocks`
pub const DEFAULT_ROUTING_ARCHIVE_THRESHOLD_BLOCKS: u64 = 128;
/// `routing.snapshot_interval_ms`
pub const DEFAULT_ROUTING_SNAPSHOT_INTERVAL_MS: u64 = 60_000;
/// `routing.snapshot_retention`
pub const DEFAULT_ROUTING_SNAPSHOT_RETENTION: usize = 5;

// `routing.deadlines_ms:`
/// `routing.deadlines_ms.light`
pub const DEFAULT_DEADLINE_LIGHT_MS: u64 = 2_000;
/// `routing.deadlines_ms.call`
pub const DEFAULT_DEADLINE_CALL_MS: u64 = 5_000;
/// `routing.deadlines_ms.logs`
pub const DEFAULT_DEADLINE_LOGS_MS: u64 = 5_000;
/// `routing.deadlines_ms.block`
pub const DEFAULT_DEADLINE_BLOCK_MS: u64 = 3_000;
/// `routing.deadlines_ms.trace`
pub const DEFAULT_DEADLINE_TRACE_MS: u64 = 30_000;
/// `routing.deadlines_ms.write`
pub const DEFAULT_DEADLINE_WRITE_MS: u64 = 10_000;
/// `routing.deadlines_ms.other`
pub const DEFAULT_DEADLINE_OTHER_MS: u64 = 5_000;

// `routing.breaker:`
/// `routing.breaker.server_threshold`
pub const DEFAULT_BREAKER_SERVER_THRESHOLD: u32 = 5;
/// `routing.breaker.connect_threshold`
pub const DEFAULT_BREAKER_CONNECT_THRESHOLD: u32 = 3;
/// `routing.breaker.timeout_threshold`
pub const DEFAULT_BREAKER_TIMEOUT_THRESHOLD: u32 = 3;
/// `routing.breaker.recovery_ms`
pub const DEFAULT_BREAKER_RECOVERY_MS: u64 = 5_000;
/// `routing.breaker.max_recovery_ms`
pub const DEFAULT_BREAKER_MAX_RECOVERY_MS: u64 = 60_000;
/// `routing.breaker.half_open_successes`
pub const DEFAULT_BREAKER_HALF_OPEN_SUCCESSES: u32 = 2;

// `routing.hedge:`
/// `routing.hedge.enabled`
pub const DEFAULT_HEDGE_ENABLED: bool = true;
/// `routing.hedge.quantile`
pub const DEFAULT_HEDGE_QUANTILE: f64 = 0.95;
/// `routing.hedge.min_delay_ms`
pub const DEFAULT_HEDGE_MIN_DELAY_MS: u64 = 50;
/// `routing.hedge.max_delay_ms`
pub const DEFAULT_HEDGE_MAX_DELAY_MS: u64 = 2_000;

// `routing.indexing:` (per chain: the same keys)
/// `routing.indexing.max_logs_range` (0 = no proactive split)
pub const DEFAULT_MAX_LOGS_RANGE: u64 = 0;
/// `routing.indexing.logs_concurrency`
pub const DEFAULT_LOGS_CONCURRENCY: usize = 4;
/// `routing.indexing.logs_max_requests`
pub const DEFAULT_LOGS_MAX_REQUESTS: usize = 256;
/// `routing.indexing.pin_latest`
pub const DEFAULT_PIN_LATEST: bool = false;
/// `routing.indexing.broadcast_sends`
pub const DEFAULT_BROADCAST_SENDS: bool = false;
/// `routing.indexing.highest_pending_nonce`
pub const DEFAULT_HIGHEST_PENDING_NONCE: bool = false;

// `websocket:`
/// `websocket.max_message_bytes`
pub const DEFAULT_WS_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// `websocket.max_in_flight`
pub const DEFAULT_WS_MAX_IN_FLIGHT: usize = 256;
/// `websocket.max_subscriptions`
pub const DEFAULT_WS_MAX_SUBSCRIPTIONS: usize = 1024;
/// `websocket.max_queued_bytes`
pub const DEFAULT_WS_MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// `websocket.max_total_queued_bytes` (the whole process; each worker gets an equal share)
pub const DEFAULT_WS_MAX_TOTAL_QUEUED_BYTES: usize = 512 * 1024 * 1024;
/// `websocket.ping_interval_ms`
pub const DEFAULT_WS_PING_INTERVAL_MS: u64 = 30_000;
/// `websocket.pong_timeout_ms`
pub const DEFAULT_WS_PONG_TIMEOUT_MS: u64 = 10_000;
/// `websocket.idle_timeout_ms`
pub const DEFAULT_WS_IDLE_TIMEOUT_MS: u64 = 300_000;
/// `websocket.session_lifetime_ms`: any session, subscribed or not, is closed (1001) after this long.
pub const DEFAULT_WS_SESSION_LIFETIME_MS: u64 = 86_400_000;
/// `websocket.unsubscribe_grace_ms`
pub const DEFAULT_WS_UNSUBSCRIBE_GRACE_MS: u64 = 30_000;
/// `websocket.backfill_limit_blocks`
pub const DEFAULT_WS_BACKFILL_LIMIT_BLOCKS: u64 = 128;
/// `websocket.backfill_chunk_blocks`
pub const DEFAULT_WS_BACKFILL_CHUNK_BLOCKS: u64 = 32;
/// `websocket.upstream_connect_timeout_ms`
pub const DEFAULT_WS_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 5_000;

// `telemetry.traces:` (tracing is off unless `endpoint` is set)
/// `telemetry.traces.sample_ratio`: share of requests without a client decision that are traced
pub const DEFAULT_TRACES_SAMPLE_RATIO: f64 = 0.01;
/// `telemetry.traces.service_name`
pub const DEFAULT_TRACES_SERVICE_NAME: &str = "lasso";
/// `telemetry.traces.queue_traces`: finished request traces waiting for the exporter (past it: dropped, counted)
pub const DEFAULT_TRACES_QUEUE_TRACES: usize = 4096;
/// `telemetry.traces.export_timeout_ms`: one export (connect, send, answer)
pub const DEFAULT_TRACES_EXPORT_TIMEOUT_MS: u64 = 5_000;
// Logs (stdout; not configurable)
/// Log lines waiting for stdout, in bytes; past it new lines are dropped and counted (a stalled stdout never
/// blocks a worker).
pub const LOG_QUEUE_MAX_BYTES: usize = 4 << 20;
// `dashboard:`
/// `dashboard.enabled`
pub const DEFAULT_DASHBOARD_ENABLED: bool = false;
/// `dashboard.session_ttl_ms`: lifetime of the dashboard's session cookie.
pub const DEFAULT_DASHBOARD_SESSION_TTL_MS: u64 = 3_600_000;
// `access:`
/// `access.require_key`: no profile needs a key unless configured (`true`, or a list of profiles).
pub const DEFAULT_ACCESS_REQUIRE_KEY: bool = false;
/// `access.*.burst_s`: a bucket holds this many seconds of its rate.
pub const DEFAULT_ACCESS_BURST_S: f64 = 1.0;
/// Clients (keys and addresses) whose buckets one worker keeps; past it, full buckets are forgotten first.
pub const ACCESS_MAX_TRACKED_CLIENTS: usize = 65_536;
/// Each core republishes its demand per rate-limited client and takes its new share of the budget this often.
pub const ACCESS_REBALANCE_MS: u64 = 1_000;
/// A core's share of a client's budget never falls below this fraction of an equal share.
pub const ACCESS_MIN_SHARE: f64 = 0.1;
/// Valid presented keys whose SHA-256 each core remembers (by a keyed tag, never the key), so a client's requests do
/// not hash its key again; past it the memo starts over.
pub const ACCESS_KNOWN_KEYS_PER_CORE: usize = 4096;
/// Distinct methods metered per key and chain on one core; calls of further methods are metered as `(other)`
/// (client-chosen names cannot grow the usage table without bound).
pub const ACCESS_USAGE_MAX_METHODS: usize = 256;
/// With `access.redis_url`: a worker reserves this fraction of a key's `requests_per_s` from Redis at a time.
pub const ACCESS_REDIS_BATCH_FRACTION: f64 = 0.1;
/// Compute-unit weights of the default table (`access.weights` overrides per method).
pub const ACCESS_WEIGHT_LIGHT: f64 = 1.0;
pub const ACCESS_WEIGHT_CALL_STATE: f64 = 1.5;
pub const ACCESS_WEIGHT_LOGS_FILTERS: f64 = 2.0;
pub const ACCESS_WEIGHT_DEBUG_TRACE: f64 = 5.0;
/// A worker folds its usage counts into the process totals at most this often.
pub const ACCESS_USAGE_FLUSH_MS: u64 = 1_000;
/// The usage file is appended this often (a restart loses at most this plus the flush interval).
pub const ACCESS_USAGE_PERSIST_MS: u64 = 2_000;
/// Shortest client key accepted in `access.keys[].key` (a guessable key is no key).
pub const ACCESS_MIN_KEY_BYTES: usize = 16;
// `cache:`
/// `cache.multiplex`: identical reads in flight on one worker share one upstream call.
pub const DEFAULT_CACHE_MULTIPLEX: bool = true;
/// `cache.enabled`: the response cache is opt-in (it answers without asking a provider).
pub const DEFAULT_CACHE_ENABLED: bool = false;
/// `cache.max_bytes`: cached answers and keys, whole process (each worker keeps an equal share).
pub const DEFAULT_CACHE_MAX_BYTES: usize = 256 * 1024 * 1024;
/// `cache.max_entry_bytes`: larger answers are not kept.
pub const DEFAULT_CACHE_MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// `cache.finalized_ttl_ms`: answers about finalized blocks.
pub const DEFAULT_CACHE_FINALIZED_TTL_MS: u64 = 86_400_000;
/// `cache.unfinalized_ttl_ms`: answers about blocks above the finalized head.
pub const DEFAULT_CACHE_UNFINALIZED_TTL_MS: u64 = 2_000;
/// `cache.cache_empty`: keep `null` / `[]` results.
pub const DEFAULT_CACHE_EMPTY: bool = false;
/// `cache.redis_timeout_ms`: a Redis read on the request path (connect included) gives up after this.
pub const DEFAULT_CACHE_REDIS_TIMEOUT_MS: u64 = 20;
/// `cache.redis_write_timeout_ms`: a background Redis write (connect included) gives up after this.
pub const DEFAULT_CACHE_REDIS_WRITE_TIMEOUT_MS: u64 = 250;
/// `cache.redis_max_connections`: Redis connections per worker (a command finding none free skips Redis).
pub const DEFAULT_CACHE_REDIS_MAX_CONNECTIONS: usize = 4;
/// `cache.redis_circuit_failures`: consecutive Redis failures on a worker that open its circuit.
pub const DEFAULT_CACHE_REDIS_CIRCUIT_FAILURES: u32 = 3;
/// `cache.redis_circuit_backoff_ms`: how long an open circuit skips Redis before trying again.
pub const DEFAULT_CACHE_REDIS_CIRCUIT_BACKOFF_MS: u64 = 1_000;
/// A chain's `finality_depth` when it sets none and its providers answer no `finalized` tag.
pub const DEFAULT_FINALITY_DEPTH: u64 = 64;

/// Every default above as `(dotted config key, value as written in YAML)`.
pub fn table() -> Vec<(&'static str, String)> {
    vec![
        ("access.require_key", DEFAULT_ACCESS_REQUIRE_KEY.to_string()),
        ("dashboard.enabled", DEFAULT_DASHBOARD_ENABLED.to_string()),
        (
            "dashboard.session_ttl_ms",
            DEFAULT_DASHBOARD_SESSION_TTL_MS.to_string(),
        ),
        ("server.port", DEFAULT_SERVER_PORT.to_string()),
        ("server.bind", DEFAULT_SERVER_BIND.to_string()),
        ("server.workers", DEFAULT_SERVER_WORKERS.to_string()),
        (
            "server.max_body_bytes",
            DEFAULT_SERVER_MAX_BODY_BYTES.to_string(),
        ),
        (
            "server.max_header_bytes",
            DEFAULT_SERVER_MAX_HEADER_BYTES.to_string(),
        ),
        (
            "server.max_batch_size",
            DEFAULT_SERVER_MAX_BATCH_SIZE.to_string(),
        ),
        (
            "server.header_timeout_ms",
            DEFAULT_SERVER_HEADER_TIMEOUT_MS.to_string(),
        ),
        (
            "server.body_timeout_ms",
            DEFAULT_SERVER_BODY_TIMEOUT_MS.to_string(),
        ),
        (
            "server.idle_timeout_ms",
            DEFAULT_SERVER_IDLE_TIMEOUT_MS.to_string(),
        ),
        (
            "server.soft_max_connections",
            DEFAULT_SERVER_SOFT_MAX_CONNECTIONS.to_string(),
        ),
        (
            "server.hard_max_connections",
            DEFAULT_SERVER_HARD_MAX_CONNECTIONS.to_string(),
        ),
        (
            "server.drain_timeout_ms",
            DEFAULT_SERVER_DRAIN_TIMEOUT_MS.to_string(),
        ),
        (
            "server.send_timeout_ms",
            DEFAULT_SERVER_SEND_TIMEOUT_MS.to_string(),
        ),
        (
            "server.max_connections_per_ip",
            DEFAULT_SERVER_MAX_CONNECTIONS_PER_IP.to_string(),
        ),
        (
            "server.event_stream_lifetime_ms",
            DEFAULT_SERVER_EVENT_STREAM_LIFETIME_MS.to_string(),
        ),
        (
            "server.event_stream_successes_per_s",
            DEFAULT_SERVER_EVENT_STREAM_SUCCESSES_PER_S.to_string(),
        ),
        (
            "server.cors_origins",
            DEFAULT_SERVER_CORS_ORIGINS.to_string(),
        ),
        (
            "server.auth_max_failures",
            DEFAULT_SERVER_AUTH_MAX_FAILURES.to_string(),
        ),
        (
            "server.auth_failure_window_ms",
            DEFAULT_SERVER_AUTH_FAILURE_WINDOW_MS.to_string(),
        ),
        (
            "upstream.connect_timeout_ms",
            DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS.to_string(),
        ),
        (
            "upstream.request_timeout_ms",
            DEFAULT_UPSTREAM_REQUEST_TIMEOUT_MS.to_string(),
        ),
        (
            "upstream.max_attempts",
            DEFAULT_UPSTREAM_MAX_ATTEMPTS.to_string(),
        ),
        (
            "upstream.max_response_bytes",
            DEFAULT_UPSTREAM_MAX_RESPONSE_BYTES.to_string(),
        ),
        (
            "upstream.max_buffered_response_bytes",
            DEFAULT_UPSTREAM_MAX_BUFFERED_RESPONSE_BYTES.to_string(),
        ),
        (
            "upstream.pool_max_idle_per_provider",
            DEFAULT_UPSTREAM_POOL_MAX_IDLE_PER_PROVIDER.to_string(),
        ),
        (
            "upstream.pool_idle_timeout_ms",
            DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS.to_string(),
        ),
        ("upstream.coalesce", DEFAULT_UPSTREAM_COALESCE.to_string()),
        (
            "upstream.max_coalesce",
            DEFAULT_UPSTREAM_MAX_COALESCE.to_string(),
        ),
        (
            "upstream.coalesce_retry_ms",
            DEFAULT_UPSTREAM_COALESCE_RETRY_MS.to_string(),
        ),
        (
            "routing.merge_interval_ms",
            DEFAULT_ROUTING_MERGE_INTERVAL_MS.to_string(),
        ),
        (
            "routing.window_intervals",
            DEFAULT_ROUTING_WINDOW_INTERVALS.to_string(),
        ),
        (
            "routing.fastest_quantile",
            DEFAULT_ROUTING_FASTEST_QUANTILE.to_string(),
        ),
        (
            "routing.min_samples",
            DEFAULT_ROUTING_MIN_SAMPLES.to_string(),
        ),
        (
            "routing.probe_share",
            DEFAULT_ROUTING_PROBE_SHARE.to_string(),
        ),
        (
            "routing.latency_weight_beta",
            DEFAULT_ROUTING_LATENCY_WEIGHT_BETA.to_string(),
        ),
        (
            "routing.max_lag_blocks",
            DEFAULT_ROUTING_MAX_LAG_BLOCKS.to_string(),
        ),
        (
            "routing.archive_threshold_blocks",
            DEFAULT_ROUTING_ARCHIVE_THRESHOLD_BLOCKS.to_string(),
        ),
        (
            "routing.snapshot_interval_ms",
            DEFAULT_ROUTING_SNAPSHOT_INTERVAL_MS.to_string(),
        ),
        (
            "routing.snapshot_retention",
            DEFAULT_ROUTING_SNAPSHOT_RETENTION.to_string(),
        ),
        (
            "routing.deadlines_ms.light",
            DEFAULT_DEADLINE_LIGHT_MS.to_string(),
        ),
        (
            "routing.deadlines_ms.call",
            DEFAULT_DEADLINE_CALL_MS.to_string(),
        ),
        (
            "routing.deadlines_ms.logs",
            DEFAULT_DEADLINE_LOGS_MS.to_string(),
        ),
        (
            "routing.deadlines_ms.block",
            DEFAULT_DEADLINE_BLOCK_MS.to_string(),
        ),
        (
            "routing.deadlines_ms.trace",
            DEFAULT_DEADLINE_TRACE_MS.to_string(),
        ),
        (
            "routing.deadlines_ms.write",
            DEFAULT_DEADLINE_WRITE_MS.to_string(),
        ),
        (
            "routing.deadlines_ms.other",
            DEFAULT_DEADLINE_OTHER_MS.to_string(),
        ),
        (
            "routing.breaker.server_threshold",
            DEFAULT_BREAKER_SERVER_THRESHOLD.to_string(),
        ),
        (
            "routing.breaker.connect_threshold",
            DEFAULT_BREAKER_CONNECT_THRESHOLD.to_string(),
        ),
        (
            "routing.breaker.timeout_threshold",
            DEFAULT_BREAKER_TIMEOUT_THRESHOLD.to_string(),
        ),
        (
            "routing.breaker.recovery_ms",
            DEFAULT_BREAKER_RECOVERY_MS.to_string(),
        ),
        (
            "routing.breaker.max_recovery_ms",
            DEFAULT_BREAKER_MAX_RECOVERY_MS.to_string(),
        ),
        (
            "routing.breaker.half_open_successes",
            DEFAULT_BREAKER_HALF_OPEN_SUCCESSES.to_string(),
        ),
        ("routing.hedge.enabled", DEFAULT_HEDGE_ENABLED.to_string()),
        ("routing.hedge.quantile", DEFAULT_HEDGE_QUANTILE.to_string()),
        (
            "routing.hedge.min_delay_ms",
            DEFAULT_HEDGE_MIN_DELAY_MS.to_string(),
        ),
        (
            "routing.hedge.max_delay_ms",
            DEFAULT_HEDGE_MAX_DELAY_MS.to_string(),
        ),
        (
            "routing.indexing.max_logs_range",
            DEFAULT_MAX_LOGS_RANGE.to_string(),
        ),
        (
            "routing.indexing.logs_concurrency",
            DEFAULT_LOGS_CONCURRENCY.to_string(),
        ),
        (
            "routing.indexing.logs_max_requests",
            DEFAULT_LOGS_MAX_REQUESTS.to_string(),
        ),
        (
            "routing.indexing.pin_latest",
            DEFAULT_PIN_LATEST.to_string(),
        ),
        (
            "routing.indexing.broadcast_sends",
            DEFAULT_BROADCAST_SENDS.to_string(),
        ),
        (
            "routing.indexing.highest_pending_nonce",
            DEFAULT_HIGHEST_PENDING_NONCE.to_string(),
        ),
        (
            "websocket.max_message_bytes",
            DEFAULT_WS_MAX_MESSAGE_BYTES.to_string(),
        ),
        (
            "websocket.max_in_flight",
            DEFAULT_WS_MAX_IN_FLIGHT.to_string(),
        ),
        (
            "websocket.max_subscriptions",
            DEFAULT_WS_MAX_SUBSCRIPTIONS.to_string(),
        ),
        (
            "websocket.max_queued_bytes",
            DEFAULT_WS_MAX_QUEUED_BYTES.to_string(),
        ),
        (
            "websocket.max_total_queued_bytes",
            DEFAULT_WS_MAX_TOTAL_QUEUED_BYTES.to_string(),
        ),
        (
            "websocket.ping_interval_ms",
            DEFAULT_WS_PING_INTERVAL_MS.to_string(),
        ),
        (
            "websocket.pong_timeout_ms",
            DEFAULT_WS_PONG_TIMEOUT_MS.to_string(),
        ),
        (
            "websocket.idle_timeout_ms",
            DEFAULT_WS_IDLE_TIMEOUT_MS.to_string(),
        ),
        (
            "websocket.session_lifetime_ms",
            DEFAULT_WS_SESSION_LIFETIME_MS.to_string(),
        ),
        (
            "websocket.unsubscribe_grace_ms",
            DEFAULT_WS_UNSUBSCRIBE_GRACE_MS.to_string(),
        ),
        (
            "websocket.backfill_limit_blocks",
            DEFAULT_WS_BACKFILL_LIMIT_BLOCKS.to_string(),
        ),
        (
            "websocket.backfill_chunk_blocks",
            DEFAULT_WS_BACKFILL_CHUNK_BLOCKS.to_string(),
        ),
        (
            "websocket.upstream_connect_timeout_ms",
            DEFAULT_WS_UPSTREAM_CONNECT_TIMEOUT_MS.to_string(),
        ),
        (
            "telemetry.traces.sample_ratio",
            DEFAULT_TRACES_SAMPLE_RATIO.to_string(),
        ),
        (
            "telemetry.traces.service_name",
            DEFAULT_TRACES_SERVICE_NAME.to_string(),
        ),
        (
            "telemetry.traces.queue_traces",
            DEFAULT_TRACES_QUEUE_TRACES.to_string(),
        ),
        (
            "telemetry.traces.export_timeout_ms",
            DEFAULT_TRACES_EXPORT_TIMEOUT_MS.to_string(),
        ),
        ("cache.multiplex", DEFAULT_CACHE_MULTIPLEX.to_string()),
        ("cache.enabled", DEFAULT_CACHE_ENABLED.to_string()),
        ("cache.max_bytes", DEFAULT_CACHE_MAX_BYTES.to_string()),
        (
            "cache.max_entry_bytes",
            DEFAULT_CACHE_MAX_ENTRY_BYTES.to_string(),
        ),
        (
            "cache.finalized_ttl_ms",
            DEFAULT_CACHE_FINALIZED_TTL_MS.to_string(),
        ),
        (
            "cache.unfinalized_ttl_ms",
            DEFAULT_CACHE_UNFINALIZED_TTL_MS.to_string(),
        ),
        ("cache.cache_empty", DEFAULT_CACHE_EMPTY.to_string()),
        (
            "cache.redis_timeout_ms",
            DEFAULT_CACHE_REDIS_TIMEOUT_MS.to_string(),
        ),
        (
            "cache.redis_write_timeout_ms",
            DEFAULT_CACHE_REDIS_WRITE_TIMEOUT_MS.to_string(),
        ),
        (
            "cache.redis_max_connections",
            DEFAULT_CACHE_REDIS_MAX_CONNECTIONS.to_string(),
        ),
        (
            "cache.redis_circuit_failures",
            DEFAULT_CACHE_REDIS_CIRCUIT_FAILURES.to_string(),
        ),
        (
            "cache.redis_circuit_backoff_ms",
            DEFAULT_CACHE_REDIS_CIRCUIT_BACKOFF_MS.to_string(),
        ),
    ]
}
