# shellcheck shell=bash
# Sourced (not run) by deploy/local-cluster.sh and deploy/bench-nodes.sh: a local Redis Cluster
# of 3 masters + 3 replicas on 127.0.0.1, each node as in production (AOF, appendfsync always,
# no RDB, noeviction; docs/scaling.md).
#
#   redis_cluster_start DIR PORT
# starts redis-server on PORT..PORT+5 (cluster bus PORT+10000..PORT+10005), joins them with
# `redis-cli --cluster create ... --cluster-replicas 1`, and returns once every node reports
# `cluster_state:ok` and every master has its replica in sync (bounded waits; no fixed sleep).
# Leaves under DIR: redis-<port>/ (AOF, nodes.conf), redis-<port>.log, redis-<port>.pid and
# redis-create.log. Sets REDIS_CLUSTER_PIDS and REDIS_CLUSTER_PORTS (all six),
# REDIS_CLUSTER_MASTER_PIDS and REDIS_CLUSTER_MASTER_PORTS (the three masters, as
# redis-cli assigned them) and REDIS_CLUSTER_SEEDS (redis://127.0.0.1:<port> of all six,
# comma-separated: ternd's --redis). Also defines the helpers it uses (port_free,
# require_free_ports, proc_alive, redis_pong, wait_listening, rcli, redis_tls_certs), which the
# two scripts use too.
# The servers are background children of the calling shell (their pids are written at once, so
# a caller's clean-up can stop them even if it is interrupted half way): call it in the
# script's own shell, not in $(...). On failure it prints why on stderr and returns 1; the
# servers it started are then still running (the caller stops them by REDIS_CLUSTER_PIDS or
# the .pid files).
# With REDIS_PASSWORD set, every node requires it (requirepass, and masterauth for its
# replication), read from a config file of the node's own (mode 600), not its command line;
# the script's redis-cli calls log in through REDISCLI_AUTH, which it exports.
# After redis_tls_certs DIR, every node speaks TLS only (no plain port; the cluster bus and
# replication over TLS too), REDIS_CLUSTER_SEEDS are rediss:// and redis-cli (rcli) uses TLS.

# TLS for the local Redis: a CA of its own, a certificate for 127.0.0.1 that every
# redis-server shows (and uses as a client of the others on the cluster bus), and a client
# certificate for ternd and redis-cli (redis-server asks clients for one), made by openssl in
# DIR (ca.crt, server.crt/.key, client.crt/.key; keys mode 600, valid 30 days). Sets
# REDIS_TLS_DIR, REDIS_CLI_TLS (redis-cli's options) and REDIS_SERVER_TLS (redis-server's,
# without the port).
redis_tls_certs() {
  local d="$1" ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes) n
  mkdir -p "$d"
  (
    umask 077
    openssl req -x509 "${ec[@]}" -keyout "$d/ca.key" -out "$d/ca.crt" -days 30 -subj "/CN=tern local Redis CA" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$d/server.ext"; : >"$d/client.ext"
    for n in server client; do
      openssl req -new "${ec[@]}" -keyout "$d/$n.key" -out "$d/$n.csr" -subj "/CN=$n" 2>/dev/null
      openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -out "$d/$n.crt" \
        -days 30 -extfile "$d/$n.ext" 2>/dev/null
    done
  )
  for n in ca server client; do
    [ -s "$d/$n.crt" ] || { echo "openssl could not make the certificates in $d" >&2; return 1; }
  done
  # shellcheck disable=SC2034  # used by the caller
  REDIS_TLS_DIR="$d"
  REDIS_CLI_TLS=(--tls --cacert "$d/ca.crt" --cert "$d/client.crt" --key "$d/client.key")
  REDIS_SERVER_TLS=(--tls-cert-file "$d/server.crt" --tls-key-file "$d/server.key" --tls-ca-cert-file "$d/ca.crt")
}
REDIS_CLI_TLS=()
REDIS_SERVER_TLS=()

# redis-cli, over TLS after redis_tls_certs.
rcli() { redis-cli "${REDIS_CLI_TLS[@]}" "$@"; }

