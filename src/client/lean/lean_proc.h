// Process accounting for tern-bench: the server's CPU time and resident memory read from
// /proc/<pid>/stat and /proc/<pid>/status, the time its threads spent runnable but waiting
// for a CPU (/proc/<pid>/task/*/schedstat: on a shared machine this is what latency is made
// of when the server itself is idle), and the generator's own CPU time (getrusage).
// Pure functions over files; thread-safe.
#pragma once
#include <cstdint>
#include <string_view>

#include "base/result.h"

namespace tern::client::lean {

struct ProcSample {
  int64_t cpu_us = 0;  // user + system, all threads
  int64_t rss_kb = 0;  // VmRSS
  int64_t runqueue_wait_us = -1;  // Σ over the threads alive now of their run-queue wait; -1: unknown
};

Result<ProcSample> sample_process(int pid);
// user + system CPU of this process, µs.
int64_t self_cpu_us();

// Parsers, exposed for tests. utime + stime in clock ticks, from a /proc/<pid>/stat line
// (fields after the parenthesised command name, which may itself contain spaces and ')').
Result<int64_t> parse_stat_cpu_ticks(std::string_view stat);
Result<int64_t> parse_status_rss_kb(std::string_view status);
// The run-queue wait (ns, the second of the three numbers) of a schedstat line.
Result<int64_t> parse_schedstat_wait_ns(std::string_view schedstat);

}  // namespace tern::client::lean
