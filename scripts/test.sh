#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: the release build, then the whole suite again
# under AddressSanitizer + UndefinedBehaviorSanitizer. Exit status is non-zero on any failure.
#
# Two choices keep a CI run (two cores) well inside its time:
# - The release tests build the `test-release` preset: the release preset's flags (-O2
#   -DNDEBUG) without -g. GCC's code does not depend on -g; the DWARF alone cost 30-45% of
#   the compile time of our heaviest files at -O2. The `release` preset (build/bin, for
#   running and profiling) keeps its debug info and is left alone.
# - The ASan + UBSan build runs beside the release tests, at idle priority (SCHED_IDLE). The
#   release tests leave part of the two cores idle (they wait for timeouts, failovers and
#   child processes; the build did 148 of its 364 steps beside them in a run of 2026-12-07);
#   the build takes only CPU time no test wants, and a test's thread that wakes up preempts
#   it at once. Its output goes to build/asan-build.log, printed after.
# - The sanitizer build is the longest part of a run (about twice the release build's compile
#   time). It keeps line tables only (-g1, CMakePresets.json: 16% less compile time than -g for
#   our heaviest file; stack traces keep files and lines), leaves out UBSan's null, alignment
#   and vptr checks (CMakeLists.txt: a third of its compile time), and its tree runs the
#   integration suites on the embedded store only (tests/CMakeLists.txt): their Redis and
#   two-node runs are the release tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start, with the time, so that a slow run shows where its time went.
phase() { echo "== $(date -u +%H:%M:%S) $*"; }
phase "setup"
scripts/setup.sh
jobs=$(nproc)
phase "release build"

cmake --preset test-release >/dev/null
cmake --build --preset test-release -j "$jobs"

cmake --preset asan-ubsan >/dev/null
idle=(chrt --idle 0)
"${idle[@]}" true 2>/dev/null || idle=(nice -n 19)
log=build/asan-build.log
# In its own process group (set -m), so that a failed release test, which ends the run as
# before, can stop the whole build (ninja and its compilers) and not only cmake.
set -m
"${idle[@]}" cmake --build --preset asan-ubsan -j "$jobs" >"$log" 2>&1 </dev/null &
asan_build=$!
set +m
trap 'kill -- "-$asan_build" 2>/dev/null || true' EXIT
phase "release tests (the ASan + UBSan build beside them)"
ctest --preset test-release -j "$jobs"

phase "waiting for the ASan + UBSan build (its output: $log)"
if ! wait "$asan_build"; then
  cat "$log"
  echo "the ASan + UBSan build failed" >&2
  exit 1
fi
trap - EXIT
tail -n 3 "$log"
phase "ASan + UBSan tests"
ctest --preset asan-ubsan -j "$jobs"
phase "done"
