#!/usr/bin/env bash
# Installs every build and test dependency from Debian's packages. Idempotent.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config
      libboost1.81-dev libboost-json1.81-dev libboost-context1.81-dev librocksdb-dev libhiredis-dev libsodium-dev
      libssl-dev libspdlog-dev libcli11-dev libtomlplusplus-dev libsqlite3-dev
      libgtest-dev libgmock-dev libbenchmark-dev redis-server mosquitto tmux python3 python3-websocket)
pkgs+=(lld)  # the linker CMakeLists.txt picks: links about three times faster (CI time)
pkgs+=(haproxy curl iproute2 procps)  # deploy/ (issue 10): the demo's load balancer; curl, ss and pgrep for the scripts' checks
pkgs+=(faketime)  # tests: a ternd whose clock is off (libfaketime preloaded; RedisTest.ANodeWhoseClockIsBehind…)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# node and npm for the crypto interop tests (they install npm packages into the build dir).
# Only what is missing: a nodejs that already brings its own npm (e.g. NodeSource's) is kept,
# since Debian's npm package would conflict with it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm
fi
