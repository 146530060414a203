// FiberWaiters: the fibers of one loop suspended until something another fiber of that loop
// is doing ends (a connect, a read of the Redis topology), so that the work is done once and
// not once per fiber. wake_all() resumes them through their loop: a fiber never resumes
// another on its own stack.
//
// Thread-safety: none; the loop's thread only. Owned by the object whose work the fibers wait
// for; a waiter that its owner ends (cancel, resume) returns at once, and a wake posted for
// it later resumes nothing.
#pragma once
#include <memory>
#include <vector>

#include "base/fiber.h"

namespace tern {

class FiberWaiters {
 public:
  // Suspends the calling fiber until wake_all(). False at once outside a fiber or in a
  // cancelled one; false after the wait if the fiber was cancelled meanwhile.
  bool wait();
  // Resumes every fiber waiting now (each at its loop's next turn).
  void wake_all();
  bool empty() const { return waiting_.empty(); }

 private:
  // A waiter's fiber, cleared when it resumes, so a late wake finds nobody.
  std::vector<std::shared_ptr<Fiber*>> waiting_;
};

}  // namespace tern
