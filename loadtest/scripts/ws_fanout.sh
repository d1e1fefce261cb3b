#!/usr/bin/env bash
# WebSocket fan-out figures (issue acceptance 5): messages/s when one upstream newHeads subscription fans out to N
# clients, per-client loss and order, delivery delay, and RSS per idle WebSocket client. Loopback only.
#
#   loadtest/scripts/ws_fanout.sh [N ...]          (default: 1000 10000)
#
# Setup, per driver and per N (a fresh Lasso each time, so allocator state from one run never colours the next):
#   * target/release/lasso-mockprovider --block-time-ms 100 --workers 1, pinned to CLIENT_CPU: newHeads every 100 ms on
#     its WebSocket (same port as HTTP);
#   * target/release/lasso --workers 1, pinned with taskset to LASSO_CPU, chain `mocknet` -> the mock (url + ws_url);
#   * RSS_0 = Lasso's VmRSS with no client; then N idle WebSocket clients (handshake only, no subscription), held 3 s,
#     RSS_N read at the end of the hold: (RSS_N - RSS_0) / N = bytes per idle client;
#   * then N clients each `eth_subscribe ["newHeads"]`; after a 1 s warm-up the client program counts for WINDOW_S
#     seconds (+2 s grace for heads still in flight): messages/s delivered across clients, heads in the window, clients
#     that missed a head or saw one out of order / twice (every client must get every head, in order, once), and the
#     delay of each delivery against a reference subscriber connected straight to the mock (same process, same clock),
#     plus the per-head fan-out spread (last client minus first client). Lasso's CPU% (of one core) over the window and
#     its RSS with N subscribed clients are sampled from /proc.
#   The client program is loadtest/scripts/ws_fanout_client (Rust, one tokio thread), pinned to CLIENT_CPU.
#
# Environment (defaults): WINDOW_S=10 BLOCK_TIME_MS=100 LASSO_CPU=0 CLIENT_CPU=1 DRIVERS="io_uring legacy"
#   (legacy = LASSO_DRIVER=legacy, Lasso's epoll fallback) SKIP_BUILD=0 WANT_NOFILE=65536
#   WAIT_QUIET_S=0 (> 0: before each run wait up to that long for the machine to be idle — for shared machines)
#   OUT=loadtest/results/ws_fanout-<timestamp>.txt (the report is printed and also written there; the logs of every
#   process go to ${OUT%.txt}-logs/)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

