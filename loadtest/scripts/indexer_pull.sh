#!/usr/bin/env bash
# A replayed indexer pull (issue 12's figure): every block with its transactions, every receipt, and eth_getLogs in
# chunks, over a few thousand blocks, with N requests in flight (loadtest/src/indexer.rs `lasso-indexer-pull`, or viem:
# tests/clients/viem_indexer.mjs `pull`):
#   (a) straight to the node (anvil),
#   (b) through Lasso, cold: a fresh process, cache empty (`cache.enabled: true`),
#   (c) through Lasso, warm: the same pull again.
# Per round and mode: wall time, requests, req/s, and (b)/(c) the provider calls Lasso made (`/api/status`
# per-provider `requests`: client-driven upstream calls, not health probes or finality polls), and the CPU time Lasso,
# anvil and the client used during the pull (/proc/PID/stat). Every pull must read
# the same blocks, transactions, receipts and logs, or the script exits 3.
#
# The node: anvil (tests/clients/node_modules, `bash .ci/clients.sh`) with `--no-mining --slots-in-an-epoch 1`,
# BLOCKS+16 blocks built by `viem_indexer.mjs build` (block 1 deploys the Tick contract, then 1 to 3 tick() calls per
# block, one log each, fixed timestamps). Lasso: one worker, `finality_depth: 8`, the pull covers blocks 1..BLOCKS,
# all finalized before the pull starts. Lasso runs on CPU $LASSO_CPU; anvil and the client on CPU $REST_CPU.
#
# Usage:  bash loadtest/scripts/indexer_pull.sh path/to/lasso          (a release build, e.g. target/release/lasso)
# Env:    BLOCKS=3000 CONCURRENCY=16 LOG_CHUNK=100 ROUNDS=3
#         CLIENT=rust       lasso-indexer-pull (PULLER=path, default: beside the lasso binary, else
#                           target/release; `cargo build --release -p loadtest`), a client light enough not to be the
#                           bottleneck; `viem`: a real indexer's client library (tests/clients/viem_indexer.mjs);
#                           `fetch`: the same script with plain fetch. The node scripts are single-threaded and share
#                           their CPU with anvil: client_cpu shows how client-bound a pull is.
#         LASSO_CPU=0 REST_CPU=1 ANVIL_PORT=free LASSO_PORT=free
#         RESULTS_DIR=dir   config, logs and the raw summaries (default loadtest/results/indexer-pull-<UTC time>)
# Needs node >= 20, jq, taskset. Everything listens on 127.0.0.1; every process it starts is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 path/to/lasso" >&2; exit 2; }
BIN="$(realpath "$1")"
BLOCKS="${BLOCKS:-3000}"
CONCURRENCY="${CONCURRENCY:-16}"
LOG_CHUNK="${LOG_CHUNK:-100}"
ROUNDS="${ROUNDS:-3}"
CLIENT="${CLIENT:-rust}"
PULLER="${PULLER:-$(dirname "$BIN")/lasso-indexer-pull}"
[ -x "$PULLER" ] || PULLER="$ROOT/target/release/lasso-indexer-pull"
LASSO_CPU="${LASSO_CPU:-0}"
REST_CPU="${REST_CPU:-1}"
free_port() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
ANVIL_PORT="${ANVIL_PORT:-$(free_port)}"
LASSO_PORT="${LASSO_PORT:-$(free_port)}"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/loadtest/results/indexer-pull-$(date -u +%Y%m%dT%H%M%SZ)}"
CLIENTS="$ROOT/tests/clients"
ANVIL="$CLIENTS/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
FINALITY_DEPTH=8

log() { printf '[indexer-pull] %s\n' "$*" >&2; }
die() { printf '[indexer-pull] error: %s\n' "$*" >&2; exit 1; }

