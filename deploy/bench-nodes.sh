#!/usr/bin/env bash
# A tern-bench workload on several set-ups, one after the other, on this machine
# (docs/benchmarks.md, "Several nodes"):
#   rocksdb    one ternd, embedded RocksDB (the default)
#   redis1     one ternd --store redis on one redis-server
#   redis1tls  redis1 over TLS (rediss://: a TLS-only redis-server that asks for a client
#              certificate; certificates made with openssl in the temporary directory)
#   redis3     three ternd --store redis on one redis-server, HAProxy (leastconn) in front
#   cluster3   three ternd --store redis on a Redis Cluster of 3 masters + 3 replicas
#              (deploy/redis-cluster.sh; --redis gets all six as seeds), HAProxy in front
#   cluster3w  cluster3 with --redis-wait-replicas 1 (`sent` only after a replica acknowledged
#              the write: WAIT); run only when named in SETUPS
# Every redis-server runs as in production: AOF, appendfsync always, no RDB.
# Server CPU is read from /proc/<pid>/stat (utime + stime) before and after each run, for every
# ternd, for redis-server (on the cluster: its six processes summed, and in parentheses the
# three masters alone) and for HAProxy, and divided by the messages sent (`per sent`) and by
# the messages delivered. For the Redis set-ups, `INFO commandstats` after the run (reset before
# it; on the cluster summed over the three masters) gives Redis's calls and CPU per command, per
# message sent.
#   [SETUPS="rocksdb redis1 redis3 cluster3"] [BIN=dir] \
#     deploy/bench-nodes.sh [clients] [rate] [duration] [workload] [tern-bench options...]
# workload: pairs (default) or group (e.g. `group --group-size 20 --senders 2`: --rate is the
# total posts per second; each post reaches group-size - 1 devices).
# SETUPS: the set-ups to run, in that order (default: rocksdb redis1 redis3 cluster3).
# PROFILE=1: also print, per thread role (the thread's name without its number: tern-loop,
# tern-commit, tern-bus-sub, ..., redis-server's and HAProxy's threads by their own names),
# summed over the processes of the set-up, the CPU and the context switches (voluntary and
# not) per message sent, from /proc/<pid>/task/*/{stat,status} before and after the run.
# BIN: the directory of ternd and tern-bench (default: build/bin of this checkout).
# Needs redis-server, redis-cli, haproxy, curl, python3, ss and pgrep. Ports on 127.0.0.1,
# checked before each set-up: 18080 (18080-18083 with HAProxy), 16390 (redis1, redis3),
# 16400-16405 and their cluster bus ports 26400-26405 (cluster3, cluster3w), or from
# LB_PORT (the first of four), REDIS_PORT and CLUSTER_PORT (the first of six); a server counts as
# up only once it is itself listening on its port. Whatever the script started is stopped and
# its temporary directory removed when it ends, also on a failure or Ctrl-C.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/redis-cluster.sh
. "$here/redis-cluster.sh"
bin="${BIN:-$here/../build/bin}"
setups="${SETUPS:-rocksdb redis1 redis3 cluster3}"
lb="${LB_PORT:-18080}"; n1=$((lb + 1)); n2=$((lb + 2)); n3=$((lb + 3))
rport="${REDIS_PORT:-16390}"; cport="${CLUSTER_PORT:-16400}"
clients="${1:-100}"; rate="${2:-1000}"; duration="${3:-10}"; workload="${4:-pairs}"
extra=("${@:5}")

needs=(curl python3 ss pgrep)
for s in $setups; do
  case "$s" in
    rocksdb) ;;
    redis1) needs+=(redis-server redis-cli) ;;
    redis1tls) needs+=(redis-server redis-cli openssl) ;;
    redis3|cluster3|cluster3w) needs+=(redis-server redis-cli haproxy) ;;
    *) echo "unknown set-up '$s' in SETUPS (known: rocksdb redis1 redis1tls redis3 cluster3 cluster3w)" >&2; exit 2 ;;
  esac
done
for t in "${needs[@]}"; do command -v "$t" >/dev/null || { echo "$t not found (apt-get install it)" >&2; exit 1; }; done
for b in ternd tern-bench; do [ -x "$bin/$b" ] || { echo "$bin/$b not found (build it, or set BIN)" >&2; exit 1; }; done

work="$(mktemp -d /tmp/tern-bench-nodes-XXXXXX)"
started=()  # every process this script started (children of this shell)
REDIS_CLUSTER_PIDS=()

