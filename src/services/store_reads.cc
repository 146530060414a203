#include "services/store_reads.h"

#include "base/metrics.h"
#include "base/thread_name.h"

namespace tern::services {
namespace {

Counter& reads_offloaded = MetricsRegistry::global().counter(
    "tern_store_reads_offloaded_total", "store reads run on a reader thread instead of an event loop");
Counter& reads_refused = MetricsRegistry::global().counter(
    "tern_store_reads_refused_total", "store reads refused with `unavailable` because the reader queue was full");
Gauge& reads_waiting = MetricsRegistry::global().gauge("tern_store_reads_queued", "store reads waiting for a reader thread");

}  // namespace

StoreReads::StoreReads(Loops& loops, size_t threads, size_t max_queued)
    : loops_(loops), max_queued_(std::max<size_t>(1, max_queued)) {
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this, i] {
      set_thread_name("tern-read" + std::to_string(i));
      work();
    });
  }
}

StoreReads::~StoreReads() { stop(); }

void StoreReads::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    jobs_.clear();
    reads_waiting.set(0);
  }
  wake_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

size_t StoreReads::queued() {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

bool StoreReads::enqueue(Job job) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || jobs_.size() >= max_queued_) {
      reads_refused.inc();
      return false;
    }
    jobs_.push_back(std::move(job));
    reads_waiting.set(static_cast<int64_t>(jobs_.size()));
  }
  reads_offloaded.inc();
  wake_.notify_one();
  return true;
}

void StoreReads::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      reads_waiting.set(static_cast<int64_t>(jobs_.size()));
    }
    job();
  }
}

Error StoreReads::queue_full() {
  return make_error(ErrorCode::kUnavailable, "too many store reads waiting; retry");
}

}  // namespace tern::services
