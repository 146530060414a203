#!/usr/bin/env bash
# Sets up a fresh machine, builds ternd and starts it on 127.0.0.1:8080 with the embedded
# RocksDB store in ./tern-data. Extra arguments go to ternd (see build/bin/ternd --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target ternd tern tern-bench
exec build/bin/ternd "$@"
