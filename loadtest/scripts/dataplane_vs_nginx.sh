#!/usr/bin/env bash
# Data-plane baseline: Lasso vs an nginx reverse proxy in front of the same trivial upstream.
#
#   A = mock provider: nginx answering every POST / with {"jsonrpc":"2.0","id":<request id>,"result":"0x1234"}
#       (Content-Length, keep-alive; the id is echoed by a 5-line njs handler)                       (CPU $LOAD_CPU)
#   B = nginx reverse proxy -> A (1 worker, upstream keepalive 64, HTTP/1.1)                       (CPU $PROXY_CPU)
#   C = Lasso (target/release/lasso --workers 1), one chain `bench` whose one provider is A       (CPU $PROXY_CPU)
#   wrk (-t1, --latency, Lua POST of eth_blockNumber) runs on CPU $LOAD_CPU against A, B and C/rpc/bench,
#   interleaved a b c a b c, and the script prints req/s, p50, p99 per run, the mean of the runs, and Lasso/nginx ratios.
#
# Usage:  bash loadtest/scripts/dataplane_vs_nginx.sh
# Env:    DURATION=10s CONNECTIONS=64 THREADS=1 ROUNDS=2     wrk settings and a b c repetitions
#         PROXY_CPU=0 LOAD_CPU=1                             CPU placement (taskset -c)
#         LASSO_BIN=path                                     use this binary instead of `cargo build --release`'s
#         SKIP_LASSO=1                                       only A and B (e.g. while the proxy does not build yet)
#         RESULTS_DIR=dir                                    where raw wrk outputs and logs go
#                                                            (default loadtest/results/dataplane-<UTC time>, gitignored)
# Installs wrk, nginx (Debian nginx-light, or nginx) and nginx's njs module (libnginx-mod-http-js) when missing; needs
# root for that.
#
# Why the mock echoes the id instead of always answering "id":1: Lasso renumbers ids on the way upstream (a per-worker
# counter) and rejects a reply whose ids do not match what it sent ("reply ids do not match the request" -> the provider
# counts as failed, 502 to the client). A fixed-id mock therefore only works for Lasso's very first request.
# Everything listens on 127.0.0.1 only; every process it starts is stopped on exit. Exit status 3: some run had
# non-2xx answers or socket errors (the table is printed, but those figures are not valid).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-2}"
PROXY_CPU="${PROXY_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
SKIP_LASSO="${SKIP_LASSO:-0}"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/loadtest/results/dataplane-$(date -u +%Y%m%dT%H%M%SZ)}"
BODY='{"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]}'
NGINX_MODULES="${NGINX_MODULES:-/usr/lib/nginx/modules}"

log() { printf '[dataplane] %s\n' "$*" >&2; }
die() { printf '[dataplane] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------------------------------
find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

apt_install() {
  # Only runs `apt-get update` when the plain install fails (no or stale package lists).
  [ "$(id -u)" -eq 0 ] || die "need root to install $* (or install them yourself)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" </dev/null; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "$@" </dev/null
  fi
}

ensure_tools() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v curl >/dev/null || need+=(curl)
  command -v taskset >/dev/null || need+=(util-linux)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install "${need[@]}"
  fi
  if [ -z "$(find_nginx)" ]; then
    log "installing nginx-light"
    apt_install nginx-light || { log "nginx-light unavailable; installing nginx"; apt_install nginx; }
  fi
  NGINX="$(find_nginx)"
  [ -n "$NGINX" ] || die "nginx not found after install"
  if [ ! -f "$NGINX_MODULES/ngx_http_js_module.so" ]; then
    log "installing libnginx-mod-http-js (njs, for the id-echoing mock)"
    apt_install libnginx-mod-http-js
  fi
  [ -f "$NGINX_MODULES/ngx_http_js_module.so" ] || die "no $NGINX_MODULES/ngx_http_js_module.so (set NGINX_MODULES)"
  command -v wrk >/dev/null || die "wrk not found after install"
}

ncpu="$(nproc)"
[ "$PROXY_CPU" -lt "$ncpu" ] && [ "$LOAD_CPU" -lt "$ncpu" ] ||
  die "PROXY_CPU=$PROXY_CPU / LOAD_CPU=$LOAD_CPU need at least $((PROXY_CPU > LOAD_CPU ? PROXY_CPU + 1 : LOAD_CPU + 1)) CPUs; this machine has $ncpu"

ensure_tools

