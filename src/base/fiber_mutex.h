// FiberMutex: a mutex that may be held across a fiber's wait (a store read that waits for
// Redis). A std::mutex must not be: while the fiber that holds it is suspended, its loop
// runs other fibers, and one of them that blocks on the same mutex blocks the loop's thread,
// the only thread that can resume the holder. Here a fiber that finds the mutex held
// suspends (its loop runs on) and a plain thread waits on a condition variable; unlock()
// hands the mutex to the first waiter (FIFO, no overtaking), a fiber through its loop's
// mailbox (a fiber is never resumed on another's stack). Uncontended, it costs a std::mutex
// lock and unlock.
//
// Used by the services for their check-then-write sections that read the store under the
// lock (Accounts, KeyDirectory's stripes), which run in fibers on Redis (HTTP handlers,
// services/store_reads.h) and inline on a loop with the embedded store.
//
// Rule: a loop's thread outside a fiber must not wait for a FiberMutex that a fiber of the
// same thread holds (it would wait for itself). Asserted, as is taking it twice.
//
// Ending: a fiber that its owner cancels while it waits (StoreReads at shutdown) still takes
// the mutex before it returns: it waits for a thread holder like a thread, and for a fiber
// holder by suspending until resumed again (its owner resumes every fiber in turn until all
// are done, so the holder runs to its unlock).
//
// Thread-safety: lock()/unlock() from any thread or fiber. Must outlive its holders and
// waiters; the loops of waiting fibers must outlive it (a hand-off is posted to them).
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "base/fiber.h"

namespace tern {

class FiberMutex {
 public:
  FiberMutex() = default;
  FiberMutex(const FiberMutex&) = delete;
  FiberMutex& operator=(const FiberMutex&) = delete;

  void lock();
  void unlock();
  bool try_lock();
  // Fibers and threads waiting now (tests, to know who is queued).
  size_t waiting();

 private:
  struct Waiter;
  void take_locked(Fiber* self);  // mu_ held; the mutex is free or handed to the caller
  void wait_as_thread(std::unique_lock<std::mutex>& l, Fiber* self);

  std::mutex mu_;
  bool held_ = false;
  std::thread::id holder_thread_;
  Fiber* holder_fiber_ = nullptr;  // null: a thread (or a loop outside any fiber) holds it
  std::deque<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace tern
