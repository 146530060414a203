// StoreReads: where the services run a store read that may block, so that no event loop
// waits on the network. The store contract (store.h) is synchronous; which thread runs a
// read is decided here, once, by how the server was composed:
//   - embedded store (RocksDB, the memory store): inline on the calling loop. Its reads are
//     memtable and block-cache lookups of microseconds; a hop to another thread would cost
//     more than the read.
//   - Redis, run(): on the loops themselves, in fibers (base/fiber.h): up to
//     `fibers_per_loop` (--redis-read-fibers) on the loop that gets the answer; the fibers of
//     one loop pipeline their requests on one Redis connection per node (RedisStore keeps
//     them per loop, with the topology: store/redis/redis_connection.h, LoopConnections;
//     redis_cluster.h, ClusterTopology). While a fiber waits for Redis
//     it is suspended and its loop runs other work; the socket's readiness resumes it. So
//     the reads are driven by the loops: no thread per read, no blocking call on a loop, and
//     up to loops × fibers_per_loop reads in flight. `done` is queued to the loop's mailbox
//     (a fiber never runs the loop's work on its own stack).
//   - Redis, run_detached() (HTTP requests, upload decisions): in a fiber too, on the loop
//     that received the request. These handlers' check-then-write sections read the store
//     under a lock (Accounts, KeyDirectory's stripes): a FiberMutex (base/fiber_mutex.h),
//     which a fiber may hold while it waits for Redis. They never wait for a commit: their
//     completions answer the request.
//   - With threads only (fibers_per_loop 0: tests, and --redis-read-fibers 0), run() and
//     run_detached() use `threads` reader threads (--redis-read-threads), each with its own
//     connection, and run()'s result comes back through the loop's mailbox.
// Bounded: at most `max_queued` reads wait (for a thread, or queued or running in fibers);
// beyond that a read fails at once with `unavailable` (the caller answers the client, which
// retries), so a store that stopped answering cannot grow the queue without limit.
//
// What runs in a fiber or on a reader thread is the `read` closure (or the detached job)
// only: it may touch the store and thread-safe state (Directory's caches), never a loop's
// state, and it must not hold a std::mutex across a store call (another fiber of the same
// thread may take it meanwhile); a FiberMutex it may.
// In a fiber, Loops::here() is kNone, as on a reader thread. `done` runs on the loop named
// by the caller, inline when reads are not offloaded.
//
// Thread-safety: run() and run_detached() from any thread; stop() once, from the
// composition root. Destroyed after the loops stopped running: fibers still waiting then are
// cancelled and run to their end (base/fiber.h, "Ending"). Owned by TernService; borrows the
// loops.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/fiber.h"
#include "base/loops.h"
#include "base/result.h"

namespace tern::services {

class StoreReads {
 public:
  static constexpr size_t kDefaultMaxQueued = 65536;

  // threads = 0 and fibers_per_loop = 0: every read inline (embedded store).
  StoreReads(Loops& loops, size_t threads, size_t fibers_per_loop = 0, size_t max_queued = kDefaultMaxQueued);
  ~StoreReads();
  StoreReads(const StoreReads&) = delete;
  StoreReads& operator=(const StoreReads&) = delete;

  // True when reads run in fibers or on reader threads (and `done` comes later, through
  // the loop).
  bool offloaded() const { return !threads_.empty() || fibers_per_loop_ > 0; }

  // Runs `read` (in a fiber on loop `loop`, on a reader thread, or inline), then `done` with
  // its result on loop `loop`.
  template <typename T>
  void run(size_t loop, std::function<Result<T>()> read, std::function<void(Result<T>)> done) {
    if (!offloaded()) return done(read());
    Job job = [this, loop, read = std::move(read), done]() {
      auto result = std::make_shared<Result<T>>(read());
      loops_.run(loop, [result, done]() { done(std::move(*result)); });
    };
    const bool queued = fibers_per_loop_ > 0 ? enqueue_fiber(loop, std::move(job)) : enqueue(std::move(job));
    if (!queued) loops_.post(loop, [done]() { done(queue_full()); });
  }

  // Runs `job` (a handler that reads the store and answers through its own callback, e.g.
  // an HTTP request) in a fiber on loop `loop` (loop 0 when it is kNone), or on a reader
  // thread without fibers. False when the queue is full or stopping (the caller answers
  // `unavailable`), or when reads are not offloaded.
  bool run_detached(size_t loop, std::function<void()> job) {
    if (fibers_per_loop_ == 0) return enqueue(std::move(job));
    return enqueue_fiber(loop < loop_fibers_.size() ? loop : 0, std::move(job));
  }

  // `fn`, made to run on loop `loop` through its mailbox (when `loop` is a loop): for the
  // answer of a detached job, so that the caller's code (an HTTP session's) never runs on a
  // fiber's stack, and runs on its loop whichever thread answers.
  template <typename Arg>
  std::function<void(Arg)> via_loop(size_t loop, std::function<void(Arg)> fn) {
    if (loop >= loops_.size()) return fn;
    return [loops = &loops_, loop, fn = std::move(fn)](Arg a) {
      loops->post(loop, [fn, a = std::move(a)]() mutable { fn(std::move(a)); });
    };
  }

  // Ends the reader threads; reads still queued are dropped (their `done` never runs).
  // Idempotent.
  void stop();

  // Reads waiting for a reader thread, plus those queued or running in fibers.
  size_t queued();
  // Fibers made so far on `loop` (at most fibers_per_loop). Call on that loop, or after the
  // loops stopped.
  size_t fibers(size_t loop) const;

 private:
  using Job = std::function<void()>;
  // One loop's fibers and the reads waiting for one of them; touched on that loop only.
  struct LoopFibers {
    std::vector<std::unique_ptr<Fiber>> fibers;
    std::vector<Fiber*> idle;  // suspended, waiting for a job
    std::deque<Job> jobs;
  };
  bool enqueue(Job job);
  bool enqueue_fiber(size_t loop, Job job);
  void dispatch(size_t loop, Job job);  // on that loop
  void fiber_main(size_t loop, Fiber* self);
  void end_fibers();
  void work();
  static Error queue_full();

  Loops& loops_;
  const size_t fibers_per_loop_;
  const size_t max_queued_;
  std::vector<std::unique_ptr<LoopFibers>> loop_fibers_;  // one per loop, when fibers_per_loop > 0
  std::atomic<size_t> fiber_reads_{0};  // queued or running in fibers
  std::atomic<bool> fibers_stopping_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace tern::services