[ -x "$BIN" ] || die "no lasso binary at $BIN"
[ -x "$ANVIL" ] || die "no anvil at $ANVIL (run: bash .ci/clients.sh)"
[ -d "$CLIENTS/node_modules/viem" ] || die "no viem in $CLIENTS/node_modules (run: bash .ci/clients.sh)"
case "$CLIENT" in
  rust) [ -x "$PULLER" ] || die "no lasso-indexer-pull (cargo build --release -p loadtest, or set PULLER, or CLIENT=viem)" ;;
  viem|fetch) ;;
  *) die "CLIENT must be rust, viem or fetch" ;;
esac
for t in node jq taskset curl; do command -v "$t" >/dev/null || die "$t not found"; done
mkdir -p "$RESULTS_DIR"

PIDS=()
LASSO_PID=""
cleanup() {
  for p in "${PIDS[@]}" $LASSO_PID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

waitport() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
rpc() { curl -sf -H 'Content-Type: application/json' -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$2\",\"params\":$3}" "$1"; }
# The summary line (one JSON object) of `node viem_indexer.mjs <mode>` with the given environment, on CPU $REST_CPU.
indexer() {
  local mode=$1; shift
  (cd "$CLIENTS" && env "$@" taskset -c "$REST_CPU" node viem_indexer.mjs "$mode") > "$RESULTS_DIR/last-$mode.out" ||
    die "viem_indexer.mjs $mode failed: $(grep FAIL "$RESULTS_DIR/last-$mode.out" || tail -3 "$RESULTS_DIR/last-$mode.out")"
  grep -m1 '^{' "$RESULTS_DIR/last-$mode.out"
}

# ---------------------------------------------------------------------------------------------------------------------
# the node and its chain
# ---------------------------------------------------------------------------------------------------------------------
NODE="http://127.0.0.1:$ANVIL_PORT"
taskset -c "$REST_CPU" "$ANVIL" --host 127.0.0.1 --port "$ANVIL_PORT" --no-mining --slots-in-an-epoch 1 \
  --timestamp 1700000000 > "$RESULTS_DIR/anvil.log" 2>&1 &
PIDS+=($!)
waitport "$ANVIL_PORT" && kill -0 "${PIDS[0]}" || die "anvil did not listen on $ANVIL_PORT (see $RESULTS_DIR/anvil.log)"
log "building $((BLOCKS + 16)) blocks on anvil"
t0=$(date +%s%N)
BUILT=$(indexer build LASSO_NODES="$NODE" LASSO_BLOCKS=$((BLOCKS + 16)))
log "built in $(( ($(date +%s%N) - t0) / 1000000 )) ms: $BUILT"

# ---------------------------------------------------------------------------------------------------------------------
# Lasso
# ---------------------------------------------------------------------------------------------------------------------
cat > "$RESULTS_DIR/lasso.yml" <<YML
server: { bind: "127.0.0.1", port: $LASSO_PORT, workers: 1 }
cache:
  enabled: true
chains:
  anvil:
    chain_id: 31337
    head_poll_ms: 100
    finality_depth: $FINALITY_DEPTH
    providers:
      - { id: anvil, url: "$NODE" }
YML
LASSO="http://127.0.0.1:$LASSO_PORT"

start_lasso() {
  taskset -c "$LASSO_CPU" "$BIN" --config "$RESULTS_DIR/lasso.yml" >> "$RESULTS_DIR/lasso.log" 2>&1 &
  LASSO_PID=$!
  waitport "$LASSO_PORT" && kill -0 "$LASSO_PID" || die "lasso did not listen on $LASSO_PORT (see $RESULTS_DIR/lasso.log)"
  for _ in $(seq 1 200); do
    f=$(curl -sf "$LASSO/api/status" | jq '.chains[0].finalized // 0')
    [ "$f" -ge "$BLOCKS" ] && return 0
    sleep 0.1
  done
  die "lasso reported no finalized head >= $BLOCKS"
}
stop_lasso() { kill "$LASSO_PID"; wait "$LASSO_PID" 2>/dev/null || true; LASSO_PID=""; }
provider_calls() { curl -sf "$LASSO/api/status" | jq '[.chains[0].providers[].requests] | add'; }

PULL_ENV=(LASSO_FROM=1 LASSO_TO="$BLOCKS" LASSO_CONCURRENCY="$CONCURRENCY" LASSO_LOG_CHUNK="$LOG_CHUNK" LASSO_CLIENT="$CLIENT")
# CPU time (user + system, ms) a process has used so far.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }
ROWS="$RESULTS_DIR/rows.tsv"
: > "$ROWS"
# One pull against $1, labelled $2; with a Lasso running, its provider calls during the pull.
pull() {
  local url=$1 label=$2 before="" calls="-" lasso_cpu="-" lasso0="" anvil0 out
  if [ -n "$LASSO_PID" ]; then before=$(provider_calls); lasso0=$(cpu_ms "$LASSO_PID"); fi
  anvil0=$(cpu_ms "${PIDS[0]}")
  if [ "$CLIENT" = rust ]; then
    taskset -c "$REST_CPU" "$PULLER" --url "$url" --from 1 --to "$BLOCKS" --concurrency "$CONCURRENCY" \
      --log-chunk "$LOG_CHUNK" > "$RESULTS_DIR/last-pull.out" || die "lasso-indexer-pull: $(cat "$RESULTS_DIR/last-pull.out")"
    out=$(grep -m1 '^{' "$RESULTS_DIR/last-pull.out")
  else
    out=$(indexer pull LASSO_HTTP_URL="$url" "${PULL_ENV[@]}")
  fi
  if [ -n "$before" ]; then calls=$(( $(provider_calls) - before )); lasso_cpu=$(( $(cpu_ms "$LASSO_PID") - lasso0 )); fi
  local anvil_cpu=$(( $(cpu_ms "${PIDS[0]}") - anvil0 ))
  echo "$out" >> "$RESULTS_DIR/summaries.jsonl"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$label" \
    "$(jq -r .ms <<<"$out")" "$(jq -r .requests <<<"$out")" "$(jq -r .rps <<<"$out")" "$calls" \
    "$lasso_cpu" "$anvil_cpu" "$(jq -r .client_cpu_ms <<<"$out")" \
    "$(jq -c '{blocks,txs,receipts,logs}' <<<"$out")" >> "$ROWS"
  log "round $round $label: $out provider_calls=$calls lasso_cpu_ms=$lasso_cpu anvil_cpu_ms=$anvil_cpu"
}

for round in $(seq 1 "$ROUNDS"); do
  pull "$NODE/" "a-direct"
  start_lasso
  pull "$LASSO/rpc/anvil" "b-lasso-cold"
  pull "$LASSO/rpc/anvil" "c-lasso-warm"
  stop_lasso
done

# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
echo
echo "indexer pull: blocks 1..$BLOCKS, $CONCURRENCY in flight, getLogs chunks of $LOG_CHUNK, client $CLIENT;" \
  "lasso $BIN (1 worker, CPU $LASSO_CPU); anvil + client on CPU $REST_CPU"
FMT='%-6s %-13s %8s %9s %7s %15s %10s %10s %11s  %s\n'
# shellcheck disable=SC2059
printf "$FMT" round mode wall_ms requests req/s provider_calls lasso_cpu anvil_cpu client_cpu read
while IFS=$'\t' read -r r label ms req rps calls lcpu acpu ccpu read; do
  # shellcheck disable=SC2059
  printf "$FMT" "$r" "$label" "$ms" "$req" "$rps" "$calls" "$lcpu" "$acpu" "$ccpu" "$read"
done < "$ROWS"
echo "(cpu columns: ms of user + system time during the pull; provider_calls and lasso_cpu only through Lasso)"
echo "raw: $RESULTS_DIR"
if [ "$(cut -f10 "$ROWS" | sort -u | wc -l)" -ne 1 ]; then
  log "pulls read different data (see the last column)"
  exit 3
fi
