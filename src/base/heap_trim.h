// HeapTrim: hands the heap's free pages back to the kernel after a large release.
//
// Why: glibc's free() returns memory to the kernel only from the top of an arena. When a
// connection that held megabytes of queued frames closes, those frames are freed, but a few
// live allocations above them (made later by any thread on the same arena) keep every page
// below resident. The process then stays at its peak RSS for as long as those allocations
// live: one client that made the server queue 100 MB for it and never read would leave it
// 100 MB bigger. malloc_trim(0) walks every arena and gives back each whole free page
// (madvise), wherever it lies.
//
// A trim locks each arena in turn and walks its free chunks, so it is not run for every
// free: callers report only bytes released at once by a teardown (a closed connection's
// unsent queue), releases that arrive within kDelay of one another share one trim, and at
// most one runs per kDelay.
//
// Thread-safety: every function may be called from any thread. The trim runs as a handler on
// the executor given by the release that scheduled it.
#pragma once
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include <boost/asio/any_io_executor.hpp>

namespace tern {

class HeapTrim {
 public:
  // Released bytes (since the last trim) that make a trim worth its cost: a full default
  // write queue (1 MiB). What a slow reader made the server hold is more than its queue (the
  // reads that filled it, on other threads), so its queue is the signal, not the measure.
  static constexpr size_t kThresholdBytes = 1024u * 1024;
  // How long a scheduled trim waits, so that connections closed together (and whatever
  // their teardown frees on other threads) are all freed before it runs; also the shortest
  // time between two trims.
  static constexpr std::chrono::milliseconds kDelay{1000};

  // Reports `bytes` of heap released at once. Once the bytes reported since the last trim
  // reach kThresholdBytes, schedules one malloc_trim(0) on `ex` kDelay later; while one is
  // scheduled, further releases join it.
  static void released(const boost::asio::any_io_executor& ex, size_t bytes);

  // Trims run so far (the metric tern_heap_trims_total).
  static uint64_t trims();

 private:
  static void run();
  static std::atomic<size_t> released_;
  static std::atomic<bool> scheduled_;
};

}  // namespace tern
