#!/usr/bin/env bash
# A tern-bench workload on three set-ups, on this machine (docs/benchmarks.md, "Several nodes"):
#   rocksdb  one ternd, embedded RocksDB (the default)
#   redis1   one ternd --store redis on one redis-server
#   redis3   three ternd --store redis on the same redis-server, HAProxy (leastconn) in front
# Server CPU is read from /proc/<pid>/stat (utime + stime) before and after each run, for every
# ternd, for redis-server and for HAProxy, and divided by the messages sent (`per sent`) and by
# the messages delivered. For the Redis set-ups, `INFO commandstats` after the run (reset before
# it) gives Redis's calls and CPU per command, per message sent.
#   deploy/bench-nodes.sh [clients] [rate] [duration] [workload] [tern-bench options...]
# workload: pairs (default) or group (e.g. `group --group-size 20 --senders 2`: --rate is the
# total posts per second; each post reaches group-size - 1 devices).
# Needs build/bin/{ternd,tern-bench}, redis-server and haproxy. Ports 18080-18083 and 16390
# must be free. Redis runs as in production: AOF, appendfsync always, no RDB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/../build/bin"
clients="${1:-100}"; rate="${2:-1000}"; duration="${3:-10}"; workload="${4:-pairs}"
extra=("${@:5}")
work="$(mktemp -d /tmp/tern-bench-nodes-XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
up() { for i in $(seq 1 100); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# $1 label, $2 url, $3 ternd pids ("a b c"), $4 redis pid or "", $5 haproxy pid or ""
run() {
  local t0 r0=0 h0=0 t1 r1=0 h1=0
  : > "$work/$1.cmdstats"
  [ -n "$4" ] && redis-cli -p 16390 config resetstat >/dev/null
  local l0; l0=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(ticks $3); [ -n "$4" ] && r0=$(ticks "$4"); [ -n "$5" ] && h0=$(ticks "$5")
  "$bin/tern-bench" "$workload" --server "$2" --clients "$clients" --rate "$rate" --duration "$duration" \
    "${extra[@]}" --quiet --json > "$work/$1.json"
  t1=$(ticks $3); [ -n "$4" ] && r1=$(ticks "$4"); [ -n "$5" ] && h1=$(ticks "$5")
  [ -n "$4" ] && redis-cli -p 16390 info commandstats > "$work/$1.cmdstats"
  python3 - "$work/$1.json" "$1" "$(( (t1 - t0) * 1000000 / hz ))" "$(( (r1 - r0) * 1000000 / hz ))" \
    "$(( (h1 - h0) * 1000000 / hz ))" "$l0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$work/$1.cmdstats" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))["result"]
label, ternd_us, redis_us, haproxy_us = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
n = max(r["delivered"], 1)
sent = max(r["acked"] + r["send_failed"], 1)
lat = r["latency_ms"]
print(f"{label}: sent/s {r['sent_per_s']:.0f} delivered {r['delivered']} send_failed {r['send_failed']} "
      f"undelivered {r['undelivered']} sustained {r['sustained']} p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms | "
      f"CPU us per delivered message: ternd {ternd_us / n:.0f} redis-server {redis_us / n:.0f} "
      f"haproxy {haproxy_us / n:.0f} | per send ({sent}): ternd {ternd_us / sent:.0f} redis-server "
      f"{redis_us / sent:.0f} | load before {sys.argv[6]} after {sys.argv[7]}")
for line in open(sys.argv[8]):
    m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
    if m and int(m.group(2)) > 0:
        calls, usec = int(m.group(2)), int(m.group(3))
        print(f"  redis {m.group(1)}: calls {calls} ({calls / sent:.2f}/sent) usec {usec} ({usec / sent:.1f}/sent)")
PY
}

ternd_args=(--log-level warn --register-rate 0 --send-rate 100000 --send-burst 100000)

# 1. RocksDB, one node
"$bin/ternd" --listen 127.0.0.1:18080 --data "$work/rocks" "${ternd_args[@]}" &
p=$!; up 18080
run rocksdb http://127.0.0.1:18080 "$p" "" ""
kill "$p"; wait "$p" || true

# 2. One redis-server; one ternd on it
redis-server --port 16390 --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync always --save '' \
  --maxmemory-policy noeviction --daemonize no --logfile "$work/redis.log" &
rpid=$!
for i in $(seq 1 50); do redis-cli -p 16390 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis_args=(--store redis --redis redis://127.0.0.1:16390)
"$bin/ternd" --listen 127.0.0.1:18080 --data "$work/r1" "${redis_args[@]}" --node-id solo "${ternd_args[@]}" &
p=$!; up 18080
run redis1 http://127.0.0.1:18080 "$p" "$rpid" ""
kill "$p"; wait "$p" || true
redis-cli -p 16390 flushall >/dev/null

# 3. Three ternd on the same redis-server behind HAProxy
pids=""
for i in 1 2 3; do
  "$bin/ternd" --listen "127.0.0.1:1808$i" --data "$work/n$i" "${redis_args[@]}" --node-id "n$i" "${ternd_args[@]}" &
  pids="$pids $!"; up "1808$i"
done
sed -e 's/127.0.0.1:8080/127.0.0.1:18080/' -e 's/127.0.0.1:808\([123]\)/127.0.0.1:1808\1/' \
  "$here/haproxy.cfg" > "$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
hpid=$!; up 18080; sleep 2  # the health checks bring every node into rotation
run redis3 http://127.0.0.1:18080 "$pids" "$rpid" "$hpid"
