#include "services/store_reads.h"

#include <cassert>

#include "base/metrics.h"
#include "base/thread_name.h"

namespace tern::services {
namespace {

Counter& reads_offloaded = MetricsRegistry::global().counter(
    "tern_store_reads_offloaded_total", "store reads run on a reader thread instead of an event loop");
Counter& reads_refused = MetricsRegistry::global().counter(
    "tern_store_reads_refused_total", "store reads refused with `unavailable` because the reader queue was full");
Gauge& reads_waiting = MetricsRegistry::global().gauge("tern_store_reads_queued", "store reads waiting for a reader thread");
Gauge& reads_in_fibers = MetricsRegistry::global().gauge("tern_store_reads_in_fibers",
                                                         "store reads queued or running in the loops' fibers");

}  // namespace

StoreReads::StoreReads(Loops& loops, size_t threads, size_t fibers_per_loop, size_t max_queued)
    : loops_(loops), fibers_per_loop_(fibers_per_loop), max_queued_(std::max<size_t>(1, max_queued)) {
  if (fibers_per_loop_ > 0)
    for (size_t i = 0; i < loops_.size(); ++i) loop_fibers_.push_back(std::make_unique<LoopFibers>());
  // With fibers every read runs in them; the threads serve only a server without fibers.
  for (size_t i = 0; fibers_per_loop_ == 0 && i < threads; ++i) {
    threads_.emplace_back([this, i] {
      set_thread_name("tern-read" + std::to_string(i));
      work();
    });
  }
}

StoreReads::~StoreReads() {
  stop();
  end_fibers();
}

void StoreReads::stop() {
  fibers_stopping_.store(true);  // a fiber takes no job from now on
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
  return jobs_.size() + fiber_reads_.load();
}

size_t StoreReads::fibers(size_t loop) const {
  return loop < loop_fibers_.size() ? loop_fibers_[loop]->fibers.size() : 0;
}

bool StoreReads::enqueue_fiber(size_t loop, Job job) {
  if (fibers_stopping_.load()) return false;
  if (fiber_reads_.fetch_add(1) >= max_queued_) {
    fiber_reads_.fetch_sub(1);
    reads_refused.inc();
    return false;
  }
  reads_offloaded.inc();
  reads_in_fibers.set(static_cast<int64_t>(fiber_reads_.load()));
  // Always through the mailbox, also from this loop: the fiber must not start inside the
  // caller's work (it would see the caller's warm holds, services/warm_hold.h).
  loops_.post(loop, [this, loop, job = std::move(job)]() mutable { dispatch(loop, std::move(job)); });
  return true;
}

void StoreReads::dispatch(size_t loop, Job job) {
  LoopFibers& lf = *loop_fibers_[loop];
  if (fibers_stopping_.load()) {  // dropped, as queued reads are at stop(): `done` never runs
    fiber_reads_.fetch_sub(1);
    return;
  }
  lf.jobs.push_back(std::move(job));
  if (!lf.idle.empty()) {
    Fiber* f = lf.idle.back();
    lf.idle.pop_back();
    return f->resume();
  }
  if (lf.fibers.size() < fibers_per_loop_) {
    lf.fibers.push_back(std::make_unique<Fiber>(loops_.context(loop), [this, loop] { fiber_main(loop, Fiber::current()); }));
    lf.fibers.back()->resume();
  }
  // Else every fiber is busy: the job waits in lf.jobs for the next one that finishes.
}

void StoreReads::fiber_main(size_t loop, Fiber* self) {
  LoopFibers& lf = *loop_fibers_[loop];
  for (;;) {
    if (fibers_stopping_.load() || self->cancelled()) return;
    if (lf.jobs.empty()) {
      lf.idle.push_back(self);
      Fiber::suspend();  // until dispatch() hands it a job, or end_fibers()
      continue;
    }
    Job job = std::move(lf.jobs.front());
    lf.jobs.pop_front();
    job();
    reads_in_fibers.set(static_cast<int64_t>(fiber_reads_.fetch_sub(1) - 1));
  }
}

// After the loops stopped: a fiber that still waits (for Redis, for a FiberMutex, or idle for
// a job) is cancelled and resumed until its body returns: its waits fail at once, so its read
// fails and it takes no further job. In turn, all fibers of all loops, round after round: a
// fiber waiting for a FiberMutex that another fiber holds goes on only once that one ran to
// its unlock (base/fiber_mutex.h, "Ending"). A read's `done` then is queued to a loop that no
// longer runs.
void StoreReads::end_fibers() {
  std::vector<Fiber*> running;
  for (auto& lf : loop_fibers_) {
    lf->jobs.clear();
    for (auto& f : lf->fibers) {
      f->cancel();
      if (!f->done()) running.push_back(f.get());
    }
  }
  // Each resume ends at least one wait, or lets a holder reach its unlock; a job makes a
  // bounded number of waits (connection attempts, then its commands), each failing at once.
  for (int round = 0; round < 10'000 && !running.empty(); ++round) {
    for (Fiber* f : running) f->resume();
    std::erase_if(running, [](Fiber* f) { return f->done(); });
  }
  assert(running.empty());
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
