# Sourced by per_request_cost.sh and native_pair.sh: the one-worker Lasso config both measure with.
#
#   bench_lasso_config LASSO_PORT MOCK_PORT [EXTRA_SERVER_KEYS]
#
# Prints a config with one worker on LASSO_PORT, upstream batching off, and chain `bench` with providers mock0..
# ($PROVIDERS, default 1) all on the mock at MOCK_PORT, ranked by priority, routed by $STRATEGY (default priority).
# EXTRA_SERVER_KEYS are more `server:` keys in flow style (e.g. "event_stream_successes_per_s: 0").
bench_lasso_config() {
  local port=$1 mock=$2 extra=${3:-}
  cat <<YML
server: { bind: "127.0.0.1", port: $port, workers: 1, soft_max_connections: 30000, hard_max_connections: 40000, idle_timeout_ms: 300000${extra:+, $extra} }
upstream: { request_timeout_ms: 2000, connect_timeout_ms: 1000, max_attempts: 3, pool_max_idle_per_provider: 1024, coalesce: false }
chains:
  bench:
    chain_id: 1
    block_time_ms: 1000
    default_strategy: ${STRATEGY:-priority}
    providers:
YML
  for i in $(seq 0 $(( ${PROVIDERS:-1} - 1 ))); do
    echo "      - { id: mock$i, url: \"http://127.0.0.1:$mock/\", ws_url: \"ws://127.0.0.1:$mock/\", priority: $((i + 1)) }"
  done
}
