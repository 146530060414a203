// StoreReads: where the services run a store read that may block, so that no event loop
// waits on the network. The store contract (store.h) is synchronous; which thread runs a
// read is decided here, once, by how the server was composed:
//   - embedded store (RocksDB, the memory store): inline on the calling loop. Its reads are
//     memtable and block-cache lookups of microseconds; a hop to another thread would cost
//     more than the read.
//   - Redis: `threads` reader threads (--redis-read-threads). Each uses its own Redis
//     connection (RedisStore keeps one per calling thread), so up to `threads` reads are in
//     flight at once; the result comes back to the calling loop through its mailbox
//     (Loops::run: a burst of completions costs one wake-up).
// Bounded: at most `max_queued` reads wait for a reader thread; beyond that a read fails at
// once with `unavailable` (the caller answers the client, which retries), so a store that
// stopped answering cannot grow the queue without limit.
//
// What runs on a reader thread is the `read` closure only: it may touch the store and
// thread-safe state (Directory's caches), never a loop's state. `done` runs on the loop
// named by the caller, inline when there are no reader threads.
//
// Thread-safety: run() from any thread; stop() once, from the composition root. Owned by
// TernService; borrows the loops.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/loops.h"
#include "base/result.h"

namespace tern::services {

class StoreReads {
 public:
  static constexpr size_t kDefaultMaxQueued = 65536;

  // threads = 0: every read inline (embedded store).
  StoreReads(Loops& loops, size_t threads, size_t max_queued = kDefaultMaxQueued);
  ~StoreReads();
  StoreReads(const StoreReads&) = delete;
  StoreReads& operator=(const StoreReads&) = delete;

  // True when reads run on reader threads (and `done` comes later, through the loop).
  bool offloaded() const { return !threads_.empty(); }

  // Runs `read` (a reader thread, or inline), then `done` with its result on loop `loop`.
  template <typename T>
  void run(size_t loop, std::function<Result<T>()> read, std::function<void(Result<T>)> done) {
    if (!offloaded()) return done(read());
    Job job = [this, loop, read = std::move(read), done]() {
      auto result = std::make_shared<Result<T>>(read());
      loops_.run(loop, [result, done]() { done(std::move(*result)); });
    };
    if (!enqueue(std::move(job)))
      loops_.post(loop, [done]() { done(queue_full()); });
  }

  // Runs `job` on a reader thread (a handler that reads the store and answers through its
  // own callback, e.g. an HTTP request). False when the queue is full or stopping (the caller
  // answers `unavailable`). Only when offloaded().
  bool run_detached(std::function<void()> job) { return enqueue(std::move(job)); }

  // Ends the reader threads; reads still queued are dropped (their `done` never runs).
  // Idempotent.
  void stop();

  size_t queued();

 private:
  using Job = std::function<void()>;
  bool enqueue(Job job);
  void work();
  static Error queue_full();

  Loops& loops_;
  const size_t max_queued_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace tern::services
