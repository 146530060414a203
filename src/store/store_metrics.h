// The read counter every store backend shares: tern_store_reads_total counts read calls of the
// store contract as each backend makes them (RocksDB: point reads, range scans, head seeks;
// Redis: one per read call, a pipelined read of several keys counting once). Tests compare it
// before and after a workload to assert that a path reads nothing.
// Thread-safety: the counter is atomic; any thread may count.
#pragma once
#include "base/metrics.h"

namespace tern::store {

inline Counter& reads_counter() {
  static Counter& c = MetricsRegistry::global().counter("tern_store_reads_total",
                                                        "store read calls (point reads, range scans, head seeks)");
  return c;
}

}  // namespace tern::store