if [ "$#" -gt 0 ]; then NS=("$@"); else NS=(1000 10000); fi
WINDOW_S=${WINDOW_S:-10}
BLOCK_TIME_MS=${BLOCK_TIME_MS:-100}
LASSO_CPU=${LASSO_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DRIVERS=${DRIVERS:-io_uring legacy}
WANT_NOFILE=${WANT_NOFILE:-65536}
WAIT_QUIET_S=${WAIT_QUIET_S:-0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/loadtest/results/ws_fanout-$STAMP.txt}
LOGS=${OUT%.txt}-logs

LASSO=$ROOT/target/release/lasso
MOCK=$ROOT/target/release/lasso-mockprovider
CLIENT_TARGET=$ROOT/target/ws_fanout_client
CLIENT=$CLIENT_TARGET/release/ws-fanout-client

log() { printf '[ws_fanout] %s\n' "$*" >&2; }
die() {
  printf '[ws_fanout] error: %s\n' "$*" >&2
  exit 1
}

for n in "${NS[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$n'"
done
command -v taskset >/dev/null || die "taskset not found (util-linux)"
ncpu=$(nproc)
if [ "$LASSO_CPU" -ge "$ncpu" ] || [ "$CLIENT_CPU" -ge "$ncpu" ]; then
  die "LASSO_CPU/CLIENT_CPU must be < nproc ($ncpu)"
fi

# ---- build -------------------------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release -p lasso -p loadtest"
  cargo build --release -p lasso -p loadtest >&2
  log "building the client: loadtest/scripts/ws_fanout_client"
  cargo build --release --manifest-path "$ROOT/loadtest/scripts/ws_fanout_client/Cargo.toml" \
    --target-dir "$CLIENT_TARGET" >&2
fi
for b in "$LASSO" "$MOCK" "$CLIENT"; do [ -x "$b" ] || die "$b is missing (run without SKIP_BUILD=1)"; done

# ---- file descriptors --------------------------------------------------------------------------------------------
# Both ends live on this machine: Lasso holds N client sockets (+ a few), the client process N (+1 reference).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge "$WANT_NOFILE" ]; then
  ulimit -n "$WANT_NOFILE"
elif ulimit -Hn "$WANT_NOFILE" 2>/dev/null; then
  ulimit -n "$WANT_NOFILE"
else
  log "cannot raise the hard RLIMIT_NOFILE from $hard to $WANT_NOFILE (no CAP_SYS_RESOURCE here); using $hard"
  ulimit -n "$hard"
fi
NOFILE=$(ulimit -n)
log "open files limit per process: $NOFILE"

# ---- bookkeeping, cleanup ----------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ws_fanout.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  sleep 0.2
  for p in "${PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -d "$WORK" ]; then
    mkdir -p "$LOGS"
    cp "$WORK"/*.log "$LOGS"/ 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $2 s for `address=IP:PORT` in file $1 (pid $3 must stay alive); prints IP:PORT.
wait_address() {
  local file=$1 limit=$2 pid=$3 i addr
  for ((i = 0; i < limit * 10; i++)); do
    addr=$(grep -m1 -o 'address=[^ ]*' "$file" 2>/dev/null | cut -d= -f2 || true)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || {
      cat "$file" >&2
      die "process $pid exited before listening"
    }
    sleep 0.1
  done
  cat "$file" >&2
  die "no 'address=' line in $file within $limit s"
}

# Shared machines: with WAIT_QUIET_S > 0, waits (up to that many seconds) until all CPUs together have been < 10%
# busy for 5 consecutive seconds before each run, so that other people's jobs do not skew the figures.
wait_quiet() {
  local limit=$1 start ok=0 b1 t1 b2 t2
  [ "$limit" -gt 0 ] || return 0
  start=$SECONDS
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    read -r b1 t1 < <(awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat)
    sleep 1
    read -r b2 t2 < <(awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat)
    if [ $(((b2 - b1) * 100 / (t2 - t1 + 1))) -lt 10 ]; then ok=$((ok + 1)); else ok=0; fi
    if [ "$ok" -ge 5 ]; then
      log "machine quiet after $((SECONDS - start)) s"
      return 0
    fi
  done
  log "machine not quiet within $limit s; measuring anyway"
  NOTES+=("the machine was busy with other work when a run started (see CPU busy)")
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# key=value from the RESULT line of file $1.
field() { sed -n 's/^RESULT //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1; }

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# ---- the mock provider (one for all runs) ------------------------------------------------------------------------
taskset -c "$CLIENT_CPU" "$MOCK" --port 0 --block-time-ms "$BLOCK_TIME_MS" --workers 1 --chain-id 1 \
  --exit-after 7200 >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=$(wait_address "$WORK/mock.log" 10 "$MOCK_PID")
log "mock provider on $MOCK_ADDR (block time $BLOCK_TIME_MS ms), pid $MOCK_PID, CPU $CLIENT_CPU"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=()
NOTES=()
for driver in $DRIVERS; do
  for n in "${NS[@]}"; do
    need=$((n + 200))
    if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt "$need" ]; then
      NOTES+=("N=$n ($driver) skipped: needs ~$need descriptors per process (N sockets + runtime), RLIMIT_NOFILE is $NOFILE (hard limit $hard, not raisable here)")
      continue
    fi
    limit=$((n + 1000))
    [ "$limit" -lt 1000 ] && limit=1000
    cfg=$WORK/chains-$n.yml
    cat >"$cfg" <<EOF
server:
  soft_max_connections: $limit
  hard_max_connections: $limit
  max_connections_per_ip: 0  # every client connects from 127.0.0.1
chains:
  mocknet:
    chain_id: 1
    block_time_ms: $BLOCK_TIME_MS
    providers:
      - id: mock
        url: http://$MOCK_ADDR
        ws_url: ws://$MOCK_ADDR
EOF
    wait_quiet "$WAIT_QUIET_S"
    llog=$WORK/lasso-$driver-$n.log
    if [ "$driver" = legacy ]; then drv_env=(LASSO_DRIVER=legacy); else drv_env=(LASSO_DRIVER=); fi
    env "${drv_env[@]}" NO_COLOR=1 RUST_LOG=warn,lasso::runtime=info taskset -c "$LASSO_CPU" \
      "$LASSO" --config "$cfg" --port 0 --bind 127.0.0.1 --workers 1 >"$llog" 2>&1 &
    LPID=$!
    PIDS+=("$LPID")
    LADDR=$(wait_address "$llog" 20 "$LPID")
    io=$(grep -m1 -o 'io driver: [a-z_ ]*' "$llog" | sed 's/io driver: //; s/ *$//' || echo "?")
    URL="ws://$LADDR/ws/rpc/mocknet"
    log "[$driver] N=$n: lasso pid $LPID on $LADDR (io driver: $io), CPU $LASSO_CPU"
    sleep 2
    rss0=$(rss_kb "$LPID")

    ilog=$WORK/idle-$driver-$n.log
    taskset -c "$CLIENT_CPU" "$CLIENT" --mode idle --url "$URL" --clients "$n" --seconds 3 \
      --watch-pid "$LPID" >"$ilog" 2>&1 || log "idle client exited non-zero (see below)"
    sed 's/^/    idle: /' "$ilog" >&2
    rss_idle=$(field "$ilog" watched_rss_kb)
    idle_ok=$(field "$ilog" connected)
    if [[ $rss_idle =~ ^[0-9]+$ ]] && [ "${idle_ok:-0}" -gt 0 ]; then
      per_idle=$(((rss_idle - rss0) * 1024 / idle_ok))
    else
      per_idle=NA
    fi
    sleep 2

    flog=$WORK/fanout-$driver-$n.log
    taskset -c "$CLIENT_CPU" "$CLIENT" --mode fanout --url "$URL" --reference "ws://$MOCK_ADDR/" --clients "$n" \
      --seconds "$WINDOW_S" --warmup-ms 1000 --grace-ms 2000 --watch-pid "$LPID" --clk-tck "$(getconf CLK_TCK)" \
      >"$flog" 2>&1 || log "fan-out client reported failures (see below)"
    sed 's/^/    fanout: /' "$flog" >&2
    f() { local v; v=$(field "$flog" "$1"); echo "${v:-NA}"; }
    rss_sub=$(f watched_rss_kb)
    mb() { if [[ $1 =~ ^[0-9]+$ ]]; then echo $(($1 / 1024)); else echo NA; fi; }
    cells=(
      "$io" "$n" "$(f subscribed)/$n" "$(f closed_by_server)" "$(f setup_s) s" "$(f rate)" "$(f expected_rate)" "$(f heads)"
      "$(f clients_with_loss) / $(f missing)" "$(f clients_out_of_order)"
      "$(f delay_p50_ms) / $(f delay_p99_ms) / $(f delay_max_ms)" "$(f spread_p50_ms) / $(f spread_max_ms)"
      "$(f lag_end_p50) / $(f lag_end_max)" "$(f watched_cpu_pct)%" "$(f window_cpu_busy)"
      "$(mb "$rss0")" "$(mb "$rss_idle")" "$per_idle" "$(mb "$rss_sub")"
    )
    row="|"
    for c in "${cells[@]}"; do row+=" $c |"; done
    ROWS+=("$row")
    # Foreign load: busy % of Lasso's CPU over the window minus Lasso's own CPU %.
    busy=$(f window_cpu_busy | tr ',' '\n' | sed -n "s/^$LASSO_CPU://p")
    own=$(f watched_cpu_pct)
    if [[ $busy =~ ^[0-9]+$ ]] && [[ $own =~ ^[0-9]+$ ]] && [ $((busy - own)) -gt 25 ]; then
      NOTES+=("N=$n ($io): CPU $LASSO_CPU was ${busy}% busy during the window but Lasso used ${own}%: other processes (and loopback softirq) took ~$((busy - own))% of that core; figures are not clean")
    fi
    closed=$(f closed_by_server)
    if [[ $closed =~ ^[0-9]+$ ]] && [ "$closed" -gt 0 ]; then
      NOTES+=("N=$n ($io): the server closed $closed subscribed connections during the run, mostly: $(f close_reason | tr '_' ' ')")
    fi
    if grep -q '^error x' "$ilog" "$flog"; then
      NOTES+=("N=$n ($io): client errors: $(grep -h '^error x' "$ilog" "$flog" | head -3 | tr '\n' ';')")
    fi
    warns=$(grep -E ' (WARN|ERROR) ' "$llog" | grep -vc 'io driver' || true)
    if [ "$warns" -gt 0 ]; then
      NOTES+=("N=$n ($io): lasso logged $warns WARN/ERROR lines, first: $(grep -E ' (WARN|ERROR) ' "$llog" | grep -v 'io driver' | head -n1)")
    fi
    stop_pid "$LPID"
  done
done

# ---- report ------------------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
{
  echo "# Lasso WebSocket fan-out ($STAMP)"
  echo
  echo "machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r)"
  echo "lasso: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' +uncommitted changes'), --workers 1 pinned to CPU $LASSO_CPU; client (1 thread) + mock provider pinned to CPU $CLIENT_CPU; loopback"
  echo "upstream: lasso-mockprovider, one newHeads every $BLOCK_TIME_MS ms; window $WINDOW_S s (+1 s warm-up, +2 s grace); RLIMIT_NOFILE $NOFILE"
  echo
  echo "| io driver | N | subscribed | closed by server | setup | msgs/s delivered | expected | heads | clients w/ loss / heads missed | clients out of order | delay p50 / p99 / max ms | spread p50 / max ms | lag at end p50 / max (heads) | lasso CPU | CPU busy, all procs | RSS0 MB | RSS N idle MB | B / idle client | RSS N subscribed MB |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo
  echo "expected = subscribed clients x heads in the window / window. delay = receive time at the client minus receive"
  echo "time of the same head at a subscriber connected straight to the mock (same thread). spread = last minus first"
  echo "client per head. A head counts as missed if it was published in the window and not received by the end of the"
  echo "2 s grace, so a delay above 2 s shows up as loss. lasso CPU = utime+stime over the window, % of one core."
  echo "CPU busy = cpuN:% busy over the window from /proc/stat, every process on the machine (shows foreign load)."
  echo "lag at end = upstream head minus the newest head each client had at the window's end (0-1 = keeping up)."
  echo "load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  for note in "${NOTES[@]}"; do echo "note: $note"; done
} | tee "$OUT"
log "report written to $OUT; process logs in $LOGS/"
