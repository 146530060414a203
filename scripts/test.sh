#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: the release build, then the whole suite again
# under AddressSanitizer + UndefinedBehaviorSanitizer. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)
for preset in release asan-ubsan; do
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs"
done
