#!/usr/bin/env bash
# The read-heavy workloads (reconnect-storm, offline-drain) on one ternd --store redis with a
# given --redis-read-fibers, one redis-server as in production (AOF, appendfsync always), the
# SERVER_FLAGS of scripts/bench.sh; prints one line: the storm's or the replay's time, ternd's
# and redis-server's CPU seconds over the whole run, p99, duplicates and order violations,
# the Redis connections open at the end, ternd's reads of the Redis topology over the run and
# its resident memory at the end (docs/benchmarks.md, "Store reads in fibers on the loops",
# "One pipelined connection per loop", "One topology per loop").
#   deploy/bench-redis-reads.sh FIBERS WORKLOAD [tern-bench options...]
#   e.g. deploy/bench-redis-reads.sh 16 reconnect-storm --clients 1000 --rate 1000 --duration 20
# BIN: the directory of ternd and tern-bench (default: build/bin of this checkout). Ports
# 127.0.0.1:16391 (Redis) and 18090 (ternd) must be free.
set -euo pipefail
fibers=$1; shift
bin="${BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/bin}"

w=$(mktemp -d /tmp/tern-bench-reads-XXXXXX)
trap 'kill ${tp:-} ${rp:-} 2>/dev/null || true; rm -rf "$w"' EXIT
redis-server --bind 127.0.0.1 --port 16391 --save '' --appendonly yes --appendfsync always --dir "$w" >/dev/null 2>&1 &
rp=$!
for i in $(seq 100); do redis-cli -p 16391 ping >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/ternd" --listen 127.0.0.1:18090 --data "$w/d" --store redis --redis redis://127.0.0.1:16391 --node-id s \
  --redis-read-fibers "$fibers" --metrics-token bench-reads --send-rate 100000 --send-burst 100000 --register-rate 0 --create-rate 0 --invite-rate 0 >/dev/null 2>&1 &
tp=$!
for i in $(seq 200); do ss -ltn | grep -q ':18090 ' && break; sleep 0.05; done
r0=$(awk '{print $14+$15}' /proc/$rp/stat)
"$bin/tern-bench" "$@" --server http://127.0.0.1:18090 --server-pid $tp --json --quiet > "$w/out.json" || true
r1=$(awk '{print $14+$15}' /proc/$rp/stat)
# Redis connections ternd holds now (the store's threads and fibers, the bus's loops): the
# fibers of one loop share one since the nineteenth session.
conns=$(redis-cli -p 16391 info clients | tr -d '\r' | awk -F: '/^connected_clients:/ {print $2}')
refreshes=$(curl -s -H "Authorization: Bearer bench-reads" http://127.0.0.1:18090/metrics |
  awk '/^tern_redis_topology_refreshes_total / {print $2}' || true)
rss_kb=$(awk '/^VmRSS:/ {print $2}' /proc/$tp/status)
# /proc/<pid>/stat counts CPU in ticks of 10 ms (CLK_TCK 100).
python3 - "$w/out.json" "$fibers" "$(( (r1-r0)*10 ))" "$conns" "${refreshes:-?}" "$rss_kb" <<'PY'
import json,sys
d=json.load(open(sys.argv[1]))
r=d.get("result",{})
v=d.get("verifier",{})
print("fibers", sys.argv[2], "exit", d.get("exit_code"), "reconnect_s", r.get("reconnect_s"), "drain_s", r.get("drain_s"), "replay_s", r.get("replay_s"),
      "replayed", r.get("replayed"), "ternd_cpu_s", r.get("server_cpu_s"), "redis_cpu_s", int(sys.argv[3])/1000,
      "p99_ms", r.get("latency_ms",{}).get("p99"), "dup", v.get("duplicates"), "order", v.get("order_violations"),
      "redis_conns", sys.argv[4], "topology_reads", sys.argv[5], "ternd_rss_kb", sys.argv[6])
PY
kill "$tp"; wait "$tp" 2>/dev/null || true
kill "$rp"; wait "$rp" 2>/dev/null || true
