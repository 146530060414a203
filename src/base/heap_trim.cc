#include "base/heap_trim.h"

#include <malloc.h>

#include <memory>

#include <boost/asio/steady_timer.hpp>

#include "base/metrics.h"

namespace tern {

std::atomic<size_t> HeapTrim::released_{0};
std::atomic<bool> HeapTrim::scheduled_{false};

namespace {
Counter& trims_counter() {
  static Counter& c = MetricsRegistry::global().counter(
      "tern_heap_trims_total", "Times freed heap pages were given back to the kernel after a large release");
  return c;
}
// Listed in /metrics from the start, at 0.
[[maybe_unused]] const Counter& registered = trims_counter();
}  // namespace

void HeapTrim::released(const boost::asio::any_io_executor& ex, size_t bytes) {
  if (bytes == 0) return;
  if (released_.fetch_add(bytes, std::memory_order_relaxed) + bytes < kThresholdBytes) return;
  if (scheduled_.exchange(true, std::memory_order_acq_rel)) return;  // the pending trim covers it
  // The timer owns itself through its handler. If the io_context is destroyed first, the
  // handler is destroyed without running; `Pending` then still clears the flag, so a later
  // release (on another io_context of the same process) can schedule a trim again.
  struct Pending {
    explicit Pending(const boost::asio::any_io_executor& e) : timer(e, kDelay) {}
    boost::asio::steady_timer timer;
    bool ran = false;
    ~Pending() {
      if (!ran) scheduled_.store(false, std::memory_order_release);
    }
  };
  auto pending = std::make_shared<Pending>(ex);
  pending->timer.async_wait([pending](const boost::system::error_code&) {
    pending->ran = true;
    run();
  });
}

void HeapTrim::run() {
  // Cleared before the trim, so bytes released while it runs schedule the next one.
  released_.store(0, std::memory_order_relaxed);
  scheduled_.store(false, std::memory_order_release);
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  trims_counter().inc();
}

uint64_t HeapTrim::trims() { return trims_counter().value(); }

}  // namespace tern
