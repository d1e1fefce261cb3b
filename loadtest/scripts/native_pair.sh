#!/bin/bash
# A feature's cost, natively and precisely: the same Lasso binary twice, `off` (the base config) and `on` (the base
# config plus ON_YML), one worker each pinned to CPU 0, both running at once; the mock provider, the load (the
# `reads` mix, 64 connections, closed loop) and, with SIDE=sse, a client of the `on` node's event stream (dashboard
# token `dash-token-for-bench-0123456789`) on CPU 1. The load alternates between them, N requests a round; each
# round prints the CPU each used per request, read from /proc/PID/task/*/schedstat in ns (worker thread and whole
# process) and requests per CPU-second. An OTLP/HTTP sink (answers 200 to every POST) listens on SINKPORT, which
# ON_YML may name (`endpoint: "http://127.0.0.1:SINKPORT/v1/traces"`).
#
#   loadtest/scripts/native_pair.sh OUTDIR ROUNDS N ON_YML [sse|none] [URL_QUERY]
#
# Env: LOADTEST_BIN_DIR (release binaries: lasso, lasso-mockprovider, lasso-loadgen; default target/release),
#      BASE_YML (sections added to both configs), PROVIDERS (1: mock0.. all on the one mock), STRATEGY (priority),
#      PATH_OFF / PATH_ON (/rpc/bench; e.g. PATH_OFF=/rpc/provider/mock1/bench), URL_QUERY for `on` (e.g. ?key=...).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=${LOADTEST_BIN_DIR:-$ROOT/target/release}; BIN=$T/lasso
OUT=$1; R=$2; N=$3; ONYML=$4; SIDE=${5:-none}; Q=${6:-}
MP=49855; PO=49955; PN=49956; SINK=49745; rm -rf "$OUT"; mkdir -p "$OUT"
PIDS=""; trap 'for p in $PIDS; do kill $p 2>/dev/null; done' EXIT
waitport() { for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }
. "$(dirname "$0")/bench_config.sh"
conf() { bench_lasso_config "$1" "$MP"; }
conf $PO > $OUT/off.yml; [ -n "${BASE_YML:-}" ] && cat "$BASE_YML" >> $OUT/off.yml
{ conf $PN; [ -n "${BASE_YML:-}" ] && cat "$BASE_YML"; sed "s/SINKPORT/$SINK/" "$ONYML"; } > $OUT/on.yml
taskset -c 1 python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' $SINK > /dev/null 2>&1 & PIDS="$PIDS $!"
taskset -c 1 $T/lasso-mockprovider --port $MP --workers 1 --cpus 1 --block-time-ms 1000 --exit-after 1800 > $OUT/mock.log 2>&1 & PIDS="$PIDS $!"
waitport $MP
taskset -c 0 $BIN --config $OUT/off.yml > $OUT/off.log 2>&1 & OFF=$!; PIDS="$PIDS $OFF"
taskset -c 0 $BIN --config $OUT/on.yml > $OUT/on.log 2>&1 & ON=$!; PIDS="$PIDS $ON"
waitport $PO; waitport $PN
if [ "$SIDE" = sse ]; then
  taskset -c 1 curl -sN -H "Authorization: Bearer dash-token-for-bench-0123456789" http://127.0.0.1:$PN/dashboard/api/events/default > $OUT/sse.txt 2>&1 & PIDS="$PIDS $!"
fi
LG() { taskset -c 1 $T/lasso-loadgen --url "http://127.0.0.1:$1$2" --head-url http://127.0.0.1:$MP/ --mix reads --cpus 1 --duration 1800 --quiet --concurrency 64 --max-requests $3; }
wtid() { for t in /proc/$1/task/*; do [ "$(cat $t/comm)" = lasso-worker-0 ] && basename $t; done; }
cpu_worker() { awk '{print $1}' /proc/$1/task/$2/schedstat; }
cpu_all() { cat /proc/$1/task/*/schedstat | awk '{s+=$1} END {printf "%.0f\n", s}'; }
LG $PO "${PATH_OFF:-/rpc/bench}" 5000 > /dev/null 2>&1; LG $PN "${PATH_ON:-/rpc/bench}$Q" 5000 > $OUT/warm-on.txt 2>&1
WO=$(wtid $OFF); WN=$(wtid $ON)
for r in $(seq 1 $R); do
  for label in off on; do
    if [ $label = off ]; then P=$OFF; W=$WO; PORT=$PO; QQ="${PATH_OFF:-/rpc/bench}"; else P=$ON; W=$WN; PORT=$PN; QQ="${PATH_ON:-/rpc/bench}$Q"; fi
    a=$(cpu_worker $P $W); b=$(cpu_all $P)
    LG $PORT "$QQ" $N > $OUT/lg-$r-$label.txt 2>&1
    a1=$(cpu_worker $P $W); b1=$(cpu_all $P)
    ok=$(grep -o "ok [0-9]*" $OUT/lg-$r-$label.txt | head -1)
    echo "round $r $label: worker_cpu_ns/request=$(( (a1-a)/N )) process_cpu_ns/request=$(( (b1-b)/N )) req_per_cpu_s=$(( N * 1000000000 / (b1-b) )) ($ok of $N)" | tee -a $OUT/summary.txt
  done
done
[ "$SIDE" = sse ] && echo "sse bytes received: $(wc -c < $OUT/sse.txt), events: $(grep -c '^data: ' $OUT/sse.txt)" | tee -a $OUT/summary.txt
curl -s http://127.0.0.1:$PN/metrics | grep -E "^lasso_event|^lasso_trace|^lasso_access_requests_total" | head -20 | tee -a $OUT/summary.txt
