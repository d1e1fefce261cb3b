#!/bin/bash
# Per-request cost of one Lasso binary, by counts rather than by time (the machine may be shared and noisy):
#   1. user-space instructions per request of the worker thread (callgrind, Ir / requests),
#   2. the worker thread's CPU time (user, system), wake-ups (voluntary context switches) and syscalls (strace -c)
#      per request, natively,
#   3. a cpu-clock profile of the worker thread (perf record), top symbols and user/kernel split.
# One worker pinned to CPU 0, `lasso-mockprovider` and `lasso-loadgen` (closed loop, the `reads` mix, coalescing off)
# on CPU 1. Needs valgrind, strace, perf and the release binaries of `-p loadtest`.
#
#   loadtest/scripts/per_request_cost.sh LABEL path/to/lasso [callgrind requests, default 1500] [native requests, 20000]
#
# Writes $OUT_DIR/LABEL/ (default /tmp/lasso-cost) with summary.txt. Ports: $MOCK_PORT (47545), $LASSO_PORT (47645).
# Variants (compare two labels of the same binary, e.g. a feature on and off):
#   EXTRA_YML=file   YAML appended to the generated config (top-level sections such as access:, telemetry:)
#   URL_QUERY=text   appended to the load's URL (e.g. "?key=..." for a keyed profile)
#   RPC_PATH=path    the load's route (default /rpc/bench; e.g. /rpc/provider/mock1/bench pins one provider)
#   PROVIDERS=n      providers mock0.. of chain `bench`, all on the one mock (default 1); STRATEGY (default priority)
#   SERVER_YML=text  extra `server:` keys, flow style (e.g. "event_stream_successes_per_s: 0")
#   SIDE_CMD=cmd     started in the background before each measurement and stopped after it (e.g. a client of
#                    the event stream: curl -sN http://127.0.0.1:$LASSO_PORT/api/events/default); runs on CPU 1
set -u
LABEL=$1; BIN=$(realpath "$2"); NCG=${3:-1500}; NNAT=${4:-20000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=${LOADTEST_BIN_DIR:-$ROOT/target/release}
MOCK_PORT=${MOCK_PORT:-47545}; LASSO_PORT=${LASSO_PORT:-47645}
OUT=${OUT_DIR:-/tmp/lasso-cost}/$LABEL; rm -rf "$OUT"; mkdir -p "$OUT"
PIDS=""; SIDE=""
cleanup() { side_stop; for p in $PIDS; do kill "$p" 2>/dev/null; done; sleep 0.5; for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT
waitport() { for _ in $(seq 1 600); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }
. "$(dirname "$0")/bench_config.sh"
bench_lasso_config "$LASSO_PORT" "$MOCK_PORT" "${SERVER_YML:-}" > "$OUT/lasso.yml"
[ -n "${EXTRA_YML:-}" ] && cat "$EXTRA_YML" >> "$OUT/lasso.yml"
taskset -c 1 "$T/lasso-mockprovider" --port "$MOCK_PORT" --workers 1 --cpus 1 --block-time-ms 1000 --exit-after 1800 > "$OUT/mock.log" 2>&1 &
MP=$!; PIDS="$PIDS $MP"
waitport "$MOCK_PORT" && sleep 0.3 && kill -0 $MP || { echo "mock provider did not start (port $MOCK_PORT)"; exit 1; }
LG="taskset -c 1 $T/lasso-loadgen --url http://127.0.0.1:$LASSO_PORT${RPC_PATH:-/rpc/bench}${URL_QUERY:-} --head-url http://127.0.0.1:$MOCK_PORT/ --mix reads --cpus 1 --duration 1800 --quiet"
side_start() { [ -n "${SIDE_CMD:-}" ] || return 0; LASSO_PORT=$LASSO_PORT taskset -c 1 bash -c "$SIDE_CMD" > /dev/null 2>&1 & SIDE=$!; PIDS="$PIDS $SIDE"; }
side_stop() { [ -n "$SIDE" ] && { pkill -P "$SIDE" 2>/dev/null; kill "$SIDE" 2>/dev/null; wait "$SIDE" 2>/dev/null; SIDE=""; }; return 0; }
worker_tid() { for t in /proc/"$1"/task/*; do [ "$(cat "$t/comm")" = lasso-worker-0 ] && basename "$t"; done; }

# 1. callgrind: 8 connections (under valgrind a request takes milliseconds; more would time out upstream)
taskset -c 0 valgrind --tool=callgrind --separate-threads=yes --dump-instr=no --callgrind-out-file="$OUT/cg.out" \
  "$BIN" --config "$OUT/lasso.yml" > "$OUT/lasso-callgrind.log" 2>&1 &
VP=$!; PIDS="$PIDS $VP"
waitport "$LASSO_PORT" && kill -0 $VP || { echo "lasso did not start under valgrind (port $LASSO_PORT)"; exit 1; }
side_start
$LG --concurrency 8 --max-requests 500 > /dev/null 2>&1
callgrind_control -z $VP > /dev/null 2>&1
$LG --concurrency 8 --max-requests "$NCG" > "$OUT/loadgen-callgrind.txt" 2>&1
callgrind_control -d $VP > /dev/null 2>&1
side_stop
sleep 1; kill -9 $VP; wait $VP 2>/dev/null
for F in "$OUT"/cg.out.1-*; do
  IR=$(awk '/^summary:|^totals:/ {print $2; exit}' "$F"); IR=${IR:-0}
  [ "$IR" -gt 0 ] || continue
  WHO=$(callgrind_annotate --inclusive=yes "$F" 2>/dev/null | grep -m1 -o "edge/conn.rs\|app/monitor.rs" | sed 's|edge/conn.rs|worker|; s|app/monitor.rs|monitor|')
  # Requests the worker parsed between zeroing and dumping (the zeroing may land before the warm-up load ends).
  SEEN=$(callgrind_annotate --inclusive=yes --tree=calling "$F" 2>/dev/null | grep -E "=> .*wire::jsonrpc::parse_request " | grep -o "([0-9,]*x)" | tr -d '(),x' | paste -sd+ | bc)
  SEEN=${SEEN:-0}
  PER=""; [ "$SEEN" -gt 0 ] && PER=" Ir/parsed-request=$((IR / SEEN)) ($SEEN parsed)"
  echo "$LABEL callgrind ${WHO:-thread ${F##*-}}: Ir=$IR Ir/request=$((IR / NCG)) over $NCG requests$PER" | tee -a "$OUT/summary.txt"
done
grep -h "requests" "$OUT/loadgen-callgrind.txt" | head -1 | tee -a "$OUT/summary.txt"

# 2. native: CPU time, wake-ups and syscalls of the worker thread, 64 connections
taskset -c 0 "$BIN" --config "$OUT/lasso.yml" > "$OUT/lasso.log" 2>&1 &
LP=$!; PIDS="$PIDS $LP"
waitport "$LASSO_PORT" && sleep 0.5 && kill -0 $LP || { echo "lasso did not start"; exit 1; }
side_start
$LG --concurrency 64 --max-requests 3000 > /dev/null 2>&1
WT=$(worker_tid $LP)
st() { awk '{print $14, $15}' /proc/$LP/task/"$WT"/stat; }
cs() { awk '/voluntary_ctxt_switches/ {printf "%s ", $2}' /proc/$LP/task/"$WT"/status; }
read -r U0 S0 < <(st); read -r V0 NV0 < <(cs)
$LG --concurrency 64 --max-requests "$NNAT" > "$OUT/loadgen-native.txt" 2>&1
read -r U1 S1 < <(st); read -r V1 NV1 < <(cs)
TCK=$(getconf CLK_TCK)
echo "$LABEL native worker over $NNAT requests: user_us/request=$(echo "scale=2; ($U1-$U0)*1000000/$TCK/$NNAT" | bc)" \
  "sys_us/request=$(echo "scale=2; ($S1-$S0)*1000000/$TCK/$NNAT" | bc)" \
  "wake-ups(voluntary ctxsw)/request=$(echo "scale=3; ($V1-$V0)/$NNAT" | bc) involuntary/request=$(echo "scale=3; ($NV1-$NV0)/$NNAT" | bc)" \
  | tee -a "$OUT/summary.txt"
strace -c -p "$WT" -o "$OUT/strace.txt" 2>/dev/null &
SP=$!; sleep 0.5
$LG --concurrency 64 --max-requests 5000 > /dev/null 2>&1
kill -INT $SP; wait $SP 2>/dev/null
TOT=$(awk '$NF=="total" {print $4}' "$OUT/strace.txt")
echo "$LABEL strace worker over 5000 requests: syscalls/request=$(echo "scale=3; $TOT/5000" | bc)" \
  "($(awk '$NF!="total" && $NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%s=%s ", $NF, $4}' "$OUT/strace.txt"))" | tee -a "$OUT/summary.txt"

# 3. where the worker's time goes
perf record -e cpu-clock -F 2000 -g -t "$WT" -o "$OUT/perf.data" > /dev/null 2>&1 &
PP=$!; sleep 0.3
$LG --concurrency 64 --max-requests "$NNAT" > /dev/null 2>&1
kill -INT $PP; wait $PP 2>/dev/null
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9.]+%" | head -4 | tee -a "$OUT/summary.txt"
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -E "^ +[0-9.]+%" | head -25 > "$OUT/perf-top.txt"
echo "summary: $OUT/summary.txt (callgrind dumps, strace, perf.data and perf-top.txt beside it)"
