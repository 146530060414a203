#!/usr/bin/env bash
# Reproduces the measurements of docs/benchmarks.md on this machine. Starts a fresh release
# ternd (durability sync, its own temporary data directory) for each scenario, runs tern-bench
# against it with --server-pid, and keeps every JSON result, ternd's log and a perf/strace
# profile where asked for, under $OUT (default bench-results/).
#
#   scripts/bench.sh                 # every scenario (about 50 minutes)
#   scripts/bench.sh pairs sweep     # only the named scenarios
#   TERN_BIN_DIR=build/bench-rel/bin scripts/bench.sh idle
#   PEERS_RATES="4000 8000" scripts/bench.sh peers   # ternd vs mosquitto, same generator
#
# Scenarios: pairs findmax sweep group broadcast idle offline storm overload profile channel channel-200k
# hot-group e2e, and peers and peers-channel (not in the default set: they need mosquitto,
# which scripts/setup.sh installs), and tls (not in the default set: plain against TLS).
# Needs a release build: cmake --preset release && cmake --build --preset release
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${TERN_BIN_DIR:-build/bin}
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
for b in ternd tern-bench; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (build the release preset first)" >&2; exit 2; }
done

PID=""
ADDR=""
DATA=""
# On a machine shared with other work, run server and generator ahead of it (root only);
# NICE=0 disables this.
NICE=${NICE:--10}
RUN=()
if [ "$NICE" != 0 ] && [ "$(id -u)" = 0 ]; then RUN=(nice -n "$NICE"); fi

start_server() {  # extra ternd flags...
  DATA=$(mktemp -d /tmp/tern-bench-data.XXXXXX)
  "${RUN[@]}" "$BIN/ternd" --listen 127.0.0.1:0 --data "$DATA" --log-level warn "$@" >"$OUT/ternd.out" 2>>"$OUT/ternd.log" &
  PID=$!
  # Up to 60 s: opening the store can be slow while other work shares the disk.
  for _ in $(seq 1 600); do
    if head -1 "$OUT/ternd.out" 2>/dev/null | grep -q '^listening '; then break; fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  ADDR=$(head -1 "$OUT/ternd.out" | cut -d' ' -f2)
  [ -n "$ADDR" ] || { echo "ternd did not start" >&2; exit 2; }
}

stop_server() {
  [ -n "$PID" ] || return 0
  kill -TERM "$PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  rm -rf "$DATA"
  PID=""
  DATA=""
}

# mosquitto, for the peers scenario: its own config in a temporary directory, listening on a
# free loopback port only, no persistence, no log file.
MQ_PID=""
MQ_DIR=""
MQ_PORT=""
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_mosquitto() {
  [ -x "$MOSQUITTO" ] || { echo "mosquitto not found (scripts/setup.sh installs it)" >&2; exit 2; }
  MQ_DIR=$(mktemp -d /tmp/tern-bench-mosquitto.XXXXXX)
  for _ in 1 2 3 4 5; do  # a port found free can be taken before mosquitto binds it
    MQ_PORT=$(free_port)
    # max_inflight_messages: QoS 1 messages in flight to one client (default 20);
    # max_queued_messages: beyond those, queued per client (default 1000). Both far above
    # what 1,000 clients at the benchmark's rates need, so that nothing is dropped by a limit.
    cat >"$MQ_DIR/mosquitto.conf" <<EOF
listener $MQ_PORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 1000
max_queued_messages 1000000
max_connections -1
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
    "${RUN[@]}" "$MOSQUITTO" -c "$MQ_DIR/mosquitto.conf" 2>>"$OUT/mosquitto.log" &
    MQ_PID=$!
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$MQ_PORT") 2>/dev/null; then return 0; fi
      kill -0 "$MQ_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$MQ_PID" 2>/dev/null || true
    wait "$MQ_PID" 2>/dev/null || true
    MQ_PID=""
  done
  echo "mosquitto did not start (see $OUT/mosquitto.log)" >&2
  exit 2
}

stop_mosquitto() {
  if [ -n "$MQ_PID" ]; then
    kill -TERM "$MQ_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$MQ_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$MQ_PID" 2>/dev/null || true
    wait "$MQ_PID" 2>/dev/null || true
  fi
  [ -z "$MQ_DIR" ] || rm -rf "$MQ_DIR"
  MQ_PID=""
  MQ_DIR=""
}