if [ "$SKIP_LASSO" != 1 ]; then
  if [ -z "${LASSO_BIN:-}" ]; then
    log "cargo build --release --bin lasso"
    (cd "$ROOT" && cargo build --release --bin lasso) >&2 || die "cargo build --release failed (is the proxy buildable yet?)"
    LASSO_BIN="$ROOT/target/release/lasso"
  fi
  [ -x "$LASSO_BIN" ] || die "no executable Lasso at $LASSO_BIN"
fi

# wrk duration -> seconds, for the bounded `timeout` around each run.
duration_s() {
  local d="$1"
  case "$d" in
    *ms) echo 1 ;;
    *s) echo "${d%s}" ;;
    *m) echo $((${d%m} * 60)) ;;
    *h) echo $((${d%h} * 3600)) ;;
    *) echo "$d" ;;
  esac
}
DURATION_S="$(duration_s "$DURATION")"
[[ "$DURATION_S" =~ ^[0-9]+$ ]] || die "DURATION=$DURATION is not a wrk duration like 10s or 1m"

# ---------------------------------------------------------------------------------------------------------------------
# scratch space and cleanup
# ---------------------------------------------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/lasso-dataplane.XXXXXX")"
mkdir -p "$RESULTS_DIR"
PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  cp "$TMP"/*.log "$TMP"/*.conf "$TMP"/*.yml "$RESULTS_DIR"/ 2>/dev/null || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' && return
  fi
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

PORT_A="$(free_port)"
PORT_B="$(free_port)"
while [ "$PORT_B" = "$PORT_A" ]; do PORT_B="$(free_port)"; done
PORT_C="$(free_port)"
while [ "$PORT_C" = "$PORT_A" ] || [ "$PORT_C" = "$PORT_B" ]; do PORT_C="$(free_port)"; done

# ---------------------------------------------------------------------------------------------------------------------
# nginx configs (private prefix, daemon off, current user, every path under $TMP)
# ---------------------------------------------------------------------------------------------------------------------
nginx_common() {
  local name="$1"
  if [ "$name" = mock ]; then echo "load_module $NGINX_MODULES/ngx_http_js_module.so;"; fi
  # `user` only means something when the master runs as root; then keep the workers as the current user too.
  if [ "$(id -u)" -eq 0 ]; then echo "user $(id -un) $(id -gn);"; fi
  cat <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $TMP/$name.pid;
error_log $TMP/$name.error.log warn;
events { worker_connections 8192; multi_accept on; }
EOF
}

nginx_http_common() {
  local name="$1"
  cat <<EOF
  access_log off;
  client_body_temp_path $TMP/$name.client_body;
  proxy_temp_path $TMP/$name.proxy;
  fastcgi_temp_path $TMP/$name.fastcgi;
  uwsgi_temp_path $TMP/$name.uwsgi;
  scgi_temp_path $TMP/$name.scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
EOF
}

# The mock provider: a fixed result, the request's id echoed back, Content-Length (not chunked) like a real node.
# Like every real node (geth, erigon, reth, nethermind) it also answers JSON-RPC batches, one reply per call.
cat >"$TMP/mock_rpc.js" <<'EOF'
function rpc(r) {
  var text = r.requestText || "";
  r.headersOut["Content-Type"] = "application/json";
  var re = /"id"\s*:\s*(-?[0-9]+|"[^"]*")/g;
  if (/^\s*\[/.test(text)) {
    var out = [], m;
    while ((m = re.exec(text)) !== null) {
      out.push('{"jsonrpc":"2.0","id":' + m[1] + ',"result":"0x1234"}');
    }
    r.return(200, "[" + out.join(",") + "]");
    return;
  }
  var one = re.exec(text);
  r.return(200, '{"jsonrpc":"2.0","id":' + (one ? one[1] : "null") + ',"result":"0x1234"}');
}
export default { rpc };
EOF

{
  nginx_common mock
  echo "http {"
  nginx_http_common mock
  cat <<EOF
  js_import mock from $TMP/mock_rpc.js;
  server {
    listen 127.0.0.1:$PORT_A;
    location = / {
      js_content mock.rpc;
    }
  }
}
EOF
} >"$TMP/mock.conf"

{
  nginx_common proxy
  echo "http {"
  nginx_http_common proxy
  cat <<EOF
  upstream mock {
    server 127.0.0.1:$PORT_A;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PORT_B;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$TMP/proxy.conf"

cat >"$TMP/lasso.yml" <<EOF
server:
  bind: "127.0.0.1"
  port: $PORT_C
  workers: 1
chains:
  bench:
    chain_id: "0x1234"   # = the mock's answer to everything, so Lasso's eth_chainId check accepts the provider
    default_strategy: priority
    providers:
      - id: mock
        url: http://127.0.0.1:$PORT_A/
EOF

cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF

# ---------------------------------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------------------------------
start_bg() { # start_bg NAME CPU CMD... ; output to $TMP/NAME.log
  local name="$1" cpu="$2"
  shift 2
  taskset -c "$cpu" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
  PIDS+=($!)
  log "started $name (pid $!, cpu $cpu): $*"
}

post() { # post URL -> prints body; fails on non-200
  curl -sS --max-time 5 -H 'Content-Type: application/json' --data-binary "$BODY" -o - -w '\n%{http_code}' "$1"
}

wait_ready() { # wait_ready NAME URL PID: POSTs until a 200 answer, bounded by 30 s
  local name="$1" url="$2" pid="$3" out code
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2 || true; die "$name exited during start-up"; }
    if out="$(post "$url" 2>/dev/null)"; then
      code="${out##*$'\n'}"
      if [ "$code" = 200 ]; then
        printf '%s\n' "${out%$'\n'*}"
        return 0
      fi
    fi
    sleep 0.2
  done
  cat "$TMP/$name.log" >&2 || true
  die "$name did not answer 200 at $url within 30 s (last: ${out:-none})"
}

"$NGINX" -t -q -p "$TMP" -e "$TMP/mock.error.log" -c "$TMP/mock.conf" || die "mock nginx config invalid"
"$NGINX" -t -q -p "$TMP" -e "$TMP/proxy.error.log" -c "$TMP/proxy.conf" || die "proxy nginx config invalid"

start_bg mock "$LOAD_CPU" "$NGINX" -p "$TMP" -e "$TMP/mock.error.log" -c "$TMP/mock.conf"
MOCK_PID=$!
start_bg proxy "$PROXY_CPU" "$NGINX" -p "$TMP" -e "$TMP/proxy.error.log" -c "$TMP/proxy.conf"
PROXY_PID=$!

URL_A="http://127.0.0.1:$PORT_A/"
URL_B="http://127.0.0.1:$PORT_B/"
URL_C="http://127.0.0.1:$PORT_C/rpc/bench"

check_answer() { # check_answer NAME ANSWER: the fixed result with the client's id 7
  case "$2" in
    '{"jsonrpc":"2.0","id":7,"result":"0x1234"}') ;;
    *) die "$1 answered $2; want {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":\"0x1234\"}" ;;
  esac
}
answer="$(wait_ready mock "$URL_A" "$MOCK_PID")"
check_answer mock "$answer"
log "mock  A $URL_A -> $answer"
answer="$(wait_ready proxy "$URL_B" "$PROXY_PID")"
check_answer nginx "$answer"
log "nginx B $URL_B -> $answer"

TARGETS=(mock nginx)
declare -A URL=([mock]="$URL_A" [nginx]="$URL_B")

if [ "$SKIP_LASSO" != 1 ]; then
  "$LASSO_BIN" check-config "$TMP/lasso.yml" >&2 || die "lasso check-config rejected $TMP/lasso.yml"
  start_bg lasso "$PROXY_CPU" env RUST_LOG="${RUST_LOG:-warn,lasso=info}" NO_COLOR=1 \
    "$LASSO_BIN" --config "$TMP/lasso.yml" --workers 1 --port "$PORT_C" --bind 127.0.0.1
  LASSO_PID=$!
  for _ in $(seq 1 100); do
    grep -q 'listening' "$TMP/lasso.log" 2>/dev/null && break
    kill -0 "$LASSO_PID" 2>/dev/null || { cat "$TMP/lasso.log" >&2; die "lasso exited during start-up"; }
    sleep 0.2
  done
  grep -q 'listening' "$TMP/lasso.log" || { cat "$TMP/lasso.log" >&2; die "lasso logged no 'listening' line within 20 s"; }
  answer="$(wait_ready lasso "$URL_C" "$LASSO_PID")"
  check_answer lasso "$answer"
  # More requests on new connections: catches id handling that only works for the first call.
  for _ in 1 2 3; do
    again="$(post "$URL_C")" || die "lasso: request failed"
    check_answer lasso "${again%$'\n'*}"
  done
  log "lasso C $URL_C -> $answer"
  TARGETS+=(lasso)
  URL[lasso]="$URL_C"
fi

# ---------------------------------------------------------------------------------------------------------------------
# measure: a b c, a b c, ...
# ---------------------------------------------------------------------------------------------------------------------
to_us() { # wrk latency (e.g. 812.00us, 1.23ms, 2.00s) -> microseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /m$/) m = 60000000; else if (v ~ /s$/) m = 1000000; else m = 1
    printf "%.1f", n * m
  }'
}

declare -A RPS P50 P99 ERRS
log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on cpu $LOAD_CPU; $ROUNDS round(s) of: ${TARGETS[*]}"
for round in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    out="$RESULTS_DIR/wrk-$t-$round.txt"
    timeout $((DURATION_S + 30)) taskset -c "$LOAD_CPU" \
      wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$TMP/post.lua" "${URL[$t]}" >"$out" 2>&1 ||
      { cat "$out" >&2; die "wrk against $t failed"; }
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    p50="$(awk '$1 == "50%" {print $2}' "$out")"
    p99="$(awk '$1 == "99%" {print $2}' "$out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")"
    sockerr="$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")"
    [ -n "$rps" ] && [ -n "$p50" ] && [ -n "$p99" ] || { cat "$out" >&2; die "could not parse wrk output for $t"; }
    errs=$((${non2xx:-0} + ${sockerr:-0}))
    RPS[$t,$round]="$rps"
    P50[$t,$round]="$(to_us "$p50")"
    P99[$t,$round]="$(to_us "$p99")"
    ERRS[$t,$round]="$errs"
    log "round $round $t: $rps req/s, p50 $p50, p99 $p99, errors $errs"
  done
done

# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
mean() { # mean ARRAYNAME TARGET
  local -n arr="$1"
  local t="$2" s=0 r
  for r in $(seq 1 "$ROUNDS"); do s="$(awk -v a="$s" -v b="${arr[$t,$r]}" 'BEGIN {printf "%.3f", a + b}')"; done
  awk -v s="$s" -v n="$ROUNDS" 'BEGIN {printf "%.1f", s / n}'
}
declare -A LABEL=([mock]="A mock upstream (direct)" [nginx]="B nginx proxy -> A" [lasso]="C lasso /rpc/bench -> A")

{
  echo
  echo "Data plane: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, POST eth_blockNumber; proxies on cpu $PROXY_CPU, mock + wrk on cpu $LOAD_CPU"
  echo "($(uname -sr), $(nproc) cpus, $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'))"
  echo
  printf '%-28s %5s %12s %11s %11s %8s\n' target run 'req/s' 'p50 (us)' 'p99 (us)' errors
  printf '%-28s %5s %12s %11s %11s %8s\n' ---------------------------- ----- ------------ ----------- ----------- --------
  for t in "${TARGETS[@]}"; do
    for r in $(seq 1 "$ROUNDS"); do
      printf '%-28s %5s %12s %11s %11s %8s\n' "${LABEL[$t]}" "$r" "${RPS[$t,$r]}" "${P50[$t,$r]}" "${P99[$t,$r]}" "${ERRS[$t,$r]}"
    done
    printf '%-28s %5s %12s %11s %11s %8s\n' "${LABEL[$t]}" mean "$(mean RPS "$t")" "$(mean P50 "$t")" "$(mean P99 "$t")" ""
  done
  if [[ " ${TARGETS[*]} " == *" lasso "* ]]; then
    echo
    awk -v lr="$(mean RPS lasso)" -v nr="$(mean RPS nginx)" -v lp="$(mean P99 lasso)" -v np="$(mean P99 nginx)" \
      -v l5="$(mean P50 lasso)" -v n5="$(mean P50 nginx)" 'BEGIN {
        printf "lasso/nginx req/s: %.3f   (>1 = Lasso serves more)\n", lr / nr
        printf "lasso/nginx p50:   %.3f   (<1 = Lasso is faster)\n", l5 / n5
        printf "lasso/nginx p99:   %.3f   (<1 = Lasso is faster)\n", lp / np
      }'
  else
    echo
    echo "(Lasso skipped: SKIP_LASSO=1)"
  fi
  echo
  echo "raw wrk outputs and logs: $RESULTS_DIR"
} | tee "$RESULTS_DIR/summary.txt"

bad=0
for t in "${TARGETS[@]}"; do
  for r in $(seq 1 "$ROUNDS"); do
    [ "${ERRS[$t,$r]}" = 0 ] || { log "WARNING: $t round $r had ${ERRS[$t,$r]} errors (non-2xx or socket errors): its figures are not a valid measurement"; bad=1; }
  done
done
[ "$bad" = 0 ] || exit 3