# The given pids that are live children of this shell (only what this script started is ever
# signalled), and their live descendants (tern-bench's worker processes).
tree() {
  local p pp
  for p in "$@"; do
    pp=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f2) || continue
    [ "$pp" = "$$" ] && proc_alive "$p" && echo "$p" && descendants "$p"
  done
  return 0
}
descendants() {
  local c
  for c in $(pgrep -P "$1" || true); do echo "$c"; descendants "$c"; done
}
# Stops the given processes and their descendants: SIGTERM, up to 10 s to exit, then SIGKILL.
stop() {
  local p any all
  all=$(tree "$@")
  for p in $all; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    any=0
    for p in $all; do if proc_alive "$p"; then any=1; fi; done
    [ "$any" = 0 ] && break
    sleep 0.1
  done
  for p in $all; do
    if proc_alive "$p"; then echo "pid $p did not stop within 10 s: SIGKILL" >&2; kill -KILL "$p" 2>/dev/null || true; fi
  done
  wait "$@" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  # shellcheck disable=SC2046  # pids, one word each
  stop "${started[@]}" "${REDIS_CLUSTER_PIDS[@]}" $(jobs -p)
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

hz=$(getconf CLK_TCK)
# shellcheck disable=SC2048  # "$*" is a list of pids
ticks() {
  local t=0 p
  for p in $*; do
    proc_alive "$p" || { echo "process $p (measured) exited during the run" >&2; return 1; }
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
# PROFILE=1: one line per thread of the given pids: "role ticks switches" (role: the thread's
# name with its trailing digits cut, so that loops and readers add up).
# shellcheck disable=SC2048  # "$*" is a list of pids
thread_snapshot() {
  python3 - $* <<'PY'
import os, re, sys
for pid in sys.argv[1:]:
    base = f"/proc/{pid}/task"
    for tid in (os.listdir(base) if os.path.isdir(base) else []):
        try:
            comm = open(f"{base}/{tid}/comm").read().strip()
            fields = open(f"{base}/{tid}/stat").read().rsplit(")", 1)[1].split()
            status = open(f"{base}/{tid}/status").read()
        except OSError:
            continue  # the thread ended meanwhile
        switches = sum(int(m) for m in re.findall(r"voluntary_ctxt_switches:\s+(\d+)", status))
        print(f"{pid}/{tid} {re.sub(r'[0-9]+$', '', comm)} {int(fields[11]) + int(fields[12])} {switches}")
PY
}

# ternd or HAProxy $2 listens on 127.0.0.1:$1 and answers /healthz (at most 10 s).
up() { wait_listening "$2" "$1" curl -fs "http://127.0.0.1:$1/healthz"; }

# $1 label, $2 url, $3 ternd pids ("a b c"), $4 redis-server pids or "", $5 haproxy pid or "",
# $6 ports of the redis-servers whose commandstats count (the masters) or "", $7 the masters'
# pids on a cluster, else ""
run() {
  local label="$1" url="$2" tp="$3" rp="$4" hp="$5" ports="$6" mp="$7" p l0 bp
  local t0 r0=0 h0=0 m0=0 t1 r1=0 h1=0 m1=0
  : > "$work/$label.cmdstats"
  for p in $ports; do rcli -p "$p" config resetstat >/dev/null; done
  l0=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(ticks "$tp"); r0=$(ticks "$rp"); h0=$(ticks "$hp"); m0=$(ticks "$mp")
  if [ "${PROFILE:-0}" = 1 ]; then thread_snapshot "$tp $rp $hp" > "$work/$label.threads0"; fi
  "$bin/tern-bench" "$workload" --server "$url" --clients "$clients" --rate "$rate" --duration "$duration" \
    "${extra[@]}" --quiet --json > "$work/$label.json" &
  bp=$!; started+=("$bp")
  wait "$bp"  # in the background, so that a signal reaches the clean-up at once
  t1=$(ticks "$tp"); r1=$(ticks "$rp"); h1=$(ticks "$hp"); m1=$(ticks "$mp")
  if [ "${PROFILE:-0}" = 1 ]; then thread_snapshot "$tp $rp $hp" > "$work/$label.threads1"; fi
  for p in $ports; do rcli -p "$p" info commandstats >> "$work/$label.cmdstats"; done
  python3 - "$work/$label.json" "$label" "$(( (t1 - t0) * 1000000 / hz ))" "$(( (r1 - r0) * 1000000 / hz ))" \
    "$(( (h1 - h0) * 1000000 / hz ))" "$l0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$work/$label.cmdstats" \
    "$([ -n "$mp" ] && echo $(( (m1 - m0) * 1000000 / hz )))" <<'PY'
import json, re, sys
r = json.load(open(sys.argv[1]))["result"]
label, ternd_us, redis_us, haproxy_us = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
masters_us = int(sys.argv[9]) if sys.argv[9] else None
n = max(r["delivered"], 1)
sent = max(r["acked"] + r["send_failed"], 1)
lat = r["latency_ms"]
def redis(d):  # redis-server CPU per message; on a cluster, the masters alone in parentheses
    return f"{redis_us / d:.0f}" + ("" if masters_us is None else f" (masters {masters_us / d:.0f})")
print(f"{label}: sent/s {r['sent_per_s']:.0f} delivered {r['delivered']} send_failed {r['send_failed']} "
      f"undelivered {r['undelivered']} sustained {r['sustained']} p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms | "
      f"CPU us per delivered message: ternd {ternd_us / n:.0f} redis-server {redis(n)} "
      f"haproxy {haproxy_us / n:.0f} | per send ({sent}): ternd {ternd_us / sent:.0f} redis-server "
      f"{redis(sent)} | load before {sys.argv[6]} after {sys.argv[7]}")
stats = {}  # command -> [calls, usec], summed over the servers (first-seen order)
for line in open(sys.argv[8]):
    m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
    if m:
        s = stats.setdefault(m.group(1), [0, 0])
        s[0] += int(m.group(2)); s[1] += int(m.group(3))
for name, (calls, usec) in stats.items():
    if calls > 0:
        print(f"  redis {name}: calls {calls} ({calls / sent:.2f}/sent) usec {usec} ({usec / sent:.1f}/sent)")
PY
  if [ "${PROFILE:-0}" = 1 ]; then
    python3 - "$work/$label.json" "$work/$label.threads0" "$work/$label.threads1" "$hz" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["result"]
sent = max(r["acked"] + r["send_failed"], 1)
hz = int(sys.argv[4])
def load(path):
    return {k: (role, int(t), int(s)) for k, role, t, s in (line.split() for line in open(path))}
before, after = load(sys.argv[2]), load(sys.argv[3])
roles = {}  # role -> [threads, ticks, switches]; a thread started during the run counts from 0
for key, (role, t, s) in after.items():
    _, t0, s0 = before.get(key, (role, 0, 0))
    x = roles.setdefault(role, [0, 0, 0])
    x[0] += 1; x[1] += t - t0; x[2] += s - s0
for role, (n, t, s) in sorted(roles.items(), key=lambda kv: -kv[1][1]):
    if t or s:
        print(f"  thread {role} (x{n}): CPU {t * 1e6 / hz / sent:.0f} us/sent, switches {s / sent:.2f}/sent")
PY
  fi
}

ternd_args=(--log-level warn --register-rate 0 --send-rate 100000 --send-burst 100000)
# Extra ternd options for every set-up, e.g. TERND_EXTRA="--redis-commit-gap-us 0" (word-split).
read -r -a extra_ternd <<< "${TERND_EXTRA:-}"
ternd_args+=("${extra_ternd[@]}")

# Certificates in $work/certs (redis-cluster.sh's redis_tls_certs): sets REDIS_CLI_TLS and
# REDIS_SERVER_TLS, which rcli and the next start_redis then use, until the set-up resets them.
make_certs() { redis_tls_certs "$work/certs"; }
redis_pong_any() { rcli -p "$1" ping 2>/dev/null | grep -q PONG; }

# One redis-server on $rport in $work/$1 (TLS only, after make_certs); sets rpid.
start_redis() {
  local listen=(--port $rport)
  [ ${#REDIS_SERVER_TLS[@]} -gt 0 ] && listen=(--port 0 --tls-port $rport "${REDIS_SERVER_TLS[@]}")
  mkdir -p "$work/$1"
  redis-server "${listen[@]}" --bind 127.0.0.1 --dir "$work/$1" --appendonly yes --appendfsync always --save '' \
    --maxmemory-policy noeviction --daemonize no --logfile "$work/$1/redis.log" </dev/null &
  rpid=$!; started+=("$rpid")
  wait_listening "$rpid" $rport redis_pong_any $rport && return 0
  echo "redis-server on port $rport is not up; its log:" >&2
  tail -n 20 "$work/$1/redis.log" >&2 || true
  return 1
}

# Three ternd (lb + 1 to lb + 3) with the given store options, HAProxy on lb in front (haproxy.cfg
# with these ports), one run, then ternd and HAProxy stopped.
# $1 label, $2 redis-server pids, $3 commandstats ports, $4 masters' pids or "", then ternd options.
three_nodes() {
  local label="$1" rp="$2" ports="$3" mp="$4" i pids="" hpid
  shift 4
  for i in 1 2 3; do
    "$bin/ternd" --listen "127.0.0.1:$((lb + i))" --data "$work/$label-n$i" "$@" --node-id "n$i" "${ternd_args[@]}" &
    started+=($!); pids="$pids $!"; up "$((lb + i))" $!
  done
  # haproxy.cfg takes its ports (and its stats socket) from the environment.
  TERN_LB_PORT=$lb TERN_N1_PORT=$n1 TERN_N2_PORT=$n2 TERN_N3_PORT=$n3 \
    TERN_HAPROXY_SOCKET="$work/haproxy-$label.sock" \
    haproxy -f "$here/haproxy.cfg" -db >"$work/haproxy-$label.log" 2>&1 &
  hpid=$!; started+=("$hpid"); up $lb "$hpid"; sleep 2  # the health checks bring every node into rotation
  run "$label" http://127.0.0.1:$lb "$pids" "$rp" "$hpid" "$ports" "$mp"
  # shellcheck disable=SC2086  # pids, one word each
  stop "$hpid" $pids
}

setup_rocksdb() {
  require_free_ports $lb
  "$bin/ternd" --listen 127.0.0.1:$lb --data "$work/rocks" "${ternd_args[@]}" &
  local p=$!; started+=("$p"); up $lb "$p"
  run rocksdb http://127.0.0.1:$lb "$p" "" "" "" ""
  stop "$p"
}

setup_redis1() {
  require_free_ports $lb $rport
  start_redis redis1
  "$bin/ternd" --listen 127.0.0.1:$lb --data "$work/r1" --store redis --redis redis://127.0.0.1:$rport \
    --node-id solo "${ternd_args[@]}" &
  local p=$!; started+=("$p"); up $lb "$p"
  run redis1 http://127.0.0.1:$lb "$p" "$rpid" "" $rport ""
  stop "$p"
  stop "$rpid"
}

setup_redis1tls() {
  require_free_ports $lb $rport
  make_certs
  start_redis redis1tls
  local d="$work/certs"
  "$bin/ternd" --listen 127.0.0.1:$lb --data "$work/r1tls" --store redis --redis rediss://127.0.0.1:$rport \
    --redis-tls-ca "$d/ca.crt" --redis-tls-cert "$d/client.crt" --redis-tls-key "$d/client.key" \
    --node-id solo "${ternd_args[@]}" &
  local p=$!; started+=("$p"); up $lb "$p"
  run redis1tls http://127.0.0.1:$lb "$p" "$rpid" "" $rport ""
  stop "$p"
  stop "$rpid"
  REDIS_CLI_TLS=(); REDIS_SERVER_TLS=()
}

setup_redis3() {
  require_free_ports $lb $n1 $n2 $n3 $rport
  start_redis redis3
  three_nodes redis3 "$rpid" $rport "" --store redis --redis redis://127.0.0.1:$rport
  stop "$rpid"
}

# $1 label, then extra ternd options.
setup_cluster() {
  require_free_ports $lb $n1 $n2 $n3
  mkdir -p "$work/$1"
  redis_cluster_start "$work/$1" "$cport"
  three_nodes "$1" "${REDIS_CLUSTER_PIDS[*]}" "${REDIS_CLUSTER_MASTER_PORTS[*]}" "${REDIS_CLUSTER_MASTER_PIDS[*]}" \
    --store redis --redis "$REDIS_CLUSTER_SEEDS" "${@:2}"
  stop "${REDIS_CLUSTER_PIDS[@]}"
}

for s in $setups; do
  case "$s" in
    rocksdb) setup_rocksdb ;;
    redis1) setup_redis1 ;;
    redis1tls) setup_redis1tls ;;
    redis3) setup_redis3 ;;
    cluster3) setup_cluster cluster3 ;;
    cluster3w) setup_cluster cluster3w --redis-wait-replicas 1 ;;
  esac
done
