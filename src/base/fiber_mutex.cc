#include "base/fiber_mutex.h"

#include <algorithm>
#include <atomic>
#include <cassert>

#include <boost/asio/post.hpp>

namespace tern {

// One waiter. `handed` is written under the FiberMutex's mu_. A fiber's `fiber` is cleared by
// whichever resumes it first (the hand-off's post, or the fiber itself when its owner ended
// the wait), so a late post resumes nothing.
struct FiberMutex::Waiter {
  bool handed = false;
  std::thread::id thread;                 // who holds it once handed (asserts' bookkeeping)
  Fiber* owner = nullptr;
  std::condition_variable cv;             // a thread's
  std::atomic<Fiber*> fiber{nullptr};     // a fiber's, until it runs again
  boost::asio::io_context* io = nullptr;  // that fiber's loop
};

void FiberMutex::take_locked(Fiber* self) {
  held_ = true;
  holder_thread_ = std::this_thread::get_id();
  holder_fiber_ = self;
}

bool FiberMutex::try_lock() {
  std::lock_guard l(mu_);
  if (held_) return false;
  take_locked(Fiber::current());
  return true;
}

size_t FiberMutex::waiting() {
  std::lock_guard l(mu_);
  return waiters_.size();
}

void FiberMutex::wait_as_thread(std::unique_lock<std::mutex>& l, Fiber* self) {
  auto w = std::make_shared<Waiter>();
  w->thread = std::this_thread::get_id();
  w->owner = self;
  waiters_.push_back(w);
  w->cv.wait(l, [&] { return w->handed; });
}

void FiberMutex::lock() {
  Fiber* self = Fiber::current();
  std::unique_lock l(mu_);
  if (!held_) return take_locked(self);
  const bool same_thread = holder_thread_ == std::this_thread::get_id();
  // Taken twice by one fiber or thread, or a loop waiting for its own fiber: never ends.
  assert(!(same_thread && holder_fiber_ == self) && "FiberMutex taken twice");
  assert(!(same_thread && self == nullptr && holder_fiber_ != nullptr) &&
         "a loop's thread waits for a FiberMutex that one of its fibers holds");
  (void)same_thread;
  if (self == nullptr) {
    wait_as_thread(l, nullptr);
    return take_locked(nullptr);
  }
  if (!self->cancelled()) {
    auto w = std::make_shared<Waiter>();
    w->thread = std::this_thread::get_id();
    w->owner = self;
    w->fiber = self;
    w->io = &self->io();
    waiters_.push_back(w);
    l.unlock();
    Fiber::suspend();  // resumed by unlock()'s hand-off, or by the owner that ends the fiber
    w->fiber.store(nullptr);
    l.lock();
    if (w->handed) return take_locked(self);
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), w));
  }
  // Cancelled: the loop no longer runs, so no hand-off can reach this fiber (see "Ending").
  for (;;) {
    if (!held_) return take_locked(self);
    if (holder_fiber_ == nullptr) {
      wait_as_thread(l, self);
      return take_locked(self);
    }
    l.unlock();
    Fiber::suspend();
    l.lock();
  }
}

void FiberMutex::unlock() {
  std::shared_ptr<Waiter> next;
  {
    std::lock_guard l(mu_);
    assert(held_);
    if (waiters_.empty()) {
      held_ = false;
      holder_fiber_ = nullptr;
      return;
    }
    // Handed over: held_ stays true, so nobody overtakes the waiter before it runs.
    next = std::move(waiters_.front());
    waiters_.pop_front();
    next->handed = true;
    holder_thread_ = next->thread;  // the waiter's from now on, though it has not run yet
    holder_fiber_ = next->owner;
    if (next->io == nullptr) return next->cv.notify_one();
  }
  boost::asio::post(*next->io, [next] {
    if (Fiber* f = next->fiber.exchange(nullptr)) f->resume();
  });
}

}  // namespace tern