# True if a server could listen on 127.0.0.1:$1 (bound as servers do, with SO_REUSEADDR).
port_free() {
  python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# Fails (message on stderr) unless every given port is free.
require_free_ports() {
  local p busy=()
  for p in "$@"; do port_free "$p" || busy+=("$p"); done
  [ "${#busy[@]}" -eq 0 ] && return 0
  echo "port(s) ${busy[*]} on 127.0.0.1 already in use (by another process); free them first" >&2
  return 1
}

# True while process $1 runs (exists and is not a zombie).
proc_alive() {
  local f st
  f=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  read -r st _ <<<"$f"
  [ -n "$st" ] && [ "$st" != Z ]
}

redis_pong() { rcli -p "$1" ping 2>/dev/null | grep -q PONG; }

# Waits (at most 10 s) until process $1 itself listens on 127.0.0.1:$2 and then the command
# "${@:3}" (if any) succeeds: an answer from another process that holds the port (a port
# taken since it was checked) does not count. Fails with a message if process $1 exits first.
wait_listening() {
  local pid="$1" port="$2"
  shift 2
  for _ in $(seq 1 100); do
    proc_alive "$pid" || { echo "process $pid, to listen on 127.0.0.1:$port, exited (port taken?)" >&2; return 1; }
    if ss -Htlnp "sport = :$port" 2>/dev/null | grep -q "pid=$pid,"; then
      if [ $# -eq 0 ] || "$@" >/dev/null 2>&1; then return 0; fi
    fi
    sleep 0.1
  done
  echo "process $pid does not listen on 127.0.0.1:$port${1:+ and answer $*} after 10 s" >&2
  return 1
}

redis_cluster_start() {
  local dir="$1" base="$2" k p ok bus=()
  REDIS_CLUSTER_PIDS=(); REDIS_CLUSTER_PORTS=(); REDIS_CLUSTER_MASTER_PIDS=(); REDIS_CLUSTER_MASTER_PORTS=()
  REDIS_CLUSTER_SEEDS=""
  for k in 0 1 2 3 4 5; do REDIS_CLUSTER_PORTS+=($((base + k))); bus+=($((base + k + 10000))); done
  require_free_ports "${REDIS_CLUSTER_PORTS[@]}" "${bus[@]}" || return 1
  local addrs=() seeds=() scheme=redis
  local conf=() listen=()
  [ ${#REDIS_SERVER_TLS[@]} -gt 0 ] && scheme=rediss
  if [ -n "${REDIS_PASSWORD:-}" ]; then export REDISCLI_AUTH="$REDIS_PASSWORD"; fi
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    mkdir -p "$dir/redis-$p"
    conf=()
    if [ -n "${REDIS_PASSWORD:-}" ]; then
      (umask 077; printf 'requirepass "%s"\nmasterauth "%s"\n' "$REDIS_PASSWORD" "$REDIS_PASSWORD" >"$dir/redis-$p/auth.conf")
      conf=("$dir/redis-$p/auth.conf")
    fi
    listen=(--port "$p")
    [ ${#REDIS_SERVER_TLS[@]} -gt 0 ] && listen=(--port 0 --tls-port "$p" "${REDIS_SERVER_TLS[@]}" --tls-cluster yes --tls-replication yes)
    redis-server "${conf[@]}" "${listen[@]}" --bind 127.0.0.1 --dir "$dir/redis-$p" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 5000 --appendonly yes \
      --appendfsync always --save '' --maxmemory-policy noeviction --daemonize no \
      --logfile "$dir/redis-$p.log" </dev/null &
    REDIS_CLUSTER_PIDS+=($!)
    echo $! >"$dir/redis-$p.pid"
    addrs+=("127.0.0.1:$p"); seeds+=("$scheme://127.0.0.1:$p")
  done
  # shellcheck disable=SC2034  # used by the caller
  REDIS_CLUSTER_SEEDS=$(IFS=,; echo "${seeds[*]}")
  for k in 0 1 2 3 4 5; do
    p=${REDIS_CLUSTER_PORTS[$k]}
    wait_listening "${REDIS_CLUSTER_PIDS[$k]}" "$p" redis_pong "$p" && continue
    echo "redis-server on port $p is not up; its log:" >&2
    tail -n 20 "$dir/redis-$p.log" >&2 2>/dev/null || true
    return 1
  done
  if ! rcli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/redis-create.log" 2>&1; then
    echo "rcli --cluster create failed:" >&2; tail -n 20 "$dir/redis-create.log" >&2; return 1
  fi
  # Every node must see every slot served (cluster_state:ok), and every master its replica
  # online (so the initial sync is not part of what a caller measures next). At most 30 s.
  for _ in $(seq 1 300); do
    ok=1
    for p in "${REDIS_CLUSTER_PORTS[@]}"; do
      rcli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || { ok=0; break; }
      case "$(rcli -p "$p" role 2>/dev/null | head -n 1)" in
        master) rcli -p "$p" info replication 2>/dev/null | grep -q '^connected_slaves:1' || { ok=0; break; } ;;
        slave) rcli -p "$p" info replication 2>/dev/null | grep -q '^master_link_status:up' || { ok=0; break; } ;;
        *) ok=0; break ;;
      esac
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  if [ "$ok" != 1 ]; then
    echo "the Redis Cluster on ports ${REDIS_CLUSTER_PORTS[*]} is not ok (cluster_state, replicas in sync) after 30 s; port $p:" >&2
    rcli -p "$p" cluster info 2>&1 | head -n 3 >&2 || true
    return 1
  fi
  for k in 0 1 2 3 4 5; do
    p=${REDIS_CLUSTER_PORTS[$k]}
    [ "$(rcli -p "$p" role | head -n 1)" = master ] || continue
    REDIS_CLUSTER_MASTER_PORTS+=("$p"); REDIS_CLUSTER_MASTER_PIDS+=("${REDIS_CLUSTER_PIDS[$k]}")
  done
  if [ "${#REDIS_CLUSTER_MASTER_PORTS[@]}" -ne 3 ]; then
    echo "expected 3 masters, found ${#REDIS_CLUSTER_MASTER_PORTS[@]} (${REDIS_CLUSTER_MASTER_PORTS[*]})" >&2
    return 1
  fi
}