# Whatever is still running when the script ends (normally, on error or on ^C) is stopped.
cleanup() {
  stop_server
  stop_mosquitto
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The machine's two cores may be shared with other work: wait (bounded) for a quiet moment
# before each run, and record the load it started under.
wait_quiet() {
  local limit=${QUIET_LOAD:-0.8} waited=0
  while awk -v l="$limit" '{ exit !($1 > l) }' /proc/loadavg && [ "$waited" -lt "${QUIET_WAIT:-900}" ]; do
    sleep 10
    waited=$((waited + 10))
  done
}

bench() {  # name, tern-bench arguments...
  bench_at "http://$ADDR" "$PID" "$@"
}

bench_at() {  # server URL, server pid, name, tern-bench arguments...
  local url=$1 pid=$2 name=$3
  shift 3
  wait_quiet
  echo "== $name (load $(cut -d' ' -f1-3 /proc/loadavg)): tern-bench $* --server $url --server-pid $pid --json" |
    tee -a "$OUT/commands.txt"
  "${RUN[@]}" "$BIN/tern-bench" "$@" --server "$url" --server-pid "$pid" --json >"$OUT/$name.json" 2>"$OUT/$name.progress" ||
    echo "   (exit $?)" | tee -a "$OUT/commands.txt"
}

# A send rate limit above what any single benchmark client sends (ternd's default is 50/s),
# and no per-address registration, per-user creation or invite limit: the generator registers
# thousands of users from one address (those limits are for real users, not measured here).
SERVER_FLAGS=(--send-rate 100000 --send-burst 100000 --register-rate 0 --create-rate 0 --invite-rate 0)

scenario_pairs() {  # the issue's reference point (8,000 msg/s offered) and a sustainable one
  start_server "${SERVER_FLAGS[@]}"
  bench pairs-8000 pairs --clients 1000 --rate 8000 --duration 30
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench pairs-2000 pairs --clients 1000 --rate 2000 --duration 30
  stop_server
}

scenario_findmax() {
  start_server "${SERVER_FLAGS[@]}"
  bench pairs-findmax pairs --clients 1000 --rate 1000 --duration 10 --find-max --p99-bound-ms 25 --step-factor 1.25
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench pairs-findmax-100ms pairs --clients 1000 --rate 1000 --duration 10 --find-max --p99-bound-ms 100 --step-factor 1.25
  stop_server
}

scenario_sweep() {  # latency against throughput, for the plot
  for rate in ${SWEEP_RATES:-500 1000 1500 2000 2500 3000 4000 5000 6000 8000}; do
    start_server "${SERVER_FLAGS[@]}"
    bench "sweep-$rate" pairs --clients 1000 --rate "$rate" --duration 15
    stop_server
  done
}

scenario_group() {
  start_server "${SERVER_FLAGS[@]}"
  bench group group --clients 200 --group-size 20 --senders 2 --rate 200 --duration 20
  stop_server
}

scenario_broadcast() {
  start_server "${SERVER_FLAGS[@]}"
  bench broadcast-101 broadcast --clients 101 --rate 20 --duration 20
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench broadcast-1001 broadcast --clients 1001 --group-size 1001 --rate 5 --duration 20
  stop_server
}

scenario_idle() {
  start_server --max-connections 19500 --register-rate 0 --create-rate 0
  bench idle-19000 idle --clients 19000 --workers 2 --duration 30 --source-addrs 2
  stop_server
  start_server --register-rate 0 --create-rate 0
  bench idle-1000 idle --clients 1000 --duration 10
  stop_server
}

scenario_offline() {
  start_server "${SERVER_FLAGS[@]}"
  bench offline-drain offline-drain --clients 1000 --queued 100 --rate 3000
  stop_server
}

scenario_storm() {
  start_server "${SERVER_FLAGS[@]}"
  bench reconnect-storm-1000 reconnect-storm --clients 1000 --rate 1000 --duration 20
  stop_server
  start_server --max-connections 19500 "${SERVER_FLAGS[@]}"
  bench reconnect-storm-10000 reconnect-storm --clients 10000 --workers 2 --rate 1000 --duration 30 --connect-concurrency 1000
  stop_server
}

scenario_overload() {  # twice the highest sustainable rate for 30 s (OVERLOAD_RATE, default 56000)
  start_server "${SERVER_FLAGS[@]}" --frame-rate 1000000 --frame-burst 1000000
  bench "overload-${OVERLOAD_RATE:-56000}" pairs --clients 1000 --rate "${OVERLOAD_RATE:-56000}" --duration 30
  stop_server
}

scenario_profile() {  # where the server's time goes at a fixed rate (PROFILE_RATE, default 3000)
  local rate=${PROFILE_RATE:-3000}
  start_server "${SERVER_FLAGS[@]}"
  local token
  token=$(curl -s -XPOST "http://$ADDR/v1/users" -d '{"user":"bench-metrics-reader"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  wait_quiet
  "${RUN[@]}" "$BIN/tern-bench" pairs --clients 1000 --rate "$rate" --duration 45 --server "http://$ADDR" \
    --server-pid "$PID" --json >"$OUT/profile-run.json" 2>/dev/null &
  local bpid=$!
  sleep 15
  local gen
  gen=$(pgrep -P "$bpid" | head -1)
  curl -s -H "Authorization: Bearer $token" "http://$ADDR/metrics" >"$OUT/profile-metrics-0.txt"
  local events=raw_syscalls:sys_enter,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_write
  events+=,syscalls:sys_enter_recvmsg,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait
  events+=,syscalls:sys_enter_futex,syscalls:sys_enter_fdatasync,context-switches,task-clock
  perf stat -e "$events" -p "$PID" -o "$OUT/profile-server-syscalls.txt" -- sleep 10 &
  local sp=$!
  perf stat -e "$events" -p "$gen" -o "$OUT/profile-generator-syscalls.txt" -- sleep 10
  wait "$sp" || true
  curl -s -H "Authorization: Bearer $token" "http://$ADDR/metrics" >"$OUT/profile-metrics-1.txt"
  perf record -g -p "$PID" -o "$OUT/profile-server.perf" -- sleep 8 2>/dev/null
  # (head closes the pipe early: not a failure)
  { perf report -i "$OUT/profile-server.perf" --no-children -g none --sort symbol 2>/dev/null | head -60 \
    >"$OUT/profile-server-top.txt"; } || true
  { perf report -i "$OUT/profile-server.perf" --children -g none --sort symbol 2>/dev/null | grep -E "tern::" | head -40 \
    >"$OUT/profile-server-tern.txt"; } || true
  wait "$bpid" || true
  stop_server
}

# Issue 9, channels. 19,000 connections need two generator processes (--workers 2: 20,000 open
# files per process is this machine's limit) and the server's own connection limit raised
# (ternd keeps a few hundred descriptors for its store). One post per second; every subscriber
# acks; the catch-up run has one subscriber miss 10,000 posts and then replay them.
# ternd limits a channel's posts to 10/s by default: the catch-up run posts 1,000/s.
CHANNEL_FLAGS=(--channel-post-rate 100000 --channel-post-burst 100000)
CHANNEL_ARGS=(channel --clients 19000 --workers 2 --source-addrs 4 --rate 1 --duration 30 --setup-threads 16
  --setup-timeout 600)

scenario_channel() {
  start_server "${SERVER_FLAGS[@]}" --max-connections 19500
  bench channel-19000 "${CHANNEL_ARGS[@]}"
  stop_server
  start_server "${SERVER_FLAGS[@]}" "${CHANNEL_FLAGS[@]}" --frame-rate 1000000 --frame-burst 1000000
  bench channel-catchup-10000 channel --clients 3 --catchup 10000 --rate 1000
  stop_server
}

# The same channel with 200,000 subscribers: 181,000 more join over HTTP and never connect.
scenario_channel-200k() {
  start_server "${SERVER_FLAGS[@]}" --max-connections 19500 --max-subscribers 200000
  bench channel-200k "${CHANNEL_ARGS[@]}" --offline-subscribers 181000
  stop_server
}

# A 1,024-member group, all online, 50 senders, 20 posts/s in all (~20,000 deliveries/s); then
# the same with a typing frame before every post, so that the two p99 figures compare: with
# the defaults (the group is above --typing-max-members, so typing is coalesced per
# conversation), and with typing relayed per member (--typing-max-members 1024) for contrast.
HOT_GROUP_ARGS=(group --clients 1024 --group-size 1024 --senders 50 --rate 20 --duration 30)

scenario_hot-group() {
  start_server "${SERVER_FLAGS[@]}"
  bench hot-group "${HOT_GROUP_ARGS[@]}"
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench hot-group-typing "${HOT_GROUP_ARGS[@]}" --typing
  stop_server
  start_server "${SERVER_FLAGS[@]}" --typing-max-members 1024
  bench hot-group-typing-per-member "${HOT_GROUP_ARGS[@]}" --typing
  stop_server
}

# ternd and mosquitto under the same generator, workload and CPU accounting (tern-bench
# --server-pid: utime + stime of the whole server process over each step, divided by the
# deliveries of the step), one after the other on a fresh server each, so that they never
# compete for the cores. ternd: release build, default durability (fsync before `sent`), the
# per-device send and frame rate limits lifted. mosquitto: QoS 1, in memory.
#   PEERS_RATES     rates to run both at (default 8000)
#   PEERS_DURATION  seconds per rate (default 30)
#   PEERS_FINDMAX   1 (default): also --find-max with a 100 ms p99 bound for both; 0: not
PEERS_TERND_FLAGS=(--send-rate 1000000 --send-burst 1000000 --frame-rate 1000000 --frame-burst 1000000
  --register-rate 0 --create-rate 0)

# The cost of end-to-end encryption (issue 7): the same pairs run without and with --encrypt
# (E2E_RATE, default 1000 msg/s), the group run of scenario_group without and with it (Sender
# Keys), each on a fresh ternd; then keyrings on disk (saved with fsync on every encrypt and
# decrypt) at a rate they can follow.
scenario_e2e() {
  local rate=${E2E_RATE:-1000}
  start_server "${SERVER_FLAGS[@]}"
  bench e2e-pairs-plain pairs --clients 1000 --rate "$rate" --duration 30
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench e2e-pairs-encrypt pairs --clients 1000 --rate "$rate" --duration 30 --encrypt
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench e2e-group-plain group --clients 200 --group-size 20 --senders 2 --rate 200 --duration 20
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench e2e-group-encrypt group --clients 200 --group-size 20 --senders 2 --rate 200 --duration 20 --encrypt
  stop_server
  start_server "${SERVER_FLAGS[@]}"
  bench e2e-pairs-encrypt-disk pairs --clients 100 --rate 20 --duration 20 --encrypt --keyring-disk
  stop_server
}

# The cost of TLS (issue 12): the same pairs run over http/ws and over https/wss (a throw-away
# CA and a certificate for 127.0.0.1 made here with the openssl CLI; tern-bench --ca), in the
# order plain, TLS, plain, TLS, each on a fresh ternd; prints ternd's CPU (utime + stime from
# /proc over the step, tern-bench --server-pid) and the generator's per delivered message for
# each. Then the generator's memory per held connection (idle), plain and TLS.
#   TLS_RATE (default 2000), TLS_CLIENTS (default 1000), TLS_DURATION (default 20)
scenario_tls() {
  local rate=${TLS_RATE:-2000} n=${TLS_CLIENTS:-1000} dur=${TLS_DURATION:-20} pki round
  pki=$(mktemp -d /tmp/tern-bench-pki.XXXXXX)
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -days 2 -subj /CN=bench-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
  openssl req "${ec[@]}" -subj /CN=127.0.0.1 -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
  echo "subjectAltName=IP:127.0.0.1" >"$pki/ext.cnf"
  openssl x509 -req -days 2 -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -set_serial 1 \
    -extfile "$pki/ext.cnf" -out "$pki/server.pem" 2>/dev/null
  local tls=(--tls-cert "$pki/server.pem" --tls-key "$pki/server.key")
  local args=(pairs --clients "$n" --rate "$rate" --duration "$dur")
  for round in 1 2; do
    start_server "${SERVER_FLAGS[@]}"
    bench "tls-$round-plain" "${args[@]}"
    stop_server
    start_server "${SERVER_FLAGS[@]}" "${tls[@]}"
    bench_at "https://$ADDR" "$PID" "tls-$round-tls" "${args[@]}" --ca "$pki/ca.pem"
    stop_server
  done
  start_server "${SERVER_FLAGS[@]}"
  bench tls-idle-plain idle --clients "$n" --duration 5
  stop_server
  start_server "${SERVER_FLAGS[@]}" "${tls[@]}"
  bench_at "https://$ADDR" "$PID" tls-idle-tls idle --clients "$n" --duration 5 --ca "$pki/ca.pem"
  stop_server
  rm -rf "$pki"
  python3 - "$OUT" <<'PY' | tee "$OUT/tls-summary.md"
import json, sys
out = sys.argv[1]
print("| run | delivered | server CPU us/msg | generator CPU us/msg | p50 / p99 ms | load at start |")
print("|---|---|---|---|---|---|")
loads = {}
for line in open(out + "/commands.txt"):
    if line.startswith("== tls-"):
        loads[line.split()[1]] = line.split("(load ")[1].split(")")[0]
for name in ("tls-1-plain", "tls-1-tls", "tls-2-plain", "tls-2-tls"):
    try:
        r = json.load(open(f"{out}/{name}.json"))["result"]
    except (OSError, ValueError, KeyError):
        print(f"| {name} | (no result) | | | | |")
        continue
    lat = r["latency_ms"]
    srv = r["server_cpu_us_per_delivery"]
    print(f"| {name} | {r['delivered'] + r['replayed']} | {srv:.1f} | {r['generator_cpu_us_per_delivery']:.1f} | "
          f"{lat['p50']:.1f} / {lat['p99']:.1f} | {loads.get(name, '?')} |")
for name in ("tls-idle-plain", "tls-idle-tls"):
    try:
        idle = json.load(open(f"{out}/{name}.json"))["idle"]
        print(f"{name}: generator bytes per connection {idle.get('generator_bytes_per_connection', 0):.0f}")
    except (OSError, ValueError, KeyError):
        print(f"{name}: (no result)")
PY
}

scenario_peers() {
  local rate dur=${PEERS_DURATION:-30} common=(pairs --clients 1000)
  for rate in ${PEERS_RATES:-8000}; do
    start_mosquitto
    bench_at "mqtt://127.0.0.1:$MQ_PORT" "$MQ_PID" "peers-mosquitto-$rate" "${common[@]}" --protocol mqtt \
      --rate "$rate" --duration "$dur"
    stop_mosquitto
    start_server "${PEERS_TERND_FLAGS[@]}"
    bench "peers-ternd-$rate" "${common[@]}" --rate "$rate" --duration "$dur"
    stop_server
  done
  if [ "${PEERS_FINDMAX:-1}" = 1 ]; then
    local fm=(--rate 1000 --duration 10 --find-max --p99-bound-ms 100 --step-factor 1.25)
    start_mosquitto
    bench_at "mqtt://127.0.0.1:$MQ_PORT" "$MQ_PID" peers-mosquitto-findmax "${common[@]}" --protocol mqtt "${fm[@]}"
    stop_mosquitto
    start_server "${PEERS_TERND_FLAGS[@]}"
    bench peers-ternd-findmax "${common[@]}" "${fm[@]}"
    stop_server
  fi
  scripts/bench-peers-table.sh "$OUT" | tee "$OUT/peers-summary.md"
}

# The channel workload against both: one poster, PEERS_CHANNEL_CLIENTS - 1 live subscribers
# (default 19,000 clients, as scenario channel), 1 post/s for 30 s. mosquitto: one topic, QoS 1
# subscriptions, in memory; ternd: a channel, every post durable before `sent`.
scenario_peers-channel() {
  local n=${PEERS_CHANNEL_CLIENTS:-19000}
  local args=(channel --clients "$n" --workers 2 --source-addrs 4 --rate 1 --duration 30 --setup-threads 16
    --setup-timeout 600)
  start_mosquitto
  bench_at "mqtt://127.0.0.1:$MQ_PORT" "$MQ_PID" "peers-channel-mosquitto-$n" "${args[@]}" --protocol mqtt
  stop_mosquitto
  start_server "${SERVER_FLAGS[@]}" --max-connections $((n + 500))
  bench "peers-channel-ternd-$n" "${args[@]}"
  stop_server
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] ||
  scenarios=(pairs findmax sweep group broadcast idle offline storm overload profile channel channel-200k hot-group e2e)
for s in "${scenarios[@]}"; do
  "scenario_$s"
done
echo "results in $OUT/"
