#!/usr/bin/env bash
# Pairs workload on ternd with RocksDB, then on ternd --store redis (one node), on this
# machine: tern-bench reports throughput, latency and ternd's CPU per message (--server-pid);
# this script adds redis-server's CPU per message (from /proc, utime+stime over the run).
#   deploy/bench-redis.sh [clients] [rate] [duration] [cluster]
# With a fourth argument `cluster`, a third run: the same ternd node on a 3-master + 3-replica
# Redis Cluster (redis-cli --cluster create), Redis CPU summed over its six processes.
# Needs build/bin/{ternd,tern-bench} and redis-server. Ports 18080 and 16390-16396 must be free.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$here/../build/bin"
clients="${1:-100}"; rate="${2:-1000}"; duration="${3:-10}"; with_cluster="${4:-}"
work="$(mktemp -d /tmp/tern-bench-redis-XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

wait_up() { for i in $(seq 1 100); do curl -fs "http://127.0.0.1:18080/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
bench() {  # $1 = label, $2 = ternd pid
  "$bin/tern-bench" pairs --server http://127.0.0.1:18080 --clients "$clients" --rate "$rate" \
    --duration "$duration" --server-pid "$2" --quiet --json > "$work/$1.json"
  python3 - "$work/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], json.dumps(r)[:1500])
PY
}

# 1. RocksDB (the default)
"$bin/ternd" --listen 127.0.0.1:18080 --data "$work/rocks" --log-level warn --register-rate 0 &
pid=$!; wait_up
bench rocksdb "$pid"
kill "$pid"; wait "$pid" || true

# 2. Redis, one node
redis-server --port 16390 --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync always --save '' \
  --daemonize no --logfile "$work/redis.log" &
rpid=$!; sleep 0.5
"$bin/ternd" --listen 127.0.0.1:18080 --data "$work/redisnode" --store redis --redis redis://127.0.0.1:16390 \
  --node-id bench --log-level warn --register-rate 0 &
pid=$!; wait_up
r0=$(ticks "$rpid")
bench redis "$pid"
r1=$(ticks "$rpid")
echo "redis-server CPU over the run: $(( (r1 - r0) * 1000 / hz )) ms"
kill "$pid"; wait "$pid" || true

# 3. Redis Cluster (3 masters + 3 replicas), one ternd node on it
[ "$with_cluster" = cluster ] || exit 0
cpids=(); addrs=()
for p in 16391 16392 16393 16394 16395 16396; do
  mkdir -p "$work/c$p"
  redis-server --port "$p" --bind 127.0.0.1 --dir "$work/c$p" --cluster-enabled yes --cluster-config-file nodes.conf \
    --appendonly yes --appendfsync always --save '' --daemonize no --logfile "$work/c$p/redis.log" &
  cpids+=($!); addrs+=("127.0.0.1:$p")
done
sleep 0.5
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$work/create.log"
for p in 16391 16392 16393 16394 16395 16396; do
  for i in $(seq 1 100); do redis-cli -p "$p" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
done
"$bin/ternd" --listen 127.0.0.1:18080 --data "$work/clusternode" --store redis \
  --redis redis://127.0.0.1:16391,redis://127.0.0.1:16392,redis://127.0.0.1:16393 \
  --node-id bench --log-level warn --register-rate 0 &
pid=$!; wait_up
c0=0; for c in "${cpids[@]}"; do c0=$((c0 + $(ticks "$c"))); done
bench redis-cluster "$pid"
c1=0; for c in "${cpids[@]}"; do c1=$((c1 + $(ticks "$c"))); done
echo "redis-server CPU over the run, six cluster processes: $(( (c1 - c0) * 1000 / hz )) ms"
kill "$pid"; wait "$pid" || true
