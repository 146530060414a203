// The coordinator: tern-bench's parent process. Forks --workers worker processes (each runs
// a Worker), answers their barriers so that they act in step, samples the server process
// (--server-pid) at every barrier, drives --find-max, merges progress into one line per
// second on stderr and results into the final table (stdout) or JSON (--json).
//
// Single-threaded; owns the worker processes and the pipes to them.
#pragma once
#include "bench_options.h"

namespace tern::bench {

// Runs the whole benchmark; returns the process exit code: 0 all well, 1 the verifier found a
// violation, 2 the run could not be carried out (set-up, connections, a worker died).
int run_bench(const BenchOptions& opt);

}  // namespace tern::bench
