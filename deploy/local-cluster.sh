#!/usr/bin/env bash
# A local demo of Tern on several nodes (docs/scaling.md): one redis-server (AOF, appendfsync
# always), three ternd nodes on it, and HAProxy (Debian's haproxy) in front on :8080,
# WebSocket-aware (haproxy.cfg). Everything runs under ./tern-cluster (data, logs, pids).
#   deploy/local-cluster.sh start   # then clients use http://127.0.0.1:8080 and ws://127.0.0.1:8080/v1/ws
#   deploy/local-cluster.sh start --redis-cluster   # a Redis Cluster (3 masters + 3 replicas,
#                                   # ports REDIS_PORT..REDIS_PORT+5, started by
#                                   # deploy/redis-cluster.sh) instead of one redis-server
#   deploy/local-cluster.sh start [--redis-cluster] --tls   # Redis speaks TLS only (rediss://):
#                                   # a CA and certificates made by openssl in ./tern-cluster/tls;
#                                   # the nodes show their client certificate (docs/scaling.md
#                                   # "TLS to Redis"); redis-cli needs the options in tls/redis-cli.args
#   deploy/local-cluster.sh stop
# Ports (environment): TERN_LB_PORT (HAProxy, default 8080), TERN_NODE_PORTS (the three nodes,
# default "8081 8082 8083"), REDIS_PORT (default 6390); the same for stop. tests/integration/
# demo_test.cc runs this script on free ports.
# Redis lets nobody in without a password: a random one, made at start in
# ./tern-cluster/redis-password (mode 600); the nodes read it with --redis-password-file, and
# `REDISCLI_AUTH=$(cat tern-cluster/redis-password) redis-cli -p 6390` gets an operator in.
# Needs: redis-server, haproxy (apt-get install redis-server haproxy), python3, ternd built (build/bin);
# openssl for --tls.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/redis-cluster.sh
. "$here/redis-cluster.sh"
root="${TERN_CLUSTER_DIR:-$PWD/tern-cluster}"
ternd="${TERND:-$here/../build/bin/ternd}"
redis_port="${REDIS_PORT:-6390}"
read -r -a ports <<<"${TERN_NODE_PORTS:-8081 8082 8083}"
(( ${#ports[@]} == 3 )) || { echo "TERN_NODE_PORTS: three ports"; exit 2; }
# haproxy.cfg reads its ports from these.
export TERN_LB_PORT="${TERN_LB_PORT:-8080}" TERN_N1_PORT="${ports[0]}" TERN_N2_PORT="${ports[1]}" TERN_N3_PORT="${ports[2]}"

start() {
  local cluster=0 tls=0 arg
  for arg in "$@"; do
    case "$arg" in
      --redis-cluster) cluster=1 ;;
      --tls) tls=1 ;;
      *) echo "unknown option $arg (start [--redis-cluster] [--tls])"; exit 2 ;;
    esac
  done
  mkdir -p "$root"
  command -v redis-server >/dev/null || { echo "redis-server missing (apt-get install redis-server)"; exit 1; }
  command -v haproxy >/dev/null || { echo "haproxy missing (apt-get install haproxy)"; exit 1; }
  [ -x "$ternd" ] || { echo "ternd not found at $ternd (build it, or set TERND)"; exit 1; }
  local redis_url="redis://127.0.0.1:$redis_port" extra=() listen=(--port "$redis_port")
  local password_file="$root/redis-password"
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$password_file")
  export REDIS_PASSWORD REDISCLI_AUTH
  REDIS_PASSWORD=$(cat "$password_file"); REDISCLI_AUTH="$REDIS_PASSWORD"
  if [ "$tls" = 1 ]; then
    command -v openssl >/dev/null || { echo "openssl missing (apt-get install openssl)"; exit 1; }
    redis_tls_certs "$root/tls"
    printf '%s\n' "${REDIS_CLI_TLS[*]}" >"$root/tls/redis-cli.args"
    redis_url="rediss://127.0.0.1:$redis_port"
    listen=(--port 0 --tls-port "$redis_port" "${REDIS_SERVER_TLS[@]}")
    extra=(--redis-tls-ca "$REDIS_TLS_DIR/ca.crt" --redis-tls-cert "$REDIS_TLS_DIR/client.crt"
           --redis-tls-key "$REDIS_TLS_DIR/client.key")
  fi
  if [ "$cluster" = 1 ]; then
    # Six nodes, each with its own directory (AOF, nodes.conf); redis-cli pairs each master
    # with a replica. Every write waits for that replica (--redis-wait-replicas 1), so an
    # acknowledged message survives a master's failover (docs/scaling.md).
    redis_cluster_start "$root" "$redis_port"
    redis_url="$REDIS_CLUSTER_SEEDS"
    extra+=(--redis-wait-replicas 1)
  else
    mkdir -p "$root/redis"
    (umask 077; printf 'requirepass "%s"\n' "$REDIS_PASSWORD" >"$root/redis/auth.conf")
    redis-server "$root/redis/auth.conf" "${listen[@]}" --bind 127.0.0.1 --dir "$root/redis" --appendonly yes \
      --appendfsync always --save '' --maxmemory-policy noeviction --daemonize yes \
      --pidfile "$root/redis.pid" --logfile "$root/redis.log"
    for i in $(seq 1 60); do redis_pong "$redis_port" && break; sleep 0.1; done
  fi
  for i in 0 1 2; do
    n=$((i + 1))
    mkdir -p "$root/n$n"
    "$ternd" --store redis --redis "$redis_url" --redis-password-file "$password_file" "${extra[@]}" --node-id "n$n" \
      --listen "127.0.0.1:${ports[$i]}" --data "$root/n$n/data" --media-dir "$root/media" >"$root/n$n/ternd.log" 2>&1 &
    echo $! >"$root/n$n.pid"
  done
  for p in "${ports[@]}"; do
    for i in $(seq 1 100); do curl -fs "http://127.0.0.1:$p/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  TERN_HAPROXY_SOCKET="$root/haproxy.sock" haproxy -f "$here/haproxy.cfg" -D -p "$root/haproxy.pid"
  echo "up: http://127.0.0.1:$TERN_LB_PORT (nodes ${ports[*]}, redis $redis_url, its password in $password_file); logs in $root"
  [ "$tls" = 1 ] && echo "redis-cli over TLS: redis-cli $(cat "$root/tls/redis-cli.args") -p $redis_port"
  return 0
}

stop() {
  [ -f "$root/haproxy.pid" ] && kill "$(cat "$root/haproxy.pid")" 2>/dev/null || true
  for n in 1 2 3; do [ -f "$root/n$n.pid" ] && kill "$(cat "$root/n$n.pid")" 2>/dev/null || true; done
  sleep 1
  for f in "$root"/redis*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -f "$root"/*.pid
  echo "stopped"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [--redis-cluster] [--tls] | stop"; exit 2 ;;
esac
